"""The runtime on real SQLite and PostgreSQL: one event, all of it or none of it."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlmodel import col, select

from engine.errors import Conflict, EventNotAllowed
from engine.models import Client, FollowUp, FollowUpStatus, KpiEvent, TransitionRecord
from engine.runtime import EventRequest
from tests.integration.helpers import make_client, make_user


async def pending(tl, client_id):
    async with tl.db.session() as s:
        return (
            await s.exec(
                select(FollowUp).where(
                    FollowUp.client_id == client_id, FollowUp.status == FollowUpStatus.PENDING
                )
            )
        ).all()


async def test_new_client_enters_initial_state_with_one_followup(tl):
    client = await make_client(tl)
    assert (client.state, client.tier) == ("new", "cold")
    fus = await pending(tl, client.id)
    assert len(fus) == 1
    assert fus[0].due_at >= tl.clock.now()
    assert "client time" in fus[0].reason
    assert await tl.check_followups() == []


async def test_lead_walks_from_cold_through_sales_to_key_accounts_and_support(tl, clock):
    cold = await make_user(tl, "cold1", tier="cold")
    sales = await make_user(tl, "sales1", tier="sales")
    key = await make_user(tl, "key1", tier="key_account")
    support = await make_user(tl, "support1", tier="support")
    client = await make_client(tl)

    async def step(event, actor=None):
        applied = await tl.apply(EventRequest(client_id=client.id, event=event, actor=actor))
        await tl.dispatcher.run_due()
        return applied

    await step("no_answer", cold)
    await step("offer_accepted", cold)
    # qualified hands itself to sales automatically when its follow-up fires.
    async with tl.db.session() as s:
        assert (await s.get(Client, client.id)).state == "presentation"
    await step("send_invoice", sales)
    await step("payment_received", sales)
    await clock.advance(timedelta(days=2))
    await tl.dispatcher.run_due()
    async with tl.db.session() as s:
        row = await s.get(Client, client.id)
        assert (row.state, row.tier) == ("satisfaction_check", "key_account")
    await step("satisfied", key)
    await step("problem", key)
    await step("resolve", support)
    async with tl.db.session() as s:
        row = await s.get(Client, client.id)
        assert (row.state, row.tier) == ("resolved", "support")
        history = (
            await s.exec(
                select(TransitionRecord.to_state)
                .where(TransitionRecord.client_id == client.id)
                .order_by(col(TransitionRecord.id))
            )
        ).all()
        kpis = (await s.exec(select(KpiEvent.kind).order_by(col(KpiEvent.id)))).all()
    assert history == [
        "new",
        "no_answer",
        "qualified",
        "presentation",
        "invoice_sent",
        "paid",
        "satisfaction_check",
        "upsell",
        "case_open",
        "resolved",
    ]
    assert kpis == ["presentation", "invoice", "payment"]
    assert await tl.check_followups() == []


async def test_event_not_allowed_names_the_allowed_events(tl):
    client = await make_client(tl)
    with pytest.raises(EventNotAllowed) as err:
        await tl.apply(EventRequest(client_id=client.id, event="payment_received"))
    assert "no_answer" in err.value.details["allowed"]
    async with tl.db.session() as s:
        assert (await s.get(Client, client.id)).revision == 0


async def test_two_operators_at_once_one_wins_the_other_conflicts(tl):
    a = await make_user(tl, "cold1")
    b = await make_user(tl, "cold2")
    client = await make_client(tl)
    results = await asyncio.gather(
        tl.apply(EventRequest(client.id, "no_answer", actor=a, expected_revision=0)),
        tl.apply(EventRequest(client.id, "not_interested", actor=b, expected_revision=0)),
        return_exceptions=True,
    )
    conflicts = [r for r in results if isinstance(r, Conflict)]
    wins = [r for r in results if not isinstance(r, Exception)]
    assert len(conflicts) == 1 and len(wins) == 1
    async with tl.db.session() as s:
        history = (
            await s.exec(select(TransitionRecord).where(TransitionRecord.client_id == client.id))
        ).all()
    assert len(history) == 2  # enrol + the winner; nothing of the loser
    assert len(await pending(tl, client.id)) == 1


async def test_max_unanswered_attempts_moves_the_client_on(tl):
    op = await make_user(tl, "cold1")
    client = await make_client(tl)
    async with tl.db.session() as s:
        defn = await tl.cache.get(s, client.workflow_version_id)
    rule = defn.states["no_answer"].follow_up
    for _ in range(rule.max_attempts):
        await tl.apply(EventRequest(client.id, "no_answer", actor=op))
    (fu,) = await pending(tl, client.id)
    assert fu.auto_event == rule.on_max_attempts
    await tl.dispatcher.run_due()
    async with tl.db.session() as s:
        assert (await s.get(Client, client.id)).state == defn.transition_for(
            "no_answer", rule.on_max_attempts
        ).target


async def test_applied_reports_the_revision_that_was_committed(tl):
    client = await make_client(tl)
    applied = await tl.apply(EventRequest(client.id, "no_answer"))
    async with tl.db.session() as s:
        assert applied.revision == (await s.get(Client, client.id)).revision == 1
    again = await tl.apply(EventRequest(client.id, "no_answer", expected_revision=applied.revision))
    assert again.revision == 2


async def test_group_commit_applies_successive_events_to_one_client(tl):
    client = await make_client(tl)
    results = await tl.runtime.apply_many(
        [
            EventRequest(client.id, "no_answer"),
            EventRequest(client.id, "call_back"),
            EventRequest(client.id, "payment_received"),
            EventRequest(client.id, "not_interested"),
        ]
    )
    assert [getattr(r, "to_state", type(r).__name__) for r in results] == [
        "no_answer",
        "call_back_later",
        "EventNotAllowed",
        "not_interested",
    ]
    async with tl.db.session() as s:
        assert (await s.get(Client, client.id)).revision == 3
    assert await tl.check_followups() == []
