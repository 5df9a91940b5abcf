"""Workflows, their immutable versions, enrolments and the journal of every step."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import DDL, ForeignKey, Index, Integer, String, UniqueConstraint, event, text
from sqlalchemy.orm import Mapped, mapped_column

from automation.db import Base, BigId, JSONDoc, UTCDateTime
from automation.enums import str_enum
from automation.errors import Conflict


class WorkflowStatus(enum.StrEnum):
    DRAFT = "draft"  # never published: nobody can enter
    ACTIVE = "active"
    PAUSED = "paused"  # nobody enters, nobody moves; waits resume on resume
    ARCHIVED = "archived"


_WORKFLOW_MOVES = {
    WorkflowStatus.DRAFT: {WorkflowStatus.ACTIVE, WorkflowStatus.ARCHIVED},
    WorkflowStatus.ACTIVE: {WorkflowStatus.PAUSED, WorkflowStatus.ARCHIVED},
    WorkflowStatus.PAUSED: {WorkflowStatus.ACTIVE, WorkflowStatus.ARCHIVED},
    WorkflowStatus.ARCHIVED: set(),
}


def move_workflow(current: WorkflowStatus, target: WorkflowStatus) -> WorkflowStatus:
    """The one place a workflow changes status; refuses illegal moves."""
    if target not in _WORKFLOW_MOVES[current]:
        raise Conflict(f"a {current.value} workflow cannot become {target.value}")
    return target


class EnrollmentStatus(enum.StrEnum):
    ACTIVE = "active"  # moving or waiting (next_run_at)
    PAUSED = "paused"  # its workflow is paused
    COMPLETED = "completed"  # reached an exit node or the end of a path
    CONVERTED = "converted"  # met the goal
    EXITED = "exited"  # removed before the end (by hand, or its workflow archived)
    FAILED = "failed"  # a node could not run (see the journal)


OPEN_STATUSES = (EnrollmentStatus.ACTIVE, EnrollmentStatus.PAUSED)
_ENROLLMENT_MOVES = {
    EnrollmentStatus.ACTIVE: {
        EnrollmentStatus.PAUSED,
        EnrollmentStatus.COMPLETED,
        EnrollmentStatus.CONVERTED,
        EnrollmentStatus.EXITED,
        EnrollmentStatus.FAILED,
    },
    EnrollmentStatus.PAUSED: {
        EnrollmentStatus.ACTIVE,
        EnrollmentStatus.CONVERTED,
        EnrollmentStatus.EXITED,
    },
}


def enrollment_sources(target: EnrollmentStatus) -> list[EnrollmentStatus]:
    """Statuses an enrolment may move to ``target`` from: set-based updates put this in
    their WHERE clause, so a row in any other status is left alone."""
    return [source for source, targets in _ENROLLMENT_MOVES.items() if target in targets]


def _open_values(statuses: Iterable[EnrollmentStatus]) -> str:
    return ", ".join(f"'{s.value}'" for s in statuses)


class Workflow(Base):
    __tablename__ = "workflows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[WorkflowStatus] = mapped_column(
        str_enum(WorkflowStatus), default=WorkflowStatus.DRAFT
    )
    trigger_type: Mapped[str] = mapped_column(String(32))
    draft: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    # The version new enrolments enter (no foreign key: the two tables would point at
    # each other, and versions are only ever deleted with their workflow).
    active_version_id: Mapped[int | None] = mapped_column(Integer)
    webhook_secret: Mapped[str] = mapped_column(String(64))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WorkflowVersion(Base):
    """An immutable published definition. Enrolments stay on the version they entered."""

    __tablename__ = "workflow_versions"
    __table_args__ = (UniqueConstraint("workflow_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    # SHA-256 of the definition: processes cache parsed graphs by (id, digest).
    digest: Mapped[str] = mapped_column(String(64))
    trigger_type: Mapped[str] = mapped_column(String(32))
    # The event name an event-like trigger listens to: ingestion finds triggers by it.
    trigger_event: Mapped[str | None] = mapped_column(String(100), index=True)
    # What the goal listens to, so ingestion checks goals only where one can be met.
    goal_event: Mapped[str | None] = mapped_column(String(100))
    goal_condition: Mapped[bool] = mapped_column(default=False)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)
    published_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class Enrollment(Base):
    """One contact's way through one workflow version.

    ``current_node`` is where the contact is; ``waiting_since`` is set while it waits
    there (a wait, a send held for its window, a webhook retry) and null when the node
    has yet to run. ``next_run_at`` is when the tick should look at it again.
    """

    __tablename__ = "enrollments"
    __table_args__ = (
        # The tick's claim: due rows in order.
        Index("ix_enrollments_status_next_run_at", "status", "next_run_at"),
        # At most one open enrolment per workflow and contact, even under concurrent
        # ingestion: INSERT ... ON CONFLICT DO NOTHING relies on it.
        Index(
            "uq_enrollments_open_workflow_contact",
            "workflow_id",
            "contact_id",
            unique=True,
            postgresql_where=text(f"status IN ({_open_values(OPEN_STATUSES)})"),
            sqlite_where=text(f"status IN ({_open_values(OPEN_STATUSES)})"),
        ),
        # Date triggers enrol once per occurrence (trigger_key = the date); re-entry checks.
        UniqueConstraint("workflow_id", "contact_id", "trigger_key"),
        # Event wake-ups and goal checks look up a contact's open enrolments.
        Index("ix_enrollments_contact_status", "contact_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workflow_id: Mapped[int] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    workflow_version_id: Mapped[int] = mapped_column(
        ForeignKey("workflow_versions.id", ondelete="CASCADE")
    )
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"))
    status: Mapped[EnrollmentStatus] = mapped_column(
        str_enum(EnrollmentStatus), default=EnrollmentStatus.ACTIVE
    )
    current_node: Mapped[str | None] = mapped_column(String(64))
    waiting_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    waiting_event: Mapped[str | None] = mapped_column(String(100))
    resume_exit: Mapped[str | None] = mapped_column(String(40))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    context: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    trigger_key: Mapped[str | None] = mapped_column(String(64))
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    converted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EnrollmentStep(Base):
    """The journal: one row per node visit that has ended, written once, when it ends;
    ``exit`` is the label it left by (next, yes, no, a split path, happened, timed_out,
    converted, migrated, ...). The visit a contact is waiting in is its enrolment
    (``current_node`` since ``waiting_since``) until it leaves: writing that row when the
    wait began and updating it at the end cost a second write of every waiting visit. A
    visit moved to another version by a migration ends at the old node (exit "migrated",
    ``detail.migrated_to``); the wait goes on at the new node from when it began.

    No foreign keys: only the engine writes the journal, from enrolments it holds locked,
    and a foreign key checks every inserted row (PostgreSQL runs a lookup per row: half the
    time of a batch's write-back, 2,000 rows a batch). The journal goes with its enrolment
    through ``JOURNAL_FOLLOWS_ENROLLMENTS`` instead, which also covers cascades (a deleted
    contact or workflow); a version is only deleted with its workflow's enrolments.
    """

    __tablename__ = "enrollment_steps"
    __table_args__ = (Index("ix_enrollment_steps_version_node", "workflow_version_id", "node_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(BigId, index=True)
    workflow_version_id: Mapped[int] = mapped_column(Integer)
    node_id: Mapped[str] = mapped_column(String(64))
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exit: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)


# Deleting enrolments (directly or by cascade from a contact or a workflow) deletes their
# journal: once per statement on PostgreSQL, per row on SQLite.
JOURNAL_FOLLOWS_ENROLLMENTS = {
    "postgresql": [
        """CREATE OR REPLACE FUNCTION delete_enrollment_journal() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM enrollment_steps WHERE enrollment_id IN (SELECT id FROM gone);
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER enrollments_delete_journal AFTER DELETE ON enrollments
        REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
        EXECUTE FUNCTION delete_enrollment_journal()""",
    ],
    "sqlite": [
        """CREATE TRIGGER enrollments_delete_journal AFTER DELETE ON enrollments
        FOR EACH ROW BEGIN
            DELETE FROM enrollment_steps WHERE enrollment_id = OLD.id;
        END""",
    ],
}
for _dialect, _statements in JOURNAL_FOLLOWS_ENROLLMENTS.items():
    for _statement in _statements:
        event.listen(
            Enrollment.__table__, "after_create", DDL(_statement).execute_if(dialect=_dialect)
        )


class ContactFieldSnapshot(Base):
    """The last value seen of each field a ``field_changed`` trigger watches, so a change
    is detected however it happened (API, import, a workflow's update node)."""

    __tablename__ = "workflow_field_snapshots"

    contact_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    field: Mapped[str] = mapped_column(String(80), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONDoc, nullable=True)
