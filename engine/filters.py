"""Saved filters: typed criteria compiled to SQLAlchemy expressions (never SQL text).

A criteria tree is JSON::

    {"all": [node, ...]}   every node matches ({"all": []} matches everyone)
    {"any": [node, ...]}   at least one matches (must not be empty)
    {"not": node}
    {"field": F, "op": OP, "value": V}

Fields: tier, state, segment_class, timezone, company, name, source, last_outcome (text);
days_since_contact (whole days since the last contact; a never-contacted client counts as
infinitely long ago, so gt/gte include it and eq/lt/lte do not; ``is_null`` finds them);
created_at (ISO date or datetime; a date or naive time is in the department's zone);
custom.<key> (the client's custom fields: text comparison, or numeric when the value is a
number, in which case non-numeric values never match).

Text ``contains`` is case-insensitive (on SQLite for ASCII letters only). ``ne`` on a
column that may be empty also matches the empty ones: "timezone ne X" includes clients
with no zone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Float, String, and_, not_, or_, true, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.errors import Conflict, InvalidInput, NotFound
from engine.models import Client, Group, SavedFilter

TEXT_FIELDS = {
    "tier": Client.tier,
    "state": Client.state,
    "segment_class": Client.segment_class,
    "timezone": Client.timezone,
    "company": Client.company,
    "name": Client.name,
    "source": Client.source,
    "last_outcome": Client.last_outcome,
}
NULLABLE = {"timezone", "last_outcome"}
OPS = {"eq", "ne", "in", "contains", "gt", "lt", "gte", "lte", "is_null"}
ORDER_OPS = {"gt", "lt", "gte", "lte"}
MAX_NODES = 200
MAX_DEPTH = 12
MAX_IN = 1000
_CUSTOM_KEY = re.compile(r"^[\w\- ]{1,64}$")


@dataclass(frozen=True)
class Context:
    now: datetime  # for days_since_contact
    tz: str  # the department's zone, for dates without a zone
    dialect: str = "sqlite"  # set from the session by the functions that run a filter


def compile_criteria(criteria: object, ctx: Context) -> ColumnElement[bool]:
    """Validate ``criteria`` and build the WHERE expression; InvalidInput names the bad node."""
    counter = [0]
    return _node(criteria, "$", 0, ctx, counter)


def validate_criteria(criteria: object) -> None:
    compile_criteria(criteria, Context(now=datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC")), tz="UTC"))


def where_for(session: AsyncSession, criteria: object, ctx: Context) -> ColumnElement[bool]:
    """The WHERE expression for ``criteria`` on the session's database."""
    dialect = session.bind.dialect.name if session.bind is not None else ctx.dialect
    return compile_criteria(criteria, replace(ctx, dialect=dialect))


def _bad(path: str, message: str) -> InvalidInput:
    # ``path`` may carry the leaf it names ("$.all[0] (tier eq)"); ``node`` is the bare path.
    node = path.split(" ", 1)[0]
    return InvalidInput(f"filter node {path}: {message}", field="criteria", node=node)


def _node(node: object, path: str, depth: int, ctx: Context, counter: list[int]) -> Any:
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise _bad(path, f"a filter has at most {MAX_NODES} nodes")
    if depth > MAX_DEPTH:
        raise _bad(path, f"a filter nests at most {MAX_DEPTH} levels")
    if not isinstance(node, dict):
        raise _bad(path, "expected an object ({all}, {any}, {not} or {field, op, value})")
    keys = set(node)
    if keys in ({"all"}, {"any"}):
        (kind,) = keys
        items = node[kind]
        if not isinstance(items, list):
            raise _bad(f"{path}.{kind}", "expected a list of nodes")
        if kind == "any" and not items:
            raise _bad(f"{path}.any", "an empty 'any' matches nobody; remove it")
        parts = [
            _node(item, f"{path}.{kind}[{i}]", depth + 1, ctx, counter)
            for i, item in enumerate(items)
        ]
        if not parts:
            return true()
        return and_(*parts) if kind == "all" else or_(*parts)
    if keys == {"not"}:
        return not_(_node(node["not"], f"{path}.not", depth + 1, ctx, counter))
    if "field" in keys:
        return _leaf(node, path, ctx)
    raise _bad(path, f"unknown node with keys {sorted(keys)}")


