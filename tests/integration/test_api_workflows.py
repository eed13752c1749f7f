"""Workflow administration by API: read, validate, publish with migration (real app, both DBs)."""

from __future__ import annotations

from sqlmodel import col, select

from engine.models import AuditEntry, Client, FollowUp, FollowUpStatus
from engine.workflow import default_definition_text
from tests.conftest import sign_in
from tests.integration.helpers import make_client, make_user

RENAMED = "agreed_call_back"


def _renamed_source() -> str:
    """The default definition with call_back_later renamed: clients there need a mapping."""
    return default_definition_text().replace("call_back_later", RENAMED)


def _line_of(text: str, starts: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith(starts))


async def test_reading_the_published_definition(tl, web_client):
    await make_user(tl, "admin", role="admin", tier=None)
    await make_user(tl, "boss", role="supervisor", tier=None)
    await make_user(tl, "cold1", tier="cold")

    await sign_in(web_client, "cold1")
    assert (await web_client.get("/api/workflows/current")).status == 403

    for who in ("boss", "admin"):
        await sign_in(web_client, who)
        resp = await web_client.get("/api/workflows/current")
        assert resp.status == 200
        body = await resp.json()
        assert (body["name"], body["version"]) == ("telemarketing", 1)
        assert body["source"] == default_definition_text()
        assert body["diagram"].startswith("stateDiagram-v2")
        assert "s_new --> s_no_answer : no_answer" in body["diagram"]
        states = {s["name"]: s for s in body["states"]}
        assert states["new"]["tier"] == "cold" and states["paid"]["kpi"] == "payment"
        assert states["do_not_call"]["final"] is True and body["published_at"]

    versions = await (await web_client.get("/api/workflows/versions")).json()
    assert [v["version"] for v in versions["versions"]] == [1]
    one = await (await web_client.get("/api/workflows/versions/1")).json()
    assert one["source"] == default_definition_text() and one["is_current"] is True
    assert (await web_client.get("/api/workflows/versions/9")).status == 404


async def test_validate_names_the_exact_line(tl, web_client):
    await make_user(tl, "admin", role="admin", tier=None)
    await make_user(tl, "boss", role="supervisor", tier=None)
    await sign_in(web_client, "admin")
    source = default_definition_text()
    tier_line = _line_of(source, "  no_answer:") + 1

    # A YAML syntax error: a badly indented key right under no_answer's tier.
    lines = source.splitlines(keepends=True)
    lines.insert(tier_line, "   bad indent: x\n")
    resp = await web_client.post("/api/workflows/validate", json={"source": "".join(lines)})
    assert resp.status == 200
    body = await resp.json()
    assert body["ok"] is False and body["diagram"] is None
    assert [p["line"] for p in body["problems"]] == [tier_line + 1]
    assert "YAML syntax error" in body["problems"][0]["message"]

    # Well-formed but wrong: an undeclared tier, reported at its own line; still drawable.
    lines = source.splitlines(keepends=True)
    lines[tier_line - 1] = "    tier: moon\n"
    body = await (
        await web_client.post("/api/workflows/validate", json={"source": "".join(lines)})
    ).json()
    assert body["ok"] is False and body["diagram"].startswith("stateDiagram-v2")
    assert [(p["line"], "moon" in p["message"]) for p in body["problems"]] == [(tier_line, True)]
    assert "-    tier: cold\n+    tier: moon\n" in body["diff"]

    body = await (
        await web_client.post("/api/workflows/validate", json={"source": _renamed_source()})
    ).json()
    assert body["ok"] is True and body["problems"] == []
    assert f"s_{RENAMED}" in body["diagram"] and body["diff"].startswith("--- version 1")

    await sign_in(web_client, "boss")
    refused = await web_client.post("/api/workflows/validate", json={"source": source})
    assert refused.status == 403


