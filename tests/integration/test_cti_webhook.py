"""POST /cti/events through the real app, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlmodel import func, select

from cti_adapter.pipeline import CtiPipeline
from cti_adapter.webhook import MAX_BODY_BYTES, SIGNATURE_HEADER, parse_events, sign
from engine.models import Call, CallEventRecord
from tests.integration.helpers import make_client, make_user

SECRET = "test-pbx-secret"  # the settings fixture's pbx_secret


def event(kind: str = "ringing", call_id: str = "1763884800.42", **over: str) -> dict:
    body = {
        "event": kind,
        "call_id": call_id,
        "direction": "inbound",
        "from": "+7 916 123-45-67",
        "to": "7000",
        "extension": "101",
    }
    body.update(over)
    return body


async def post(client, payload: object, *, secret: str | None = SECRET, raw: bytes | None = None):
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(secret, body)
    return await client.post("/cti/events", data=body, headers=headers)


async def counts(tl) -> tuple[int, int]:
    async with tl.db.session() as s:
        events = (await s.exec(select(func.count()).select_from(CallEventRecord))).one()
        calls = (await s.exec(select(func.count()).select_from(Call))).one()
    return events, calls


async def calls_of(tl, call_id: str) -> list[Call]:
    async with tl.db.session() as s:
        return list(await s.exec(select(Call).where(Call.pbx_call_id == call_id)))


async def test_ringing_is_committed_before_the_202(web_client, tl) -> None:
    operator = await make_user(tl, "olga", extension="101")
    ivan = await make_client(tl, "Ivan Petrov", "8 916 123-45-67")

    resp = await post(web_client, event())

    assert resp.status == 202, await resp.text()
    assert await resp.json() == {"accepted": 1}
    # No waiting: the rows are there the moment the 202 is.
    assert await counts(tl) == (1, 1)
    [call] = await calls_of(tl, "1763884800.42")
    assert (call.operator_id, call.client_id) == (operator.id, ivan.id)
    assert (call.direction, call.number, call.status) == ("inbound", "+79161234567", "ringing")


async def test_a_repeated_event_is_accepted_and_recorded_once(web_client, tl) -> None:
    await make_user(tl, "olga", extension="101")
    first = await post(web_client, event())
    again = await post(web_client, event())
    # Repeats inside one body count as accepted too.
    batch = await post(web_client, [event(), event("answered"), event("answered")])

    assert [first.status, again.status, batch.status] == [202, 202, 202]
    assert (await batch.json()) == {"accepted": 3}
    assert await counts(tl) == (2, 1)
    async with tl.db.session() as s:
        kinds = sorted(r.event for r in await s.exec(select(CallEventRecord)))
    assert kinds == ["answered", "ringing"]


@pytest.mark.parametrize("pop_before_commit", [True, False])
async def test_a_repeat_is_no_news(tl, pop_before_commit: bool) -> None:
    """What the log path counts as recorded drives the call states (and, popping after the
    commit, the pops): a repeated delivery must count as nothing new."""
    await make_user(tl, "olga", extension="101")
    await make_client(tl, "Ivan Petrov", "+7 916 123-45-67")
    pipeline = CtiPipeline(tl, pop_before_commit=pop_before_commit)
    delivery = json.dumps([event(), event("answered")]).encode()

    first = await pipeline.handle(parse_events(delivery))
    again = await pipeline.handle(parse_events(delivery))  # the PBX sent it twice

    assert (first.recorded, first.pops, first.states) == (2, 1, 1)
    # A ringing popped ahead of the commit pops again (each socket drops the second);
    # after the commit, only what was new pops.
    assert (again.recorded, again.pops, again.states) == (0, int(pop_before_commit), 0)


async def test_answer_and_hangup_update_the_call(web_client, tl) -> None:
    await make_user(tl, "olga", extension="101")
    resp = await post(
        web_client,
        [
            event(at="2026-11-23T08:00:00Z"),
            event("answered", at="2026-11-23T08:00:05Z"),
            event("hangup", at="2026-11-23T08:10:05Z"),
        ],
    )
    assert resp.status == 202
    [call] = await calls_of(tl, "1763884800.42")
    assert call.status == "ended"
    assert call.duration_s == 600
    assert call.long_call is True

    # A PBX repeating the hangup later changes nothing.
    resp = await post(web_client, event("hangup", at="2026-11-23T09:00:00Z"))
    assert resp.status == 202
    [call] = await calls_of(tl, "1763884800.42")
    assert call.duration_s == 600


async def test_an_unanswered_call_is_not_long(web_client, tl) -> None:
    resp = await post(web_client, [event(), event("hangup")])
    assert resp.status == 202
    [call] = await calls_of(tl, "1763884800.42")
    assert (call.status, call.duration_s, call.long_call, call.operator_id) == (
        "ended",
        0,
        False,
        None,
    )


async def assert_refused(resp, status: int, field: str | None = None) -> dict:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["message"]
    if field is not None:
        assert body["field"] == field, body
    return body


async def test_bad_input_is_refused_naming_the_problem(web_client, tl) -> None:
    missing = event()
    del missing["extension"]
    cases = [
        (missing, "extension"),
        (event("ringingg"), "event"),
        (event(call_id=""), "call_id"),
        ([event(), event(direction="sideways")], "direction"),
        (event(at="yesterday"), "at"),
    ]
    for payload, field in cases:
        body = await assert_refused(await post(web_client, payload), 400, field)
        assert field in body["message"] or "event" in body["message"]
    await assert_refused(await post(web_client, None, raw=b'{"event": "ringing",'), 400, "body")
    await assert_refused(await post(web_client, None, raw=b"[]"), 400, "body")
    # One bad event in a batch refuses the whole batch: the good one is not recorded either.
    assert await counts(tl) == (0, 0)


async def test_missing_or_wrong_signature_is_401(web_client, tl) -> None:
    body = await assert_refused(await post(web_client, event(), secret=None), 401)
    assert SIGNATURE_HEADER in body["message"]
    await assert_refused(await post(web_client, event(), secret="not-the-secret"), 401)
    # Signed for one body, sent with another.
    raw = json.dumps(event()).encode()
    resp = await web_client.post(
        "/cti/events",
        data=raw.replace(b"101", b"102"),
        headers={SIGNATURE_HEADER: sign(SECRET, raw)},
    )
    await assert_refused(resp, 401)
    assert await counts(tl) == (0, 0)


async def test_oversize_bodies_are_413(web_client, tl) -> None:
    pad = "x" * (MAX_BODY_BYTES + 10)
    raw = json.dumps({**event(), "padding": pad}).encode()
    await assert_refused(await post(web_client, None, raw=raw), 413, "body")

    async def chunked():  # no Content-Length: the limit holds while reading
        for i in range(0, len(raw), 65536):
            yield raw[i : i + 65536]

    resp = await web_client.post(
        "/cti/events", data=chunked(), headers={SIGNATURE_HEADER: sign(SECRET, raw)}
    )
    await assert_refused(resp, 413, "body")
    assert await counts(tl) == (0, 0)
