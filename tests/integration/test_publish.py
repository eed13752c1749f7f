"""Publishing a new workflow version without losing a client that is mid-way."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import col, select

from engine.definitions import current_version, list_versions, publish
from engine.errors import DefinitionError, InvalidInput
from engine.models import Client, FollowUp, FollowUpStatus, TransitionRecord
from engine.runtime import EventRequest
from engine.service import Tierline
from engine.workflow import default_definition_text, load_definition
from tests.integration.helpers import make_client, make_user

OLD, NEW = "call_back_later", "agreed_call_back"
RENAMED = default_definition_text().replace(OLD, NEW)
MOSCOW = ZoneInfo("Europe/Moscow")


async def department(tl: Tierline) -> dict[str, list[int]]:
    """Three clients waiting for an agreed call back, two new leads, one not interested."""
    op = await make_user(tl, "cold1")
    waiting = []
    for hour in (11, 14, 17):
        c = await make_client(tl, f"Waiting {hour}")
        picked = datetime(2026, 11, 24, hour, 0, tzinfo=MOSCOW)
        await tl.apply(EventRequest(c.id, "call_back", actor=op, picked=picked))
        waiting.append(c.id)
    new = [(await make_client(tl, f"New {i}")).id for i in range(2)]
    cold = [(await make_client(tl, "Declined", state="not_interested")).id]
    return {"waiting": waiting, "new": new, "cold": cold}


async def snapshot(tl: Tierline) -> tuple[list[tuple], list[tuple], list[tuple]]:
    async with tl.db.session() as s:
        clients = (
            await s.exec(
                select(
                    Client.id,
                    Client.state,
                    Client.tier,
                    Client.revision,
                    Client.workflow_version_id,
                ).order_by(col(Client.id))
            )
        ).all()
        followups = (
            await s.exec(
                select(
                    FollowUp.id,
                    FollowUp.client_id,
                    FollowUp.state,
                    FollowUp.due_at,
                    FollowUp.owner_id,
                    FollowUp.kind,
                    FollowUp.status,
                ).order_by(col(FollowUp.id))
            )
        ).all()
        versions = [(v.id, v.version, v.is_current) for v in await list_versions(s)]
    return list(clients), list(followups), versions


async def test_renamed_state_needs_a_mapping_naming_the_clients_stranded(tl):
    await department(tl)
    before = await snapshot(tl)
    with pytest.raises(InvalidInput) as err:
        async with tl.db.transaction() as s:
            await publish(s, tl.cache, RENAMED, now=tl.clock.now())
    assert not isinstance(err.value, DefinitionError)  # the definition itself is fine
    assert err.value.details["missing"] == [OLD]
    assert f"{OLD} (3 clients)" in err.value.message
    assert await snapshot(tl) == before


async def test_mapping_must_name_a_live_state_of_the_new_version(tl):
    await department(tl)
    for target in ("nowhere", "do_not_call"):
        with pytest.raises(InvalidInput) as err:
            async with tl.db.transaction() as s:
                await publish(s, tl.cache, RENAMED, now=tl.clock.now(), mapping={OLD: target})
        assert target in err.value.message


async def test_dry_run_counts_the_moves_and_writes_nothing(tl):
    await department(tl)
    before = await snapshot(tl)
    async with tl.db.transaction() as s:
        report = await publish(
            s, tl.cache, RENAMED, now=tl.clock.now(), mapping={OLD: NEW}, dry_run=True
        )
    assert report.version is None
    assert report.moves == {f"{OLD} -> {NEW}": 3}
    assert report.unchanged == 3 and report.missing_mappings == []
    assert await snapshot(tl) == before


async def test_publish_moves_clients_and_their_follow_ups_and_bumps_the_version(tl, clock):
    ids = await department(tl)
    clients_before, followups_before, _ = await snapshot(tl)
    await clock.advance(timedelta(minutes=5))
    async with tl.db.transaction() as s:
        report = await publish(s, tl.cache, RENAMED, now=clock.now(), mapping={OLD: NEW})
    assert report.version == 2 and report.moves == {f"{OLD} -> {NEW}": 3}

    clients, followups, versions = await snapshot(tl)
    async with tl.db.session() as s:
        v2 = await current_version(s)
    assert (v2.version, v2.is_current, v2.digest) == (2, True, load_definition(RENAMED).digest)
    assert [(v, cur) for _, v, cur in versions] == [(2, True), (1, False)]
    assert {c[4] for c in clients} == {v2.id}  # every client now belongs to version 2
    old_clients = {c[0]: c for c in clients_before}
    for cid, state, tier, revision, _ in clients:
        if cid in ids["waiting"]:
            assert (state, tier, revision) == (NEW, "cold", old_clients[cid][3] + 1)
        else:
            assert (state, tier, revision) == old_clients[cid][1:4]

    # Same rows, same due times and owners; only the state they belong to changed.
    old_followups = {f[0]: f for f in followups_before}
    assert [f[0] for f in followups] == list(old_followups)
    for fid, cid, state, due_at, owner_id, kind, status in followups:
        was = old_followups[fid]
        assert (due_at, owner_id, kind, status) == (was[3], was[4], was[5], was[6])
        expected = NEW if cid in ids["waiting"] and status == FollowUpStatus.PENDING else was[2]
        assert state == expected
    assert await tl.check_followups() == []

    # A moved client carries on under version 2.
    moved = ids["waiting"][0]
    applied = await tl.apply(EventRequest(moved, "no_answer"))
    assert (applied.from_state, applied.to_state) == (NEW, "no_answer")
    async with tl.db.session() as s:
        record = await s.get(TransitionRecord, applied.transition_id)
    assert record.workflow_version_id == v2.id
    assert await tl.check_followups() == []


async def test_publish_is_all_or_nothing_with_the_callers_transaction(tl):
    await department(tl)
    before = await snapshot(tl)
    with pytest.raises(RuntimeError):
        async with tl.db.transaction() as s:
            await publish(s, tl.cache, RENAMED, now=tl.clock.now(), mapping={OLD: NEW})
            raise RuntimeError("the audit write failed")
    assert await snapshot(tl) == before
    assert await tl.check_followups() == []


def _line_of(source: str, fragment: str) -> int:
    (line,) = [i for i, text in enumerate(source.splitlines(), 1) if fragment in text]
    return line


async def test_an_invalid_definition_is_refused_with_its_lines(tl):
    await department(tl)
    before = await snapshot(tl)
    broken = default_definition_text().replace(
        "{event: hand_to_sales, from: qualified, to: presentation}",
        "{event: hand_to_sales, from: qualified, to: presentaton}",
    )
    # And a non-final state without a follow-up rule.
    lines = broken.splitlines(keepends=True)
    start = _line_of(broken, "title: Case resolved")  # 'resolved' state, its follow_up follows
    fu_start = next(i for i in range(start, len(lines)) if "follow_up:" in lines[i])
    fu_end = next(i for i in range(fu_start + 1, len(lines)) if "auto_event:" in lines[i])
    broken = "".join(lines[:fu_start] + lines[fu_end + 1 :])
    with pytest.raises(DefinitionError) as err:
        async with tl.db.transaction() as s:
            await publish(s, tl.cache, broken, now=tl.clock.now())
    problems = {(p.line, p.message) for p in err.value.problems}
    typo_line = _line_of(broken, "to: presentaton}")
    assert any(line == typo_line and "presentaton" in msg for line, msg in problems), problems
    resolved_line = _line_of(broken, "  resolved:")
    assert any(line == resolved_line and "no follow_up" in msg for line, msg in problems), problems
    assert err.value.details["problems"][0]["line"] == min(p.line for p in err.value.problems)
    assert await snapshot(tl) == before


async def test_a_rolled_back_publish_does_not_leave_its_definition_in_the_cache(tl):
    # Version ids are the cache key. A publish rolled back after it cached its definition
    # must not make the next version (which may get the same id) read as the rolled-back one.
    await department(tl)
    with pytest.raises(RuntimeError):
        async with tl.db.transaction() as s:
            await publish(s, tl.cache, RENAMED, now=tl.clock.now(), mapping={OLD: NEW})
            raise RuntimeError("rolled back")
    retitled = default_definition_text().replace("title: New lead", "title: Fresh lead")
    async with tl.db.transaction() as s:
        report = await publish(s, tl.cache, retitled, now=tl.clock.now())
    assert report.version == 2
    async with tl.db.session() as s:
        v2 = await current_version(s)
        defn = await tl.cache.get(s, v2.id)
    assert defn.digest == v2.digest
    assert OLD in defn.states and defn.states["new"].title == "Fresh lead"
