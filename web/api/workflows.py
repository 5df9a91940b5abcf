"""Workflows over the API: documents, versions, enrolments, migrations, dry runs, stats."""

from __future__ import annotations

from typing import Any

from flask import g
from sqlalchemy import select

from automation import clock
from automation.accounts.models import Role
from automation.errors import FieldError, InvalidInput
from automation.workflows import service
from automation.workflows.conditions import segment_members
from automation.workflows.dry_run import TimelineEvent, dry_run
from automation.workflows.enrolment import enroll_manually
from automation.workflows.kinds import NodeKindsOut, node_kinds
from automation.workflows.models import Enrollment, EnrollmentStatus, Workflow, WorkflowVersion
from automation.workflows.moves import MigrationPlan, apply_migration, plan_migration
from automation.workflows.schema import (
    DryRunIn,
    DryRunOut,
    EnrollIn,
    EnrollmentOut,
    EnrollmentQuery,
    EnrollOut,
    ImportQuery,
    MigrationIn,
    MigrationOut,
    MoveOut,
    StatsOut,
    ValidationOut,
    VersionOut,
    VersionQuery,
    WorkflowDocumentIn,
    WorkflowOut,
    WorkflowSummary,
)
from automation.workflows.stats import workflow_statistics
from automation.workflows.validation import check_definition
from web.api.routing import ApiBlueprint
from web.database import db

bp = ApiBlueprint("workflows", __name__)


def _out(workflow: Workflow) -> WorkflowOut:
    return WorkflowOut(
        **service.summarize(db(), workflow),
        definition=workflow.draft,
        webhook_secret=workflow.webhook_secret,
        has_unpublished_changes=service.has_unpublished_changes(db(), workflow),
    )


def _version_out(version: WorkflowVersion) -> VersionOut:
    return VersionOut(
        id=version.id,
        number=version.number,
        definition=version.definition,
        published_at=version.published_at,
        published_by_id=version.published_by_id,
    )


def _user_id() -> int | None:
    principal = getattr(g, "principal", None)
    return principal.user_id if principal is not None else None


@bp.operation("/workflows", "GET", summary="List workflows", response=list[WorkflowSummary])
def list_workflows() -> list[WorkflowSummary]:
    return [WorkflowSummary(**service.summarize(db(), w)) for w in service.list_workflows(db())]


@bp.operation(
    "/workflows",
    "POST",
    summary="Create a draft workflow from a document",
    role=Role.MARKETER,
    body=WorkflowDocumentIn,
    response=WorkflowOut,
    status=201,
)
def create_workflow(body: WorkflowDocumentIn) -> WorkflowOut:
    workflow = service.create_workflow(db(), body.document(), created_by_id=_user_id())
    db().commit()
    return _out(workflow)


@bp.operation(
    "/workflows/validate",
    "POST",
    summary="Check a workflow document; every error names its node",
    role=Role.MARKETER,
    body=WorkflowDocumentIn,
    response=ValidationOut,
)
def validate_workflow(body: WorkflowDocumentIn) -> ValidationOut:
    _, errors = check_definition(db(), body.document())
    return ValidationOut(valid=not errors, errors=[e.as_dict() for e in errors])


@bp.operation(
    "/workflows/import",
    "POST",
    summary="Import an exported workflow document (optionally publish it)",
    role=Role.MARKETER,
    body=WorkflowDocumentIn,
    query=ImportQuery,
    response=WorkflowOut,
    status=201,
)
def import_workflow(body: WorkflowDocumentIn, query: ImportQuery) -> WorkflowOut:
    workflow = service.import_workflow(
        db(), body.document(), publish_now=query.publish, created_by_id=_user_id()
    )
    db().commit()
    return _out(workflow)


@bp.operation(
    "/workflows/node-kinds",
    "GET",
    summary="The node kinds the editor offers: labels, exits, settings, starters",
    response=NodeKindsOut,
)
def list_node_kinds() -> NodeKindsOut:
    return node_kinds()


@bp.operation("/workflows/<int:workflow_id>", "GET", summary="A workflow", response=WorkflowOut)
def get_workflow(workflow_id: int) -> WorkflowOut:
    return _out(service.get_workflow(db(), workflow_id))


