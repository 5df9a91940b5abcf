"""Segments and static lists over the API: CRUD, validate, live count, sample, explain,
member edits (JSON or CSV) and CSV export."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from typing import Any

from flask import Response, request
from pydantic import BaseModel, Field

from automation.accounts.models import Role
from automation.contacts.schema import ContactOut
from automation.csvfiles import csv_chunks
from automation.errors import FieldError, InvalidInput
from automation.segments import service
from automation.segments.compiler import count_matching
from automation.segments.context import problems_beyond_shape, validate_filter
from automation.segments.membership import refresh_segment
from automation.segments.models import Segment, SegmentKind
from automation.segments.schema import (
    Filter,
)
from automation.segments.shapes import (
    CountOut,
    ExplainIn,
    ExplainOut,
    MemberMode,
    MembersIn,
    MembersOut,
    RefreshOut,
    SampleIn,
    SegmentIn,
    SegmentOut,
    SegmentPatch,
    SizeQuery,
    ValidOut,
)
from web.api.routing import ApiBlueprint
from web.database import db, nurture

bp = ApiBlueprint("segments", __name__)


def _out(segment: Segment) -> SegmentOut:
    return SegmentOut(
        id=segment.id,
        name=segment.name,
        description=segment.description,
        kind=segment.kind,
        conditions=(segment.definition or {}).get("conditions"),
        member_count=segment.member_count,
        refreshed_at=segment.refreshed_at,
        created_at=segment.created_at,
        updated_at=segment.updated_at,
    )


def _tree_problems(payload: dict[str, Any]) -> list[FieldError]:
    """What is wrong beyond the shape of a posted tree (the shape errors come with it)."""
    segment_id = (request.view_args or {}).get("segment_id")
    return problems_beyond_shape(db(), payload.get("conditions"), segment_id=segment_id)


@bp.operation("/segments", "GET", summary="List segments and lists", response=list[SegmentOut])
def list_segments() -> list[SegmentOut]:
    return [_out(s) for s in service.list_segments(db())]


@bp.operation(
    "/segments",
    "POST",
    summary="Create a dynamic segment (conditions) or a static list (no conditions)",
    role=Role.MARKETER,
    body=SegmentIn,
    body_problems=_tree_problems,
    response=SegmentOut,
    status=201,
)
def create_segment(body: SegmentIn) -> SegmentOut:
    segment = service.create_segment(db(), body)
    db().commit()
    if segment.kind is SegmentKind.DYNAMIC:
        nurture().enqueue("segments.refresh", segment.id)
    return _out(segment)


@bp.operation("/segments/<int:segment_id>", "GET", summary="Get a segment", response=SegmentOut)
def get_segment(segment_id: int) -> SegmentOut:
    return _out(service.get_segment(db(), segment_id))


@bp.operation(
    "/segments/<int:segment_id>",
    "PATCH",
    summary="Rename, describe or change the conditions of a segment",
    role=Role.MARKETER,
    body=SegmentPatch,
    body_problems=_tree_problems,
    response=SegmentOut,
)
def update_segment(segment_id: int, body: SegmentPatch) -> SegmentOut:
    segment, changed = service.update_segment(db(), segment_id, body)
    db().commit()
    if changed:
        nurture().enqueue("segments.refresh", segment.id)
    return _out(segment)


@bp.operation(
    "/segments/<int:segment_id>",
    "DELETE",
    summary="Delete a segment (refused while other segments use it)",
    role=Role.MARKETER,
    status=204,
)
def delete_segment(segment_id: int) -> None:
    service.delete_segment(db(), segment_id)
    db().commit()


@bp.operation(
    "/segments/validate",
    "POST",
    summary="Check conditions without saving (422 names each bad path)",
    body=Filter,
    body_problems=_tree_problems,
    response=ValidOut,
    read_only=True,
)
def validate(body: Filter) -> ValidOut:
    tree, _ = validate_filter(db(), body)
    return ValidOut(valid=True, conditions=tree.as_json()["conditions"])


@bp.operation(
    "/segments/count",
    "POST",
    summary="Count the contacts matching conditions, live",
    body=Filter,
    body_problems=_tree_problems,
    response=CountOut,
    read_only=True,
)
def count_conditions(body: Filter) -> CountOut:
    tree, catalog = validate_filter(db(), body)
    return CountOut(count=count_matching(db(), tree, catalog=catalog))


@bp.operation(
    "/segments/sample",
    "POST",
    summary="The newest contacts matching conditions",
    body=SampleIn,
    body_problems=_tree_problems,
    response=list[ContactOut],
    read_only=True,
)
def sample_conditions(body: SampleIn) -> list[ContactOut]:
    tree, _ = validate_filter(db(), Filter(conditions=body.conditions))
    return [ContactOut.model_validate(c) for c in service.sample_contacts(db(), tree, body.size)]


@bp.operation(
    "/segments/explain",
    "POST",
    summary="Why a contact does or does not match conditions",
    body=ExplainIn,
    body_problems=_tree_problems,
    response=ExplainOut,
    read_only=True,
)
def explain_conditions(body: ExplainIn) -> ExplainOut:
    tree, _ = validate_filter(db(), Filter(conditions=body.conditions))
    return service.explain(db(), tree, body.contact_id)


@bp.operation(
    "/segments/<int:segment_id>/count",
    "GET",
    summary="Live count of a segment's members",
    response=CountOut,
)
def count_segment(segment_id: int) -> CountOut:
    segment = service.get_segment(db(), segment_id)
    return CountOut(count=count_matching(db(), service.segment_filter(segment)))


@bp.operation(
    "/segments/<int:segment_id>/sample",
    "GET",
    summary="The newest members of a segment",
    query=SizeQuery,
    response=list[ContactOut],
)
def sample_segment(segment_id: int, query: SizeQuery) -> list[ContactOut]:
    segment = service.get_segment(db(), segment_id)
    contacts = service.sample_contacts(db(), service.segment_filter(segment), query.size)
    return [ContactOut.model_validate(c) for c in contacts]


@bp.operation(
    "/segments/<int:segment_id>/explain/<bigid:contact_id>",
    "GET",
    summary="Why a contact is or is not in a segment",
    response=ExplainOut,
)
def explain_segment(segment_id: int, contact_id: int) -> ExplainOut:
    segment = service.get_segment(db(), segment_id)
    return service.explain(db(), service.segment_filter(segment), contact_id)


@bp.operation(
    "/segments/<int:segment_id>/members.csv",
    "GET",
    summary="Export the members as CSV",
    content_type="text/csv",
)
def export_members(segment_id: int) -> Response:
    segment = service.get_segment(db(), segment_id)  # a 404 before the stream starts
    filename = f"segment-{segment.id}-members.csv"
    sessions = nurture().sessions

    def lines() -> Iterator[str]:
        # Its own session, closed when the stream ends or the client goes away, so the
        # request's session is not held open for as long as the download lasts.
        with sessions() as session:
            rows = service.export_rows(session, service.get_segment(session, segment_id))
            yield from csv_chunks(chain([service.EXPORT_COLUMNS], rows))

    return Response(
        lines(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@bp.operation(
    "/segments/<int:segment_id>/refresh",
    "POST",
    summary="Refresh a dynamic segment's stored members now",
    role=Role.MARKETER,
    response=RefreshOut,
)
def refresh(segment_id: int) -> RefreshOut:
    result = refresh_segment(db(), segment_id)
    segment = service.get_segment(db(), segment_id)
    db().commit()
    return RefreshOut(
        segment_id=segment.id,
        entered=len(result.entered),
        left=len(result.left),
        member_count=segment.member_count,
    )


def _members_out(edit: service.MemberEdit) -> MembersOut:
    return MembersOut(
        entered=len(edit.result.entered),
        left=len(edit.result.left),
        member_count=edit.member_count,
        unknown=edit.unknown,
        unknown_count=edit.unknown_count,
    )


@bp.operation(
    "/segments/<int:segment_id>/members",
    "POST",
    summary="Add, remove or replace the members of a static list",
    role=Role.MARKETER,
    body=MembersIn,
    response=MembersOut,
)
def edit_members(segment_id: int, body: MembersIn) -> MembersOut:
    edit = service.edit_members(db(), segment_id, body.mode, body.contact_ids, body.emails)
    db().commit()
    return _members_out(edit)


class MembersUpload(BaseModel):
    file: bytes = Field(..., description="A CSV with an email or id column")
    mode: MemberMode = MemberMode.ADD


@bp.operation(
    "/segments/<int:segment_id>/members/csv",
    "POST",
    summary="Upload a CSV (multipart 'file', with an email or id column; 'mode' add|remove|"
    "replace) to a static list",
    role=Role.MARKETER,
    response=MembersOut,
    upload=MembersUpload,
)
def upload_members(segment_id: int) -> MembersOut:
    upload = request.files.get("file")
    if upload is None:
        raise InvalidInput(FieldError("file", "attach the CSV as multipart field 'file'"))
    raw_mode: Any = request.form.get("mode", "add")
    try:
        mode = MemberMode(raw_mode)
    except ValueError:
        raise InvalidInput(FieldError("mode", "expected add, remove or replace")) from None
    ids, emails = service.read_member_csv(upload.stream)
    edit = service.edit_members(db(), segment_id, mode, ids, emails)
    db().commit()
    return _members_out(edit)
