"""When a client may be called, in the client's own time zone.

Every datetime in and out is aware; results are in UTC. Window times and days are the
client's local wall clock, so "09:00-20:00, mon-fri" means nine in the morning wherever the
client lives.

The window on a local date D is the stretch of real time from the window start to the window
end *as they resolve on D* (end exclusive). Resolving a wall-clock time on a DST change day:
- a time that does not exist (spring forward, 02:30 in New York on 2026-03-08) becomes the
  first instant after the gap (03:00 EDT);
- a time that happens twice (fall back, 01:30 in New York on 2026-11-01) is its first
  occurrence (01:30 EDT), and the window then stays open through the repeated hour.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "CallingPolicy",
    "at_client_time",
    "describe",
    "in_window",
    "next_business_day_at",
    "next_call_time",
]

# A policy that allows no day within a year allows none at all (holidays are listed per
# date, so only a year-long run of them could hide a working day further out).
_SEARCH_DAYS = 370

_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class CallingPolicy:
    """Local hours [window_start, window_end) on workdays (Mon=0) that are not holidays."""

    window_start: time = time(9)
    window_end: time = time(20)
    workdays: frozenset[int] = frozenset({0, 1, 2, 3, 4})
    holidays: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        # Accept any iterable for the sets, so callers can pass lists from config.
        object.__setattr__(self, "workdays", frozenset(self.workdays))
        object.__setattr__(self, "holidays", frozenset(self.holidays))
        if self.window_start.tzinfo is not None or self.window_end.tzinfo is not None:
            raise ValueError("window times are the client's local wall clock: give naive times")
        if not self.window_start < self.window_end:
            raise ValueError(
                f"the calling window must start before it ends (got {self.window_start:%H:%M}"
                f"-{self.window_end:%H:%M}); windows across midnight are not supported"
            )
        if not self.workdays:
            raise ValueError("a calling policy needs at least one workday")
        if not self.workdays <= set(range(7)):
            raise ValueError(f"workdays are 0 (Monday) to 6 (Sunday), got {sorted(self.workdays)}")
        if any(not isinstance(d, date) or isinstance(d, datetime) for d in self.holidays):
            raise ValueError("holidays must be dates")

    @classmethod
    def from_strings(
        cls,
        window: str = "09:00-20:00",
        workdays: str = "mon-fri",
        holidays: Iterable[str | date] = (),
    ) -> CallingPolicy:
        """Build a policy from config text: ``"09:00-20:00"``, ``"mon-fri,sun"``,
        ``["2026-12-31", ...]``. A range may wrap (``"sat-mon"``)."""
        start, end = _parse_window(window)
        return cls(start, end, _parse_workdays(workdays), frozenset(map(_parse_date, holidays)))

    def is_workday(self, day: date) -> bool:
        return day.weekday() in self.workdays and day not in self.holidays


def _parse_window(text: str) -> tuple[time, time]:
    match = _WINDOW.match(text)
    if not match:
        raise ValueError(f"calling window {text!r} is not of the form HH:MM-HH:MM")
    h1, m1, h2, m2 = map(int, match.groups())
    try:
        start, end = time(h1, m1), time(h2, m2)
    except ValueError:
        raise ValueError(f"calling window {text!r} has an impossible time of day") from None
    if not start < end:
        raise ValueError(f"calling window {text!r} must start before it ends")
    return start, end


def _day_number(token: str, text: str) -> int:
    word = token.strip().lower()
    for number, name in enumerate(_DAY_NAMES):
        if len(word) >= 3 and name.startswith(word):
            return number
    raise ValueError(f"workdays {text!r}: {token.strip()!r} is not a day (use mon, tue, ...)")


def _parse_workdays(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.split(","):
        if not part.strip():
            raise ValueError(f"workdays {text!r} has an empty entry")
        first, sep, last = part.partition("-")
        a = _day_number(first, text)
        b = _day_number(last, text) if sep else a
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def _parse_date(value: str | date) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"holiday {value!r} is not a date of the form YYYY-MM-DD") from None


@lru_cache(maxsize=1024)
def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"unknown time zone {tz!r} (expected an IANA name)") from None


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def _naive_time(at: time) -> time:
    if at.tzinfo is not None:
        raise ValueError("the time of day is the client's local wall clock: give a naive time")
    return at


def _resolve(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of local ``day`` ``at`` (see the module doc for DST gaps and folds)."""
    wall = datetime.combine(day, at)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first  # exists; fold=0 is the first occurrence when it happens twice
    # In a gap: fold=1 reads the wall time with the later offset, landing before the gap;
    # fold=0 with the earlier offset, landing after it. The gap's end lies between them.
    lo = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    hi = first
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0)


