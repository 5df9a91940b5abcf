"""Workflows and their versions: save a draft, publish it as an immutable version, pause,
resume, archive, export and import. Functions take a session and never commit."""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from automation import clock
from automation.errors import Conflict, NotFound
from automation.workflows.engine import finish_enrollments
from automation.workflows.models import (
    OPEN_STATUSES,
    Enrollment,
    EnrollmentStatus,
    Workflow,
    WorkflowStatus,
    WorkflowVersion,
    enrollment_sources,
    move_workflow,
)
from automation.workflows.schema import (
    FORMAT,
    FieldChangedTrigger,
    WorkflowDefinition,
    trigger_event_name,
)
from automation.workflows.triggers import snapshot_field
from automation.workflows.validation import validate_definition


def stored_form(definition: WorkflowDefinition) -> dict[str, Any]:
    """The JSON a draft, a version and an export hold."""
    return definition.model_dump(mode="json", by_alias=True)


def digest_of(document: dict[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def get_workflow(session: Session, workflow_id: int) -> Workflow:
    workflow = session.get(Workflow, workflow_id)
    if workflow is None:
        raise NotFound(f"workflow {workflow_id} not found")
    return workflow


def list_workflows(session: Session) -> list[Workflow]:
    return list(
        session.scalars(
            select(Workflow)
            .where(Workflow.status != WorkflowStatus.ARCHIVED)
            .order_by(Workflow.name, Workflow.id)
        )
    )


def create_workflow(session: Session, raw: Any, *, created_by_id: int | None = None) -> Workflow:
    """A new draft workflow from a document (validated in full, references included)."""
    definition = validate_definition(session, raw)
    now = clock.now()
    workflow = Workflow(
        name=definition.name,
        status=WorkflowStatus.DRAFT,
        trigger_type=definition.trigger.type,
        draft=stored_form(definition),
        webhook_secret=secrets.token_hex(32),
        created_by_id=created_by_id,
        created_at=now,
        updated_at=now,
    )
    session.add(workflow)
    session.flush()
    return workflow


def update_draft(session: Session, workflow_id: int, raw: Any) -> Workflow:
    """Replace the draft; running enrolments are untouched until the next publish."""
    workflow = get_workflow(session, workflow_id)
    if workflow.status is WorkflowStatus.ARCHIVED:
        raise Conflict("an archived workflow cannot be edited")
    definition = validate_definition(session, raw)
    workflow.name = definition.name
    workflow.trigger_type = definition.trigger.type
    workflow.draft = stored_form(definition)
    workflow.updated_at = clock.now()
    session.flush()
    return workflow


def delete_workflow(session: Session, workflow_id: int) -> None:
    workflow = get_workflow(session, workflow_id)
    if workflow.active_version_id is not None:
        raise Conflict("a published workflow keeps its history: archive it instead")
    session.delete(workflow)
    session.flush()


def active_version(session: Session, workflow: Workflow) -> WorkflowVersion | None:
    if workflow.active_version_id is None:
        return None
    return session.get(WorkflowVersion, workflow.active_version_id)


def has_unpublished_changes(session: Session, workflow: Workflow) -> bool:
    version = active_version(session, workflow)
    return version is None or version.definition != workflow.draft


def summarize(session: Session, workflow: Workflow) -> dict[str, Any]:
    """What the list, the API and the canvas show of a workflow (WorkflowSummary's fields)."""
    version = active_version(session, workflow)
    return {
        "id": workflow.id,
        "name": workflow.name,
        "status": workflow.status.value,
        "trigger_type": workflow.trigger_type,
        "active_version": version.number if version else None,
        "created_at": workflow.created_at,
        "updated_at": workflow.updated_at,
    }


def publish(
    session: Session, workflow_id: int, *, published_by_id: int | None = None
) -> WorkflowVersion:
    """Freeze the draft as the next version; new enrolments enter it from now on."""
    workflow = get_workflow(session, workflow_id)
    if workflow.status is WorkflowStatus.ARCHIVED:
        raise Conflict("an archived workflow cannot be published")
    # References may have gone since the draft was saved (a template deleted): check again.
    definition = validate_definition(session, workflow.draft)
    if not has_unpublished_changes(session, workflow):
        raise Conflict("the draft is the same as the published version: nothing to publish")
    number = (
        session.scalar(
            select(func.max(WorkflowVersion.number)).where(
                WorkflowVersion.workflow_id == workflow.id
            )
        )
        or 0
    ) + 1
    now = clock.now()
    version = WorkflowVersion(
        workflow_id=workflow.id,
        number=number,
        definition=stored_form(definition),
        digest=digest_of(stored_form(definition)),
        trigger_type=definition.trigger.type,
        trigger_event=trigger_event_name(definition.trigger),
        goal_event=definition.settings.goal.event if definition.settings.goal else None,
        goal_condition=bool(definition.settings.goal and definition.settings.goal.condition),
        published_at=now,
        published_by_id=published_by_id,
    )
    session.add(version)
    session.flush()
    workflow.active_version_id = version.id
    if workflow.status is WorkflowStatus.DRAFT:
        workflow.status = move_workflow(workflow.status, WorkflowStatus.ACTIVE)
    workflow.updated_at = now
    if isinstance(definition.trigger, FieldChangedTrigger):
        snapshot_field(session, definition.trigger.field)
    session.flush()
    return version


def pause(session: Session, workflow_id: int) -> Workflow:
    """Nobody enters and nobody moves until resume; waits that fall due meanwhile run then."""
    return _switch(session, workflow_id, WorkflowStatus.PAUSED, EnrollmentStatus.PAUSED)


def resume(session: Session, workflow_id: int) -> Workflow:
    workflow = _switch(session, workflow_id, WorkflowStatus.ACTIVE, EnrollmentStatus.ACTIVE)
    version = active_version(session, workflow)
    if version is not None and version.trigger_type == "field_changed":
        # Changes made while paused must not fire on resume: start from today's values.
        snapshot_field(session, version.definition["trigger"]["field"])
        session.flush()
    return workflow


def _switch(
    session: Session, workflow_id: int, status: WorkflowStatus, enrolments: EnrollmentStatus
) -> Workflow:
    """Move the workflow to ``status`` and its open enrolments to ``enrolments``."""
    workflow = get_workflow(session, workflow_id)
    workflow.status = move_workflow(workflow.status, status)
    _move_open_enrollments(session, workflow.id, enrolments)
    workflow.updated_at = clock.now()
    session.flush()
    return workflow


def archive(session: Session, workflow_id: int) -> Workflow:
    """Stop the workflow for good: every open enrolment exits where it is."""
    workflow = get_workflow(session, workflow_id)
    workflow.status = move_workflow(workflow.status, WorkflowStatus.ARCHIVED)
    finish_enrollments(
        session,
        select_open_ids(session, workflow.id),
        EnrollmentStatus.EXITED,
        exit_label="removed",
    )
    workflow.updated_at = clock.now()
    session.flush()
    return workflow


def select_open_ids(session: Session, workflow_id: int) -> list[int]:
    return list(
        session.scalars(
            select(Enrollment.id).where(
                Enrollment.workflow_id == workflow_id, Enrollment.status.in_(OPEN_STATUSES)
            )
        )
    )


def _move_open_enrollments(session: Session, workflow_id: int, target: EnrollmentStatus) -> None:
    session.execute(
        update(Enrollment)
        .where(
            Enrollment.workflow_id == workflow_id,
            Enrollment.status.in_(enrollment_sources(target)),
        )
        .values(status=target)
    )


def list_versions(session: Session, workflow_id: int) -> list[WorkflowVersion]:
    get_workflow(session, workflow_id)
    return list(
        session.scalars(
            select(WorkflowVersion)
            .where(WorkflowVersion.workflow_id == workflow_id)
            .order_by(WorkflowVersion.number.desc())
        )
    )


def get_version(session: Session, workflow_id: int, number: int) -> WorkflowVersion:
    version = session.scalar(
        select(WorkflowVersion).where(
            WorkflowVersion.workflow_id == workflow_id, WorkflowVersion.number == number
        )
    )
    if version is None:
        raise NotFound(f"workflow {workflow_id} has no version {number}")
    return version


def export_workflow(
    session: Session, workflow_id: int, *, version: int | None = None
) -> dict[str, Any]:
    """The document to import elsewhere: the draft, or a published version."""
    workflow = get_workflow(session, workflow_id)
    document = (
        dict(get_version(session, workflow_id, version).definition)
        if version is not None
        else dict(workflow.draft)
    )
    document["format"] = FORMAT
    return document


def import_workflow(
    session: Session,
    document: Any,
    *,
    publish_now: bool = False,
    created_by_id: int | None = None,
) -> Workflow:
    workflow = create_workflow(session, document, created_by_id=created_by_id)
    if publish_now:
        publish(session, workflow.id, published_by_id=created_by_id)
    return workflow


def remove_enrollment(session: Session, workflow_id: int, enrollment_id: int) -> None:
    """Take a contact out of a workflow: it exits where it stands (journaled "removed")."""
    found = session.scalar(
        select(Enrollment.id).where(
            Enrollment.id == enrollment_id,
            Enrollment.workflow_id == workflow_id,
            Enrollment.status.in_(OPEN_STATUSES),
        )
    )
    if found is None:
        raise NotFound(f"workflow {workflow_id} has no open enrolment {enrollment_id}")
    finish_enrollments(session, [enrollment_id], EnrollmentStatus.EXITED, exit_label="removed")
