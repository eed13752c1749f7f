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


async def test_a_pop_finds_the_caller_and_reads_the_card_in_one_statement(tl: Tierline) -> None:
    """The screen pop's read (lookup, then card) gives the card read by the client's id; on
    SQLite's hot path it is a single statement (each one costs the reader thread a round trip
    for the GIL: engine/card.py)."""
    from cti_adapter.directory import Operator
    from cti_adapter.pops import lookup_sync, screen_pop_sync

    client_id = await _client(tl)
    tz = tl.settings.timezone
    viewer = Operator(id=1, role="supervisor", tier=None, extension="999")

    def pop(conn):  # type: ignore[no-untyped-def]
        found = lookup_sync(conn, "+74951234567", "RU")
        return screen_pop_sync(conn, tl.cache, viewer, "c1", found, default_tz=tz)

    def traced(conn):  # type: ignore[no-untyped-def]
        if conn.dialect.driver != "pysqlite":
            return pop(conn), None
        statements: list[str] = []
        raw = conn.connection.driver_connection
        raw.set_trace_callback(statements.append)
        try:
            return pop(conn), statements
        finally:
            raw.set_trace_callback(None)

    await tl.db.read(pop)  # the workflow definition cached, as on every pop but the first
    message, statements = await tl.db.read(traced)
    by_id = await tl.db.read(lambda conn: card_sync(conn, tl.cache, client_id, default_tz=tz))
    assert message["client"] == by_id
    assert message["matches"] == [] and message["number"] == "+74951234567"
    if tl.db.is_sqlite:
        assert statements is not None and len(statements) == 1, statements


async def test_a_shared_number_reads_heads_but_no_card(tl: Tierline) -> None:
    """Two clients with one number: the pop lists both and reads neither's card lists."""
    from cti_adapter.directory import Operator
    from cti_adapter.pops import lookup_sync, screen_pop_sync
    from engine.card import match_cards_sync

    first = await _client(tl)
    second = await tl.add_client(NewClient(name="Shared Line", phones=["+7 495 123-45-67"]))
    alone = await tl.add_client(NewClient(name="Own Line", phones=["+7 916 555-00-02"]))
    # One client with one number twice: one match, its card read by id.
    twice = await tl.add_client(
        NewClient(name="Twice", phones=["+7 916 555-00-03", "8 (916) 555-00-03"])
    )
    viewer = Operator(id=1, role="supervisor", tier=None, extension="999")

    def read(conn):  # type: ignore[no-untyped-def]
        shared = match_cards_sync(conn, "+74951234567", limit=10)
        own = match_cards_sync(conn, "+79165550002", limit=10)
        found = lookup_sync(conn, "+74951234567", "RU")
        tz = tl.settings.timezone
        pop = screen_pop_sync(conn, tl.cache, viewer, "c2", found, default_tz=tz)
        found = lookup_sync(conn, "+79165550003", "RU")
        pop_twice = screen_pop_sync(conn, tl.cache, viewer, "c3", found, default_tz=tz)
        return shared, own, pop, pop_twice, card_sync(conn, tl.cache, twice.id, default_tz=tz)

    shared, own, message, pop_twice, card_twice = await tl.db.read(read)
    assert pop_twice["client"] == card_twice and card_twice["name"] == "Twice"
    assert [p["e164"] for p in card_twice["phones"]] == ["+79165550003"] * 2  # type: ignore[union-attr]
    assert [r.id for r in shared] == [first, second.id]
    assert [r.id for r in own] == [alone.id]
    assert message["client"] is None
    assert [(m["id"], m["name"]) for m in message["matches"]] == [  # type: ignore[index]
        (first, "Hot Card"),
        (second.id, "Shared Line"),
    ]
    if tl.db.is_sqlite:  # the lists are read only for a number that is one client's
        assert [r.phones_json for r in shared] == [None, None]
        assert own[0].phones_json is not None


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
