"""Decide the next follow-up for a client entering a state, and say why.

Pure: given the rule, the client and the time, it returns the row to insert. The
calling window applies to calls, in the client's own time zone; automatic events
(recycling, hand-offs, giving up) fire at their exact time, windows do not apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from engine import calendar, phones
from engine.calendar import CallingPolicy
from engine.models import FollowUp, FollowUpStatus
from engine.workflow import FollowUpRule, StateDef


class PlannedClient(Protocol):
    """What the planner reads of a client: a Client row, or the importer's stand-in for
    rows not yet inserted."""

    @property
    def id(self) -> int | None: ...

    @property
    def timezone(self) -> str | None: ...


@dataclass(frozen=True)
class PlanInput:
    state: StateDef
    client: PlannedClient
    attempts: int  # consecutive unanswered attempts, this one included
    now: datetime
    policy: CallingPolicy
    default_tz: str
    owner_id: int | None  # the client's operator, if any
    picked: datetime | None = None  # a time the operator picked ("call me back at 15:00")
    primary_e164: str | None = None


def client_timezone(client: PlannedClient, primary_e164: str | None, default_tz: str) -> str:
    """The client's own zone: as recorded, else derived from the number, else ours."""
    if client.timezone:
        return client.timezone
    if primary_e164:
        tz = phones.timezone_for(primary_e164, prefer=default_tz)
        if tz:
            return tz
    return default_tz


def plan(p: PlanInput) -> FollowUp | None:
    rule = p.state.follow_up
    if p.state.final or rule is None:
        return None
    tz = client_timezone(p.client, p.primary_e164, p.default_tz)
    auto_event = rule.auto_event
    if rule.max_attempts and p.attempts >= rule.max_attempts and rule.on_max_attempts:
        auto_event = rule.on_max_attempts
        due = p.now
        why = f"{p.attempts} unanswered attempts of {rule.max_attempts}: {auto_event} now"
    elif auto_event:
        due = p.now + (rule.due.after or timedelta(0))
        why = f"{auto_event} automatically {_human(rule.due.after)} after entering {p.state.name}"
    else:
        due, why = _call_time(rule, p, tz)
    window = f"{p.policy.window_start:%H:%M}–{p.policy.window_end:%H:%M}"
    if not auto_event:
        why += f"; calling window {window} client time"
    return FollowUp(
        client_id=p.client.id,  # type: ignore[arg-type]
        status=FollowUpStatus.PENDING,
        kind=rule.kind,
        state=p.state.name,
        tier=p.state.tier,
        owner_id=p.owner_id if rule.owner == "operator" and not auto_event else None,
        due_at=due,
        escalate_at=None if auto_event else due + rule.grace,
        escalation_steps=",".join(rule.escalation),
        grace_s=int(rule.grace.total_seconds()),
        attempt=p.attempts,
        auto_event=auto_event,
        reason=why[:500],  # the due time itself is shown beside it, in the client's zone
        created_at=p.now,
    )


def _call_time(rule: FollowUpRule, p: PlanInput, tz: str) -> tuple[datetime, str]:
    nth = f"attempt {p.attempts + 1}" if p.attempts else "first call"
    if rule.due.mode == "operator_picks" and p.picked is not None:
        due = calendar.next_call_time(max(p.picked, p.now), tz, p.policy)
        return due, f"{rule.kind.replace('_', ' ')} at the time agreed with the client"
    if rule.due.mode == "next_business_day" and rule.due.at is not None:
        due = calendar.next_business_day_at(p.now, tz, rule.due.at, p.policy)
        return due, f"{rule.kind.replace('_', ' ')} next business day, {nth}"
    after = rule.due.after if rule.due.mode == "after" else rule.due.default_after
    due = calendar.next_call_time(p.now + (after or timedelta(0)), tz, p.policy)
    return due, f"{rule.kind.replace('_', ' ')} {_human(after)} after the last step, {nth}"


def _human(delta: timedelta | None) -> str:
    if not delta:
        return "at once"
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{mins}m" if mins else ""]
    return "".join(parts)
