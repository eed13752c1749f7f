"""filter indexes: id-ordered pages of the newest clients, and counts without a scan

Revision ID: 0005
Revises: 0004

A filter's page is ``WHERE ... AND id > :after ORDER BY id LIMIT n``. The newest clients
are the cold, new ones of the last import: with (column, id) their page comes out of the
index in id order, where a plain index left PostgreSQL walking the primary key through
every older client first. Last outcome, time zone and last contact get plain indexes:
their matches are spread over the base, so they need counting, not ordering
(bench/import_filters.py).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REPLACED = ["tier", "state"]  # ix_clients_<column> becomes ix_clients_<column>_id
ORDERED = [*REPLACED, "source"]
PLAIN = ["last_outcome", "timezone", "last_contact_at"]


def upgrade() -> None:
    for column in REPLACED:
        op.drop_index(f"ix_clients_{column}", table_name="clients")
    for column in ORDERED:
        op.create_index(f"ix_clients_{column}_id", "clients", [column, "id"], unique=False)
    for column in PLAIN:
        op.create_index(f"ix_clients_{column}", "clients", [column], unique=False)


def downgrade() -> None:
    for column in PLAIN:
        op.drop_index(f"ix_clients_{column}", table_name="clients")
    for column in ORDERED:
        op.drop_index(f"ix_clients_{column}_id", table_name="clients")
    for column in REPLACED:
        op.create_index(f"ix_clients_{column}", "clients", [column], unique=False)
