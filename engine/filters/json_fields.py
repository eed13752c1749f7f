"""Custom fields (the client's JSON ``custom`` column) as SQL text and numbers.

The two backends spell JSON access differently; these elements compile to each one's
spelling so that a filter is the same expression tree on both.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Float, String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from engine.models import Client


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
    """``Client.custom[key]`` as ``kind`` (JsonText or JsonNumber) on ``dialect``."""
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
