"""custom fields: indexed flag and the status of their expression index

Revision ID: 0670
Revises: 0660
Create Date: 2026-11-28 01:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0670"
down_revision: str | Sequence[str] | None = "0660"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("custom_fields", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("indexed", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "index_status",
                sa.Enum(
                    "none",
                    "building",
                    "ready",
                    "failed",
                    "unsupported",
                    name="indexstatus",
                    native_enum=False,
                    length=24,
                ),
                server_default="none",
                nullable=False,
            )
        )
        batch_op.add_column(sa.Column("index_error", sa.Text(), nullable=True))


def downgrade() -> None:
    # The expression indexes built for indexed fields (automation/segments/field_indexes.py).
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            DO $$ DECLARE name text; BEGIN
              FOR name IN SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                          WHERE i.indrelid = 'contacts'::regclass
                            AND c.relname LIKE 'ix\\_contacts\\_attr\\_%'
              LOOP EXECUTE format('DROP INDEX %I', name); END LOOP;
            END $$
            """
        )
    with op.batch_alter_table("custom_fields", schema=None) as batch_op:
        batch_op.drop_column("index_error")
        batch_op.drop_column("index_status")
        batch_op.drop_column("indexed")
