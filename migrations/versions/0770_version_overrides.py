"""campaign variants: their subject / preheader as an override rendered at send (never a
template version); template versions: a language

Revision ID: 0770
Revises: 0790
Create Date: 2026-12-08 03:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import automation.db

revision: str = "0770"
down_revision: str | Sequence[str] | None = "0790"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _add_reference(table: str, column: str, target: str) -> None:
    """A nullable column referencing ``target``. On PostgreSQL a plain ADD COLUMN (no
    table rewrite); SQLite rebuilds the table, which is safe here: no foreign key points at
    messages or campaign_variants, so dropping the old copy takes nothing with it."""
    with op.batch_alter_table(table) as batch:
        batch.add_column(sa.Column(column, sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f(f"fk_{table}_{column}_{target}"), target, [column], ["id"], ondelete="RESTRICT"
        )


def upgrade() -> None:
    op.create_table(
        "version_overrides",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("template_version_id", sa.Integer(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("preheader", sa.Text(), nullable=True),
        sa.Column("created_at", automation.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["template_version_id"],
            ["template_versions.id"],
            name=op.f("fk_version_overrides_template_version_id_template_versions"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_version_overrides")),
    )
    op.add_column("template_versions", sa.Column("language", sa.String(35), nullable=True))
    _add_reference("messages", "override_id", "version_overrides")
    _add_reference("campaign_variants", "override_id", "version_overrides")
    _add_reference("campaign_variants", "sender_identity_id", "sender_identities")


def downgrade() -> None:
    with op.batch_alter_table("campaign_variants") as batch:
        batch.drop_column("sender_identity_id")
        batch.drop_column("override_id")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("override_id")
    # A plain DROP COLUMN (SQLite 3.35+ has it): rebuilding template_versions on SQLite
    # would drop a table that messages and version_overrides point at.
    op.drop_column("template_versions", "language")
    op.drop_table("version_overrides")
