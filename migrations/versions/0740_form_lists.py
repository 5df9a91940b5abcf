"""lead forms: static lists a submission joins (beside the tags it adds)

Revision ID: 0740
Revises: 0730
Create Date: 2026-11-28 06:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0740"
down_revision: str | Sequence[str] | None = "0730"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN: a batch rebuild of forms on SQLite would drop the table, and with
    # foreign keys on, its submissions with it.
    op.add_column(
        "forms",
        sa.Column(
            "lists",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            server_default=sa.text("'[]'"),
        ),
    )


def downgrade() -> None:
    op.drop_column("forms", "lists")
