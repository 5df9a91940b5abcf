"""The events the outbox writes about its messages: one ``email.sent`` per message sent,
in the transaction that marks it sent, so that segments ("received", "received but not
opened"), the contact's timeline and the dashboard read the same thing as `messages`.

Each event is keyed ``sent:<message id>`` (its idempotency key): a message has at most one,
whoever records it (the lease holder, a late one, ``nurture messages reconcile``), and the
backfill migration (0750) writes the same key for messages sent before."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation.bulk import insert_rows
from automation.contacts.models import Event
from automation.db import one_of
from automation.email.models import Message, MessageStatus, TemplateVersion
from automation.reactions import IngestedEvent, react_to_events

SENT_EVENT = "email.sent"
SOURCE = "outbox"
# Where a message came from, copied onto every event about it (for segments, reports and
# branches); only the ones that are set.
ORIGIN = ("campaign_id", "campaign_variant_id", "enrollment_id", "workflow_id", "workflow_node_id")


def sent_event_key(message_id: int) -> str:
    return f"sent:{message_id}"


def message_properties(
    message_id: int, template_id: int, template_version_id: int, origin: Sequence[Any]
) -> dict[str, Any]:
    """The message's part of the properties of every event about it."""
    properties: dict[str, Any] = {
        "message_id": message_id,
        "template_id": template_id,
        "template_version_id": template_version_id,
    }
    for key, value in zip(ORIGIN, origin, strict=True):
        if value is not None:
            properties[key] = value
    return properties


def record_sent_events(session: Session, message_ids: Sequence[int]) -> int:
    """An ``email.sent`` event for each of these messages that is sent and has none yet
    (two statements whatever their number), then the reactions to them; how many new."""
    if not message_ids:
        return 0
    rows = session.execute(
        select(
            Message.id,
            Message.contact_id,
            Message.sent_at,
            TemplateVersion.template_id,
            Message.template_version_id,
            *(getattr(Message, key) for key in ORIGIN),
        )
        .join(TemplateVersion, TemplateVersion.id == Message.template_version_id)
        .where(one_of(session, Message.id, message_ids), Message.status == MessageStatus.SENT)
    ).all()
    documents = {
        sent_event_key(id_): {
            "contact_id": contact_id,
            "name": SENT_EVENT,
            "properties": message_properties(id_, template_id, version_id, origin),
            "occurred_at": sent_at,
            "received_at": sent_at,
            "source": SOURCE,
            "idempotency_key": sent_event_key(id_),
        }
        for id_, contact_id, sent_at, template_id, version_id, *origin in rows
    }
    inserted = insert_rows(
        session,
        Event,
        list(documents.values()),
        returning=["id", "idempotency_key"],
        skip_conflicts=True,
    )
    new = [
        IngestedEvent(
            event_id,
            documents[key]["contact_id"],
            SENT_EVENT,
            documents[key]["properties"],
            documents[key]["occurred_at"],
        )
        for event_id, key in inserted
    ]
    react_to_events(session, new)
    return len(new)
