"""imports declare their permission basis and how the file writes dates and numbers;
consent records keep the basis

Revision ID: 0781
Revises: 0780
Create Date: 2026-12-08 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0781"
down_revision: str | Sequence[str] | None = "0780"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BASES = ("consent", "customers", "legitimate_interest", "none")


def upgrade() -> None:
    # Plain ADD COLUMNs: a batch rebuild on SQLite would drop and copy the tables.
    op.add_column(
        "import_jobs",
        sa.Column(
            "permission_basis",
            sa.Enum(*BASES, name="importbasis", native_enum=False, length=24),
        ),
    )
    op.add_column("import_jobs", sa.Column("consent_text", sa.Text()))
    op.add_column("import_jobs", sa.Column("date_format", sa.String(length=32)))
    op.add_column(
        "import_jobs",
        sa.Column("decimal_comma", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("consent_records", sa.Column("basis", sa.String(length=32)))


def downgrade() -> None:
    op.drop_column("consent_records", "basis")
    for column in ("decimal_comma", "date_format", "consent_text", "permission_basis"):
        op.drop_column("import_jobs", column)
