"""messages: the Message-ID header each went out with

Revision ID: 0751
Revises: 0750
Create Date: 2026-12-08 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0751"
down_revision: str | Sequence[str] | None = "0750"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (nullable, no default): no table rewrite on either database.
    op.add_column("messages", sa.Column("internet_message_id", sa.String(255), nullable=True))


def downgrade() -> None:
    op.drop_column("messages", "internet_message_id")
