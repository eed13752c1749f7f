"""the missed-calls list reads its indexes alone

Revision ID: 0008
Revises: 0007

The list (engine/missed_calls.py) read each of the week's missed calls from the table, and
each later call of its number to see whether it was returned: the two indexes of 0007 now
carry those columns (bench/missed_calls.py, 100,000 calls a week: SQLite 33–37 ms a request
before, 11–15 now).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MISSED = "direction = 'inbound' AND status = 'ended' AND answered_at IS NULL"
_CONDITION = ["direction", "status", "answered_at"]  # SQLite reads a row to check them else


def _indexes(number: list[str], missed: list[str]) -> None:
    op.drop_index("ix_calls_missed", table_name="calls")
    op.drop_index("ix_calls_number_started_at", table_name="calls")
    op.create_index("ix_calls_number_started_at", "calls", number, unique=False)
    op.create_index(
        "ix_calls_missed",
        "calls",
        missed,
        unique=False,
        sqlite_where=sa.text(_MISSED),
        postgresql_where=sa.text(_MISSED),
    )


def upgrade() -> None:
    _indexes(
        ["number", "started_at", "direction", "answered_at"],
        ["started_at", "number", "pbx_call_id", "client_id", "operator_id", *_CONDITION],
    )


def downgrade() -> None:
    _indexes(["number", "started_at"], ["started_at"])
