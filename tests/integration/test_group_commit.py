"""Group commit on SQLite and PostgreSQL: many events, one commit, each event all or nothing."""

from __future__ import annotations

import pytest
from sqlmodel import col, select

from engine.errors import Conflict, EventNotAllowed, NotFound
from engine.models import Call, Client, FollowUp, FollowUpStatus, KpiEvent, TransitionRecord
from engine.runtime import Applied, CallWrapUp, EventRequest
from tests.integration.helpers import make_client, make_user


async def history(tl, client_id: int) -> list[str]:
    async with tl.db.session() as s:
        return list(
            (
                await s.exec(
                    select(TransitionRecord.event)
                    .where(TransitionRecord.client_id == client_id)
                    .order_by(col(TransitionRecord.id))
                )
            ).all()
        )


async def followups(tl, client_id: int) -> list[FollowUp]:
    async with tl.db.session() as s:
        return list(
            (
                await s.exec(
                    select(FollowUp)
                    .where(FollowUp.client_id == client_id)
                    .order_by(col(FollowUp.id))
                )
            ).all()
        )


async def row(tl, client_id: int) -> Client:
    async with tl.db.session() as s:
        return await s.get(Client, client_id)


async def test_refused_events_take_their_slot_and_the_others_commit(tl):
    op = await make_user(tl, "cold1")
    a, b, c = [await make_client(tl, f"C{i}") for i in range(3)]
    results = await tl.runtime.apply_many(
        [
            EventRequest(a.id, "no_answer", actor=op),
            EventRequest(b.id, "payment_received", actor=op),  # not from "new"
            EventRequest(999_999, "no_answer", actor=op),  # no such client
            EventRequest(c.id, "not_interested", actor=op, expected_revision=0),
            EventRequest(b.id, "no_answer", actor=op, expected_revision=5),  # stale
        ]
    )
    assert [type(r) for r in results] == [Applied, EventNotAllowed, NotFound, Applied, Conflict]
    assert results[4].details == {"client_id": b.id, "state": "new", "revision": 0}
    assert (await row(tl, a.id)).state == "no_answer"
    assert (await row(tl, c.id)).state == "not_interested"
    b_row = await row(tl, b.id)
    assert (b_row.state, b_row.revision) == ("new", 0)  # nothing of b was written
    assert await history(tl, b.id) == ["enroll"]
    assert [f.status for f in await followups(tl, b.id)] == [FollowUpStatus.PENDING]
    # What the results report is what was committed.
    applied = results[0]
    assert applied.revision == (await row(tl, a.id)).revision == 1
    (pending,) = [f for f in await followups(tl, a.id) if f.status == FollowUpStatus.PENDING]
    assert pending.id == applied.followup.id and pending.due_at == applied.followup.due_at
    assert pending.owner_id == applied.followup.owner_id
    assert (await row(tl, a.id)).owner_id == op.id == applied.owner_id
    async with tl.db.session() as s:
        t = await s.get(TransitionRecord, applied.transition_id)
    assert (t.client_id, t.event, t.actor_id) == (a.id, "no_answer", op.id)
    assert await tl.check_followups() == []


async def test_events_for_one_client_in_one_group_see_each_other(tl, clock):
    client = await make_client(tl)
    results = await tl.runtime.apply_many(
        [
            EventRequest(client.id, "no_answer", expected_revision=0),
            EventRequest(client.id, "no_answer", expected_revision=1),
            EventRequest(client.id, "no_answer", expected_revision=1),  # stale by now
            EventRequest(client.id, "call_back", expected_revision=2),
        ]
    )
    assert [getattr(r, "revision", type(r).__name__) for r in results] == [1, 2, "Conflict", 3]
    assert [r.to_state for r in results if isinstance(r, Applied)] == [
        "no_answer", "no_answer", "call_back_later",
    ]  # fmt: skip
    assert results[1].followup.attempt == 2  # the second no_answer counted on the first
    final = await row(tl, client.id)
    assert (final.state, final.attempts, final.revision) == ("call_back_later", 0, 3)
    assert await history(tl, client.id) == ["enroll", "no_answer", "no_answer", "call_back"]
    rows = await followups(tl, client.id)
    # The enrolment's, then one per applied event; only the last one is still owed, the
    # others closed at the group's instant, as one event after the other would leave them.
    assert [f.status for f in rows] == ["done", "done", "done", "pending"]
    assert [f.state for f in rows[1:]] == ["no_answer", "no_answer", "call_back_later"]
    assert all(f.closed_at == clock.now() for f in rows[:3])
    assert rows[3].id == results[3].followup.id
    assert await tl.check_followups() == []


