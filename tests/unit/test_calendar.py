from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.calendar import (
    CallingPolicy,
    at_client_time,
    describe,
    in_window,
    last_window,
    next_business_day_at,
    next_call_time,
)

MSK = "Europe/Moscow"  # UTC+3, no DST
VVO = "Asia/Vladivostok"  # UTC+10, no DST
NYC = "America/New_York"  # DST 2026-03-08 02:00 -> 03:00, 2026-11-01 02:00 -> 01:00
LON = "Europe/London"  # DST 2026-03-29 01:00 -> 02:00, 2026-10-25 02:00 -> 01:00

DEFAULT = CallingPolicy()
EVERY_DAY = frozenset(range(7))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- policy -------------------------------------------------------------------------------


def test_default_policy_is_nine_to_eight_on_weekdays() -> None:
    assert CallingPolicy.from_strings() == DEFAULT
    assert DEFAULT.window_start == time(9) and DEFAULT.window_end == time(20)
    assert DEFAULT.workdays == {0, 1, 2, 3, 4}
    assert DEFAULT.holidays == frozenset()


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("Mon,Wed,FRI", {0, 2, 4}),
        ("mon-fri,sun", {0, 1, 2, 3, 4, 6}),
        ("sat-mon", {5, 6, 0}),
        ("monday-friday", {0, 1, 2, 3, 4}),
        ("tue", {1}),
        (" mon - sun ", set(range(7))),
    ],
)
def test_workdays_from_strings(text: str, days: set[int]) -> None:
    assert CallingPolicy.from_strings(workdays=text).workdays == days


def test_window_and_holidays_from_strings() -> None:
    policy = CallingPolicy.from_strings(
        window=" 8:30 - 18:45 ", holidays=["2026-12-31", date(2027, 1, 1), " 2027-01-07 "]
    )
    assert (policy.window_start, policy.window_end) == (time(8, 30), time(18, 45))
    assert policy.holidays == {date(2026, 12, 31), date(2027, 1, 1), date(2027, 1, 7)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": "9-18"}, "'9-18' is not of the form HH:MM-HH:MM"),
        ({"window": "25:00-26:00"}, "impossible time of day"),
        ({"window": "09:60-18:00"}, "impossible time of day"),
        ({"window": "20:00-09:00"}, "must start before it ends"),
        ({"window": "09:00-09:00"}, "must start before it ends"),
        ({"workdays": "mon-funday"}, "'funday' is not a day"),
        ({"workdays": "mo"}, "'mo' is not a day"),
        ({"workdays": "mon,,tue"}, "has an empty entry"),
        ({"workdays": ""}, "has an empty entry"),
        ({"holidays": ["31.12.2026"]}, "holiday '31.12.2026' is not a date"),
    ],
)
def test_from_strings_errors_are_clear(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        CallingPolicy.from_strings(**kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_start": time(20), "window_end": time(9)}, "must start before it ends"),
        ({"workdays": frozenset()}, "at least one workday"),
        ({"workdays": frozenset({7})}, "0 (Monday) to 6 (Sunday)"),
        ({"window_start": time(9, tzinfo=UTC)}, "naive times"),
        ({"holidays": frozenset({datetime(2026, 1, 1)})}, "must be dates"),
    ],
)
def test_policy_refuses_nonsense(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        CallingPolicy(**kwargs)
    assert message in str(info.value)


def test_policy_accepts_plain_sets_and_stays_hashable() -> None:
    policy = CallingPolicy(workdays={0, 1}, holidays=[date(2026, 1, 1)])  # type: ignore[arg-type]
    assert policy.workdays == frozenset({0, 1}) and isinstance(policy.workdays, frozenset)
    assert hash(policy) == hash(
        CallingPolicy(workdays=frozenset({1, 0}), holidays=frozenset({date(2026, 1, 1)}))
    )


# --- next_call_time -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("earliest", "tz", "expected", "why"),
    [
        (utc(2026, 11, 23, 5), MSK, utc(2026, 11, 23, 6), "Mon 08:00 MSK waits for 09:00"),
        (utc(2026, 11, 23, 7, 15, 30, 5), MSK, utc(2026, 11, 23, 7, 15, 30, 5), "inside: as is"),
        (utc(2026, 11, 23, 17), MSK, utc(2026, 11, 24, 6), "Mon 20:00 MSK: end is exclusive"),
        (utc(2026, 11, 27, 17), MSK, utc(2026, 11, 30, 6), "Fri evening -> Mon 09:00"),
        (utc(2026, 11, 28, 12), MSK, utc(2026, 11, 30, 6), "Saturday -> Mon 09:00"),
        # Sunday 23:30 UTC is already Monday 09:30 in Vladivostok.
        (utc(2026, 11, 29, 23, 30), VVO, utc(2026, 11, 29, 23, 30), "local Monday"),
        (utc(2026, 11, 23, 10), VVO, utc(2026, 11, 23, 23), "Mon 20:00 VLAT -> Tue 09:00"),
        # Friday 10:00 UTC is 20:00 in Vladivostok: the next window is Monday's.
        (utc(2026, 11, 27, 10), VVO, utc(2026, 11, 29, 23), "Fri 20:00 VLAT -> Mon"),
        (utc(2026, 11, 23, 12), NYC, utc(2026, 11, 23, 14), "Mon 07:00 EST -> 09:00 EST"),
        (utc(2026, 7, 6, 12), NYC, utc(2026, 7, 6, 13), "Mon 08:00 EDT -> 09:00 EDT"),
        (utc(2026, 11, 24, 0, 59), NYC, utc(2026, 11, 24, 0, 59), "Mon 19:59 EST: inside"),
        (utc(2026, 11, 24, 1), NYC, utc(2026, 11, 24, 14), "Mon 20:00 EST -> Tue 09:00"),
    ],
)
def test_next_call_time(earliest: datetime, tz: str, expected: datetime, why: str) -> None:
    result = next_call_time(earliest, tz, DEFAULT)
    assert result == expected, why
    assert result.tzinfo is UTC


