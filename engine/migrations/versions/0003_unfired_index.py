"""index the follow-ups the dispatcher claims (pending, not yet fired)

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHERE = "status = 'pending' AND fired_at IS NULL"


def upgrade() -> None:
    op.create_index(
        "ix_followups_unfired_due",
        "followups",
        ["due_at"],
        unique=False,
        sqlite_where=sa.text(WHERE),
        postgresql_where=sa.text(WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_followups_unfired_due", table_name="followups")
