"""What happens, in the same transaction, after events arrive or contacts change.

Ingestion, contact edits and the outbox call ``react_to_events`` and
``react_to_contact_changes``; the domains that react (segment membership, workflow
triggers, waits and goals) sit on higher floors, so they are not imported here: the wiring
module (``automation/wiring.py``) installs them once per process, in their order. Segment
membership comes first, since "entered segment" triggers read it; then workflows.
Calling either function before ``install`` raises: a process that forgot its wiring would
otherwise store events that start nothing, silently.

Only human engagement drives workflows: a machine hit (an Apple Mail Privacy Protection
prefetch, a Safe Links scan: ``machine: true``, set by tracking ingestion) is stored and
reported, and segments count it where a condition asks to (``include_machine``), but it
never starts, wakes or converts an enrolment, whatever the trigger, wait or goal says. A
reaction installed with ``human_only`` is never shown machine hits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session


def is_machine(properties: Mapping[str, Any] | None) -> bool:
    """Whether an event was made by a mail scanner or privacy proxy, not a person (the
    ``machine: true`` that tracking ingestion sets; ``contacts.activity.human_events`` is
    the same rule in SQL)."""
    return properties is not None and properties.get("machine") is True


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


EventReaction = Callable[[Session, Sequence[IngestedEvent]], object]  # what it returns is unused
ContactReaction = Callable[[Session, Sequence[int]], object]


@dataclass(frozen=True)
class EventSubscriber:
    name: str
    react: EventReaction
    human_only: bool = False


@dataclass(frozen=True)
class ContactSubscriber:
    name: str
    react: ContactReaction


@dataclass(frozen=True)
class _Subscribers:
    events: tuple[EventSubscriber, ...]
    contacts: tuple[ContactSubscriber, ...]


_installed: _Subscribers | None = None


class NotWired(RuntimeError):
    """A reaction was triggered in a process that never installed its subscribers."""


def install(events: Sequence[EventSubscriber], contacts: Sequence[ContactSubscriber]) -> None:
    """Set the subscribers, in the order they run (the wiring module's job; idempotent)."""
    global _installed
    _installed = _Subscribers(tuple(events), tuple(contacts))


def installed_names() -> tuple[list[str], list[str]]:
    """The subscribers' names in their order (for the architecture test and the docs)."""
    subscribers = _subscribers()
    return [s.name for s in subscribers.events], [s.name for s in subscribers.contacts]


def _subscribers() -> _Subscribers:
    if _installed is None:
        raise NotWired("reactions are not installed: call automation.wiring.install() first")
    return _installed


def react_to_events(session: Session, events: Sequence[IngestedEvent]) -> None:
    """Run every reaction to newly stored events (duplicates are never passed in)."""
    subscribers = _subscribers()
    if not events:
        return
    human: Sequence[IngestedEvent] | None = None
    for subscriber in subscribers.events:
        if subscriber.human_only:
            if human is None:
                human = [e for e in events if not e.machine]
            subscriber.react(session, human)
        else:
            subscriber.react(session, events)


def react_to_contact_changes(session: Session, contact_ids: Sequence[int]) -> None:
    """Run every reaction to contacts whose fields, tags or status changed."""
    subscribers = _subscribers()
    if not contact_ids:
        return
    for subscriber in subscribers.contacts:
        subscriber.react(session, contact_ids)