async def test_kpi_rows_name_their_transitions_and_wrap_up_lands_on_the_call(tl, clock):
    sales = await make_user(tl, "sales1", tier="sales")
    a = await make_client(tl, "Invoice me", state="presentation")
    b = await make_client(tl, "Qualified", state="qualified")
    async with tl.db.transaction() as s:
        call = Call(
            pbx_call_id="pbx-1", direction="outbound", extension="101", number="+79160000001",
            started_at=clock.now(), operator_id=sales.id,
        )  # fmt: skip
        s.add(call)
    results = await tl.runtime.apply_many(
        [
            EventRequest(
                a.id, "send_invoice", actor=sales, call_id=call.id, note="sent",
                wrap_up=CallWrapUp((call.id,), {"greeting": True, "offer": False}, "sent"),
            ),
            EventRequest(b.id, "hand_to_sales"),
        ]
    )  # fmt: skip
    assert [r.kpi for r in results] == ["invoice", "presentation"]
    async with tl.db.session() as s:
        kpis = (await s.exec(select(KpiEvent).order_by(col(KpiEvent.id)))).all()
        stored = await s.get(Call, call.id)
        t = await s.get(TransitionRecord, results[0].transition_id)
    assert [(k.kind, k.client_id, k.transition_id, k.user_id, k.tier) for k in kpis] == [
        ("invoice", a.id, results[0].transition_id, sales.id, "sales"),
        ("presentation", b.id, results[1].transition_id, None, "cold"),
    ]
    assert (stored.outcome, stored.checklist, stored.notes, stored.client_id) == (
        "send_invoice", {"greeting": True, "offer": False}, "sent", a.id,
    )  # fmt: skip
    assert (t.call_id, t.note) == (call.id, "sent")
    assert await tl.check_followups() == []


async def test_nothing_is_written_unless_the_callers_transaction_commits(tl):
    client = await make_client(tl)
    with pytest.raises(RuntimeError):
        async with tl.db.transaction() as s:
            results = await tl.runtime.apply_many_in(s, [EventRequest(client.id, "no_answer")])
            assert isinstance(results[0], Applied)
            raise RuntimeError("crash before the commit")
    assert (await row(tl, client.id)).revision == 0
    assert await history(tl, client.id) == ["enroll"]
    assert len(await followups(tl, client.id)) == 1
    assert await tl.check_followups() == []


async def test_a_group_entering_a_final_state_leaves_no_follow_up_owed(tl):
    client = await make_client(tl)
    results = await tl.runtime.apply_many(
        [EventRequest(client.id, "no_answer"), EventRequest(client.id, "do_not_call")]
    )
    assert results[1].followup is None
    assert [f.status for f in await followups(tl, client.id)] == ["done", "done"]
    assert await tl.check_followups() == []


async def test_ids_in_the_results_name_the_rows_written_for_them(tl):
    clients = [await make_client(tl, f"Id {i}") for i in range(12)]
    events = ["no_answer", "call_back", "not_interested"]
    reqs = [EventRequest(c.id, events[i % 3]) for i, c in enumerate(clients)]
    reqs += [EventRequest(c.id, "offer_accepted") for c in clients[::4]]  # a second for some
    results = await tl.runtime.apply_many(reqs)
    assert all(isinstance(r, Applied) for r in results)
    async with tl.db.session() as s:
        for r in results:
            t = await s.get(TransitionRecord, r.transition_id)
            f = await s.get(FollowUp, r.followup.id)
            assert (t.client_id, t.event, t.to_state) == (r.client_id, r.event, r.to_state)
            assert (f.client_id, f.state, f.due_at) == (r.client_id, r.to_state, r.followup.due_at)
    assert await tl.check_followups() == []