def _leaf(node: dict, path: str, ctx: Context) -> Any:
    extra = set(node) - {"field", "op", "value"}
    if extra:
        raise _bad(path, f"unexpected keys {sorted(extra)}")
    name, op, value = node.get("field"), node.get("op"), node.get("value")
    if not isinstance(name, str):
        raise _bad(path, "'field' must be a string")
    if op not in OPS:
        raise _bad(path, f"op {op!r} is not one of {', '.join(sorted(OPS))}")
    if op == "is_null":
        if not isinstance(value, bool):
            raise _bad(path, "is_null takes true or false")
    where = f"{path} ({name} {op})"
    if name in TEXT_FIELDS:
        return _text(TEXT_FIELDS[name], name in NULLABLE, op, value, where)
    if name.startswith("custom."):
        key = name.removeprefix("custom.")
        if not _CUSTOM_KEY.match(key):
            raise _bad(path, f"{key!r} is not a custom field name (letters, digits, _ - space)")
        return _custom(key, op, value, where, ctx)
    if name == "days_since_contact":
        return _days(op, value, where, ctx)
    if name == "created_at":
        return _created(op, value, where, ctx)
    fields = [*TEXT_FIELDS, "days_since_contact", "created_at", "custom.<key>"]
    raise _bad(path, f"unknown field {name!r}; fields: {', '.join(fields)}")


def _text(column: Any, nullable: bool, op: str, value: object, where: str) -> Any:
    column = col(column)
    if op == "is_null":
        empty = column.is_(None) if nullable else column == ""
        if nullable:
            empty = or_(empty, column == "")
        return empty if value else not_(empty)
    if op == "in":
        items = _string_list(value, where)
        return column.in_(items)
    if not isinstance(value, str):
        raise _bad(where, f"{op} takes a string")
    if op == "eq":
        return column == value
    if op == "ne":
        return or_(column != value, column.is_(None)) if nullable else column != value
    if op == "contains":
        return column.icontains(value, autoescape=True)
    return _order(column, op, value)


def _string_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _bad(where, "'in' takes a non-empty list of strings")
    if len(value) > MAX_IN:
        raise _bad(where, f"'in' takes at most {MAX_IN} values")
    return value


def _order(expr: Any, op: str, value: object) -> Any:
    return {"gt": expr > value, "gte": expr >= value, "lt": expr < value, "lte": expr <= value}[op]


class JsonText(FunctionElement):
    """A custom field as text (NULL when absent); build it with :func:`custom_value`."""

    type = String()
    inherit_cache = True
    name = "json_text"


class JsonNumber(FunctionElement):
    """A custom field as a number, NULL when it is not one (never a cast error)."""

    type = Float()
    inherit_cache = True
    name = "json_number"


def custom_value(kind: type[FunctionElement], key: str, dialect: str) -> Any:
    if dialect == "postgresql":
        return kind(Client.custom, key)
    # SQLite compares path labels with keys as stored, and SQLAlchemy stores JSON with
    # non-ASCII escaped: the path must spell the key the same way ("\\u043a...").
    return kind(Client.custom, "$." + json.dumps(key))


def _sqlite_value(element: FunctionElement, compiler: Any, **kw: Any) -> str:
    column, path = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"json_extract({column}, {path})"


def _pg_value(element: FunctionElement, compiler: Any, **kw: Any) -> str:
    column, key = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"({column} ->> {key})"