def test_holidays_are_skipped() -> None:
    policy = CallingPolicy.from_strings(holidays=["2026-12-31", "2027-01-01"])
    # Wednesday 30 Dec after hours; Thursday and Friday are holidays; then the weekend.
    assert next_call_time(utc(2026, 12, 30, 17), MSK, policy) == utc(2027, 1, 4, 6)
    assert not in_window(utc(2026, 12, 31, 8), MSK, policy)
    assert in_window(utc(2026, 12, 31, 8), MSK, DEFAULT)


def test_a_holiday_is_the_clients_local_date() -> None:
    policy = CallingPolicy.from_strings(holidays=["2026-11-24"])
    # Monday 23:30 UTC is Tuesday 09:30 in Vladivostok, a holiday there.
    assert not in_window(utc(2026, 11, 23, 23, 30), VVO, policy)
    assert next_call_time(utc(2026, 11, 23, 23, 30), VVO, policy) == utc(2026, 11, 24, 23)


def test_input_in_any_zone_output_in_utc() -> None:
    earliest = datetime(2026, 11, 23, 8, 0, tzinfo=timezone(timedelta(hours=3)))
    result = next_call_time(earliest, MSK, DEFAULT)
    assert result == utc(2026, 11, 23, 6) and result.tzinfo is UTC


