"""workflow versions: a form trigger listens to the event Nurture's forms store,
form.submitted (it listened to a form_submitted event nothing in Nurture wrote)

Revision ID: 0730
Revises: 0720
Create Date: 2026-11-28 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0730"
down_revision: str | Sequence[str] | None = "0720"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The trigger index (workflow_versions.trigger_event) of published versions with a form
# trigger; their documents are unchanged ({"form": name} still names the form).
VERSIONS = sa.table(
    "workflow_versions", sa.column("trigger_type", sa.String), sa.column("trigger_event", sa.String)
)


def _listen_to(event: str) -> None:
    op.execute(
        VERSIONS.update()
        .where(VERSIONS.c.trigger_type == "form_submitted")
        .values(trigger_event=event)
    )


def upgrade() -> None:
    _listen_to("form.submitted")


def downgrade() -> None:
    _listen_to("form_submitted")
