"""email.sent events for the messages sent before the outbox wrote them

Revision ID: 0750
Revises: 0740
Create Date: 2026-12-08 03:30:00

One INSERT … SELECT over `messages`, keyed ``sent:<message id>`` like the events the
outbox writes now (automation/email/outbox/events.py), so running it again, or after the
outbox already recorded some, adds nothing twice.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql, sqlite

revision: str = "0750"
down_revision: str | Sequence[str] | None = "0740"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ORIGIN = ("campaign_id", "campaign_variant_id", "enrollment_id", "workflow_id", "workflow_node_id")

messages = sa.table(
    "messages",
    sa.column("id", sa.BigInteger),
    sa.column("contact_id", sa.BigInteger),
    sa.column("template_version_id", sa.Integer),
    sa.column("status", sa.String),
    sa.column("sent_at", sa.DateTime),
    *(sa.column(key) for key in ORIGIN),
)
versions = sa.table("template_versions", sa.column("id"), sa.column("template_id"))
events = sa.table(
    "events",
    sa.column("contact_id"),
    sa.column("name"),
    sa.column("properties"),
    sa.column("occurred_at"),
    sa.column("received_at"),
    sa.column("source"),
    sa.column("idempotency_key"),
)


def _properties(postgres: bool) -> sa.ColumnElement:
    """The event's properties as the outbox writes them: the unset origins left out."""
    pairs: list[sa.ColumnElement] = []
    for key, column in [
        ("message_id", messages.c.id),
        ("template_id", versions.c.template_id),
        ("template_version_id", messages.c.template_version_id),
        *((key, messages.c[key]) for key in ORIGIN),
    ]:
        pairs += [sa.literal(key), column]
    if postgres:
        return sa.func.jsonb_strip_nulls(sa.func.jsonb_build_object(*pairs))
    # SQLite: a JSON merge patch drops the keys whose value is null.
    return sa.func.json_patch("{}", sa.func.json_object(*pairs))


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    source = (
        sa.select(
            messages.c.contact_id,
            sa.literal("email.sent"),
            _properties(postgres),
            messages.c.sent_at,
            messages.c.sent_at,
            sa.literal("outbox"),
            sa.literal("sent:").concat(sa.cast(messages.c.id, sa.String)),
        )
        .select_from(messages.join(versions, versions.c.id == messages.c.template_version_id))
        .where(messages.c.status == "sent", messages.c.sent_at.is_not(None))
    )
    insert = (postgresql.insert if postgres else sqlite.insert)(events)
    columns = [
        "contact_id",
        "name",
        "properties",
        "occurred_at",
        "received_at",
        "source",
        "idempotency_key",
    ]
    op.execute(
        insert.from_select(columns, source).on_conflict_do_nothing(
            index_elements=["idempotency_key"]
        )
    )


def downgrade() -> None:
    # The events stay: from here on they are the outbox's, indistinguishable by design.
    pass
