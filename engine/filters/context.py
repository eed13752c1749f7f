"""What every part of a filter compilation shares: the moment, the zone, the error."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from engine.errors import InvalidInput


@dataclass(frozen=True)
class Context:
    now: datetime  # for days_since_contact
    tz: str  # the department's zone, for dates without a zone
    dialect: str = "sqlite"  # set from the session by the functions that run a filter


def bad(path: str, message: str) -> InvalidInput:
    """The error naming a criteria node; the browser highlights ``node``."""
    # ``path`` may carry the leaf it names ("$.all[0] (tier eq)"); ``node`` is the bare path.
    node = path.split(" ", 1)[0]
    return InvalidInput(f"filter node {path}: {message}", field="criteria", node=node)
