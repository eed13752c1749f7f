"""A demo department: staff on every tier and a few hundred clients mid-way.

Made once into an empty database by ``tierline serve --demo``, so a newcomer sees a
working department at once: queues with calls due today, a dashboard with figures.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, update
from sqlmodel import col, select

from engine.calendar import CallingPolicy, last_window
from engine.clients import NewClient, create_client
from engine.definitions import current_version
from engine.followups.planner import client_timezone
from engine.models import Call, CallStatus, Client, ClientPhone, FollowUp, FollowUpStatus, User
from engine.runtime import EventRequest
from engine.service import Tierline
from engine.users import NewUser, create_user

UNKNOWN_CALLER = "+79035550199"  # rang cold1 before the demo began: a missed call to return
STAFF = [
    ("admin", "admin", None, None, "Anna Admin"),
    ("supervisor", "supervisor", None, None, "Sergei Supervisor"),
    ("cold1", "operator", "cold", "101", "Olga Coldova"),
    ("cold2", "operator", "cold", "102", "Pavel Kholodov"),
    ("sales1", "operator", "sales", "201", "Maria Prodazhina"),
    ("sales2", "operator", "sales", "202", "Ivan Sdelkin"),
    ("key1", "operator", "key_account", "301", "Elena Klyuchnikova"),
    ("support1", "operator", "support", "401", "Dmitry Pomoshchnikov"),
]
FIRST = [
    "Alexei",
    "Boris",
    "Vera",
    "Galina",
    "Denis",
    "Yulia",
    "Kirill",
    "Larisa",
    "Mikhail",
    "Nina",
    "Oleg",
    "Polina",
    "Roman",
    "Svetlana",
    "Timur",
    "Ulyana",
    "Fedor",
    "Zoya",
]
# Surnames in their masculine form; a woman's takes "a" (Petrov, Petrova), as in Russian.
LAST = [
    "Ivanov",
    "Petrov",
    "Sidorov",
    "Kuznetsov",
    "Smirnov",
    "Popov",
    "Volkov",
    "Lebedev",
    "Kozlov",
    "Novikov",
    "Morozov",
    "Sokolov",
    "Pavlov",
    "Egorov",
    "Orlov",
    "Belov",
]
WOMEN = frozenset(
    ("Vera", "Galina", "Yulia", "Larisa", "Nina", "Polina", "Svetlana", "Ulyana", "Zoya")
)
COMPANY = [
    "Vector",
    "Orbita",
    "Sever",
    "Granit",
    "Rassvet",
    "Yug-Trade",
    "Altai Agro",
    "Baltika Print",
    "Ural Steel Service",
    "Volga Logistics",
    "Taiga IT",
    "Kama Foods",
]
# A day's norms for every demo operator, so the dashboard has something to be behind on.
NORMS = {"calls": 60, "long_calls": 5, "presentations": 4, "invoices": 2, "payments": 1}
# Where the demo's clients sit, and how many of each.
SPREAD = {
    "new": 80,
    "no_answer": 40,
    "call_back_later": 30,
    "not_interested": 10,
    "presentation": 35,
    "objections": 20,
    "invoice_sent": 25,
    "satisfaction_check": 20,
    "upsell": 12,
    "loyalty": 15,
    "case_open": 13,
}
# The caller the README's `tierline simulate call` uses: the demo's first client (a new lead
# on the cold tier, cold1's at extension 101), so a newcomer's first pop shows a full card.
README_CALLER = "+7 916 123-45-67"
# Every Russian mobile range here maps to Moscow time; the few foreign clients show zones.
FOREIGN = ["+44 20 7946 {:04d}", "+1 212 555 {:04d}", "+49 30 901820{:02d}"]


@dataclass(frozen=True)
class DemoResult:
    created: bool
    password: str
    clients: int


async def seed_demo(
    tl: Tierline, password: str, *, seed: int = 7, spread: dict | None = None
) -> DemoResult:
    """Fill an empty database; a database that already has users is left alone."""
    rng = random.Random(seed)
    async with tl.db.session() as session:
        if (await session.exec(select(func.count()).select_from(User))).one():
            return DemoResult(created=False, password=password, clients=0)
    now = tl.clock.now()
    async with tl.db.transaction() as session:
        tiers = tl.cache.remember(await current_version(session)).tiers
        staff: dict[str, User] = {}
        for username, role, tier, ext, name in STAFF:
            staff[username] = user = await create_user(
                session,
                NewUser(username, password, role, tier, ext, name),
                tiers=tiers,
                now=now,
            )
            if role == "operator":
                user.norms = dict(NORMS)
                session.add(user)
        owners = {t: [u for u in staff.values() if u.tier == t] for t in tiers}
        count = 0
        for state, n in (spread or SPREAD).items():
            for _ in range(n):
                count += 1
                phone = (
                    rng.choice(FOREIGN).format(rng.randrange(100))
                    if rng.random() < 0.05
                    else f"+7 9{rng.randrange(10, 99)} {rng.randrange(100, 999)}-"
                    f"{rng.randrange(10, 99)}-{rng.randrange(10, 99)}"
                )
                if count == 1:
                    phone = README_CALLER  # drawn above all the same: the rest stays as it was
                tier_of = tl.cache.remember(await current_version(session)).tier_of(state)
                owner = rng.choice(owners[tier_of]) if owners.get(tier_of) else None
                await create_client(
                    session,
                    tl.runtime,
                    NewClient(
                        name=_person(rng.choice(FIRST), rng.choice(LAST)),
                        phones=[phone],
                        company=f"{rng.choice(COMPANY)} LLC",
                        email=f"client{count}@example.com" if rng.random() < 0.7 else None,
                        segment_class=rng.choice(["regular"] * 6 + ["important"] * 3 + ["key"]),
                        custom={"industry": rng.choice(["retail", "manufacturing", "it"])},
                        source="demo",
                        owner_id=owner.id if owner else None,
                    ),
                    region=tl.settings.default_region,
                    now=now,
                    state=state,
                )
        # A working morning: a third of the calls are due already, some overdue. Each in the
        # client's own calling window: a London client's call is late since London's afternoon.
        primary = (
            select(ClientPhone.e164)
            .where(col(ClientPhone.client_id) == col(Client.id))
            .order_by(col(ClientPhone.id))
            .limit(1)
            .scalar_subquery()
        )
        pending = (
            await session.exec(
                select(FollowUp.id, Client, primary)
                .join(Client, col(Client.id) == col(FollowUp.client_id))
                .where(
                    col(FollowUp.status) == FollowUpStatus.PENDING,
                    col(FollowUp.auto_event).is_(None),
                )
            )
        ).all()
        for fid, client, e164 in rng.sample(list(pending), k=len(pending) // 3):
            tz = client_timezone(client, e164, tl.settings.timezone)
            due = _calling_time_before(now, rng.randrange(1, 300), tz, tl.policy)
            await session.exec(update(FollowUp).where(col(FollowUp.id) == fid).values(due_at=due))
    await _demo_day(tl, staff, rng)
    await _missed_calls(tl, staff["cold1"], rng)
    return DemoResult(created=True, password=password, clients=count)


async def _demo_day(tl: Tierline, staff: dict[str, User], rng: random.Random) -> None:
    """Some outcomes already recorded today, so the dashboard is not empty."""
    moves = [
        ("presentation", "send_invoice", "sales1"),
        ("invoice_sent", "payment_received", "sales2"),
        ("objections", "send_invoice", "sales2"),
    ]
    async with tl.db.session() as session:
        for state, event, who in moves:
            found = await session.exec(select(Client.id).where(Client.state == state))
            ids = [i for i in found if i is not None]  # primary keys: the type says Optional
            for cid in rng.sample(ids, k=min(3, len(ids))):
                try:
                    await tl.apply(EventRequest(client_id=cid, event=event, actor=staff[who]))
                except Exception:  # a guard may refuse (no e-mail): the demo does without
                    continue


async def _missed_calls(tl: Tierline, operator: User, rng: random.Random) -> None:
    """Two calls nobody answered this morning at cold1's phone, to call back: a cold client
    and an unknown caller (as the call log writes them: one leg each, ended unanswered)."""
    now = tl.clock.now()
    async with tl.db.transaction() as session:
        found = await session.exec(
            select(Client.id, ClientPhone.e164)
            .join(ClientPhone, col(ClientPhone.client_id) == col(Client.id))
            .where(col(Client.tier) == "cold")
            .order_by(col(Client.id))
        )
        client_id, e164 = rng.choice(list(found)[:50])
        for n, (cid, number, minutes) in enumerate(
            [(client_id, e164, 40), (None, UNKNOWN_CALLER, 15)], start=1
        ):
            started = now - timedelta(minutes=minutes)
            session.add(
                Call(
                    pbx_call_id=f"demo-missed-{n}",
                    direction="inbound",
                    extension=operator.extension or "",
                    operator_id=operator.id,
                    client_id=cid,
                    number=number,
                    status=CallStatus.ENDED,
                    started_at=started,
                    ended_at=started + timedelta(seconds=25),
                    duration_s=0,
                )
            )


def _calling_time_before(now: datetime, minutes: int, tz: str, policy: CallingPolicy) -> datetime:
    """The moment ``minutes`` of calling time before ``now``, back across the closed hours and
    days: where the planner would have put a call that is that overdue. Started at night the
    demo shows the evening's missed calls, not calls "due" at 03:00; at 09:30, yesterday's."""
    left = timedelta(minutes=minutes)
    while True:
        opens, until = last_window(now, tz, policy)
        if until - opens >= left:
            return until - left
        left -= until - opens
        now = opens


def _person(first: str, last: str) -> str:
    """The surname agrees with the first name: "Zoya Kuznetsova", "Oleg Kuznetsov"."""
    return f"{first} {last}a" if first in WOMEN else f"{first} {last}"
