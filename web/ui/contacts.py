"""Contact pages: list and search, detail, create and edit, tags, merge and duplicates,
GDPR export and erasure, delete."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flask import Response, flash, redirect, render_template, request, url_for
from pydantic import ValidationError
from sqlalchemy import select

from automation.accounts.models import Role
from automation.contacts import activity, gdpr, hygiene
from automation.contacts import service as contacts
from automation.contacts import tags as tag_ops
from automation.contacts.attributes import coerce_text
from automation.contacts.models import (
    Contact,
    ContactStatus,
    CustomField,
    LifecycleStage,
)
from automation.contacts.schema import ContactIn, ContactPatch, ContactSearch
from automation.email.models import Message
from automation.email.sender import render_message
from automation.errors import FieldError, InvalidInput, NotFound, field_errors
from automation.overview import contact_enrollments, contact_messages
from web.auth import login_required, safe_next
from web.database import db, nurture
from web.ids import big_row_id, page_number
from web.ui.blueprint import bp
from web.ui.forms import FORM_ERRORS, INVALID, errors_of, rejected

STATUSES = [s.value for s in ContactStatus]
STAGES = [s.value for s in LifecycleStage]
TEXT_FIELDS = ("email", "first_name", "last_name", "external_id", "time_zone", "lifecycle_stage")


# --- list ----------------------------------------------------------------------------


@bp.route("/contacts", endpoint="contacts")
@login_required()
def contacts_list() -> Any:
    args = {k: v for k, v in request.args.items() if v}
    try:
        search = ContactSearch.model_validate(args)
    except ValidationError:
        flash("Some filters were not understood and were reset.", "error")
        search = ContactSearch()
    items, total = contacts.search_contacts(db(), search)
    pages = max(1, -(-total // search.per_page))
    return render_template(
        "contacts/list.html",
        items=items,
        total=total,
        search=search,
        pages=pages,
        statuses=STATUSES,
        stages=STAGES,
        tags=[name for name, _count in tag_ops.list_tags(db())[:500]],
    )


# --- detail ----------------------------------------------------------------------------


def _detail(contact_id: int, errors: dict[str, str] | None = None, status: int = 200) -> Any:
    session = db()
    contact = contacts.get_contact(session, contact_id)
    page = request.args.get("page", 1, type=page_number)
    fields = {f.name: f for f in contacts.list_fields(session)}
    return (
        render_template(
            "contacts/detail.html",
            contact=contact,
            fields=fields,
            timeline=activity.contact_timeline(session, contact.id, page=page),
            consent=activity.consent_history(session, contact.id),
            enrollments=contact_enrollments(session, contact.id),
            messages=contact_messages(session, contact.id),
            all_tags=[name for name, _count in tag_ops.list_tags(session)[:500]],
            errors=errors or {},
        ),
        status,
    )


@bp.route("/contacts/<bigid:contact_id>")
@login_required()
def contact_detail(contact_id: int) -> Any:
    return _detail(contact_id)


@bp.route("/contacts/<bigid:contact_id>/emails/<bigid:message_id>")
@login_required()
def contact_email(contact_id: int, message_id: int) -> Any:
    """One email as the contact got it (their data, their version), without tracking."""
    session = db()
    contact = contacts.get_contact(session, contact_id)
    message = session.get(Message, message_id)
    if message is None or message.contact_id != contact.id:
        raise NotFound(f"no email {message_id} for this contact")
    email = render_message(session, message.id, nurture().settings, tracked=False)
    return render_template("contacts/email.html", contact=contact, message=message, email=email)


# --- create and edit -----------------------------------------------------------------


def _form_data(
    form: Mapping[str, str], fields: list[CustomField]
) -> tuple[dict[str, Any], list[FieldError]]:
    """The submitted form as the input the contact schemas validate; custom field values
    are parsed by their declared type (an empty input removes the attribute)."""
    data: dict[str, Any] = {name: form[name].strip() for name in TEXT_FIELDS if name in form}
    if "external_id" in data:
        data["external_id"] = data["external_id"] or None
    if "status" in form:
        data["status"] = form["status"]
    if "score" in form:
        data["score"] = form["score"].strip() or 0
    if form.get("consent_text", "").strip():
        data["consent_text"] = form["consent_text"].strip()
    errors: list[FieldError] = []
    attributes: dict[str, Any] = {}
    for field in fields:
        key = f"attributes.{field.name}"
        if key in form:
            try:
                attributes[field.name] = coerce_text(field, form[key])
            except ValueError as exc:
                errors.append(FieldError(key, str(exc)))
    data["attributes"] = attributes
    return data, errors


def _validated(model: type[ContactIn] | type[ContactPatch], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(field_errors(exc)) from None


def _parse_contact_form(
    model: type[ContactIn] | type[ContactPatch], fields: list[CustomField]
) -> Any:
    """Every error of the form at once: schema errors and custom field errors together."""
    data, errors = _form_data(request.form, fields)
    if model is ContactIn:
        data["tags"] = [t.strip() for t in request.form.get("tags", "").split(",") if t.strip()]
        data["attributes"] = {k: v for k, v in data["attributes"].items() if v is not None}
    try:
        parsed = _validated(model, data)
    except InvalidInput as exc:
        errors = exc.errors + errors
    if errors:
        raise InvalidInput(errors)
    return parsed


def _form_page(contact: Contact | None, values: Mapping[str, Any], errors: dict[str, str]) -> str:
    fields = contacts.list_fields(db())
    return render_template(
        "contacts/form.html",
        contact=contact,
        values=values,
        fields=fields,
        declared=[f.name for f in fields],
        status_options=[(s, s) for s in STATUSES],
        stage_options=[(s, s) for s in STAGES],
        time_zones=_time_zones(),
        errors=errors,
    )


def _time_zones() -> list[str]:
    from zoneinfo import available_timezones

    return sorted(available_timezones())


def _values_of(contact: Contact) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(contact, name) or "" for name in TEXT_FIELDS}
    values.update(
        status=contact.status.value,
        lifecycle_stage=contact.lifecycle_stage.value,
        score=contact.score,
    )
    values.update({f"attributes.{k}": v for k, v in contact.attributes.items()})
    return values


@bp.route("/contacts/new", methods=["GET", "POST"])
@login_required(Role.MARKETER)
def contact_new() -> Any:
    if request.method != "POST":
        return _form_page(None, {"time_zone": "UTC", "status": "subscribed", "score": 0}, {})
    fields = contacts.list_fields(db())
    try:
        data = _parse_contact_form(ContactIn, fields)
        contact = contacts.create_contact(db(), data, source="ui", ip=request.remote_addr)
    except FORM_ERRORS as exc:
        db().rollback()
        return _form_page(None, request.form, errors_of(exc)), INVALID
    db().commit()
    flash(f"Created {contact.email}.", "success")
    return redirect(url_for("ui.contact_detail", contact_id=contact.id))


@bp.route("/contacts/<bigid:contact_id>/edit", methods=["GET", "POST"])
@login_required(Role.MARKETER)
def contact_edit(contact_id: int) -> Any:
    contact = contacts.get_contact(db(), contact_id)
    if request.method != "POST":
        return _form_page(contact, _values_of(contact), {})
    fields = contacts.list_fields(db())
    try:
        patch = _parse_contact_form(ContactPatch, fields)
        contacts.update_contact(db(), contact_id, patch, source="ui", ip=request.remote_addr)
    except FORM_ERRORS as exc:
        db().rollback()
        return _form_page(
            contacts.get_contact(db(), contact_id), request.form, errors_of(exc)
        ), INVALID
    db().commit()
    flash("Saved.", "success")
    return redirect(url_for("ui.contact_detail", contact_id=contact_id))


# --- tags ------------------------------------------------------------------------------


def _change_tags(contact_id: int, *, add: list[str], remove: list[str]) -> Any:
    contacts.get_contact(db(), contact_id)
    try:
        patch = _validated(ContactPatch, {"add_tags": add, "remove_tags": remove})
        contacts.update_contact(db(), contact_id, patch, source="ui", ip=request.remote_addr)
    except FORM_ERRORS as exc:
        db().rollback()
        return _detail(contact_id, {"tag": next(iter(errors_of(exc).values()))}, INVALID)
    db().commit()
    return redirect(url_for("ui.contact_detail", contact_id=contact_id) + "#tags")


@bp.route("/contacts/<bigid:contact_id>/tags", methods=["POST"])
@login_required(Role.MARKETER)
def contact_tag_add(contact_id: int) -> Any:
    return _change_tags(contact_id, add=[request.form.get("tag", "")], remove=[])


@bp.route("/contacts/<bigid:contact_id>/tags/remove", methods=["POST"])
@login_required(Role.MARKETER)
def contact_tag_remove(contact_id: int) -> Any:
    return _change_tags(contact_id, add=[], remove=[request.form.get("tag", "")])


# --- merge and duplicates -------------------------------------------------------------


def _merge_page(contact: Contact, errors: dict[str, str]) -> str:
    q = request.args.get("q", "").strip()
    found: list[Contact] = []
    if q:
        found, _total = contacts.search_contacts(db(), ContactSearch(q=q[:200], per_page=20))
        found = [c for c in found if c.id != contact.id]
    return render_template(
        "contacts/merge.html",
        contact=contact,
        suggestions=hygiene.duplicates_of(db(), contact.id),
        found=found,
        q=q,
        errors=errors,
    )


@bp.route("/contacts/<bigid:contact_id>/merge", methods=["GET", "POST"])
@login_required(Role.MARKETER)
def contact_merge(contact_id: int) -> Any:
    contact = contacts.get_contact(db(), contact_id)
    if request.method != "POST":
        return _merge_page(contact, {})
    duplicate_id = request.form.get("duplicate_id", type=big_row_id)
    try:
        if duplicate_id is None:
            raise InvalidInput(FieldError("duplicate_id", "pick the contact to merge in"))
        duplicate_email = contacts.get_contact(db(), duplicate_id).email
        hygiene.merge_contacts(db(), contact_id, duplicate_id)
    except NotFound:
        db().rollback()
        return _merge_page(contact, {"duplicate_id": "that contact no longer exists"}), INVALID
    except FORM_ERRORS as exc:
        db().rollback()
        return _merge_page(contact, errors_of(exc)), INVALID
    db().commit()
    flash(f"Merged {duplicate_email} into {contact.email}.", "success")
    default = url_for("ui.contact_detail", contact_id=contact_id)
    return redirect(safe_next(request.form.get("next"), default))


@bp.route("/contacts/duplicates")
@login_required()
def contact_duplicates() -> Any:
    groups = hygiene.find_duplicates(db(), limit=100)
    ids = {i for group in groups for i in group.contact_ids}
    by_id = {c.id: c for c in db().scalars(select(Contact).where(Contact.id.in_(ids)))}
    return render_template(
        "contacts/duplicates.html",
        groups=[(g.reason, [by_id[i] for i in g.contact_ids if i in by_id]) for g in groups],
    )


# --- export, delete, erase -----------------------------------------------------------


@bp.route("/contacts/<bigid:contact_id>/export")
@login_required()
def contact_export(contact_id: int) -> Any:
    data = gdpr.export_contact(db(), contact_id)
    return Response(
        json.dumps(data, indent=2, ensure_ascii=False),
        mimetype="application/json",
        headers={
            "Content-Disposition": f"attachment; filename=contact-{contact_id}.json",
            "Cache-Control": "no-store",
        },
    )


def _confirmed(contact: Contact, action: str) -> Any:
    """The confirmation page; on POST, whether the typed address matches."""
    if request.method != "POST":
        return render_template("contacts/confirm.html", contact=contact, action=action, errors={})
    if request.form.get("confirm", "").strip().lower() != contact.email:
        error = InvalidInput(FieldError("confirm", "type the contact's email address to confirm"))
        return rejected("contacts/confirm.html", error, contact=contact, action=action)
    return None


@bp.route("/contacts/<bigid:contact_id>/delete", methods=["GET", "POST"])
@login_required(Role.MARKETER)
def contact_delete(contact_id: int) -> Any:
    contact = contacts.get_contact(db(), contact_id)
    refusal = _confirmed(contact, "delete")
    if refusal is not None:
        return refusal
    email = contact.email
    contacts.delete_contact(db(), contact_id)
    db().commit()
    flash(f"Deleted {email}.", "success")
    return redirect(url_for("ui.contacts"))


@bp.route("/contacts/<bigid:contact_id>/erase", methods=["GET", "POST"])
@login_required(Role.ADMIN)
def contact_erase(contact_id: int) -> Any:
    contact = contacts.get_contact(db(), contact_id)
    refusal = _confirmed(contact, "erase")
    if refusal is not None:
        return refusal
    gdpr.erase_contact(db(), contact_id)
    db().commit()
    flash("Erased. Only a hash of the address is kept, so it is never mailed again.", "success")
    return redirect(url_for("ui.contacts"))