@bp.operation(
    "/workflows/<int:workflow_id>",
    "PUT",
    summary="Replace the draft (published versions are unchanged)",
    role=Role.MARKETER,
    body=WorkflowDocumentIn,
    response=WorkflowOut,
)
def update_workflow(workflow_id: int, body: WorkflowDocumentIn) -> WorkflowOut:
    workflow = service.update_draft(db(), workflow_id, body.document())
    db().commit()
    return _out(workflow)


@bp.operation(
    "/workflows/<int:workflow_id>",
    "DELETE",
    summary="Delete a never-published workflow",
    role=Role.MARKETER,
    status=204,
)
def delete_workflow(workflow_id: int) -> None:
    service.delete_workflow(db(), workflow_id)
    db().commit()


@bp.operation(
    "/workflows/<int:workflow_id>/export",
    "GET",
    summary="The workflow as an importable JSON document (draft, or ?version=N)",
    query=VersionQuery,
)
def export_workflow(workflow_id: int, query: VersionQuery) -> dict[str, Any]:
    return service.export_workflow(db(), workflow_id, version=query.version)


@bp.operation(
    "/workflows/<int:workflow_id>/publish",
    "POST",
    summary="Publish the draft as a new immutable version",
    role=Role.MARKETER,
    response=VersionOut,
    status=201,
)
def publish_workflow(workflow_id: int) -> VersionOut:
    version = service.publish(db(), workflow_id, published_by_id=_user_id())
    db().commit()
    return _version_out(version)


@bp.operation(
    "/workflows/<int:workflow_id>/pause",
    "POST",
    summary="Pause: nobody enters or moves",
    role=Role.MARKETER,
    response=WorkflowOut,
)
def pause_workflow(workflow_id: int) -> WorkflowOut:
    workflow = service.pause(db(), workflow_id)
    db().commit()
    return _out(workflow)


@bp.operation(
    "/workflows/<int:workflow_id>/resume",
    "POST",
    summary="Resume a paused workflow",
    role=Role.MARKETER,
    response=WorkflowOut,
)
def resume_workflow(workflow_id: int) -> WorkflowOut:
    workflow = service.resume(db(), workflow_id)
    db().commit()
    return _out(workflow)


@bp.operation(
    "/workflows/<int:workflow_id>/archive",
    "POST",
    summary="Archive: every open enrolment exits",
    role=Role.MARKETER,
    response=WorkflowOut,
)
def archive_workflow(workflow_id: int) -> WorkflowOut:
    workflow = service.archive(db(), workflow_id)
    db().commit()
    return _out(workflow)


@bp.operation(
    "/workflows/<int:workflow_id>/versions",
    "GET",
    summary="Published versions, newest first",
    response=list[VersionOut],
)
def list_versions(workflow_id: int) -> list[VersionOut]:
    return [_version_out(v) for v in service.list_versions(db(), workflow_id)]


@bp.operation(
    "/workflows/<int:workflow_id>/versions/<int:number>",
    "GET",
    summary="One published version",
    response=VersionOut,
)
def get_version(workflow_id: int, number: int) -> VersionOut:
    return _version_out(service.get_version(db(), workflow_id, number))


def _migration_out(plan: MigrationPlan, applied: bool) -> MigrationOut:
    return MigrationOut(
        from_version=plan.source.number,
        to_version=plan.target.number,
        contacts=plan.total,
        applied=applied,
        moves=[
            MoveOut(
                from_node=m.from_node,
                from_name=m.from_title,
                to_node=m.to_node,
                to_name=m.to_title,
                waiting=m.waiting,
                pending=m.pending,
                message=m.message,
            )
            for m in plan.moves
        ],
    )


def _plan(workflow_id: int, body: MigrationIn) -> MigrationPlan:
    return plan_migration(
        db(),
        workflow_id,
        from_version=body.from_version,
        to_version=body.to_version,
        node_map=body.node_map,
    )