def test_naive_datetimes_and_unknown_zones_are_refused() -> None:
    with pytest.raises(ValueError, match="aware datetime"):
        next_call_time(datetime(2026, 11, 23, 9), MSK, DEFAULT)
    with pytest.raises(ValueError, match="aware datetime"):
        in_window(datetime(2026, 11, 23, 9), MSK, DEFAULT)
    with pytest.raises(ValueError, match="aware datetime"):
        at_client_time(datetime(2026, 11, 23, 9), MSK, time(15), DEFAULT)
    with pytest.raises(ValueError, match="aware datetime"):
        describe(datetime(2026, 11, 23, 9), MSK)
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        next_call_time(utc(2026, 11, 23), "Mars/Olympus", DEFAULT)
    with pytest.raises(ValueError, match="unknown time zone"):
        next_call_time(utc(2026, 11, 23), "../etc/passwd", DEFAULT)
    with pytest.raises(ValueError, match="naive time"):
        at_client_time(utc(2026, 11, 23), MSK, time(15, tzinfo=UTC), DEFAULT)


def test_a_policy_that_allows_no_day_is_an_error_not_a_hang() -> None:
    mondays = {date(2026, 11, 23) + timedelta(weeks=i) for i in range(60)}
    policy = CallingPolicy(workdays=frozenset({0}), holidays=frozenset(mondays))
    with pytest.raises(ValueError, match="allows no call within 370 days"):
        next_call_time(utc(2026, 11, 23), MSK, policy)


# --- daylight saving time -----------------------------------------------------------------


def test_new_york_spring_forward_window_start_that_does_not_exist() -> None:
    policy = CallingPolicy(window_start=time(2, 30), workdays=EVERY_DAY)
    # Saturday 20:00 EST: the next window opens on Sunday at 02:30, which does not exist;
    # the first instant after the gap is 03:00 EDT = 07:00 UTC.
    result = next_call_time(utc(2026, 3, 8, 1), NYC, policy)
    assert result == utc(2026, 3, 8, 7)
    assert describe(result, NYC) == "Sun 8 Mar 03:00 client time (America/New_York)"
    assert not in_window(utc(2026, 3, 8, 6, 59, 59), NYC, policy)
    # The day after, 02:30 exists again, as EDT.
    assert next_call_time(utc(2026, 3, 9, 1), NYC, policy) == utc(2026, 3, 9, 6, 30)


def test_new_york_fall_back_window_start_that_happens_twice() -> None:
    policy = CallingPolicy(window_start=time(1, 30), workdays=EVERY_DAY)
    # Saturday 21:00 EDT: Sunday 01:30 happens at 05:30 UTC (EDT) and 06:30 UTC (EST).
    result = next_call_time(utc(2026, 11, 1, 1), NYC, policy)
    assert result == utc(2026, 11, 1, 5, 30)
    assert not in_window(utc(2026, 11, 1, 5, 29), NYC, policy)
    # The repeated hour shows 01:00-01:30 on the wall again; the window stays open.
    assert in_window(utc(2026, 11, 1, 6, 10), NYC, policy)
    # And closes at 20:00 EST.
    assert in_window(utc(2026, 11, 2, 0, 59), NYC, policy)
    assert not in_window(utc(2026, 11, 2, 1), NYC, policy)


def test_london_spring_forward() -> None:
    # London jumps 01:00 GMT -> 02:00 BST: 02:30 exists (as BST), 01:30 does not.
    at_0230 = CallingPolicy(window_start=time(2, 30), workdays=EVERY_DAY)
    assert next_call_time(utc(2026, 3, 28, 21), LON, at_0230) == utc(2026, 3, 29, 1, 30)
    at_0130 = CallingPolicy(window_start=time(1, 30), workdays=EVERY_DAY)
    assert next_call_time(utc(2026, 3, 28, 21), LON, at_0130) == utc(2026, 3, 29, 1)


def test_london_fall_back() -> None:
    # London 2026-10-25 02:00 BST -> 01:00 GMT: 01:30 happens at 00:30 and 01:30 UTC.
    policy = CallingPolicy(window_start=time(1, 30), workdays=EVERY_DAY)
    assert next_call_time(utc(2026, 10, 24, 21), LON, policy) == utc(2026, 10, 25, 0, 30)
    assert in_window(utc(2026, 10, 25, 1, 10), LON, policy)  # 01:10 GMT, second time round


