"""Hand the emails a batch decided to send to the outbox (``messages``), in the batch's
transaction. STUB until the email outbox (issue 4) is merged: the decision is journaled
(the send step's detail holds the message's dedupe key) but no message row is written."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session


def queue_workflow_messages(
    session: Session, rows: Sequence[dict[str, Any]], now: datetime
) -> None:
    return None


def email_statistics(
    session: Session, workflow_id: int, version_ids: Sequence[int]
) -> dict[str, dict[str, int]]:
    """Per send node: messages sent, opened and clicked by humans. STUB until the outbox
    (issue 4) is merged: no message rows exist yet."""
    return {}


def email_fact_enrollments(
    session: Session, fact: str, node_id: str, enrollment_ids: Sequence[int]
) -> set[int]:
    """Enrolments whose email from ``node_id`` was sent / opened / clicked. STUB until the
    outbox (issue 4) is merged: no message rows exist yet."""
    return set()
