"""sending policy saved by an admin (frequency cap, sunset, engagement half-life)

Revision ID: 0660
Revises: 0650
Create Date: 2026-11-27 22:55:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import automation.db

revision: str = "0660"
down_revision: str | Sequence[str] | None = "0650"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sending_policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("frequency_cap", sa.Integer(), nullable=True),
        sa.Column("frequency_cap_days", sa.Integer(), nullable=True),
        sa.Column("frequency_cap_action", sa.String(length=10), nullable=True),
        sa.Column("sunset_sends", sa.Integer(), nullable=True),
        sa.Column("sunset_days", sa.Integer(), nullable=True),
        sa.Column("engagement_half_life_days", sa.Float(), nullable=True),
        sa.Column("updated_at", automation.db.UTCDateTime(), nullable=True),
        sa.Column("updated_by_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sending_policy")),
    )


def downgrade() -> None:
    op.drop_table("sending_policy")
