"""Field helpers shared by the table models."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column
from sqlmodel import Field

from engine.storage.types import JSONDict, JSONList, UTCDateTime


def utc(*, nullable: bool = False, index: bool = False, default: Any = None) -> Any:
    return Field(default=default, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def json_dict() -> Any:
    return Field(default_factory=dict, sa_column=Column(JSONDict, nullable=False))


def json_list() -> Any:
    return Field(default_factory=list, sa_column=Column(JSONList, nullable=False))
