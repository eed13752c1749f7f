"""missed calls to call back

Revision ID: 0007
Revises: 0006

The call-back list is a query over ``calls`` (an inbound call nobody answered, not returned
since): a partial index finds the week's missed calls, one on a number's calls in time order
answers "returned since?", and
``missed_call_dismissals`` keeps an operator's "no call back needed".
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import engine.storage.types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MISSED = "direction = 'inbound' AND status = 'ended' AND answered_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.create_index("ix_calls_number_started_at", ["number", "started_at"], unique=False)
        batch_op.create_index(
            "ix_calls_missed",
            ["started_at"],
            unique=False,
            sqlite_where=sa.text(_MISSED),
            postgresql_where=sa.text(_MISSED),
        )
    op.create_table(
        "missed_call_dismissals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("at", engine.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("missed_call_dismissals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_missed_call_dismissals_number"), ["number"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("missed_call_dismissals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_missed_call_dismissals_number"))
    op.drop_table("missed_call_dismissals")
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_index("ix_calls_missed")
        batch_op.drop_index("ix_calls_number_started_at")
