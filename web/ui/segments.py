"""Segments and static lists: the list with member counts, the visual condition builder
(a page whose script talks to /api/v1/segments for live counts, samples, explanations and
saving) and CSV member edits for static lists."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for

from automation.accounts.models import Role
from automation.errors import FieldError, InvalidInput
from automation.segments import service
from automation.segments.context import load_catalog
from automation.segments.fields import (
    NO_VALUE,
    OPERATORS,
    PROPERTY_OPERATORS,
)
from automation.segments.models import Segment, SegmentKind
from automation.segments.schema import (
    CountOperator,
    EmailActivity,
    TagOperator,
)
from automation.segments.shapes import (
    MemberMode,
)
from web.auth import login_required
from web.database import db, nurture
from web.ui.blueprint import bp
from web.ui.forms import FORM_ERRORS, errors_of


def builder_catalog(current: Segment | None) -> dict[str, Any]:
    """What the builder offers: fields (core and custom) with their operators and options,
    the other segments, and the operators of tag, event and email conditions."""
    catalog = load_catalog(db())
    return {
        "fields": [
            {"name": spec.name, "type": spec.type.value, "options": list(spec.options)}
            for spec in catalog.fields.values()
        ],
        "operators": {kind.value: [op.value for op in ops] for kind, ops in OPERATORS.items()},
        "property_operators": [op.value for op in PROPERTY_OPERATORS],
        "no_value": [op.value for op in NO_VALUE],
        "tag_operators": [op.value for op in TagOperator],
        "count_operators": [op.value for op in CountOperator],
        "email_activities": [a.value for a in EmailActivity],
        "segments": [
            {"id": s.id, "name": s.name}
            for s in service.list_segments(db())
            if current is None or s.id != current.id
        ],
    }


@bp.route("/segments")
@login_required()
def segments() -> Any:
    return render_template("segments/list.html", segments=service.list_segments(db()))


def _builder(
    segment: Segment | None, errors: dict[str, str] | None = None, status: int = 200
) -> Any:
    conditions = (segment.definition or {}).get("conditions") if segment else None
    return render_template(
        "segments/builder.html",
        segment=segment,
        conditions=conditions,
        catalog=builder_catalog(segment),
        modes=[m.value for m in MemberMode],
        errors=errors or {},
    ), status


@bp.route("/segments/new")
@login_required(Role.MARKETER)
def segment_new() -> Any:
    return _builder(None)


@bp.route("/segments/<int:segment_id>")
@login_required()
def segment_detail(segment_id: int) -> Any:
    return _builder(service.get_segment(db(), segment_id))


@bp.route("/segments/<int:segment_id>/members", methods=["POST"])
@login_required(Role.MARKETER)
def segment_members(segment_id: int) -> Any:
    """Add, remove or replace a static list's members from an uploaded CSV."""
    segment = service.get_segment(db(), segment_id)
    try:
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            raise InvalidInput(FieldError("file", "choose a CSV file with an email or id column"))
        try:
            mode = MemberMode(request.form.get("mode", "add"))
        except ValueError:
            raise InvalidInput(FieldError("mode", "expected add, remove or replace")) from None
        ids, emails = service.read_member_csv(upload.stream)
        edit = service.edit_members(db(), segment.id, mode, ids, emails)
    except FORM_ERRORS as exc:
        db().rollback()
        return _builder(service.get_segment(db(), segment_id), errors_of(exc), 422)
    db().commit()
    message = f"{len(edit.result.entered)} added, "
    message += f"{len(edit.result.left)} removed; {edit.member_count:,} members now."
    if edit.unknown_count:
        message += f" {edit.unknown_count} row(s) matched no contact: " + ", ".join(
            edit.unknown[:5]
        )
    flash(message, "success")
    return redirect(url_for("ui.segment_detail", segment_id=segment.id))


@bp.route("/segments/<int:segment_id>/delete", methods=["POST"])
@login_required(Role.MARKETER)
def segment_delete(segment_id: int) -> Any:
    segment = service.get_segment(db(), segment_id)
    try:
        service.delete_segment(db(), segment.id)
    except FORM_ERRORS as exc:
        db().rollback()
        flash(next(iter(errors_of(exc).values())), "error")
        return redirect(url_for("ui.segment_detail", segment_id=segment_id))
    db().commit()
    flash(f"Segment {segment.name} deleted.", "success")
    return redirect(url_for("ui.segments"))


@bp.route("/segments/<int:segment_id>/refresh", methods=["POST"])
@login_required(Role.MARKETER)
def segment_refresh(segment_id: int) -> Any:
    """Queue a refresh of the stored members (never run in the request)."""
    segment = service.get_segment(db(), segment_id)
    if segment.kind is SegmentKind.DYNAMIC:
        nurture().enqueue("segments.refresh", segment.id)
        flash("Refresh queued: the member count updates when it finishes.", "success")
    return redirect(url_for("ui.segment_detail", segment_id=segment.id))
