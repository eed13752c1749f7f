"""Criteria trees: validated and compiled into one SQLAlchemy WHERE expression.

The tree walk lives here; what a single leaf means is :mod:`engine.filters.fields`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, or_, true
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel.ext.asyncio.session import AsyncSession

from engine.filters.context import Context, bad
from engine.filters.fields import leaf

MAX_NODES = 200
MAX_DEPTH = 12


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


def _node(node: object, path: str, depth: int, ctx: Context, counter: list[int]) -> Any:
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise bad(path, f"a filter has at most {MAX_NODES} nodes")
    if depth > MAX_DEPTH:
        raise bad(path, f"a filter nests at most {MAX_DEPTH} levels")
    if not isinstance(node, dict):
        raise bad(path, "expected an object ({all}, {any}, {not} or {field, op, value})")
    keys = set(node)
    if keys in ({"all"}, {"any"}):
        (kind,) = keys
        items = node[kind]
        if not isinstance(items, list):
            raise bad(f"{path}.{kind}", "expected a list of nodes")
        if kind == "any" and not items:
            raise bad(f"{path}.any", "an empty 'any' matches nobody; remove it")
        parts = [
            _node(item, f"{path}.{kind}[{i}]", depth + 1, ctx, counter)
            for i, item in enumerate(items)
        ]
        if not parts:
            return true()
        return and_(*parts) if kind == "all" else or_(*parts)
    if keys == {"not"}:
        inner = _node(node["not"], f"{path}.not", depth + 1, ctx, counter)
        # Everyone the inner node does not match. SQL's NOT would also drop the clients for
        # whom the inner node is NULL (no last outcome, no such custom field): IS NOT TRUE
        # keeps them, so "not X" and "X" always split the base in two.
        return inner.is_not(true())
    if "field" in keys:
        return leaf(node, path, ctx)
    raise bad(path, f"unknown node with keys {sorted(keys)}")