def _window(day: date, zone: ZoneInfo, policy: CallingPolicy) -> tuple[datetime, datetime]:
    return _resolve(day, policy.window_start, zone), _resolve(day, policy.window_end, zone)


def _first_in_window(start: datetime, zone: ZoneInfo, policy: CallingPolicy) -> datetime:
    day = start.astimezone(zone).date()
    for _ in range(_SEARCH_DAYS):
        if policy.is_workday(day):
            opens, closes = _window(day, zone, policy)
            candidate = max(start, opens)
            if candidate < closes:
                return candidate
        day += timedelta(days=1)
    raise ValueError(f"the calling policy allows no call within {_SEARCH_DAYS} days: {policy}")


def next_call_time(earliest: datetime, tz: str, policy: CallingPolicy) -> datetime:
    """The earliest UTC moment at or after ``earliest`` inside the client's calling window."""
    return _first_in_window(_utc(earliest, "earliest"), _zone(tz), policy)


def in_window(moment: datetime, tz: str, policy: CallingPolicy) -> bool:
    """Whether a call at ``moment`` is allowed for a client in ``tz``."""
    moment = _utc(moment, "moment")
    zone = _zone(tz)
    day = moment.astimezone(zone).date()
    if not policy.is_workday(day):
        return False
    opens, closes = _window(day, zone, policy)
    return opens <= moment < closes


def last_window(now: datetime, tz: str, policy: CallingPolicy) -> tuple[datetime, datetime]:
    """The calling window open at ``now``, cut at ``now``, or else the last one that closed:
    (opens, until) in UTC. Calls that were due "earlier today" fall inside it."""
    now = _utc(now, "now")
    zone = _zone(tz)
    day = now.astimezone(zone).date()
    for _ in range(_SEARCH_DAYS):
        if policy.is_workday(day):
            opens, closes = _window(day, zone, policy)
            if opens < now:
                return opens, min(closes, now)
        day -= timedelta(days=1)
    raise ValueError(f"the calling policy allowed no call in {_SEARCH_DAYS} days back: {policy}")


def _next_workday_after(day: date, policy: CallingPolicy) -> date:
    for _ in range(_SEARCH_DAYS):
        day += timedelta(days=1)
        if policy.is_workday(day):
            return day
    raise ValueError(f"the calling policy allows no call within {_SEARCH_DAYS} days: {policy}")


def next_business_day_at(now: datetime, tz: str, at: time, policy: CallingPolicy) -> datetime:
    """A follow-up rule's "next business day at 10:00".

    The first workday strictly after the client's today, at local ``at``. A time outside the
    window becomes the window start of that same day: the rule promises the day, so the day
    is kept and the hour gives way.
    """
    zone = _zone(tz)
    at = _naive_time(at)
    day = _next_workday_after(_utc(now, "now").astimezone(zone).date(), policy)
    if not policy.window_start <= at < policy.window_end:
        at = policy.window_start
    # Through the window search so a DST gap that swallows the window still lands in one.
    return _first_in_window(_resolve(day, at, zone), zone, policy)


def at_client_time(now: datetime, tz: str, at: time, policy: CallingPolicy) -> datetime:
    """A client's "call me back at 15:00", in the client's zone.

    The wish is the next local ``at``: today if it is not past, else tomorrow. The result is
    never earlier than the wish:
    - a wish inside the window on a workday is kept as it is;
    - on a day off (weekend, holiday), a wish whose hour is inside the window keeps its hour
      on the next workday (Saturday 15:00 -> Monday 15:00);
    - an hour outside the window moves forward to the next window opening (07:00 -> 09:00
      the same day; 21:00 -> 09:00 the next workday).
    """
    zone = _zone(tz)
    at = _naive_time(at)
    now = _utc(now, "now")
    today = now.astimezone(zone).date()
    wish = _resolve(today, at, zone)
    if wish < now:
        wish = _resolve(today + timedelta(days=1), at, zone)
    if in_window(wish, tz, policy):
        return wish
    wish_day = wish.astimezone(zone).date()
    if not policy.is_workday(wish_day) and policy.window_start <= at < policy.window_end:
        wish = _resolve(_next_workday_after(wish_day, policy), at, zone)
    return _first_in_window(wish, zone, policy)


def describe(moment: datetime, tz: str) -> str:
    """E.g. "Tue 24 Nov 10:00 client time (Europe/Moscow)", for operators' screens."""
    local = _utc(moment, "moment").astimezone(_zone(tz))
    day = _DAY_NAMES[local.weekday()][:3].capitalize()
    return f"{day} {local.day} {_MONTHS[local.month - 1]} {local:%H:%M} client time ({tz})"
