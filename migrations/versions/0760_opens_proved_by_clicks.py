"""a human click proves an open: record the opens that past clicks proved

Before this revision a human click on a message whose images were never loaded left the
message "not opened" for branches, segments and counters (while campaign reports counted
it). The tracking worker now records such an open beside the click; this records it for
the messages clicked before: an ``email.opened`` event (``proof: click``) at the first
click, ``first_open_at``/``last_open_at``/``opens`` on the message, ``opens`` and
``last_open_at`` on the contact. ``first_click_at`` is stamped for human clicks only, so
the messages to fix are those with a first click and no first open.

Revision ID: 0760
Revises: 0740
Create Date: 2026-12-08 03:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0760"
down_revision: str | Sequence[str] | None = "0740"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ORIGIN = ("campaign_id", "campaign_variant_id", "enrollment_id", "workflow_id", "workflow_node_id")
_CHUNK = 1000

messages = sa.table(
    "messages",
    sa.column("id", sa.BigInteger),
    sa.column("contact_id", sa.BigInteger),
    sa.column("template_version_id", sa.Integer),
    sa.column("first_open_at", sa.DateTime),
    sa.column("last_open_at", sa.DateTime),
    sa.column("first_click_at", sa.DateTime),
    sa.column("opens", sa.Integer),
    *(sa.column(key) for key in _ORIGIN),
)
versions = sa.table("template_versions", sa.column("id"), sa.column("template_id"))
contacts = sa.table(
    "contacts",
    sa.column("id", sa.BigInteger),
    sa.column("opens", sa.Integer),
    sa.column("last_open_at", sa.DateTime),
)
events = sa.table(
    "events",
    sa.column("contact_id", sa.BigInteger),
    sa.column("name", sa.String),
    sa.column("properties", sa.JSON),
    sa.column("occurred_at", sa.DateTime),
    sa.column("received_at", sa.DateTime),
    sa.column("source", sa.String),
    sa.column("idempotency_key", sa.String),
)


def upgrade() -> None:
    bind = op.get_bind()
    after = 0
    while True:
        rows = bind.execute(
            sa.select(
                messages.c.id,
                messages.c.contact_id,
                messages.c.template_version_id,
                versions.c.template_id,
                messages.c.first_click_at,
                *(messages.c[key] for key in _ORIGIN),
            )
            .join(versions, versions.c.id == messages.c.template_version_id)
            .where(
                messages.c.first_open_at.is_(None),
                messages.c.first_click_at.is_not(None),
                messages.c.id > after,
            )
            .order_by(messages.c.id)
            .limit(_CHUNK)
        ).all()
        if not rows:
            return
        after = rows[-1].id
        _record(bind, rows)


def _record(bind: sa.Connection, rows: Sequence[sa.Row]) -> None:
    proof = []
    for r in rows:
        properties = {
            "message_id": r.id,
            "template_id": r.template_id,
            "template_version_id": r.template_version_id,
            **{key: getattr(r, key) for key in _ORIGIN if getattr(r, key) is not None},
            "machine": False,
            "classification": "human",
            "reasons": [],
            "proof": "click",
        }
        proof.append(
            {
                "contact_id": r.contact_id,
                "name": "email.opened",
                "properties": properties,
                "occurred_at": r.first_click_at,
                "received_at": r.first_click_at,
                "source": "tracking",
                "idempotency_key": f"open-proved-by-click:{r.id}",
            }
        )
    bind.execute(sa.insert(events), proof)
    bind.execute(
        sa.update(messages)
        .where(messages.c.id == sa.bindparam("m_id"))
        .values(
            first_open_at=sa.bindparam("at"),
            last_open_at=sa.bindparam("at"),
            opens=messages.c.opens + 1,
        ),
        [{"m_id": r.id, "at": r.first_click_at} for r in rows],
    )
    per_contact: dict[int, list] = {}
    for r in rows:
        per_contact.setdefault(r.contact_id, []).append(r.first_click_at)
    current = dict(
        bind.execute(
            sa.select(contacts.c.id, contacts.c.last_open_at).where(
                contacts.c.id.in_(list(per_contact))
            )
        ).all()
    )
    bind.execute(
        sa.update(contacts)
        .where(contacts.c.id == sa.bindparam("c_id"))
        .values(opens=contacts.c.opens + sa.bindparam("n"), last_open_at=sa.bindparam("last")),
        [
            {
                "c_id": contact_id,
                "n": len(times),
                "last": max(t for t in (current.get(contact_id), *times) if t is not None),
            }
            for contact_id, times in per_contact.items()
        ],
    )


def downgrade() -> None:
    """The recorded opens stay: they are true, and nothing older depends on their absence."""
