"""workflow journal: a waiting visit's row is written once, when the visit ends

Revision ID: 0700
Revises: 0690
Create Date: 2026-11-28 06:00:00

Until now a wait's journal row was inserted when the contact arrived (``left_at`` null)
and updated when it left. From now on the enrolment itself stands for the visit it waits
in (``current_node`` since ``waiting_since``) and the engine writes the row once, at the
end. The open rows of waiting enrolments are removed here: the engine would otherwise
write a second, closed row for each. Open rows of anything else (none are expected) are
left as they are. The journal is no longer updated, so its pages are filled again.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0700"
down_revision: str | Sequence[str] | None = "0690"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The statuses of an open enrolment, as automation/workflows/models.py:OPEN_STATUSES
# stores them when this was written.
WAITING = """
    SELECT e.id FROM enrollments AS e
    WHERE e.status IN ('active', 'paused') AND e.waiting_since IS NOT NULL
      AND e.current_node IS NOT NULL
"""


def upgrade() -> None:
    op.execute(
        f"DELETE FROM enrollment_steps WHERE left_at IS NULL AND enrollment_id IN ({WAITING})"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE enrollment_steps RESET (fillfactor)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE enrollment_steps SET (fillfactor = 80)")
    op.execute(
        "INSERT INTO enrollment_steps (enrollment_id, workflow_version_id, node_id, entered_at)"
        " SELECT e.id, e.workflow_version_id, e.current_node, e.waiting_since"
        f" FROM enrollments AS e WHERE e.id IN ({WAITING}) ORDER BY e.id"
    )
