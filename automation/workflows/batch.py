"""The state of one claimed batch while the engine moves it: the enrolments (items), what
each node decided for them (outcomes), and the writes collected to be made set-wise at
the end (journal rows, messages, changed contacts)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation.contacts.models import Contact
from automation.db import one_of
from automation.workflows.graph import Graph
from automation.workflows.models import EnrollmentStatus
from automation.workflows.timing import contact_zone
from automation.workflows.webhooks import HttpClient


@dataclass(slots=True)
class Item:
    """One enrolment in the batch; mutated as it moves from node to node."""

    id: int
    workflow_id: int
    contact_id: int
    version_id: int
    node: str | None
    waiting_since: datetime | None
    next_run_at: datetime | None
    waiting_event: str | None
    resume_exit: str | None
    attempts: int
    context: dict[str, Any]
    enrolled_at: datetime
    converted_at: datetime | None
    status: EnrollmentStatus = EnrollmentStatus.ACTIVE
    finished_at: datetime | None = None
    context_changed: bool = False
    steps: int = 0

    @property
    def open_visit(self) -> bool:
        """The contact waits at its current node: a visit that is journaled when it ends."""
        return self.waiting_since is not None

    @property
    def finished(self) -> bool:
        return self.status is not EnrollmentStatus.ACTIVE


@dataclass(frozen=True)
class Leave:
    """Take the node's exit ``label`` and go on to the node it leads to."""

    label: str
    detail: dict[str, Any] | None = None


@dataclass(frozen=True)
class Park:
    """Stay at the node until ``until`` (or until ``waiting_event`` wakes the contact)."""

    until: datetime
    waiting_event: str | None = None
    attempts: int | None = None


@dataclass(frozen=True)
class End:
    """The enrolment ends here."""

    status: EnrollmentStatus
    label: str
    detail: dict[str, Any] | None = None


Outcome = Leave | Park | End


@dataclass
class ContactData:
    id: int
    email: str
    first_name: str
    last_name: str
    time_zone: str
    lifecycle_stage: str
    score: int
    attributes: dict[str, Any]


@dataclass
class Batch:
    session: Session
    now: datetime
    graphs: dict[int, Graph]
    http: HttpClient
    items: list[Item] = field(default_factory=list)
    # New journal rows: those without detail grouped by (round, version, node, entered_at,
    # left_at, exit) -> enrolment ids, since a batch mostly moves together; the others
    # one dict each.
    visits: dict[tuple[Any, ...], list[int]] = field(default_factory=dict)
    step_inserts: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    changed_contacts: set[int] = field(default_factory=set)
    round: int = 0  # each round runs every node once; a contact visits one node per round
    _contacts: dict[int, ContactData] = field(default_factory=dict)

    def contacts(self, ids: Iterable[int]) -> dict[int, ContactData]:
        """Contact fields for ``ids``, read once per batch (one query for the missing)."""
        wanted = set(ids)
        missing = wanted - set(self._contacts)
        if missing:
            rows = self.session.execute(
                select(
                    Contact.id,
                    Contact.email,
                    Contact.first_name,
                    Contact.last_name,
                    Contact.time_zone,
                    Contact.lifecycle_stage,
                    Contact.score,
                    Contact.attributes,
                ).where(one_of(self.session, Contact.id, sorted(missing)))
            )
            for row in rows:
                self._contacts[row.id] = ContactData(
                    row.id,
                    row.email,
                    row.first_name,
                    row.last_name,
                    row.time_zone,
                    str(getattr(row.lifecycle_stage, "value", row.lifecycle_stage)),
                    row.score,
                    dict(row.attributes or {}),
                )
        return {i: self._contacts[i] for i in wanted if i in self._contacts}

    def forget_contacts(self, ids: Iterable[int]) -> None:
        """Drop cached fields after an update node changed them."""
        for i in ids:
            self._contacts.pop(i, None)

    def zones(self, graph: Graph, items: Iterable[Item]) -> dict[int, ZoneInfo]:
        """Each item's contact time zone (the workflow's fallback when unknown)."""
        items = list(items)
        data = self.contacts(i.contact_id for i in items)
        fallback = graph.settings.fallback_time_zone
        return {
            i.id: contact_zone(
                data[i.contact_id].time_zone if i.contact_id in data else None, fallback
            )
            for i in items
        }

    # --- the journal ---------------------------------------------------------------------

    def close_visit(
        self, item: Item, node_id: str, label: str, detail: dict[str, Any] | None
    ) -> None:
        """Journal the visit ``item`` ends at ``node_id``: one row, written once. A visit
        that waited began at ``waiting_since`` (kept on the enrolment while it waits);
        any other began and ended now."""
        entered_at = item.waiting_since or self.now
        if detail is None:
            key = (self.round, item.version_id, node_id, entered_at, self.now, label)
            self.visits.setdefault(key, []).append(item.id)
            return
        self.step_inserts.append(
            {
                "enrollment_id": item.id,
                "workflow_version_id": item.version_id,
                "node_id": node_id,
                "entered_at": entered_at,
                "left_at": self.now,
                "exit": label,
                "detail": detail,
                "round": self.round,
            }
        )
