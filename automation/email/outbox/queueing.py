"""Putting messages in the outbox: one, many, or one per contact of a query (a broadcast).
Idempotent by dedupe key; the caller's transaction owns the rows."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, String, cast, func, literal, select, true
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from automation import clock
from automation.db import dialect_insert, is_postgres
from automation.email.models import Message, MessageStatus, TemplateKind, TemplateVersion
from automation.errors import FieldError, InvalidInput


@dataclass(frozen=True)
class QueueItem:
    dedupe_key: str
    contact_id: int
    template_version_id: int
    campaign_id: int | None = None
    campaign_variant_id: int | None = None
    enrollment_id: int | None = None
    workflow_node_id: str | None = None
    workflow_name: str | None = None
    campaign_name: str | None = None
    send_at: datetime | None = None
    workflow_id: int | None = None
    priority: int = 5
    sender_identity_id: int | None = None  # None: the template version's sender


def _versions(session: Session, ids: set[int]) -> dict[int, tuple[TemplateKind, int | None]]:
    rows = session.execute(
        select(TemplateVersion.id, TemplateVersion.kind, TemplateVersion.sender_identity_id).where(
            TemplateVersion.id.in_(ids)
        )
    )
    return {vid: (kind, sender) for vid, kind, sender in rows}


def queue_messages(session: Session, items: Sequence[QueueItem]) -> list[int]:
    """Insert messages idempotently: a dedupe key already present inserts nothing. Returns
    the ids of the rows inserted. Workflows and campaigns call this in their transaction."""
    if not items:
        return []
    versions = _versions(session, {i.template_version_id for i in items})
    errors = [
        FieldError(
            f"items[{n}].template_version_id", f"no template version {i.template_version_id}"
        )
        for n, i in enumerate(items)
        if i.template_version_id not in versions
    ]
    errors += [
        FieldError(f"items[{n}].dedupe_key", "1 to 200 characters")
        for n, i in enumerate(items)
        if not 0 < len(i.dedupe_key) <= 200
    ]
    if errors:
        raise InvalidInput(errors)
    now = clock.now()
    rows = []
    for item in items:
        kind, sender = versions[item.template_version_id]
        if item.sender_identity_id is not None:
            sender = item.sender_identity_id
        rows.append(
            {
                "dedupe_key": item.dedupe_key,
                "contact_id": item.contact_id,
                "template_version_id": item.template_version_id,
                "sender_identity_id": sender,
                "marketing": kind is TemplateKind.MARKETING,
                "status": MessageStatus.QUEUED,
                "attempts": 0,
                "next_attempt_at": item.send_at or now,
                "token_nonce": secrets.randbits(32),
                "campaign_id": item.campaign_id,
                "campaign_variant_id": item.campaign_variant_id,
                "enrollment_id": item.enrollment_id,
                "workflow_id": item.workflow_id,
                "workflow_node_id": item.workflow_node_id,
                "priority": item.priority,
                "workflow_name": item.workflow_name,
                "campaign_name": item.campaign_name,
                "created_at": now,
                "opens": 0,
                "clicks": 0,
            }
        )
    inserted: list[int] = []
    for start in range(0, len(rows), 500):
        stmt = (
            dialect_insert(session, Message)
            .values(rows[start : start + 500])
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(Message.id)
        )
        inserted.extend(session.scalars(stmt))
    return inserted


def queue_message(
    session: Session,
    *,
    dedupe_key: str,
    contact_id: int,
    template_version_id: int,
    campaign_id: int | None = None,
    campaign_variant_id: int | None = None,
    enrollment_id: int | None = None,
    workflow_node_id: str | None = None,
    workflow_name: str | None = None,
    campaign_name: str | None = None,
    send_at: datetime | None = None,
    workflow_id: int | None = None,
    priority: int = 5,
) -> int | None:
    """Queue one message; None when its dedupe key was already queued (never twice)."""
    ids = queue_messages(
        session,
        [
            QueueItem(
                dedupe_key,
                contact_id,
                template_version_id,
                campaign_id,
                campaign_variant_id,
                enrollment_id,
                workflow_node_id,
                workflow_name,
                campaign_name,
                send_at,
                workflow_id,
                priority,
            )
        ],
    )
    return ids[0] if ids else None


def queue_for_contacts(
    session: Session,
    contact_ids: Select[Any],
    *,
    template_version_id: int,
    dedupe_prefix: str,
    campaign_id: int | None = None,
    campaign_variant_id: int | None = None,
    campaign_name: str | None = None,
    send_at: datetime | None = None,
    override_id: int | None = None,
    sender_identity_id: int | None = None,
) -> int:
    """INSERT … SELECT one message per contact id the query yields (a broadcast), with
    dedupe key ``<prefix><contact id>``. Returns the number inserted. ``override_id``: a
    campaign variant's subject / preheader, rendered instead of the version's;
    ``sender_identity_id``: a sender instead of the version's."""
    versions = _versions(session, {template_version_id})
    if template_version_id not in versions:
        raise InvalidInput(
            FieldError("template_version_id", f"no template version {template_version_id}")
        )
    kind, sender = versions[template_version_id]
    if sender_identity_id is not None:
        sender = sender_identity_id
    now = clock.now()
    ids = contact_ids.subquery()
    contact_id = ids.c[0]
    nonce: ColumnElement[Any] = (
        cast(func.floor(func.random() * 4294967296), BigInteger)
        if is_postgres(session)
        else func.abs(func.random()) % 4294967296
    )
    columns = {
        "dedupe_key": literal(dedupe_prefix) + cast(contact_id, String),
        "contact_id": contact_id,
        "template_version_id": literal(template_version_id),
        "override_id": literal(override_id, type_=BigInteger),
        "sender_identity_id": literal(sender, type_=BigInteger),
        "marketing": literal(kind is TemplateKind.MARKETING),
        "status": literal(MessageStatus.QUEUED.value),
        "attempts": literal(0),
        "next_attempt_at": literal(send_at or now, type_=Message.next_attempt_at.type),
        "token_nonce": nonce,
        "campaign_id": literal(campaign_id, type_=BigInteger),
        "campaign_variant_id": literal(campaign_variant_id, type_=BigInteger),
        "campaign_name": literal(campaign_name, type_=String),
        "created_at": literal(now, type_=Message.created_at.type),
        "opens": literal(0),
        "clicks": literal(0),
    }
    stmt = (
        dialect_insert(session, Message.__table__)
        # WHERE true: SQLite cannot parse INSERT … SELECT … ON CONFLICT without a WHERE.
        .from_select(list(columns), select(*[c.label(n) for n, c in columns.items()]).where(true()))
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
    )
    if is_postgres(session):
        # SQLAlchemy reports no rowcount for INSERT … SELECT here; count in the database.
        inserted = stmt.returning(literal(1)).cte("inserted")
        return int(session.scalar(select(func.count()).select_from(inserted)) or 0)
    return int(session.connection().execute(stmt).rowcount)
