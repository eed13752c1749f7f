"""The screen pop's raw-cursor reads (engine/storage/hot.py) give exactly what SQLAlchemy gives.

On SQLite, ``Database.read`` runs the card's selects straight through the sqlite3 cursor;
the async API runs the same selects through SQLAlchemy (aiosqlite, or asyncpg on
PostgreSQL). Both must produce the same card: aware UTC datetimes, JSON as dicts,
booleans as booleans, the pending follow-up found through its partial index.
"""

from __future__ import annotations

from datetime import UTC, datetime

from engine.clients import NewClient, card, card_sync, match_rows_sync, summary_row_sync
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
    assert isinstance(history, list) and history[0]["event"] == "no_answer"
    assert history[0]["note"] == "busy"


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