@compiles(JsonText, "sqlite")
def _json_text_sqlite(element: JsonText, compiler: Any, **kw: Any) -> str:
    return f"CAST({_sqlite_value(element, compiler, **kw)} AS TEXT)"


@compiles(JsonText, "postgresql")
def _json_text_pg(element: JsonText, compiler: Any, **kw: Any) -> str:
    return _pg_value(element, compiler, **kw)


@compiles(JsonNumber, "sqlite")
def _json_number_sqlite(element: JsonNumber, compiler: Any, **kw: Any) -> str:
    value = f"trim({_sqlite_value(element, compiler, **kw)})"
    # Only digits, signs and dots: SQLite's CAST would turn "abc" into 0.
    return (
        f"(CASE WHEN {value} <> '' AND {value} NOT GLOB '*[^0-9.+-]*' "
        f"AND {value} GLOB '*[0-9]*' THEN CAST({value} AS REAL) END)"
    )


@compiles(JsonNumber, "postgresql")
def _json_number_pg(element: JsonNumber, compiler: Any, **kw: Any) -> str:
    value = _pg_value(element, compiler, **kw)
    return (
        f"(CASE WHEN {value} ~ '^\\s*[-+]?([0-9]+\\.?[0-9]*|\\.[0-9]+)\\s*$' "
        f"THEN CAST({value} AS DOUBLE PRECISION) END)"
    )


def _custom(key: str, op: str, value: object, where: str, ctx: Context) -> Any:
    text = custom_value(JsonText, key, ctx.dialect)
    if op == "is_null":
        return text.is_(None) if value else text.is_not(None)
    if op == "in":
        return text.in_(_string_list(value, where))
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _bad(where, f"{op} takes a string or a number")
    if isinstance(value, (int, float)):
        if op == "contains":
            raise _bad(where, "contains takes a string")
        number = custom_value(JsonNumber, key, ctx.dialect)
        if op == "eq":
            return number == value
        if op == "ne":
            return or_(number != value, number.is_(None))
        return _order(number, op, value)
    if op == "eq":
        return text == value
    if op == "ne":
        return or_(text != value, text.is_(None))
    if op == "contains":
        return text.icontains(value, autoescape=True)
    return _order(text, op, value)


def _days(op: str, value: object, where: str, ctx: Context) -> Any:
    last = col(Client.last_contact_at)
    if op == "is_null":
        return last.is_(None) if value else last.is_not(None)
    if op == "in":
        if not isinstance(value, list) or not value or not all(_is_int(v) for v in value):
            raise _bad(where, "'in' takes a non-empty list of whole numbers")
        return or_(*(_days(op="eq", value=v, where=where, ctx=ctx) for v in value))
    if op == "contains":
        raise _bad(where, "days_since_contact takes eq, ne, in, gt, gte, lt, lte, is_null")
    if not _is_int(value) or value < 0:  # type: ignore[operator]
        raise _bad(where, "takes a whole number of days, 0 or more")
    n = int(value)  # type: ignore[arg-type]

    def ago(days: int) -> datetime:
        return ctx.now - timedelta(days=days)

    # days = floor((now - last) / 1 day); "never" is infinitely long ago.
    if op == "gte":
        return or_(last.is_(None), last <= ago(n))
    if op == "gt":
        return or_(last.is_(None), last <= ago(n + 1))
    if op == "lt":
        return last > ago(n)
    if op == "lte":
        return last > ago(n + 1)
    exact = and_(last > ago(n + 1), last <= ago(n))
    return exact if op == "eq" else or_(last.is_(None), not_(exact))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _created(op: str, value: object, where: str, ctx: Context) -> Any:
    created = col(Client.created_at)
    if op not in ORDER_OPS:
        raise _bad(where, "created_at takes gt, gte, lt or lte")
    if not isinstance(value, str):
        raise _bad(where, "takes an ISO date or datetime, e.g. 2026-11-23 or 2026-11-23T12:00")
    try:
        moment = (
            datetime.fromisoformat(value)
            if "T" in value or " " in value
            else datetime.combine(date.fromisoformat(value), time())
        )
    except ValueError as exc:
        raise _bad(where, f"{value!r} is not an ISO date or datetime") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(ctx.tz))
    return _order(created, op, moment)


