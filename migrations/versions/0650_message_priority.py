"""messages: workflow id and frequency-cap priority

Revision ID: 0650
Revises: 0630
Create Date: 2026-11-27 22:10:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0650"
down_revision: str | Sequence[str] | None = "0630"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("workflow_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("priority", sa.SmallInteger(), server_default="5", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("priority")
        batch_op.drop_column("workflow_id")
