"""Lead-capture forms: list with the embed snippet, create, edit, delete."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for

from automation.accounts.models import Role
from automation.errors import Conflict, FieldError, InvalidInput
from automation.forms import service as forms
from automation.forms.models import Form
from automation.forms.schema import FormIn
from automation.segments import service as segments
from automation.segments.models import SegmentKind
from web.auth import login_required
from web.database import db, nurture
from web.ui.blueprint import bp
from web.ui.forms import FORM_ERRORS, INVALID, errors_of, parse


def _field_lines(form: Form | None) -> str:
    if form is None:
        return "email | Email | required\nfirst_name | First name"
    return "\n".join(
        f"{f['name']} | {f['label']}" + (" | required" if f["required"] else "")
        for f in form.fields
    )


def _values(form: Form | None) -> dict[str, Any]:
    if form is None:
        return {"fields": _field_lines(None), "success_message": "Thank you!"}
    return {
        "name": form.name,
        "fields": _field_lines(form),
        "consent_text": form.consent_text,
        "double_opt_in": form.double_opt_in,
        "tags": ", ".join(form.tags),
        "lists": form.lists,
        "success_message": form.success_message,
        "redirect_url": form.redirect_url or "",
    }


def _parse_lines(text: str) -> list[dict[str, Any]]:
    """``name | label | required`` per line; InvalidInput naming the line."""
    out, errors = [], []
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    for n, line in lines:
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 2 or not parts[0] or not parts[1] or len(parts) > 3:
            errors.append(FieldError("fields", f"line {n}: write name | label [| required]"))
            continue
        if len(parts) == 3 and parts[2].lower() not in ("required", ""):
            errors.append(FieldError("fields", f"line {n}: the third part can only be required"))
            continue
        out.append({"name": parts[0], "label": parts[1], "required": len(parts) == 3})
    if errors:
        raise InvalidInput(errors)
    return out


def _input() -> FormIn:
    f = request.form
    fields = _parse_lines(f.get("fields", ""))
    data = {
        "name": f.get("name", "").strip(),
        "fields": fields,
        "consent_text": f.get("consent_text", "").strip(),
        "double_opt_in": f.get("double_opt_in") == "on",
        "tags": [t.strip() for t in f.get("tags", "").split(",") if t.strip()],
        "lists": [int(v) if v.isdigit() else v for v in f.getlist("lists")],
        "success_message": f.get("success_message", "").strip(),
        "redirect_url": f.get("redirect_url", "").strip() or None,
    }
    try:
        return parse(FormIn, data)
    except InvalidInput as exc:
        raise InvalidInput([_on_lines(e) for e in exc.errors]) from None


def _on_lines(error: FieldError) -> FieldError:
    """``fields[2].name`` (an unknown custom field, say) → the textarea, naming its line."""
    if error.path.startswith("fields["):
        index = int(error.path[len("fields[") : error.path.index("]")])
        return FieldError("fields", f"line {index + 1}: {error.message}")
    if error.path.startswith("lists["):  # one set of checkboxes
        return FieldError("lists", error.message)
    return error


def _page(form: Form | None, values: Any, errors: dict[str, str], status: int = 200) -> Any:
    embed = ""
    if form is not None:
        base = nurture().settings.base_url
        embed = forms.embed_html(
            forms.field_specs(db(), form),
            form,
            f"{base}/f/{form.public_id}",
            f"{base}/t/nurture.js",
        )
    chosen = values.getlist("lists") if hasattr(values, "getlist") else values.get("lists", [])
    static_lists = [
        (segment.id, segment.name)
        for segment in segments.list_segments(db())
        if segment.kind is SegmentKind.STATIC
    ]
    html = render_template(
        "lead_forms/form.html",
        form=form,
        values=values,
        errors=errors,
        embed=embed,
        static_lists=static_lists,
        chosen_lists={str(list_id) for list_id in chosen},
    )
    return html, status


@bp.route("/forms", endpoint="lead_forms")
@login_required()
def lead_forms_list() -> Any:
    return render_template("lead_forms/list.html", forms=forms.list_forms(db()))


@bp.route("/forms/new", methods=["GET", "POST"])
@login_required(Role.MARKETER)
def lead_form_new() -> Any:
    if request.method != "POST":
        return _page(None, _values(None), {})
    try:
        form = forms.create_form(db(), _input())
    except FORM_ERRORS as exc:
        db().rollback()
        errors = errors_of(
            InvalidInput([_on_lines(e) for e in exc.errors] or [FieldError("", exc.message)])
        )
        return _page(None, request.form, errors, INVALID)
    db().commit()
    flash(f"Form {form.name} created: paste its snippet into your site.", "success")
    return redirect(url_for("ui.lead_form", form_id=form.id))


@bp.route("/forms/<int:form_id>", methods=["GET"])
@login_required()
def lead_form(form_id: int) -> Any:
    form = forms.get_form(db(), form_id)
    return _page(form, _values(form), {})


@bp.route("/forms/<int:form_id>", methods=["POST"])
@login_required(Role.MARKETER)
def lead_form_save(form_id: int) -> Any:
    form = forms.get_form(db(), form_id)
    try:
        forms.update_form(db(), form_id, _input())
    except FORM_ERRORS as exc:
        db().rollback()
        form = forms.get_form(db(), form_id)
        errors = errors_of(
            InvalidInput([_on_lines(e) for e in exc.errors] or [FieldError("", exc.message)])
        )
        return _page(form, request.form, errors, INVALID)
    db().commit()
    flash("Form saved.", "success")
    return redirect(url_for("ui.lead_form", form_id=form.id))


@bp.route("/forms/<int:form_id>/delete", methods=["POST"])
@login_required(Role.MARKETER)
def lead_form_delete(form_id: int) -> Any:
    try:
        forms.delete_form(db(), form_id)
    except Conflict as exc:
        db().rollback()
        flash(f"Not deleted: {exc}", "error")
        return redirect(url_for("ui.lead_form", form_id=form_id))
    db().commit()
    flash("Form deleted.", "success")
    return redirect(url_for("ui.lead_forms"))
