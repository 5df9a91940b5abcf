"""users: a session generation; logging out bumps it, so earlier session cookies stop working

Revision ID: 0790
Revises: 0781
Create Date: 2026-12-08 03:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0790"
down_revision: str | Sequence[str] | None = "0781"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch rebuild of users on SQLite: its foreign keys point here).
    op.add_column(
        "users",
        sa.Column("session_generation", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("users", "session_generation")
