"""What an import is asked to do, and what it reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ImportOptions:
    mapping: dict[str, str] = field(default_factory=dict)  # field -> CSV column header
    on_duplicate: str = "merge"  # "merge" into the existing client, or "report" the row
    batch_size: int = 1000
    delimiter: str | None = None  # None: guessed from the header (",", ";" or tab)
    source: str = "import"  # written to Client.source
    actor_id: int | None = None


@dataclass(frozen=True)
class ImportProgress:
    job_id: int
    rows_done: int  # data rows committed so far, earlier runs of this job included
    bytes_read: int
    total_bytes: int
    created: int
    merged: int
    errors: int


@dataclass(frozen=True)
class ImportReport:
    job_id: int
    status: str
    encoding: str
    resumed_after_row: int  # 0 for a fresh import
    rows: int
    created: int
    merged: int
    errors: int


Progress = Callable[[ImportProgress], object]
