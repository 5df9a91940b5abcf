"""Settings: sender identities and custom fields (everyone reads them, admins change them).
Users and API keys live in web/ui/accounts.py."""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, url_for

from automation import policy
from automation.accounts.models import Role
from automation.contacts import service as contacts
from automation.contacts.models import FieldType, IndexStatus
from automation.contacts.schema import CustomFieldIn
from automation.email import identities
from automation.email.models import SenderIdentity
from automation.ops.backlog import paused_senders
from automation.ops.doctor import check_smtp_settings
from automation.tracking import classify
from web.auth import login_required
from web.database import db, nurture
from web.ui.blueprint import bp
from web.ui.forms import FORM_ERRORS, INVALID, errors_of, parse, rejected

SENDER_FIELDS = ("name", "from_name", "from_email", "reply_to", "max_per_minute")


@bp.route("/settings")
@login_required()
def settings() -> Any:
    return redirect(url_for("ui.senders"))


# --- sender identities -----------------------------------------------------------------


@bp.route("/settings/senders", endpoint="senders")
@login_required()
def senders_list() -> Any:
    return render_template("settings/senders.html", senders=identities.list_sender_identities(db()))


def _sender_input() -> dict[str, Any]:
    data: dict[str, Any] = {name: request.form.get(name, "").strip() for name in SENDER_FIELDS}
    data["reply_to"] = data["reply_to"] or None
    return data


def _sender_form(sender: SenderIdentity | None, values: Any, errors: dict[str, str]) -> str:
    return render_template("settings/sender_form.html", sender=sender, values=values, errors=errors)


@bp.route("/settings/senders/new", methods=["GET", "POST"])
@login_required(Role.ADMIN)
def sender_new() -> Any:
    if request.method != "POST":
        return _sender_form(None, {"max_per_minute": 600}, {})
    try:
        sender = identities.create_sender_identity(
            db(), identities.parse_sender_identity(_sender_input())
        )
    except FORM_ERRORS as exc:
        return rejected("settings/sender_form.html", exc, sender=None, values=request.form)
    db().commit()
    flash(f"Sender identity {sender.name} added.", "success")
    return redirect(url_for("ui.senders"))


@bp.route("/settings/senders/<int:sender_id>", methods=["GET", "POST"])
@login_required(Role.ADMIN)
def sender_edit(sender_id: int) -> Any:
    sender = identities.get_sender_identity(db(), sender_id)
    if request.method != "POST":
        values = {name: getattr(sender, name) or "" for name in SENDER_FIELDS}
        return _sender_form(sender, values, {})
    try:
        identities.update_sender_identity(
            db(), sender_id, identities.parse_sender_identity(_sender_input())
        )
    except FORM_ERRORS as exc:
        return rejected("settings/sender_form.html", exc, sender=sender, values=request.form)
    db().commit()
    flash("Sender identity saved.", "success")
    return redirect(url_for("ui.senders"))


@bp.route("/settings/senders/<int:sender_id>/delete", methods=["POST"])
@login_required(Role.ADMIN)
def sender_delete(sender_id: int) -> Any:
    try:
        identities.delete_sender_identity(db(), sender_id)
    except FORM_ERRORS as exc:
        db().rollback()
        flash(errors_of(exc).get("", exc.message), "error")
        return redirect(url_for("ui.senders"))
    db().commit()
    flash("Sender identity deleted.", "success")
    return redirect(url_for("ui.senders"))


# --- custom fields ---------------------------------------------------------------------


def _fields_page(values: Any, errors: dict[str, str]) -> str:
    return render_template(
        "settings/fields.html",
        fields=contacts.list_fields(db()),
        types=[(t.value, t.value) for t in FieldType],
        values=values,
        errors=errors,
    )


@bp.route("/settings/fields", methods=["GET"])
@login_required()
def fields() -> Any:
    return _fields_page({"type": "text"}, {})


