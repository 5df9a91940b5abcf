"""bounce and complaint thresholds in the sending policy; the default sender's pause

Revision ID: 0710
Revises: 0700
Create Date: 2026-11-28 06:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import automation.db

revision: str = "0710"
down_revision: str | Sequence[str] | None = "0700"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    "soft_bounce_limit",
    "soft_bounce_days",
    "complaint_min_count",
    "complaint_window_days",
)


def upgrade() -> None:
    with op.batch_alter_table("sending_policy") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("default_sender_paused_at", automation.db.UTCDateTime(), nullable=True)
        )
        batch.add_column(
            sa.Column("default_sender_paused_reason", sa.String(length=200), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("sending_policy") as batch:
        batch.drop_column("default_sender_paused_reason")
        batch.drop_column("default_sender_paused_at")
        for name in reversed(COLUMNS):
            batch.drop_column(name)
