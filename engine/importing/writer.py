"""Writing one batch: new clients enrolled in bulk, duplicates merged or reported."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, literal_column
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.definitions import current_version
from engine.followups.planner import PlanInput, client_timezone, plan
from engine.importing.options import ImportOptions
from engine.importing.rows import ParsedRow, RowProblem
from engine.models import (
    Client,
    ClientPhone,
    FollowUp,
    ImportJob,
    ImportRowError,
    TransitionRecord,
)

if TYPE_CHECKING:
    from engine.service import Tierline

QUEUE_CHANNEL = "queues"  # engine.service.QUEUE_CHANNEL (not imported: no import cycle)

# ---- writing a batch ------------------------------------------------------------------


log = logging.getLogger("tierline.import")


@dataclass
class _Merge:
    client_id: int
    numbers: list[tuple[str, str, str]] = field(default_factory=list)
    rows: list[ParsedRow] = field(default_factory=list)


class BatchWriter:
    """Commits one batch: clients, phones, enrolment, follow-ups, refusals and the job."""

    def __init__(
        self, tl: Tierline, job: ImportJob, options: ImportOptions, file: str, phone_label: str
    ) -> None:
        self.tl = tl
        self.phone_label = phone_label
        self._merged_into_new = 0
        self.job = job
        self.options = options
        self.note = f"imported from {file}"[:2000]
        self._earliest_due: datetime | None = None
        self._tiers: set[str] = set()

    async def commit(
        self, rows: list[ParsedRow], problems: list[RowProblem], *, last_row: int, seen: int
    ) -> None:
        tl, now = self.tl, self.tl.clock.now()
        problems = list(problems)
        async with tl.db.transaction() as session:
            conn = await session.connection()
            wanted = list({n[0] for r in rows for n in r.numbers})
            owners: dict[str, int] = {}
            for e164, client_id in (
                (
                    await conn.execute(
                        select(ClientPhone.e164, ClientPhone.client_id)
                        .where(col(ClientPhone.e164).in_(wanted))
                        .order_by(col(ClientPhone.client_id))
                    )
                ).all()
                if wanted
                else []
            ):
                owners.setdefault(e164, client_id)
            self._merged_into_new = 0
            new, merges = self._sort(rows, owners, problems)
            created = await self._insert_new(session, new, now)
            merged = await self._merge(session, merges, now) + self._merged_into_new
            if problems:
                await conn.execute(
                    insert(ImportRowError),
                    [
                        {
                            "job_id": self.job.id,
                            "row": p.row,
                            "column": p.column[:200],
                            "message": p.message[:1000],
                        }
                        for p in problems
                    ],
                )
            job = await session.get(ImportJob, self.job.id)
            assert job is not None
            job.total_rows += seen
            job.committed_rows += seen
            job.last_row = last_row
            job.created += created
            job.merged += merged
            job.error_count += len(problems)
            session.add(job)
        # Only once the commit returned: a failed batch leaves the job as it was.
        self.job = job

    def _sort(
        self, rows: list[ParsedRow], owners: dict[str, int], problems: list[RowProblem]
    ) -> tuple[list[ParsedRow], dict[int, _Merge]]:
        """New clients, and rows that are someone already in the base or earlier in the file."""
        new: list[ParsedRow] = []
        in_batch: dict[str, ParsedRow] = {}
        merges: dict[int, _Merge] = {}
        report = self.options.on_duplicate == "report"
        for row in rows:
            known = next(((n, owners[n[0]]) for n in row.numbers if n[0] in owners), None)
            earlier = next(((n, in_batch[n[0]]) for n in row.numbers if n[0] in in_batch), None)
            if known is None and earlier is None:
                new.append(row)
                for n in row.numbers:
                    in_batch[n[0]] = row
                continue
            if report:
                number, other = known or earlier  # type: ignore[misc]
                who = (
                    f"client {other}" if known is not None else f"row {other.row} of this file"  # type: ignore[union-attr]
                )
                message = f"duplicate: {number[0]} already belongs to {who}"
                problems.append(RowProblem(row.row, self.phone_label, message))
                continue
            if known is not None:
                merge = merges.setdefault(known[1], _Merge(known[1]))
                merge.rows.append(row)
                for n in row.numbers:
                    if n[0] not in owners and all(n[0] != m[0] for m in merge.numbers):
                        merge.numbers.append(n)
                        owners[n[0]] = known[1]
            else:
                self._merged_into_new += 1
                target = earlier[1]  # type: ignore[index]
                _fill(target, row)
                for n in row.numbers:
                    if n[0] not in in_batch and n[0] not in owners:
                        target.numbers.append(n)
                        in_batch[n[0]] = target
        return new, merges

    async def _insert_new(self, session: AsyncSession, rows: list[ParsedRow], now: datetime) -> int:
        if not rows:
            return 0
        tl = self.tl
        conn = await session.connection()
        version = await current_version(session)
        defn = await tl.cache.get(session, version.id)  # type: ignore[arg-type]
        state = defn.initial
        tier = defn.tier_of(state)
        self._tiers.add(tier)
        ids = await _reserve_ids(conn, len(rows))
        await conn.execute(
            insert(Client),
            [
                {
                    "id": cid,
                    "name": r.name,
                    "company": r.company,
                    "email": r.email,
                    "timezone": r.timezone,
                    "segment_class": r.segment_class,
                    "custom": r.custom,
                    "owner_id": None,
                    "source": r.source or self.options.source,
                    "do_not_call": False,
                    "created_at": now,
                    "updated_at": now,
                    "workflow_version_id": version.id,
                    "state": state,
                    "tier": tier,
                    "attempts": 0,
                    "revision": 0,
                    "last_contact_at": None,
                    "last_outcome": None,
                }
                for cid, r in zip(ids, rows, strict=True)
            ],
        )
        await conn.execute(
            insert(ClientPhone),
            [
                {"client_id": cid, "e164": n[0], "raw": n[1], "label": n[2]}
                for cid, r in zip(ids, rows, strict=True)
                for n in r.numbers
            ],
        )
        await conn.execute(
            insert(TransitionRecord),
            [
                {
                    "client_id": cid,
                    "at": now,
                    "actor_id": self.options.actor_id,
                    "event": "enroll",
                    "from_state": "",
                    "to_state": state,
                    "from_tier": "",
                    "to_tier": tier,
                    "workflow_version_id": version.id,
                    "call_id": None,
                    "kpi": None,
                    "note": self.note,
                }
                for cid in ids
            ],
        )
        # The first follow-up, planned exactly as enroll_in plans it. Its time and wording
        # depend only on the client's zone, so each zone is planned once per batch.
        templates: dict[str, dict[str, object] | None] = {}
        followups = []
        for cid, r in zip(ids, rows, strict=True):
            tz = r.timezone or _number_zone(r.numbers[0][0], tl.settings.timezone)
            if tz not in templates:
                fu = plan(
                    PlanInput(
                        state=defn.states[state],
                        client=_Stub(tz),
                        attempts=0,
                        now=now,
                        policy=tl.policy,
                        default_tz=tl.settings.timezone,
                        owner_id=None,
                        primary_e164=r.numbers[0][0],
                    )
                )
                templates[tz] = (
                    None
                    if fu is None
                    else {
                        c.name: getattr(fu, c.name)
                        for c in FollowUp.__table__.columns  # type: ignore[attr-defined]
                        if c.name not in ("id", "client_id")
                    }
                )
            template = templates[tz]
            if template is not None:
                followups.append({**template, "client_id": cid})
                due = template["due_at"]
                if self._earliest_due is None or due < self._earliest_due:  # type: ignore[operator]
                    self._earliest_due = due  # type: ignore[assignment]
        if followups:
            await conn.execute(insert(FollowUp), followups)
        return len(ids)

    async def _merge(self, session: AsyncSession, merges: dict[int, _Merge], now: datetime) -> int:
        if not merges:
            return 0
        clients = await session.exec(select(Client).where(col(Client.id).in_(list(merges))))
        for client in clients:
            merge = merges[client.id]  # type: ignore[index]
            for row in merge.rows:
                client.company = client.company or row.company
                client.email = client.email or row.email
                client.timezone = client.timezone or row.timezone
                for key, value in row.custom.items():
                    client.custom.setdefault(key, value)
            client.updated_at = now
            session.add(client)
            for e164, raw, label in merge.numbers:
                session.add(ClientPhone(client_id=client.id, e164=e164, raw=raw, label=label))  # type: ignore[arg-type]
        await session.flush()
        return sum(len(m.rows) for m in merges.values())

    async def announce(self) -> None:
        """Tell the queues (and the wake-up timer) that new follow-ups exist."""
        tl = self.tl
        if self._earliest_due is not None and tl.timer.scheduler.running:
            tl.timer.wake_at(self._earliest_due)
        for tier in self._tiers:
            try:
                await tl.bus.publish(
                    QUEUE_CHANNEL,
                    {"type": "queue_changed", "tier": tier, "owner_id": None, "client_id": None},
                )
            except Exception as exc:  # queues are queries; a lost nudge only delays a refresh
                log.warning("queue_changed after an import batch not announced: %s", exc)


_ZONES: dict[tuple[str, str], str] = {}


def _number_zone(e164: str, default_tz: str) -> str:
    # phonenumbers maps zones by prefixes of at most 9 digits (TIMEZONE_LONGEST_PREFIX), so
    # numbers sharing their first 9 digits share a zone: 1,000,000 rows, a few thousand parses.
    key = (e164[:10], default_tz)
    zone = _ZONES.get(key)
    if zone is None:
        if len(_ZONES) > 100_000:
            _ZONES.clear()
        zone = _ZONES[key] = client_timezone(_Stub(None), e164, default_tz)
    return zone


async def _reserve_ids(conn: Any, n: int) -> list[int]:
    """Client ids for ``n`` new rows, so they can go in one executemany without RETURNING
    (SQLAlchemy inserts row by row on SQLite when RETURNING must keep the order)."""
    if conn.dialect.name == "postgresql":
        rows = await conn.execute(
            select(func.nextval(literal_column("'clients_id_seq'"))).select_from(
                func.generate_series(1, n)
            )
        )
        return sorted(rows.scalars().all())
    # SQLite: our write transaction holds the only write lock from its first write to its
    # commit, and a WAL reader whose snapshot went stale cannot write (SQLITE_BUSY), so
    # max(id) read here cannot be taken by anyone else before we insert.
    top = (await conn.execute(select(func.max(Client.id)))).scalar() or 0
    return list(range(top + 1, top + n + 1))


@dataclass(frozen=True)
class _Stub:
    """What the planner reads of a client: its id and its recorded zone."""

    timezone: str | None
    id: int = 0


def _fill(target: ParsedRow, row: ParsedRow) -> None:
    target.company = target.company or row.company
    target.email = target.email or row.email
    target.timezone = target.timezone or row.timezone
    for key, value in row.custom.items():
        target.custom.setdefault(key, value)