def test_window_end_in_the_gap_closes_when_the_gap_ends() -> None:
    policy = CallingPolicy(window_start=time(0), window_end=time(2, 30), workdays=EVERY_DAY)
    assert in_window(utc(2026, 3, 8, 6, 59), NYC, policy)  # 01:59 EST
    assert not in_window(utc(2026, 3, 8, 7), NYC, policy)  # 03:00 EDT


def test_a_window_wholly_inside_the_gap_skips_the_day() -> None:
    policy = CallingPolicy(window_start=time(2, 10), window_end=time(2, 40), workdays=EVERY_DAY)
    # Both ends resolve to 03:00 EDT: no window on 8 March; 9 March at 02:10 EDT.
    assert next_call_time(utc(2026, 3, 8, 5), NYC, policy) == utc(2026, 3, 9, 6, 10)


# --- in_window ----------------------------------------------------------------------------


def test_in_window_edges() -> None:
    assert not in_window(utc(2026, 11, 23, 5, 59, 59), MSK, DEFAULT)
    assert in_window(utc(2026, 11, 23, 6), MSK, DEFAULT)
    assert in_window(utc(2026, 11, 23, 16, 59, 59), MSK, DEFAULT)
    assert not in_window(utc(2026, 11, 23, 17), MSK, DEFAULT)
    assert not in_window(utc(2026, 11, 28, 10), MSK, DEFAULT)  # Saturday
    assert in_window(utc(2026, 11, 28, 10), MSK, CallingPolicy.from_strings(workdays="mon-sat"))


# --- next_business_day_at -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "tz", "at", "expected", "why"),
    [
        (utc(2026, 11, 23, 7), MSK, time(11), utc(2026, 11, 24, 8), "Mon -> Tue 11:00"),
        (utc(2026, 11, 23, 3), MSK, time(11), utc(2026, 11, 24, 8), "strictly after today"),
        (utc(2026, 11, 27, 7), MSK, time(11), utc(2026, 11, 30, 8), "Fri -> Mon"),
        (utc(2026, 11, 28, 7), MSK, time(11), utc(2026, 11, 30, 8), "Sat -> Mon"),
        (utc(2026, 11, 29, 23, 30), VVO, time(11), utc(2026, 12, 1, 1), "local Mon -> Tue"),
        (utc(2026, 11, 23, 7), MSK, time(7), utc(2026, 11, 24, 6), "early -> window start"),
        (utc(2026, 11, 23, 7), MSK, time(21), utc(2026, 11, 24, 6), "late -> same day start"),
        (utc(2026, 11, 23, 7), MSK, time(20), utc(2026, 11, 24, 6), "end is outside"),
        (utc(2026, 11, 23, 15), NYC, time(10), utc(2026, 11, 24, 15), "EST"),
    ],
)
def test_next_business_day_at(
    now: datetime, tz: str, at: time, expected: datetime, why: str
) -> None:
    assert next_business_day_at(now, tz, at, DEFAULT) == expected, why


def test_next_business_day_skips_holidays() -> None:
    policy = CallingPolicy.from_strings(holidays=["2026-12-31", "2027-01-01"])
    assert next_business_day_at(utc(2026, 12, 30, 7), MSK, time(10), policy) == utc(2027, 1, 4, 7)


def test_next_business_day_over_a_dst_change() -> None:
    # Friday 6 March (EST) -> Monday 9 March (EDT): 10:00 local is an hour earlier in UTC.
    assert next_business_day_at(utc(2026, 3, 6, 15), NYC, time(10), DEFAULT) == utc(2026, 3, 9, 14)


