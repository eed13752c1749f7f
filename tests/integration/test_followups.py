"""Follow-ups at the engine level: client time zones, DST, holidays, escalation, dispatch.

Every test runs on SQLite and PostgreSQL. Time only moves when a test moves the FakeClock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlmodel import col, select

from engine.bus import LocalBus
from engine.card import card
from engine.clock import FakeClock
from engine.definitions import DefinitionCache, publish
from engine.followups.check import Violation
from engine.followups.dispatcher import Dispatcher
from engine.followups.escalation import sweep_escalations
from engine.models import AuditEntry, Client, FollowUp, FollowUpStatus, TransitionRecord
from engine.runtime import EventRequest, Runtime
from engine.service import Tierline
from engine.settings import Settings
from engine.storage.database import Database
from engine.workflow import default_definition_text
from tests.integration.helpers import make_client, make_user

NY = "America/New_York"
VLADIVOSTOK = "Asia/Vladivostok"
DAY_MS = 24 * 3600 * 1000


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(moment: datetime, tz: str) -> datetime:
    return moment.astimezone(ZoneInfo(tz))


async def pending(tl: Tierline, client_id: int) -> FollowUp:
    async with tl.db.session() as s:
        (fu,) = (
            await s.exec(
                select(FollowUp).where(
                    FollowUp.client_id == client_id, FollowUp.status == FollowUpStatus.PENDING
                )
            )
        ).all()
        return fu


async def followup(tl: Tierline, followup_id: int) -> FollowUp:
    async with tl.db.session() as s:
        row = await s.get(FollowUp, followup_id)
        assert row is not None
        return row


async def audit(tl: Tierline, action: str) -> list[AuditEntry]:
    async with tl.db.session() as s:
        return list(
            await s.exec(
                select(AuditEntry).where(AuditEntry.action == action).order_by(col(AuditEntry.id))
            )
        )


async def card_of(tl: Tierline, client_id: int) -> dict:
    async with tl.db.session() as s:
        return await card(s, tl.cache, client_id, default_tz=tl.settings.timezone)


def listen(tl: Tierline, channel: str = "followups") -> list[dict]:
    heard: list[dict] = []
    tl.bus.subscribe(lambda ch, msg: heard.append(msg) if ch == channel else None)
    return heard


@pytest.fixture
async def engine_at(
    settings: Settings, db: Database
) -> AsyncIterator[Callable[..., asyncio.Future[Tierline]]]:
    """Another engine on the same database, with its own clock and settings overrides."""
    built: list[Tierline] = []

    async def build(start: datetime, **overrides: object) -> Tierline:
        service = Tierline.build(
            settings.model_copy(update=overrides), clock=FakeClock(start), bus=LocalBus(), db=db
        )
        await service.start(timers=False)
        built.append(service)
        return service

    yield build  # type: ignore[misc]
    for service in built:
        await service.timer.stop()


# ---- calling windows in the client's own zone ---------------------------------------------


async def test_vladivostok_and_new_york_clients_are_called_in_their_own_windows(tl, clock):
    # Monday 06:00 UTC: 16:00 in Vladivostok, 01:00 in New York.
    vlad = await make_client(tl, "Vlad", "+7 916 100-00-01", timezone=VLADIVOSTOK)
    ny = await make_client(tl, "Nyla", "+7 916 100-00-02", timezone=NY)
    assert (await pending(tl, vlad.id)).due_at == clock.now()  # 16:00 there: call now
    ny_first = await pending(tl, ny.id)
    assert ny_first.due_at == utc(2026, 11, 23, 14, 0)  # 09:00 EST, not 01:00
    assert (await card_of(tl, ny.id))["next_followup"]["when"] == (
        "Mon 23 Nov 09:00 client time (America/New_York)"
    )

    # 10:30 UTC: 20:30 in Vladivostok (closed), 05:30 in New York. "No answer" waits 2h.
    await clock.advance(timedelta(hours=4, minutes=30))
    await tl.apply(EventRequest(vlad.id, "no_answer"))
    await tl.apply(EventRequest(ny.id, "no_answer"))
    vlad_due = (await pending(tl, vlad.id)).due_at
    ny_due = (await pending(tl, ny.id)).due_at
    assert vlad_due == utc(2026, 11, 23, 23, 0)  # Tuesday 09:00 in Vladivostok
    assert local(vlad_due, VLADIVOSTOK).strftime("%a %H:%M") == "Tue 09:00"
    assert ny_due == utc(2026, 11, 23, 14, 0)  # Monday 09:00 in New York
    for due, tz in ((vlad_due, VLADIVOSTOK), (ny_due, NY)):
        assert 9 <= local(due, tz).hour < 20
    assert await tl.check_followups() == []


async def test_timezone_comes_from_the_number_when_the_client_has_none(engine_at):
    # 03:30 UTC: 06:30 in Moscow, 08:30 in Yekaterinburg, 22:30 (Sunday) in New York.
    moscow_tl = await engine_at(utc(2026, 11, 23, 3, 30))
    us = await make_client(moscow_tl, "Sam", "+1 212 736 5000")
    mobile = await make_client(moscow_tl, "Masha", "+7 916 200-00-01")
    us_due = (await pending(moscow_tl, us.id)).due_at
    assert us_due == utc(2026, 11, 23, 14, 0)
    assert local(us_due, NY).strftime("%a %H:%M") == "Mon 09:00"
    # A Russian mobile spans 16 zones: the department's own zone is used, not a guess.
    mobile_fu = await pending(moscow_tl, mobile.id)
    assert mobile_fu.due_at == utc(2026, 11, 23, 6, 0)  # 09:00 Moscow
    assert (await card_of(moscow_tl, mobile.id))["timezone"] == "Europe/Moscow"
    assert (await card_of(moscow_tl, us.id))["timezone"] == NY

    # The same kind of number, with the department in Yekaterinburg: 09:00 there.
    ural_tl = await engine_at(utc(2026, 11, 23, 3, 30), timezone="Asia/Yekaterinburg")
    ural = await make_client(ural_tl, "Ural", "+7 916 200-00-02")
    ural_fu = await pending(ural_tl, ural.id)
    assert ural_fu.due_at == utc(2026, 11, 23, 4, 0)
    assert (await card_of(ural_tl, ural.id))["timezone"] == "Asia/Yekaterinburg"


async def test_call_me_back_at_15_is_15_in_the_clients_zone(tl, clock):
    op = await make_user(tl, "cold1")
    ny = await make_client(tl, "Nyla", timezone=NY)
    vlad = await make_client(tl, "Vlad", timezone=VLADIVOSTOK)
    at_ny = datetime(2026, 11, 23, 15, 0, tzinfo=ZoneInfo(NY))
    # It is already 16:00 in Vladivostok: the client agreed to tomorrow 15:00.
    at_vlad = datetime(2026, 11, 24, 15, 0, tzinfo=ZoneInfo(VLADIVOSTOK))
    await tl.apply(EventRequest(ny.id, "call_back", actor=op, picked=at_ny))
    await tl.apply(EventRequest(vlad.id, "call_back", actor=op, picked=at_vlad))
    ny_fu = await pending(tl, ny.id)
    vlad_fu = await pending(tl, vlad.id)
    assert ny_fu.due_at == utc(2026, 11, 23, 20, 0)
    assert vlad_fu.due_at == utc(2026, 11, 24, 5, 0)
    assert local(ny_fu.due_at, NY).hour == 15 and local(vlad_fu.due_at, VLADIVOSTOK).hour == 15
    assert "agreed with the client" in ny_fu.reason
    assert ny_fu.owner_id == op.id  # a personal promise: the operator's own follow-up


async def test_one_day_follow_up_across_the_us_dst_change(engine_at):
    # Saturday 31 October 2026, 08:30 EDT; New York falls back on Sunday 1 November.
    every_day = await engine_at(utc(2026, 10, 31, 12, 30), workdays="mon-sun")
    client = await make_client(every_day, "Nyla", "+1 212 736 5001")
    assert (await pending(every_day, client.id)).due_at == utc(2026, 10, 31, 13, 0)  # 09:00 EDT
    # "Call back" with no time agreed: 1d later is Sunday 07:30 EST, before the window;
    # the window opens at 09:00 EST, which is 14:00 UTC now (13:00 UTC the day before).
    await every_day.apply(EventRequest(client.id, "call_back"))
    due = (await pending(every_day, client.id)).due_at
    assert due == utc(2026, 11, 1, 14, 0)
    assert local(due, NY).strftime("%a %H:%M %Z") == "Sun 09:00 EST"

    # Weekdays only: Friday 14:00 EDT + 1d is Saturday, so Monday 09:00 EST.
    weekdays = await engine_at(utc(2026, 10, 30, 18, 0))
    other = await make_client(weekdays, "Sam", "+1 212 736 5002")
    await weekdays.apply(EventRequest(other.id, "call_back"))
    due = (await pending(weekdays, other.id)).due_at
    assert due == utc(2026, 11, 2, 14, 0)
    assert local(due, NY).strftime("%a %H:%M %Z") == "Mon 09:00 EST"


async def test_weekends_and_holidays_from_settings_are_skipped(engine_at):
    friday_evening = utc(2026, 11, 27, 16, 0)  # 19:00 Moscow; +2h is past the window
    plain = await engine_at(friday_evening)
    a = await make_client(plain, "A", "+7 495 123-45-01")
    await plain.apply(EventRequest(a.id, "no_answer"))
    assert (await pending(plain, a.id)).due_at == utc(2026, 11, 30, 6, 0)  # Monday 09:00

    holiday = await engine_at(friday_evening, holidays=[date(2026, 11, 30)])
    b = await make_client(holiday, "B", "+7 495 123-45-02")
    await holiday.apply(EventRequest(b.id, "no_answer"))
    due = (await pending(holiday, b.id)).due_at
    assert due == utc(2026, 12, 1, 6, 0)  # Tuesday 09:00: Monday is a holiday
    assert (await card_of(holiday, b.id))["next_followup"]["when"].startswith(
        "Tue 1 Dec 09:00 client time"
    )

    # US client, New Year's Day off: no answer at 18:30 on Thursday 31 December, +2h is
    # past the window, Friday is a holiday: Monday 4 January.
    ny_eve = await engine_at(utc(2026, 12, 31, 23, 30), holidays=[date(2027, 1, 1)])
    c = await make_client(ny_eve, "C", "+1 212 736 5003")
    await ny_eve.apply(EventRequest(c.id, "no_answer"))
    assert local((await pending(ny_eve, c.id)).due_at, NY).strftime("%a %d %H:%M") == (
        "Mon 04 09:00"
    )


# ---- escalation ---------------------------------------------------------------------------


async def test_personal_follow_up_escalates_to_tier_then_supervisor(tl, clock):
    op = await make_user(tl, "cold1")
    client = await make_client(tl)
    heard = listen(tl)
    await tl.apply(EventRequest(client.id, "call_back", actor=op))
    fu = await pending(tl, client.id)
    assert (fu.owner_id, fu.escalation_level, fu.escalation_steps) == (op.id, 0, "tier,supervisor")
    assert fu.escalate_at == fu.due_at + timedelta(hours=1)  # grace 1h

    async def sweep() -> int:
        return await sweep_escalations(tl.db, tl.bus, clock)

    assert await sweep() == 0
    clock.set(fu.escalate_at - timedelta(minutes=1))
    assert await sweep() == 0  # still within its grace

    await clock.advance(timedelta(minutes=2))
    assert await sweep() == 1
    row = await followup(tl, fu.id)
    assert (row.owner_id, row.escalation_level, row.status) == (None, 1, FollowUpStatus.PENDING)
    assert await sweep() == 0  # the next step waits another grace period

    await clock.advance(timedelta(hours=1))
    assert await sweep() == 1
    row = await followup(tl, fu.id)
    assert (row.escalation_level, row.escalate_at) == (2, None)
    await clock.advance(timedelta(days=3))
    assert await sweep() == 0  # nothing above the supervisor

    steps = [(e.detail["step"], e.detail["level"]) for e in await audit(tl, "followup.escalated")]
    assert steps == [("tier", 1), ("supervisor", 2)]
    entry = (await audit(tl, "followup.escalated"))[0]
    assert entry.detail["followup_id"] == fu.id and entry.detail["previous_owner"] == op.id
    assert entry.target == f"client:{client.id}"
    assert [(m["type"], m["step"]) for m in heard] == [
        ("follow_up_escalated", "tier"),
        ("follow_up_escalated", "supervisor"),
    ]
    assert await tl.check_followups() == []


async def test_follow_up_done_within_its_grace_does_not_escalate(tl, clock):
    op = await make_user(tl, "cold1")
    client = await make_client(tl)
    await tl.apply(EventRequest(client.id, "call_back", actor=op))
    fu = await pending(tl, client.id)
    clock.set(fu.due_at + timedelta(minutes=30))
    await tl.apply(EventRequest(client.id, "no_answer", actor=op))  # the call was made
    clock.set(fu.escalate_at + timedelta(minutes=5))
    assert await sweep_escalations(tl.db, tl.bus, clock) == 0
    row = await followup(tl, fu.id)
    assert (row.status, row.escalation_level, row.owner_id) == (FollowUpStatus.DONE, 0, op.id)
    assert await audit(tl, "followup.escalated") == []


# ---- dispatching -------------------------------------------------------------------------


async def test_follow_ups_due_while_down_all_fire_late_exactly_once(tl, clock):
    calls = [await make_client(tl, f"Call {i}") for i in range(4)]
    hand_offs = [await make_client(tl, f"Hand {i}", state="qualified") for i in range(3)]
    heard = listen(tl)
    await clock.advance(timedelta(days=3))  # the process was down since Monday 09:00

    stats = await tl.dispatcher.run_due()
    assert (stats.announced, stats.applied, stats.failed) == (4, 3, 0)
    assert stats.lateness_ms == [3 * DAY_MS] * 7
    async with tl.db.session() as s:
        fired = (await s.exec(select(FollowUp).where(col(FollowUp.fired_at).is_not(None)))).all()
    assert len(fired) == 7
    assert all(f.fired_at == clock.now() and f.lateness_ms == 3 * DAY_MS for f in fired)
    assert sorted(m["client_id"] for m in heard) == sorted(c.id for c in calls)
    for c in hand_offs:
        async with tl.db.session() as s:
            assert (await s.get(Client, c.id)).state == "presentation"

    again = await tl.dispatcher.run_due()
    assert (again.announced, again.applied) == (0, 0)
    assert len(heard) == 4
    assert await tl.check_followups() == []


async def test_two_dispatchers_at_once_fire_each_follow_up_once(tl, clock, backend):
    calls = [await make_client(tl, f"Call {i}") for i in range(40)]
    hand_offs = [await make_client(tl, f"Hand {i}", state="qualified") for i in range(20)]
    await clock.advance(timedelta(days=1))
    heard = listen(tl)
    # Two nodes: on PostgreSQL each has its own connection pool (SKIP LOCKED decides who
    # claims what); SQLite is one process, so the second dispatcher shares the database.
    other_db = Database(tl.db.url) if backend == "postgres" else tl.db
    other = Dispatcher(
        other_db,
        Runtime(other_db, DefinitionCache(), clock, tl.policy, tl.settings.timezone),
        tl.bus,
        clock,
        batch=3,
    )
    mine = Dispatcher(tl.db, tl.runtime, tl.bus, clock, batch=3)
    try:
        a, b = await asyncio.gather(mine.run_due(), other.run_due())
    finally:
        if other_db is not tl.db:
            await other_db.dispose()
    assert a.announced + b.announced == 40
    assert a.applied + b.applied == 20 and a.failed + b.failed == 0
    announced = [m["followup_id"] for m in heard]
    assert len(announced) == len(set(announced)) == 40
    assert sorted(m["client_id"] for m in heard) == sorted(c.id for c in calls)
    async with tl.db.session() as s:
        handed = (
            await s.exec(
                select(TransitionRecord.client_id).where(TransitionRecord.event == "hand_to_sales")
            )
        ).all()
    assert sorted(handed) == sorted(c.id for c in hand_offs)
    assert await tl.check_followups() == []


async def test_an_operator_and_an_automatic_event_on_one_client_at_once_do_not_deadlock(tl, clock):
    # The dispatcher locks the follow-up row and then the client row; an operator's outcome
    # must take them in the same order, or PostgreSQL aborts one side with a deadlock.
    op = await make_user(tl, "cold1")
    for round_ in range(3):
        clients = [await make_client(tl, f"Q{round_}-{i}", state="qualified") for i in range(50)]
        await clock.advance(timedelta(minutes=1))
        results = await asyncio.gather(
            tl.dispatcher.run_due(),
            *(tl.apply(EventRequest(c.id, "do_not_call", actor=op)) for c in clients),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert errors == [], errors[:3]
        async with tl.db.session() as s:
            states = (
                await s.exec(
                    select(Client.state).where(col(Client.id).in_([c.id for c in clients]))
                )
            ).all()
        assert set(states) == {"do_not_call"}
    assert await tl.check_followups() == []


async def test_not_interested_client_is_recycled_after_the_quiet_period(tl, clock):
    client = await make_client(tl, state="not_interested")
    fu = await pending(tl, client.id)
    assert (fu.auto_event, fu.due_at) == ("recycle", clock.now() + timedelta(days=90))
    await clock.advance(timedelta(days=89))
    assert (await tl.dispatcher.run_due()).applied == 0
    await clock.advance(timedelta(days=2))
    stats = await tl.dispatcher.run_due()
    assert stats.applied == 1 and stats.lateness_ms[0] == DAY_MS
    async with tl.db.session() as s:
        row = await s.get(Client, client.id)
        assert (row.state, row.tier) == ("new", "cold")
        events = (
            await s.exec(
                select(TransitionRecord.event).where(TransitionRecord.client_id == client.id)
            )
        ).all()
    assert events == ["enroll", "recycle"]
    done = await followup(tl, fu.id)
    assert done.status == FollowUpStatus.DONE and done.lateness_ms == DAY_MS
    assert (await pending(tl, client.id)).kind == "call_back"
    assert await tl.check_followups() == []


async def test_publish_restamps_pending_followups_whose_rule_changed(tl, clock):
    client = await make_client(tl, state="not_interested")
    fu = await pending(tl, client.id)
    # Version 2 renames the recycling event. The state stays, so no mapping is asked for,
    # but its pending follow-up must fire the new version's event, at the same time.
    source = default_definition_text().replace("auto_event: recycle", "auto_event: revive")
    source = source.replace("{event: recycle, from:", "{event: revive, from:")
    async with tl.db.transaction() as s:
        await publish(s, tl.cache, source, now=clock.now())
    moved = await followup(tl, fu.id)
    assert (moved.auto_event, moved.due_at) == ("revive", fu.due_at)
    await clock.advance(timedelta(days=91))
    stats = await tl.dispatcher.run_due()
    assert (stats.applied, stats.failed) == (1, 0)
    async with tl.db.session() as s:
        assert (await s.get(Client, client.id)).state == "new"


async def test_automatic_event_the_definition_no_longer_allows_goes_to_the_supervisor(tl, clock):
    client = await make_client(tl, state="not_interested")
    fu = await pending(tl, client.id)
    # A follow-up whose event the client's state does not allow (as a hand-edited row, or
    # a definition changed under it, would leave): the dispatcher must not lose it.
    async with tl.db.transaction() as s:
        row = await s.get(FollowUp, fu.id)
        row.auto_event = "recycle_later"
        s.add(row)

    await clock.advance(timedelta(days=91))
    stats = await tl.dispatcher.run_due()
    assert (stats.applied, stats.failed) == (0, 1)
    row = await followup(tl, fu.id)
    assert row.status == FollowUpStatus.PENDING  # not lost
    assert row.escalation_level == 2 and row.fired_at == clock.now()
    assert "automatic 'recycle_later' failed" in row.reason
    (entry,) = await audit(tl, "followup.auto_failed")
    assert entry.detail["followup_id"] == fu.id and entry.target == f"client:{client.id}"
    async with tl.db.session() as s:
        assert (await s.get(Client, client.id)).state == "not_interested"

    again = await tl.dispatcher.run_due()
    assert (again.applied, again.failed) == (0, 0)  # not retried in a loop, not re-audited
    assert len(await audit(tl, "followup.auto_failed")) == 1
    assert await tl.check_followups() == []
    # The supervisor's live view lists it: a person has to decide what happens next.
    from engine.presence import attention_followups

    async with tl.db.session() as s:
        attention = await attention_followups(s, clock.now())
    assert [(a["followup_id"], a["automatic_failed"]) for a in attention] == [(fu.id, True)]


# ---- the invariant -----------------------------------------------------------------------


async def test_invariant_reports_a_deliberately_broken_row(tl, clock):
    op = await make_user(tl, "cold1")
    fine = await make_client(tl, "Fine")
    broken = await make_client(tl, "Broken")
    final = await make_client(tl, "Final")
    await tl.apply(EventRequest(fine.id, "call_back", actor=op))
    await tl.apply(EventRequest(final.id, "do_not_call", actor=op))
    assert await tl.check_followups() == []

    victim = await pending(tl, broken.id)
    async with tl.db.transaction() as s:
        await s.exec(text("DELETE FROM followups WHERE id = :id").bindparams(id=victim.id))
        # A final-state client that still owes a call breaks it the other way.
        s.add(
            FollowUp(
                client_id=final.id,
                kind="call_back",
                state="do_not_call",
                tier="cold",
                due_at=clock.now(),
                created_at=clock.now(),
            )
        )
    problems = await tl.check_followups()
    assert sorted(problems, key=lambda v: v.client_id) == [
        Violation(client_id=broken.id, state="new", pending=0),
        Violation(client_id=final.id, state="do_not_call", pending=1),
    ]
    assert "exactly one" in str(problems[0]) or "exactly one" in str(problems[1])
