"""Prebuilt selects for the hot paths, run on SQLite straight through the sqlite3 cursor.

A screen pop runs six small indexed selects. On SQLite the SQL itself takes ~20 µs each,
while SQLAlchemy's execution machinery around it (execution context, cursor result, row
processing) took ~200 µs: measured, most of a pop's CPU (``bench/pop_latency.py``). A
:class:`HotQuery` compiles its statement once per dialect and, on SQLite, sends the compiled
text with its parameters to the session's own DBAPI connection — the same connection and
transaction, so what it reads is what the session would read — and converts the columns with
the very result processors SQLAlchemy would have used (UTC datetimes, JSON, booleans). On
any other driver it is a plain ``Connection.execute``: asyncpg's cost per statement is
small, and aiosqlite (the async API's reads through ``run_sync``) is not the hot path.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    params: Callable[[Mapping[str, Any]], list[Any]]
    row: Any  # a namedtuple class with the statement's column names
    processors: tuple[Processor, ...]


class HotQuery:
    """``stmt`` run as ``query.rows(conn, {"name": value})`` -> rows with named columns.

    A select, or an INSERT/UPDATE (``keys``: an INSERT's columns, all of them given on every
    call; with RETURNING, ``rows`` gives the returned rows).
    """

    def __init__(self, stmt: Executable, *, keys: Sequence[str] | None = None) -> None:
        self.stmt = stmt
        self.keys = list(keys) if keys is not None else None
        self._sqlite: _Compiled | None = None

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run a statement whose rows are not wanted (an UPDATE, an INSERT without
        RETURNING); returns how many rows it changed."""
        if conn.dialect.driver != "pysqlite":
            return conn.execute(self.stmt, dict(params)).rowcount
        compiled = self._sqlite or self._compile(conn.dialect)
        cursor = conn.connection.driver_connection.execute(  # type: ignore[union-attr]
            compiled.sql, compiled.params(params)
        )
        return cursor.rowcount

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        if conn.dialect.driver != "pysqlite":  # PostgreSQL, or aiosqlite under run_sync
            return list(conn.execute(self.stmt, dict(params)))
        compiled = self._sqlite or self._compile(conn.dialect)
        cursor = conn.connection.driver_connection.execute(  # type: ignore[union-attr]
            compiled.sql, compiled.params(params)
        )
        return _convert(compiled, cursor.fetchall())

    def convert(self, conn: Connection, raw: Iterable[Sequence[Any]]) -> list[Any]:
        """Rows as :meth:`rows` gives them, from the statement's column values read some other
        way on SQLite (``engine/card.py``: a JSON array inside another statement's row)."""
        return _convert(self._sqlite or self._compile(conn.dialect), raw)

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Any | None:
        found = self.rows(conn, params)
        return found[0] if found else None

    def _compile(self, dialect: Dialect) -> _Compiled:
        # Every statement a HotQuery is built on is a ClauseElement (a select, an insert), and
        # compiles to an SQLCompiler, whose parameter order and binds we read.
        stmt = cast(ClauseElement, self.stmt)
        compiled = cast(SQLCompiler, stmt.compile(dialect=dialect, column_keys=self.keys))
        order = list(compiled.positiontup or ())
        # LIMIT's, literals' and column defaults' binds; named parameters come with each call.
        defaults = dict(compiled.binds)
        binds: dict[str, Callable[[Any], Any]] = {
            name: cast(Callable[[Any], Any], fn)  # a sequence only for tuple types: not ours
            for name, fn in (compiled._bind_processors or {}).items()
            if fn is not None
        }

        def params(given: Mapping[str, Any]) -> list[Any]:
            out = []
            for name in order:
                value = given[name] if name in given else defaults[name].effective_value
                fn = binds.get(name)
                out.append(value if fn is None else fn(value))
            return out

        columns = compiled._result_columns or []
        row = namedtuple("HotRow", [c.keyname for c in columns])  # type: ignore[misc]
        processors = tuple(c.type._cached_result_processor(dialect, None) for c in columns)
        self._sqlite = _Compiled(compiled.string, params, row, processors)
        return self._sqlite


def _convert(compiled: _Compiled, raw: Iterable[Sequence[Any]]) -> list[Any]:
    make, processors = compiled.row._make, compiled.processors
    if not any(processors):
        return [make(values) for values in raw]
    return [
        make(v if fn is None else fn(v) for fn, v in zip(processors, values, strict=True))
        for values in raw
    ]


def connection_of(source: Session | Connection) -> Connection:
    """The Core connection under ``source``: hot reads take either (the async API hands them
    a session through ``run_sync``, Database.read a bare connection)."""
    return source.connection() if isinstance(source, Session) else source
