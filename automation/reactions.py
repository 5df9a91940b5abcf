"""What happens, in the same transaction, after events arrive or contacts change.

Ingestion and contact edits call these two functions; each domain that reacts
(segment membership, workflow triggers, goals) adds its call here, in order:
segment membership first, since "entered segment" triggers read it; then workflows
(triggers enrol, waits for an event wake, goals convert).

Only human engagement drives workflows: a machine hit (an Apple Mail Privacy Protection
prefetch, a Safe Links scan: ``machine: true``, set by tracking ingestion) is stored and
reported, and segments count it where a condition asks to (``include_machine``), but it
never starts, wakes or converts an enrolment, whatever the trigger, wait or goal says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from automation.contacts.activity import is_machine


@dataclass(frozen=True)
class IngestedEvent:
    id: int
    contact_id: int
    name: str
    properties: dict[str, Any]
    occurred_at: datetime

    @property
    def machine(self) -> bool:
        return is_machine(self.properties)


def react_to_events(session: Session, events: Sequence[IngestedEvent]) -> None:
    """Run every reaction to newly stored events (duplicates are never passed in)."""
    if not events:
        return
    from automation.segments.membership import refresh_for_events

    refresh_for_events(session, events)

    from automation.workflows.triggers import on_events

    on_events(session, [e for e in events if not e.machine])


def react_to_contact_changes(session: Session, contact_ids: Sequence[int]) -> None:
    """Run every reaction to contacts whose fields, tags or status changed."""
    if not contact_ids:
        return
    from automation.segments.membership import refresh_contacts

    refresh_contacts(session, contact_ids)

    from automation.workflows.triggers import on_contact_changes

    on_contact_changes(session, contact_ids)
