"""workflow engine: a batch is claimed and moved in one transaction; the journal has no
foreign keys and follows its enrolments through a trigger

Revision ID: 0690
Revises: 0680
Create Date: 2026-11-28 04:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import automation.db

revision: str = "0690"
down_revision: str | Sequence[str] | None = "0680"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOURNAL_FKS = {
    "fk_enrollment_steps_enrollment_id_enrollments": ("enrollment_id", "enrollments"),
    "fk_enrollment_steps_workflow_version_id_workflow_versions": (
        "workflow_version_id",
        "workflow_versions",
    ),
}

# As automation/workflows/models.py:JOURNAL_FOLLOWS_ENROLLMENTS was when this was written.
TRIGGER = {
    "postgresql": [
        """CREATE OR REPLACE FUNCTION delete_enrollment_journal() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM enrollment_steps WHERE enrollment_id IN (SELECT id FROM gone);
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER enrollments_delete_journal AFTER DELETE ON enrollments
        REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
        EXECUTE FUNCTION delete_enrollment_journal()""",
    ],
    "sqlite": [
        """CREATE TRIGGER enrollments_delete_journal AFTER DELETE ON enrollments
        FOR EACH ROW BEGIN
            DELETE FROM enrollment_steps WHERE enrollment_id = OLD.id;
        END""",
    ],
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    # Plain ALTER TABLE ... DROP COLUMN (SQLite ≥ 3.35 has it): a batch rebuild of
    # enrollments would drop the old table, and with foreign keys on SQLite deletes its
    # children first.
    op.drop_column("enrollments", "lease_until")
    op.drop_column("enrollments", "lease_token")
    # enrollment_steps has no children: rebuilding it on SQLite is safe.
    with op.batch_alter_table("enrollment_steps") as batch:
        for name in JOURNAL_FKS:
            batch.drop_constraint(name, type_="foreignkey")
    for statement in TRIGGER[dialect]:
        op.execute(statement)
    if dialect == "postgresql":  # room on each page for HOT updates (automation/db.py)
        op.execute("ALTER TABLE enrollment_steps SET (fillfactor = 80)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE enrollment_steps RESET (fillfactor)")
    op.execute(
        "DROP TRIGGER IF EXISTS enrollments_delete_journal"
        + (" ON enrollments" if op.get_bind().dialect.name == "postgresql" else "")
    )
    with op.batch_alter_table("enrollment_steps") as batch:
        for name, (column, parent) in JOURNAL_FKS.items():
            batch.create_foreign_key(name, parent, [column], ["id"], ondelete="CASCADE")
    op.add_column("enrollments", sa.Column("lease_token", sa.String(length=32), nullable=True))
    op.add_column(
        "enrollments", sa.Column("lease_until", automation.db.UTCDateTime(), nullable=True)
    )
