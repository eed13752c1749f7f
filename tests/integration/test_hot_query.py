"""The screen pop's raw-cursor reads (engine/storage/hot.py) give exactly what SQLAlchemy gives.

On SQLite, ``Database.read`` runs the card's selects straight through the sqlite3 cursor;
the async API runs the same selects through SQLAlchemy (aiosqlite, or asyncpg on
PostgreSQL). Both must produce the same card: aware UTC datetimes, JSON as dicts,
booleans as booleans, the pending follow-up found through its partial index.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.card import card, card_sync
from engine.clients import NewClient, match_rows_sync, summary_row_sync
from engine.models import Call, ClientNote
from engine.runtime import EventRequest
from engine.service import Tierline
from tests.integration.helpers import make_user


async def _client(tl: Tierline) -> int:
    owner = await make_user(tl, "owner1", extension="401")
    client = await tl.add_client(
        NewClient(
            name="Hot Card",
            phones=["+7 916 444-00-01", "+7 495 123-45-67"],
            company="Hot LLC",
            custom={"industry": "retail", "employees": 70, "tags": ["a", "b"]},
            owner_id=owner.id,
        )
    )
    assert client.id is not None
    await tl.apply(EventRequest(client_id=client.id, event="no_answer", actor=owner, note="busy"))
    await tl.apply(EventRequest(client_id=client.id, event="call_back", actor=owner, note="later"))
    # Several calls and notes, so the card's lists show their order; a time with no
    # microseconds prints without them, one with prints all six digits.
    base = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    async with tl.db.transaction() as session:
        for n, (minutes, micro) in enumerate([(5, 0), (50, 123456), (20, 500)]):
            at = base + timedelta(minutes=minutes, microseconds=micro)
            session.add(
                Call(
                    pbx_call_id=f"hot{n}", extension="401", direction="inbound",
                    client_id=client.id, number="+79164440001", status="ended", started_at=at,
                    duration_s=60 * n, outcome=["no_answer", None, "call_back"][n],
                )
            )  # fmt: skip
            session.add(
                ClientNote(client_id=client.id, author_id=owner.id, at=at, text=f'«note» {n} "q"')
            )
    return client.id


async def test_raw_card_equals_the_sqlalchemy_card(tl: Tierline) -> None:
    client_id = await _client(tl)
    tz = tl.settings.timezone
    raw = await tl.db.read(lambda conn: card_sync(conn, tl.cache, client_id, default_tz=tz))
    async with tl.db.session() as session:
        via_orm = await card(session, tl.cache, client_id, default_tz=tz)
    assert raw == via_orm
    assert raw["custom"] == {"industry": "retail", "employees": 70, "tags": ["a", "b"]}
    assert raw["do_not_call"] is False
    assert raw["owner"] == "Owner1"
    assert [p["e164"] for p in raw["phones"]] == ["+79164440001", "+74951234567"]
    followup = raw["next_followup"]
    assert isinstance(followup, dict)
    due = datetime.fromisoformat(str(followup["due_at"]))
    assert due.tzinfo is not None and due.utcoffset() == UTC.utcoffset(due)
    history = raw["history"]
    assert isinstance(history, list)
    assert [(h["event"], h["note"]) for h in history][:2] == [
        ("call_back", "later"),
        ("no_answer", "busy"),
    ]
    # Newest first; the last calls by their start, the notes as written.
    assert [c["started_at"] for c in raw["calls"]] == [  # type: ignore[union-attr]
        "2026-11-23T10:20:00.123456+00:00",
        "2026-11-23T09:50:00.000500+00:00",
        "2026-11-23T09:35:00+00:00",
    ]
    assert [c["outcome"] for c in raw["calls"]] == [None, "call_back", "no_answer"]  # type: ignore[union-attr]
    assert [n["text"] for n in raw["notes"]] == [  # type: ignore[union-attr]
        '«note» 2 "q"', '«note» 1 "q"', '«note» 0 "q"',
    ]  # fmt: skip


async def test_one_statement_card_equals_the_card_of_five(tl: Tierline) -> None:
    """On SQLite's hot path the card is one statement; the same connection reading it as the
    head and four selects (as PostgreSQL does) gives the same card."""
    from engine import card as card_module

    client_id = await _client(tl)
    tz = tl.settings.timezone

    def both(conn):  # type: ignore[no-untyped-def]
        one = card_sync(conn, tl.cache, client_id, default_tz=tz)
        head = card_module._CARD_HEAD.first(conn, {"cid": client_id})
        lists = [part.query.rows(conn, {"cid": client_id}) for part in card_module._LISTS]
        defn = tl.cache.get_sync(conn, head.workflow_version_id)
        return one, card_module._card(head, *lists, defn, tz), conn.dialect.driver

    one, five, driver = await tl.db.read(both)
    assert one == five
    if tl.db.is_sqlite:
        assert driver == "pysqlite"  # the one-statement path is the one that ran


async def test_raw_matches_and_summary_rows(tl: Tierline) -> None:
    client_id = await _client(tl)
    rows = await tl.db.read(lambda conn: match_rows_sync(conn, "+74951234567"))
    assert [(r.id, r.name, r.company, r.tier) for r in rows] == [
        (client_id, "Hot Card", "Hot LLC", "cold")
    ]
    assert await tl.db.read(lambda conn: match_rows_sync(conn, "+70000000000")) == []
    row = await tl.db.read(lambda conn: summary_row_sync(conn, client_id))
    assert row is not None and row.state == rows[0].state
    assert await tl.db.read(lambda conn: summary_row_sync(conn, 10**9)) is None


async def test_raw_call_log_writes_read_back_through_the_orm(tl: Tierline) -> None:
    """The call log's INSERT/UPDATE go through the raw cursor on SQLite: what they store must
    read back through SQLAlchemy exactly (UTC datetimes, booleans, JSON)."""
    from datetime import timedelta

    from sqlmodel import select

    from cti_adapter.events import CallEvent, CallEventType, Direction
    from cti_adapter.pipeline import CtiPipeline
    from engine.models import Call, CallEventRecord

    await make_user(tl, "olga", extension="101")
    t0 = datetime(2026, 11, 23, 9, 30, 15, 123456, tzinfo=UTC)
    times = {"ringing": t0, "answered": t0 + timedelta(seconds=5)}
    times["hangup"] = times["answered"] + timedelta(minutes=10, seconds=1)
    pipeline = CtiPipeline(tl)
    for kind, at in times.items():
        event = CallEvent(
            event=CallEventType(kind), call_id="raw1", direction=Direction.INBOUND,
            from_number="+7 916 444-00-09", to_number="7000", extension="101", at=at,
        )  # fmt: skip
        await pipeline.handle([event])
    async with tl.db.session() as session:
        call = (await session.exec(select(Call).where(Call.pbx_call_id == "raw1"))).one()
        records = (await session.exec(select(CallEventRecord))).all()
    assert (call.started_at, call.answered_at, call.ended_at) == (
        times["ringing"],
        times["answered"],
        times["hangup"],
    )
    assert (call.status, call.duration_s, call.long_call) == ("ended", 601, True)
    assert call.checklist == {} and call.number == "+79164440009"
    assert sorted((r.event, r.at) for r in records) == sorted(times.items())
