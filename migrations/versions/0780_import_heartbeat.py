"""import jobs: the time a running job last showed progress, for the stale-job sweep

Revision ID: 0780
Revises: 0762
Create Date: 2026-12-08 03:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import automation.db

revision: str = "0780"
down_revision: str | Sequence[str] | None = "0762"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("import_jobs", sa.Column("heartbeat_at", automation.db.UTCDateTime()))


def downgrade() -> None:
    op.drop_column("import_jobs", "heartbeat_at")