# --- at_client_time -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "at", "expected", "why"),
    [
        (utc(2026, 11, 23, 7), time(15), utc(2026, 11, 23, 12), "today, still ahead"),
        (utc(2026, 11, 23, 12), time(15), utc(2026, 11, 23, 12), "exactly now"),
        (utc(2026, 11, 23, 13), time(15), utc(2026, 11, 24, 12), "past: tomorrow"),
        (utc(2026, 11, 27, 13), time(15), utc(2026, 11, 30, 12), "Fri past: Sat -> Mon 15:00"),
        (utc(2026, 11, 28, 7), time(15), utc(2026, 11, 30, 12), "Sat: Mon keeps 15:00"),
        (utc(2026, 11, 23, 2), time(7), utc(2026, 11, 23, 6), "07:00 -> 09:00 same day"),
        (utc(2026, 11, 23, 7), time(7), utc(2026, 11, 24, 6), "07:00 past -> Tue 09:00"),
        (utc(2026, 11, 23, 7), time(21), utc(2026, 11, 24, 6), "21:00 -> Tue 09:00"),
        (utc(2026, 11, 27, 7), time(21), utc(2026, 11, 30, 6), "Fri 21:00 -> Mon 09:00"),
        (utc(2026, 11, 28, 7), time(21), utc(2026, 11, 30, 6), "Sat 21:00 -> Mon 09:00"),
    ],
)
def test_at_client_time_moscow(now: datetime, at: time, expected: datetime, why: str) -> None:
    assert at_client_time(now, MSK, at, DEFAULT) == expected, why


def test_at_client_time_is_the_clients_clock_not_ours() -> None:
    # 10:00 UTC Monday is 20:00 in Vladivostok: "15:00" means Tuesday 15:00 VLAT.
    assert at_client_time(utc(2026, 11, 23, 10), VVO, time(15), DEFAULT) == utc(2026, 11, 24, 5)
    # In New York the same moment is 05:00: 15:00 EST today.
    assert at_client_time(utc(2026, 11, 23, 10), NYC, time(15), DEFAULT) == utc(2026, 11, 23, 20)


def test_at_client_time_over_a_holiday_keeps_the_hour() -> None:
    policy = CallingPolicy.from_strings(holidays=["2026-12-31"])
    assert at_client_time(utc(2026, 12, 30, 13), MSK, time(15), policy) == utc(2027, 1, 1, 12)


# --- describe -----------------------------------------------------------------------------


def test_describe() -> None:
    assert describe(utc(2026, 11, 24, 7), MSK) == "Tue 24 Nov 10:00 client time (Europe/Moscow)"
    assert describe(utc(2026, 11, 24, 7), VVO) == (
        "Tue 24 Nov 17:00 client time (Asia/Vladivostok)"
    )
    assert describe(utc(2026, 1, 1, 3, 5), NYC) == (
        "Wed 31 Dec 22:05 client time (America/New_York)"
    )


# --- properties ---------------------------------------------------------------------------

ZONES = [MSK, VVO, NYC, LON, "Australia/Lord_Howe", "Asia/Kolkata", "America/Sao_Paulo"]
DST_DAYS = [
    utc(2026, 3, 8, 12),
    utc(2026, 11, 1, 12),
    utc(2026, 3, 29, 12),
    utc(2026, 10, 25, 12),
    utc(2026, 4, 5, 12),
    utc(2026, 10, 4, 12),  # Lord Howe: half-hour DST
]


