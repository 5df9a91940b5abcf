"""Workflows: the list with live counts, and the canvas (a page whose script draws the
graph, edits the draft and talks to /api/v1/workflows to validate, save, publish, pause,
migrate, dry-run and read the per-node statistics). Only creating a workflow is a page
form; every other change goes through the API the canvas calls with the CSRF header."""

from __future__ import annotations

from typing import Any

from flask import g, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select

from automation.accounts.models import Role
from automation.contacts.models import CustomField, LifecycleStage
from automation.email import identities
from automation.email import templates as email_templates
from automation.errors import FieldError, InvalidInput
from automation.forms import service as lead_forms
from automation.segments import service as segments
from automation.workflows import service
from automation.workflows.kinds import node_kinds
from automation.workflows.models import WorkflowStatus
from automation.workflows.stats import open_by_version, totals_by_workflow
from automation.workflows.validation import check_definition
from web.auth import login_required
from web.database import db
from web.ui.blueprint import bp
from web.ui.forms import FORM_ERRORS, rejected
from web.ui.segments import builder_catalog


def starter_document(name: str, description: str = "") -> dict[str, Any]:
    """A new workflow: a manual trigger leading to an exit, the smallest valid graph; the
    canvas adds nodes on its edge."""
    return {
        "name": name,
        "description": description,
        "trigger": {"type": "manual"},
        "start": "end",
        "nodes": [{"id": "end", "name": "End", "type": "exit"}],
    }


@bp.route("/workflows")
@login_required()
def workflows() -> Any:
    rows = service.list_workflows(db())
    return render_template(
        "workflows/list.html",
        workflows=rows,
        versions={w.id: service.active_version(db(), w) for w in rows},
        totals=totals_by_workflow(db()),
    )


@bp.route("/workflows/counts")
@login_required()
def workflow_counts() -> Any:
    """The list page polls this for its live counts."""
    response = jsonify({str(k): v for k, v in totals_by_workflow(db()).items()})
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/workflows/new", methods=["GET", "POST"])
@login_required(Role.MARKETER)
def workflow_new() -> Any:
    if request.method != "POST":
        return render_template("workflows/new.html", errors={}, form={})
    form = request.form
    name = (form.get("name") or "").strip()
    try:
        if not name:
            raise InvalidInput(FieldError("name", "give the workflow a name"))
        workflow = service.create_workflow(
            db(),
            starter_document(name, (form.get("description") or "").strip()),
            created_by_id=g.user.id,
        )
    except FORM_ERRORS as exc:
        return rejected("workflows/new.html", exc, form=form)
    db().commit()
    return redirect(url_for("ui.workflow_detail", workflow_id=workflow.id))


def canvas_catalog() -> dict[str, Any]:
    """What the canvas's side panel offers: templates, sender identities, segments and
    lists, lead forms, custom fields, lifecycle stages, and the condition editor's catalog."""
    session = db()
    return {
        "templates": [
            {"id": t.id, "name": t.name, "subject": v.subject}
            for t, v in email_templates.list_templates(session)
        ],
        "senders": [
            {"id": s.id, "name": s.name, "email": s.from_email}
            for s in identities.list_sender_identities(session)
        ],
        "segments": [
            {"id": s.id, "name": s.name, "kind": s.kind.value}
            for s in segments.list_segments(session)
        ],
        "forms": [
            {"id": f.id, "name": f.name, "double_opt_in": f.double_opt_in}
            for f in lead_forms.list_forms(session)
        ],
        "fields": [
            {"name": f.name, "label": f.label, "type": f.type.value}
            for f in session.scalars(select(CustomField).order_by(CustomField.name))
        ],
        "lifecycle_stages": [stage.value for stage in LifecycleStage],
        "conditions": builder_catalog(None),
    }


@bp.route("/workflows/<int:workflow_id>")
@login_required()
def workflow_detail(workflow_id: int) -> Any:
    session = db()
    workflow = service.get_workflow(session, workflow_id)
    # References may have gone since the draft was saved (a deleted template): viewers see
    # those problems on the nodes too, without calling the (marketer-only) validate API.
    _, problems = check_definition(session, workflow.draft)
    open_counts = open_by_version(session, workflow.id)
    versions = [
        {
            "number": v.number,
            "published_at": v.published_at.isoformat(),
            "open": open_counts.get(v.number, 0),
        }
        for v in service.list_versions(session, workflow.id)
    ]
    return render_template(
        "workflows/canvas.html",
        workflow=workflow,
        canvas={
            "workflow": {
                **service.summarize(session, workflow),
                "has_unpublished_changes": service.has_unpublished_changes(session, workflow),
            },
            "definition": workflow.draft,
            "problems": [e.as_dict() for e in problems],
            "versions": versions,
            "catalog": canvas_catalog(),
            "node_kinds": node_kinds().model_dump(mode="json"),
            # An archived workflow keeps its history and figures but is no longer edited.
            "editable": g.user.role.allows(Role.MARKETER)
            and workflow.status is not WorkflowStatus.ARCHIVED,
            "api": url_for("workflows.list_workflows"),
            "list": url_for("ui.workflows"),
        },
    )
