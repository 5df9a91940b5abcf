"""senders: when an operator last resumed them, so the complaint guard's window starts
again there instead of pausing a resumed sender on the next complaint

Revision ID: 0720
Revises: 0710
Create Date: 2026-11-28 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import automation.db

revision: str = "0720"
down_revision: str | Sequence[str] | None = "0710"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases: no table rebuild.
    op.add_column("sender_identities", sa.Column("resumed_at", automation.db.UTCDateTime()))
    op.add_column(
        "sending_policy", sa.Column("default_sender_resumed_at", automation.db.UTCDateTime())
    )


def downgrade() -> None:
    op.drop_column("sending_policy", "default_sender_resumed_at")
    op.drop_column("sender_identities", "resumed_at")