@st.composite
def policies(draw: st.DrawFn) -> CallingPolicy:
    start = draw(st.integers(0, 95))  # quarter hours of the day
    end = draw(st.integers(start + 1, 96))
    as_time = lambda q: time(23, 59) if q == 96 else time(q // 4, q % 4 * 15)  # noqa: E731
    workdays = draw(st.frozensets(st.integers(0, 6), min_size=1))
    holidays = draw(st.frozensets(st.dates(date(2026, 1, 1), date(2027, 2, 1)), max_size=20))
    return CallingPolicy(as_time(start), as_time(end), workdays, holidays)


moments = st.one_of(
    st.datetimes(datetime(2026, 1, 1), datetime(2026, 12, 31)).map(lambda d: d.replace(tzinfo=UTC)),
    st.tuples(st.sampled_from(DST_DAYS), st.integers(-36 * 60, 36 * 60)).map(
        lambda p: p[0] + timedelta(minutes=p[1])
    ),
)


@settings(max_examples=300, deadline=None)
@given(earliest=moments, tz=st.sampled_from(ZONES), policy=policies())
def test_next_call_time_is_the_earliest_allowed_moment(
    earliest: datetime, tz: str, policy: CallingPolicy
) -> None:
    result = next_call_time(earliest, tz, policy)
    assert result >= earliest
    assert result.tzinfo is UTC
    assert in_window(result, tz, policy)
    if result > earliest:
        # It is where a window opens...
        assert not in_window(result - timedelta(seconds=1), tz, policy)
        # ...and no earlier window was skipped (probe every 5 minutes, first 3 days).
        probe = earliest
        while probe < min(result, earliest + timedelta(days=3)):
            assert not in_window(probe, tz, policy), probe
            probe += timedelta(minutes=5)
    # Idempotent: a moment in the window is its own answer.
    assert next_call_time(result, tz, policy) == result


def _changes_offset_near(day: date, zone: ZoneInfo) -> bool:
    offsets = {
        datetime.combine(day + timedelta(days=i), time(0), zone).utcoffset() for i in (-1, 0, 1, 2)
    }
    return len(offsets) > 1


@settings(max_examples=300, deadline=None)
@given(moment=moments, tz=st.sampled_from(ZONES), policy=policies())
def test_in_window_is_the_plain_wall_clock_rule_away_from_dst_changes(
    moment: datetime, tz: str, policy: CallingPolicy
) -> None:
    local = moment.astimezone(ZoneInfo(tz))
    if _changes_offset_near(local.date(), ZoneInfo(tz)):
        return
    expected = (
        local.weekday() in policy.workdays
        and local.date() not in policy.holidays
        and policy.window_start <= local.time().replace(tzinfo=None) < policy.window_end
    )
    assert in_window(moment, tz, policy) == expected


@settings(max_examples=200, deadline=None)
@given(
    now=moments,
    tz=st.sampled_from(ZONES),
    policy=policies(),
    at=st.times().map(lambda t: t.replace(second=0, microsecond=0)),
)
def test_rescheduling_always_lands_in_the_window_and_ahead(
    now: datetime, tz: str, policy: CallingPolicy, at: time
) -> None:
    called_back = at_client_time(now, tz, at, policy)
    assert called_back >= now
    assert in_window(called_back, tz, policy)
    follow_up = next_business_day_at(now, tz, at, policy)
    assert in_window(follow_up, tz, policy)
    zone = ZoneInfo(tz)
    assert follow_up.astimezone(zone).date() > now.astimezone(zone).date()


# --- the last window ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "expected", "why"),
    [
        (utc(2026, 11, 23, 9), (utc(2026, 11, 23, 6), utc(2026, 11, 23, 9)), "open: cut at now"),
        (utc(2026, 11, 23, 18), (utc(2026, 11, 23, 6), utc(2026, 11, 23, 17)), "closed today"),
        (utc(2026, 11, 23, 2), (utc(2026, 11, 20, 6), utc(2026, 11, 20, 17)), "Monday 05:00"),
        (utc(2026, 11, 23, 6), (utc(2026, 11, 20, 6), utc(2026, 11, 20, 17)), "opens this second"),
        (utc(2026, 11, 28, 12), (utc(2026, 11, 27, 6), utc(2026, 11, 27, 17)), "a Saturday"),
    ],
)
def test_last_window(now: datetime, expected: tuple[datetime, datetime], why: str) -> None:
    assert last_window(now, MSK, DEFAULT) == expected, why
    opens, until = expected
    assert in_window(opens, MSK, DEFAULT) and in_window(until - timedelta(seconds=1), MSK, DEFAULT)
