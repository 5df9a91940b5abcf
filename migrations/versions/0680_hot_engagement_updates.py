"""messages and contacts: fillfactor 80, so engagement counter updates are HOT

Revision ID: 0680
Revises: 0670
Create Date: 2026-11-28 01:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0680"
down_revision: str | Sequence[str] | None = "0670"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("messages", "contacts")


def upgrade() -> None:
    # Applies to pages written from now on (existing pages fill up as rows are updated,
    # or at the next VACUUM FULL / pg_repack); see automation/db.py:HOT_UPDATES.
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} SET (fillfactor = 80)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
