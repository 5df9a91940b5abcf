"""workspace settings: the account time zone pages and charts show dates in

Revision ID: 0762
Revises: 0761
Create Date: 2026-12-08 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import automation.db

revision: str = "0762"
down_revision: str | Sequence[str] | None = "0761"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workspace_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("updated_at", automation.db.UTCDateTime(), nullable=True),
        sa.Column("updated_by_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspace_settings")),
    )


def downgrade() -> None:
    op.drop_table("workspace_settings")