async def test_publish_maps_clients_mid_way_and_keeps_their_follow_ups(tl, web_client):
    admin = await make_user(tl, "admin", role="admin", tier=None)
    cold = await make_user(tl, "cold1", tier="cold")
    waiting = await make_client(tl, "Agreed a time", owner=cold)
    untouched = await make_client(tl, "Still new")
    await sign_in(web_client, "cold1")
    resp = await web_client.post(
        f"/api/clients/{waiting.id}/events",
        json={"event": "call_back", "follow_up_at": "2026-11-25T16:30:00+03:00"},
    )
    assert resp.status == 200
    async with tl.db.session() as s:
        before = (
            await s.exec(
                select(FollowUp).where(
                    FollowUp.client_id == waiting.id, FollowUp.status == FollowUpStatus.PENDING
                )
            )
        ).one()

    assert (
        await web_client.post("/api/workflows/publish", json={"source": _renamed_source()})
    ).status == 403
    await sign_in(web_client, "admin")
    check = await (
        await web_client.post("/api/workflows/validate", json={"source": _renamed_source()})
    ).json()
    assert check["needs_mapping"] == {"call_back_later": 1}

    missing = await web_client.post("/api/workflows/publish", json={"source": _renamed_source()})
    assert missing.status == 400
    err = await missing.json()
    assert err["missing"] == ["call_back_later"] and err["counts"] == {"call_back_later": 1}
    assert "call_back_later (1 client)" in err["message"]

    mapping = {"call_back_later": RENAMED}
    dry = await web_client.post(
        "/api/workflows/publish",
        json={"source": _renamed_source(), "mapping": mapping, "dry_run": True},
    )
    assert dry.status == 200, await dry.text()
    report = await dry.json()
    assert report["dry_run"] is True and report["version"] is None
    assert report["moves"] == {f"call_back_later -> {RENAMED}": 1} and report["unchanged"] == 1
    current = await (await web_client.get("/api/workflows/current")).json()
    assert current["version"] == 1  # a dry run writes nothing
    async with tl.db.session() as s:
        assert (await s.get(Client, waiting.id)).state == "call_back_later"

    real = await web_client.post(
        "/api/workflows/publish",
        json={"source": _renamed_source(), "mapping": mapping, "note": "clearer name"},
    )
    assert real.status == 200, await real.text()
    assert (await real.json())["version"] == 2
    current = await (await web_client.get("/api/workflows/current")).json()
    assert current["version"] == 2 and current["note"] == "clearer name"
    assert current["published_by"] == "admin"
    versions = await (await web_client.get("/api/workflows/versions")).json()
    assert [(v["version"], v["is_current"]) for v in versions["versions"]] == [
        (2, True),
        (1, False),
    ]

    async with tl.db.session() as s:
        moved = await s.get(Client, waiting.id)
        after = (
            await s.exec(
                select(FollowUp).where(
                    FollowUp.client_id == waiting.id, FollowUp.status == FollowUpStatus.PENDING
                )
            )
        ).one()
        other = await s.get(Client, untouched.id)
        audit = (
            await s.exec(
                select(AuditEntry)
                .where(col(AuditEntry.action).like("workflow.publish%"))
                .order_by(AuditEntry.id)
            )
        ).all()
    assert (moved.state, moved.tier, moved.owner_id) == (RENAMED, "cold", cold.id)
    assert (after.id, after.due_at, after.state) == (before.id, before.due_at, RENAMED)
    assert other.state == "new" and other.workflow_version_id == moved.workflow_version_id
    assert [(a.action, a.actor_id) for a in audit] == [
        ("workflow.publish.dry_run", admin.id),
        ("workflow.publish", admin.id),
    ]

    # The moved client carries on under the new version.
    await sign_in(web_client, "cold1")
    card = await (await web_client.get(f"/api/clients/{waiting.id}")).json()
    assert card["state"] == RENAMED and card["next_followup"]["due_at"] == before.due_at.isoformat()
    resp = await web_client.post(
        f"/api/clients/{waiting.id}/events",
        json={"event": "no_answer", "expected_revision": card["revision"]},
    )
    assert resp.status == 200 and (await resp.json())["applied"]["from_state"] == RENAMED


async def test_publish_refuses_broken_definitions_and_bad_mappings(tl, web_client):
    await make_user(tl, "admin", role="admin", tier=None)
    await sign_in(web_client, "admin")
    broken = default_definition_text().replace("initial: new", "initial: nowhere")
    resp = await web_client.post("/api/workflows/publish", json={"source": broken})
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "DefinitionError"
    assert body["problems"][0]["line"] == _line_of(broken, "initial:")

    renamed = default_definition_text().replace("name: telemarketing", "name: other")
    resp = await web_client.post("/api/workflows/publish", json={"source": renamed})
    assert resp.status == 400 and "telemarketing" in (await resp.json())["message"]

    onto_final = await web_client.post(
        "/api/workflows/publish",
        json={"source": default_definition_text(), "mapping": {"new": "do_not_call"}},
    )
    assert onto_final.status == 400
    wrong_type = await web_client.post(
        "/api/workflows/publish", json={"source": default_definition_text(), "mapping": ["x"]}
    )
    assert wrong_type.status == 400 and (await wrong_type.json())["field"] == "mapping"
    versions = await (await web_client.get("/api/workflows/versions")).json()
    assert len(versions["versions"]) == 1