@bp.operation(
    "/workflows/<int:workflow_id>/migrations/preview",
    "POST",
    summary="What moving running enrolments to another version would do",
    role=Role.MARKETER,
    body=MigrationIn,
    response=MigrationOut,
)
def preview_migration(workflow_id: int, body: MigrationIn) -> MigrationOut:
    return _migration_out(_plan(workflow_id, body), applied=False)


@bp.operation(
    "/workflows/<int:workflow_id>/migrations",
    "POST",
    summary="Move running enrolments to another version with a node map",
    role=Role.MARKETER,
    body=MigrationIn,
    response=MigrationOut,
)
def apply_migration_view(workflow_id: int, body: MigrationIn) -> MigrationOut:
    plan = _plan(workflow_id, body)
    apply_migration(db(), plan, clock.now())
    db().commit()
    return _migration_out(plan, applied=True)


@bp.operation(
    "/workflows/<int:workflow_id>/enrollments",
    "POST",
    summary="Enrol contacts by id, or every member of a segment",
    role=Role.MARKETER,
    body=EnrollIn,
    response=EnrollOut,
)
def enroll(workflow_id: int, body: EnrollIn) -> EnrollOut:
    if not body.contact_ids and not body.emails and body.segment_id is None:
        raise InvalidInput(FieldError("contact_ids", "give contact_ids, emails or a segment_id"))
    query = None
    if body.segment_id is not None:
        query = segment_members(db(), body.segment_id)
    count = enroll_manually(
        db(),
        workflow_id,
        contact_ids=body.contact_ids,
        emails=body.emails,
        query=query,
        source="segment" if query is not None else "manual",
        now=clock.now(),
    )
    db().commit()
    return EnrollOut(enrolled=count)


@bp.operation(
    "/workflows/<int:workflow_id>/enrollments",
    "GET",
    summary="Enrolments, newest first",
    query=EnrollmentQuery,
    response=list[EnrollmentOut],
)
def list_enrollments(workflow_id: int, query: EnrollmentQuery) -> list[EnrollmentOut]:
    service.get_workflow(db(), workflow_id)
    stmt = select(Enrollment).where(Enrollment.workflow_id == workflow_id)
    if query.status:
        try:
            status = EnrollmentStatus(query.status)
        except ValueError:
            raise InvalidInput(
                FieldError("query.status", f"expected one of {', '.join(EnrollmentStatus)}")
            ) from None
        stmt = stmt.where(Enrollment.status == status)
    rows = db().scalars(
        stmt.order_by(Enrollment.id.desc())
        .limit(query.per_page)
        .offset((query.page - 1) * query.per_page)
    )
    return [
        EnrollmentOut.model_validate(
            {**{c: getattr(e, c) for c in EnrollmentOut.model_fields}, "status": e.status.value}
        )
        for e in rows
    ]


@bp.operation(
    "/workflows/<int:workflow_id>/enrollments/<bigid:enrollment_id>",
    "DELETE",
    summary="Remove a contact from the workflow (it exits where it stands)",
    role=Role.MARKETER,
    status=204,
)
def remove_enrollment(workflow_id: int, enrollment_id: int) -> None:
    service.remove_enrollment(db(), workflow_id, enrollment_id)
    db().commit()


@bp.operation(
    "/workflows/<int:workflow_id>/dry-run",
    "POST",
    summary="The path and emails one contact would get, for a hypothetical timeline",
    role=Role.MARKETER,
    body=DryRunIn,
    response=DryRunOut,
)
def dry_run_view(workflow_id: int, body: DryRunIn) -> DryRunOut:
    result = dry_run(
        db(),
        workflow_id,
        body.contact_id,
        timeline=[TimelineEvent(e.at, e.name, e.properties) for e in body.timeline],
        start_at=body.start_at,
        version=body.version,
        horizon_days=body.horizon_days,
    )
    return DryRunOut(outcome=result.outcome, steps=result.steps, emails=result.emails)


@bp.operation(
    "/workflows/<int:workflow_id>/stats",
    "GET",
    summary="Per-node statistics (all versions, or ?version=N)",
    query=VersionQuery,
    response=StatsOut,
)
def stats(workflow_id: int, query: VersionQuery) -> StatsOut:
    return StatsOut.model_validate(workflow_statistics(db(), workflow_id, version=query.version))
