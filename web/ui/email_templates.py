"""Email templates: the list, and the MJML editor (CodeMirror) whose script checks and
previews the draft live through /api/v1/templates, saves versions and sends tests."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from sqlalchemy import select

from automation.accounts.models import Role
from automation.contacts.models import CustomField
from automation.email import identities
from automation.email import templates as service
from automation.email.models import Template, TemplateKind, TemplateVersion
from web.auth import login_required
from web.database import db, nurture
from web.ids import row_id
from web.ui.blueprint import bp
from web.ui.forms import FORM_ERRORS, errors_of

STARTER = """<mjml>
  <mj-body>
    <mj-section>
      <mj-column>
        <mj-text>Hello {{ contact.first_name }},</mj-text>
        <mj-button href="https://example.com">Read more</mj-button>
        <mj-text font-size="11px"><a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>
"""


def variables() -> list[str]:
    """The personalisation placeholders a template can use."""
    core = ["first_name", "last_name", "full_name", "email", "external_id", "lifecycle_stage"]
    core += ["score", "time_zone"]
    names = [f"contact.{name}" for name in core]
    names += [f"contact.attributes.{n}" for n in db().scalars(select(CustomField.name))]
    names += ["unsubscribe_url", "preferences_url", "view_in_browser_url"]
    return [*names, "workflow_name", "campaign_name"]


@bp.route("/templates")
@login_required()
def templates() -> Any:
    return render_template("email_templates/list.html", templates=service.list_templates(db()))


def _editor(template: Template | None, version: TemplateVersion | None) -> str:
    versions = service.list_versions(db(), template.id) if template else []
    return render_template(
        "email_templates/editor.html",
        template=template,
        version=version,
        versions=versions,
        kinds=[k.value for k in TemplateKind],
        senders=identities.list_sender_identities(db()),
        variables=variables(),
        starter=STARTER,
        default_subject="Hello {{ contact.first_name }}",
        default_language=nurture().settings.email_language,
    )


@bp.route("/templates/new")
@login_required(Role.MARKETER)
def template_new() -> Any:
    return _editor(None, None)


@bp.route("/templates/<int:template_id>")
@login_required()
def template_detail(template_id: int) -> Any:
    template = service.get_template(db(), template_id)
    version_id = request.args.get("version", type=row_id)
    return _editor(template, service.get_version(db(), template_id, version_id))


@bp.route("/templates/<int:template_id>/delete", methods=["POST"])
@login_required(Role.MARKETER)
def template_delete(template_id: int) -> Any:
    template = service.get_template(db(), template_id)
    try:
        service.delete_template(db(), template.id)
    except FORM_ERRORS as exc:
        db().rollback()
        flash(next(iter(errors_of(exc).values())), "error")
        return redirect(url_for("ui.template_detail", template_id=template_id))
    db().commit()
    flash(f"Template {template.name} deleted.", "success")
    return redirect(url_for("ui.templates"))
