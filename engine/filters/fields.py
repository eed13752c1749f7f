"""Leaves of a criteria tree: one field, one operator, one value, as a SQL condition.

Every function here validates before it builds, and raises :func:`bad` naming the leaf.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from typing import Any, TypeGuard, cast
from zoneinfo import ZoneInfo

from sqlalchemy import and_, not_, or_, true
from sqlmodel import col

from engine.filters.context import Context, bad
from engine.filters.json_fields import JsonNumber, JsonText, custom_value
from engine.models import Client

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
MAX_IN = 1000
_CUSTOM_KEY = re.compile(r"^[\w\- ]{1,64}$")


def leaf(node: dict, path: str, ctx: Context) -> Any:
    """The condition for ``{"field", "op", "value"}`` at ``path``."""
    extra = set(node) - {"field", "op", "value"}
    if extra:
        raise bad(path, f"unexpected keys {sorted(extra)}")
    name, op, value = node.get("field"), node.get("op"), node.get("value")
    if not isinstance(name, str):
        raise bad(path, "'field' must be a string")
    if op not in OPS:
        raise bad(path, f"op {op!r} is not one of {', '.join(sorted(OPS))}")
    if op == "is_null" and not isinstance(value, bool):
        raise bad(path, "is_null takes true or false")
    where = f"{path} ({name} {op})"
    if name in TEXT_FIELDS:
        return _text(TEXT_FIELDS[name], name in NULLABLE, op, value, where)
    if name.startswith("custom."):
        key = name.removeprefix("custom.")
        if not _CUSTOM_KEY.match(key):
            raise bad(path, f"{key!r} is not a custom field name (letters, digits, _ - space)")
        return _custom(key, op, value, where, ctx)
    if name == "days_since_contact":
        return _days(op, value, where, ctx)
    if name == "created_at":
        return _created(op, value, where, ctx)
    fields = [*TEXT_FIELDS, "days_since_contact", "created_at", "custom.<key>"]
    raise bad(path, f"unknown field {name!r}; fields: {', '.join(fields)}")


def _text(column: Any, nullable: bool, op: str, value: object, where: str) -> Any:
    column = col(column)
    if op == "is_null":
        empty = column.is_(None) if nullable else column == ""
        if nullable:
            empty = or_(empty, column == "")
        return empty if value else not_(empty)
    if op == "in":
        return column.in_(_string_list(value, where))
    if not isinstance(value, str):
        raise bad(where, f"{op} takes a string")
    if op == "eq":
        return column == value
    if op == "ne":
        return or_(column != value, column.is_(None)) if nullable else column != value
    if op == "contains":
        return column.icontains(value, autoescape=True)
    return _order(column, op, value)


def _string_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise bad(where, "'in' takes a non-empty list of strings")
    if len(value) > MAX_IN:
        raise bad(where, f"'in' takes at most {MAX_IN} values")
    return value


def _order(expr: Any, op: str, value: object) -> Any:
    return {"gt": expr > value, "gte": expr >= value, "lt": expr < value, "lte": expr <= value}[op]


def _custom(key: str, op: str, value: object, where: str, ctx: Context) -> Any:
    text = custom_value(JsonText, key, ctx.dialect)
    if op == "is_null":
        return text.is_(None) if value else text.is_not(None)
    if op == "in":
        return text.in_(_string_list(value, where))
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise bad(where, f"{op} takes a string or a number")
    if isinstance(value, (int, float)):
        if op == "contains":
            raise bad(where, "contains takes a string")
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
            raise bad(where, "'in' takes a non-empty list of whole numbers")
        return or_(*(_days(op="eq", value=v, where=where, ctx=ctx) for v in value))
    if op == "contains":
        raise bad(where, "days_since_contact takes eq, ne, in, gt, gte, lt, lte, is_null")
    if not _is_int(value) or value < 0:
        raise bad(where, "takes a whole number of days, 0 or more")
    n = cast(int, value)

    def ago(days: int) -> datetime:
        return ctx.now - timedelta(days=days)

    # days = floor((now - last) / 1 day); "never" is infinitely long ago, so the far side
    # of a bound includes it. "(last > t) IS NOT TRUE" is "never, or last <= t" without an
    # OR, which SQLite answers by merging two index scans over most of the table (0.4 s at
    # a million clients, against 0.17 s for one pass over the index).
    if op == "gte":
        return (last > ago(n)).is_not(true())
    if op == "gt":
        return (last > ago(n + 1)).is_not(true())
    if op == "lt":
        return last > ago(n)
    if op == "lte":
        return last > ago(n + 1)
    exact = and_(last > ago(n + 1), last <= ago(n))
    return exact if op == "eq" else exact.is_not(true())


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _created(op: str, value: object, where: str, ctx: Context) -> Any:
    created = col(Client.created_at)
    if op not in ORDER_OPS:
        raise bad(where, "created_at takes gt, gte, lt or lte")
    if not isinstance(value, str):
        raise bad(where, "takes an ISO date or datetime, e.g. 2026-11-23 or 2026-11-23T12:00")
    try:
        moment = (
            datetime.fromisoformat(value)
            if "T" in value or " " in value
            else datetime.combine(date.fromisoformat(value), time())
        )
    except ValueError as exc:
        raise bad(where, f"{value!r} is not an ISO date or datetime") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(ctx.tz))
    return _order(created, op, moment)
