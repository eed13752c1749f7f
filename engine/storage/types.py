"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.mutable import MutableDict, MutableList
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out.

    SQLite hands back naive values and asyncpg aware ones; normalising here is the one
    place that keeps comparisons right on both backends.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# Mutable wrappers so that in-place edits (client.custom["x"] = 1) are persisted. Each needs
# its own type object: SQLAlchemy gives a column the first wrapper registered for its type
# object, so with one shared object every JSONList column was a MutableDict (lists refused).
JSONDict = MutableDict.as_mutable(JSON().with_variant(JSONB(), "postgresql"))
JSONList = MutableList.as_mutable(JSON().with_variant(JSONB(), "postgresql"))
