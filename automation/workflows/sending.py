"""Workflows and the outbox (automation/email): send nodes become ``messages`` rows in the
batch's transaction, and the rows answer "was the email of node N opened?" and the send
nodes' statistics."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from automation.db import one_of
from automation.email.models import (
    Message,
    MessageStatus,
    SenderIdentity,
    Template,
    TemplateVersion,
)
from automation.email.outbox import QueueItem, queue_messages
from automation.workflows.models import Enrollment


def latest_versions(session: Session, template_ids: Sequence[int]) -> dict[int, int]:
    """Template id -> id of its newest version, for templates that exist and are not
    deleted (a send uses the template as it is when the contact reaches the node)."""
    if not template_ids:
        return {}
    rows = session.execute(
        select(Template.id, TemplateVersion.id)
        .join(TemplateVersion, TemplateVersion.template_id == Template.id)
        .where(
            Template.id.in_(sorted(set(template_ids))),
            Template.deleted_at.is_(None),
            TemplateVersion.number == Template.latest_version,
        )
    )
    return {template_id: version_id for template_id, version_id in rows}


def identity_exists(session: Session, identity_id: int) -> bool:
    return session.get(SenderIdentity, identity_id) is not None


def queue_workflow_messages(
    session: Session, rows: Sequence[dict[str, Any]], now: datetime
) -> None:
    """Insert the messages a batch decided to send (idempotent by dedupe key)."""
    if not rows:
        return
    items = [
        QueueItem(
            dedupe_key=r["dedupe_key"],
            contact_id=r["contact_id"],
            template_version_id=r["template_version_id"],
            enrollment_id=r["enrollment_id"],
            workflow_node_id=r["workflow_node_id"],
            workflow_name=r["workflow_name"],
            workflow_id=r["workflow_id"],
            priority=r["priority"],
            # A node may name its own sender identity instead of the template's.
            sender_identity_id=r.get("sender_identity_id"),
        )
        for r in rows
    ]
    queue_messages(session, items)


def email_fact_enrollments(
    session: Session, fact: str, node_id: str, enrollment_ids: Sequence[int]
) -> set[int]:
    """Enrolments whose email from ``node_id`` was sent / opened / clicked."""
    if not enrollment_ids:
        return set()
    condition = {
        "sent": Message.status == MessageStatus.SENT,
        "opened": Message.first_open_at.is_not(None),
        "clicked": Message.first_click_at.is_not(None),
    }[fact]
    found = session.scalars(
        select(Message.enrollment_id).where(
            one_of(session, Message.enrollment_id, list(enrollment_ids)),
            Message.workflow_node_id == node_id,
            condition,
        )
    )
    return {e for e in found if e is not None}


def email_statistics(
    session: Session, workflow_id: int, version_ids: Sequence[int]
) -> dict[str, dict[str, int]]:
    """Per send node: messages sent, opened and clicked (first_open_at / first_click_at,
    which the tracking worker fills for human engagement only)."""
    if not version_ids:
        return {}
    rows = session.execute(
        select(
            Message.workflow_node_id,
            func.count().filter(Message.status == MessageStatus.SENT),
            func.count(Message.first_open_at),
            func.count(Message.first_click_at),
        )
        .join(Enrollment, Enrollment.id == Message.enrollment_id)
        .where(Enrollment.workflow_version_id.in_(list(version_ids)))
        .group_by(Message.workflow_node_id)
    )
    return {
        str(node): {"sent": sent, "opened": opened, "clicked": clicked}
        for node, sent, opened, clicked in rows
    }