@bp.route("/settings/fields", methods=["POST"])
@login_required(Role.ADMIN)
def field_create() -> Any:
    raw_options = request.form.get("options", "").replace("\n", ",").split(",")
    data = {
        "name": request.form.get("name", "").strip(),
        "label": request.form.get("label", "").strip(),
        "type": request.form.get("type", ""),
        "options": [o.strip() for o in raw_options if o.strip()],
        "indexed": request.form.get("indexed") == "1",
    }
    try:
        field = contacts.declare_field(db(), parse(CustomFieldIn, data))
    except FORM_ERRORS as exc:
        db().rollback()
        return _fields_page(request.form, errors_of(exc)), INVALID
    db().commit()
    if field.indexed:
        nurture().enqueue("segments.sync_field_indexes")
    flash(f"Custom field {field.name} declared.", "success")
    return redirect(url_for("ui.fields"))


@bp.route("/settings/fields/<name>/index", methods=["POST"])
@login_required(Role.ADMIN)
def field_index(name: str) -> Any:
    indexed = request.form.get("indexed") == "1"
    field = contacts.set_field_indexed(db(), name, indexed)
    db().commit()
    nurture().enqueue("segments.sync_field_indexes")
    if not indexed:
        flash(f"The index of {field.name} is being dropped.", "success")
    elif field.index_status is IndexStatus.UNSUPPORTED:
        flash(f"{field.name} is marked indexed; indexes are built on PostgreSQL only.", "success")
    else:
        flash(
            f"The index of {field.name} is being built; its status shows when it is ready.",
            "success",
        )
    return redirect(url_for("ui.fields"))


@bp.route("/settings/fields/<name>/delete", methods=["POST"])
@login_required(Role.ADMIN)
def field_delete(name: str) -> Any:
    try:
        contacts.delete_field(db(), name)
    except FORM_ERRORS as exc:
        db().rollback()
        flash(errors_of(exc).get("", exc.message), "error")
        return redirect(url_for("ui.fields"))
    db().commit()
    nurture().enqueue("segments.sync_field_indexes")
    flash(f"Custom field {name} deleted; values already stored on contacts are kept.", "success")
    return redirect(url_for("ui.fields"))


# --- sending policy ------------------------------------------------------------------------

POLICY_FORM_FIELDS = (
    "frequency_cap",
    "frequency_cap_days",
    "frequency_cap_action",
    "sunset_sends",
    "sunset_days",
    "engagement_half_life_days",
    "soft_bounce_limit",
    "soft_bounce_days",
    "complaint_min_count",
    "complaint_window_days",
)


def _sending_page(values: dict[str, Any] | None, errors: dict[str, str], status: int = 200) -> Any:
    """The SMTP relay and bot filtering as the environment sets them (every worker must
    agree on those), and the policy an admin edits here (frequency cap, sunset, engagement
    half-life: saved in the database, applied by every process on its next batch)."""
    runtime = nurture()
    current = policy.get_policy(db(), runtime.settings)
    if values is None:  # the form shows what is saved; empty fields follow the environment
        values = {
            name: ("" if name not in current.saved else getattr(current, name))
            for name in POLICY_FORM_FIELDS
        }
    return (
        render_template(
            "settings/sending.html",
            s=runtime.settings,
            policy=current,
            values=values,
            errors=errors,
            smtp_check=check_smtp_settings(runtime),
            classify=classify,
            paused=paused_senders(db(), runtime.settings),
        ),
        status,
    )


@bp.route("/settings/sending", endpoint="sending_settings")
@login_required(Role.ADMIN)
def sending_settings() -> Any:
    return _sending_page(None, {})


@bp.route("/settings/sending", methods=["POST"])
@login_required(Role.ADMIN)
def sending_policy_save() -> Any:
    values = {name: request.form.get(name, "").strip() for name in POLICY_FORM_FIELDS}
    try:
        data = parse(policy.PolicyIn, {k: (v or None) for k, v in values.items()})
        policy.save_policy(db(), data, nurture().settings, user_id=g.user.id)
    except FORM_ERRORS as exc:
        db().rollback()
        return _sending_page(values, errors_of(exc), INVALID)
    db().commit()
    flash(
        "Sending policy saved: every sender and worker applies it from its next batch.", "success"
    )
    return redirect(url_for("ui.sending_settings"))
