"""campaigns: winner method (z-test or Bayesian), messages by campaign index

Revision ID: 0620
Revises: 0400
Create Date: 2026-11-27 22:10:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0620'
down_revision: str | Sequence[str] | None = '0400'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                'winner_method',
                sa.Enum('z_test', 'bayesian', name='winnermethod', native_enum=False, length=24),
                nullable=False,
                server_default='z_test',
            )
        )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index('ix_messages_campaign_status', ['campaign_id', 'status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_campaign_status')
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.drop_column('winner_method')