# ---- running filters ------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    count: int
    clients: list[Client]
    next_after: int | None  # pass as after_id for the next page; None at the end


async def count_matching(session: AsyncSession, criteria: object, ctx: Context) -> int:
    where = where_for(session, criteria, ctx)
    return (await session.exec(select(func.count()).select_from(Client).where(where))).one()


async def page_matching(
    session: AsyncSession, criteria: object, ctx: Context, *, after_id: int = 0, limit: int = 50
) -> list[Client]:
    """One page ordered by id, keyset-paginated (no OFFSET: page 1,000 costs what page 1 does)."""
    where = where_for(session, criteria, ctx)
    rows = await session.exec(
        select(Client)
        .where(where, col(Client.id) > after_id)
        .order_by(col(Client.id))
        .limit(max(1, min(limit, 500)))
    )
    return list(rows)


async def preview(
    session: AsyncSession, criteria: object, ctx: Context, *, after_id: int = 0, limit: int = 50
) -> Page:
    total = await count_matching(session, criteria, ctx)
    clients = await page_matching(session, criteria, ctx, after_id=after_id, limit=limit)
    full = len(clients) == max(1, min(limit, 500))
    return Page(total, clients, clients[-1].id if clients and full else None)


# ---- saved filters --------------------------------------------------------------------


async def create_filter(
    session: AsyncSession,
    name: str,
    criteria: dict,
    *,
    owner_id: int | None,
    now: datetime,
    description: str = "",
) -> SavedFilter:
    name = _name(name)
    validate_criteria(criteria)
    if (await session.exec(select(SavedFilter.id).where(SavedFilter.name == name))).first():
        raise Conflict(f"a filter named {name!r} already exists", field="name")
    row = SavedFilter(
        name=name,
        description=description[:500],
        criteria=criteria,
        owner_id=owner_id,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    return row


async def get_filter(session: AsyncSession, filter_id: int) -> SavedFilter:
    row = await session.get(SavedFilter, filter_id)
    if row is None:
        raise NotFound(f"filter {filter_id} does not exist")
    return row


async def list_filters(session: AsyncSession) -> list[SavedFilter]:
    return list(await session.exec(select(SavedFilter).order_by(col(SavedFilter.name))))


async def update_filter(
    session: AsyncSession,
    filter_id: int,
    *,
    now: datetime,
    name: str | None = None,
    criteria: dict | None = None,
    description: str | None = None,
) -> SavedFilter:
    row = await get_filter(session, filter_id)
    if name is not None and _name(name) != row.name:
        taken = await session.exec(select(SavedFilter.id).where(SavedFilter.name == _name(name)))
        if taken.first():
            raise Conflict(f"a filter named {name!r} already exists", field="name")
        row.name = _name(name)
    if criteria is not None:
        validate_criteria(criteria)
        row.criteria = criteria
    if description is not None:
        row.description = description[:500]
    row.updated_at = now
    session.add(row)
    await session.flush()
    return row


async def delete_filter(session: AsyncSession, filter_id: int) -> None:
    row = await get_filter(session, filter_id)
    # Groups made from it keep their members and the criteria they copied; only the link goes.
    await session.exec(
        update(Group)  # type: ignore[call-overload]
        .where(col(Group.source_filter_id) == filter_id)
        .values(source_filter_id=None)
    )
    await session.delete(row)


def filter_json(row: SavedFilter) -> dict[str, object]:
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "criteria": row.criteria,
        "owner_id": row.owner_id,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


def _name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 128:
        raise InvalidInput("a name of 1 to 128 characters is required", field="name")
    return name.strip()
