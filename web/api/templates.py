"""Email templates (with their immutable versions), validation, preview, test send, and
sender identities over the API."""

from __future__ import annotations

from flask import Response, g

from automation.accounts.models import Role
from automation.email import identities
from automation.email import templates as service
from automation.email.compiler import Problem
from automation.email.models import Template, TemplateVersion
from automation.email.schema import (
    DraftPreviewIn,
    DraftPreviewOut,
    PreviewIn,
    PreviewOut,
    ProblemOut,
    SenderIdentityIn,
    SenderIdentityOut,
    TemplateContent,
    TemplateIn,
    TemplateOut,
    TemplateRename,
    TemplateSummary,
    TestSendIn,
    TestSendOut,
    ValidationOut,
    VersionOut,
    VersionSummary,
)
from automation.email.transport import SmtpSettings, SmtpTransport
from automation.errors import FieldError, InvalidInput
from web.api.errors import error_body
from web.api.routing import ApiBlueprint
from web.database import db, nurture
from web.ratelimits import rate_limits

bp = ApiBlueprint("templates", __name__)


def _problems(items: list[Problem]) -> list[ProblemOut]:
    return [ProblemOut(**p.as_dict()) for p in items]


def _out(
    template: Template, version: TemplateVersion, warnings: list[Problem] | None = None
) -> TemplateOut:
    return TemplateOut(
        id=template.id,
        name=template.name,
        latest_version=template.latest_version,
        created_at=template.created_at,
        updated_at=template.updated_at,
        version=VersionOut.model_validate(version),
        warnings=_problems(warnings or []),
    )


def _user_id() -> int | None:
    return getattr(g.principal, "user_id", None)


@bp.operation(
    "/sender-identities",
    "GET",
    summary="List sender identities",
    response=list[SenderIdentityOut],
)
def list_identities() -> list[SenderIdentityOut]:
    return [SenderIdentityOut.model_validate(i) for i in identities.list_sender_identities(db())]


@bp.operation(
    "/sender-identities",
    "POST",
    summary="Create a sender identity",
    role=Role.ADMIN,
    body=SenderIdentityIn,
    response=SenderIdentityOut,
    status=201,
)
def create_identity(body: SenderIdentityIn) -> SenderIdentityOut:
    identity = identities.create_sender_identity(db(), body)
    db().commit()
    return SenderIdentityOut.model_validate(identity)


@bp.operation("/templates", "GET", summary="List templates", response=list[TemplateSummary])
def list_templates() -> list[TemplateSummary]:
    return [
        TemplateSummary(
            id=t.id,
            name=t.name,
            latest_version=t.latest_version,
            kind=v.kind,
            subject=v.subject,
            updated_at=t.updated_at,
        )
        for t, v in service.list_templates(db())
    ]


@bp.operation(
    "/templates",
    "POST",
    summary="Create a template (checked and compiled; version 1)",
    role=Role.MARKETER,
    body=TemplateIn,
    response=TemplateOut,
    status=201,
)
def create_template(body: TemplateIn) -> TemplateOut:
    saved = service.create_template(
        db(), body, user_id=_user_id(), base_url=nurture().settings.base_url
    )
    db().commit()
    return _out(saved.template, saved.version, saved.warnings)


@bp.operation(
    "/templates/validate",
    "POST",
    summary="Check a template without saving: errors and warnings with line and column",
    role=Role.MARKETER,
    body=TemplateContent,
    response=ValidationOut,
)
def validate(body: TemplateContent) -> ValidationOut:
    result = service.validate_template(db(), body, base_url=nurture().settings.base_url)
    compiled = result.compiled
    return ValidationOut(
        valid=not result.errors,
        errors=_problems(result.errors),
        warnings=_problems(result.warnings),
        links=compiled.links if compiled else [],
        html_bytes=compiled.html_bytes if compiled else None,
    )


@bp.operation(
    "/templates/preview-draft",
    "POST",
    summary="Check and render an unsaved template for the sample or a chosen contact",
    role=Role.MARKETER,
    body=DraftPreviewIn,
    response=DraftPreviewOut,
    read_only=True,
)
def preview_draft(body: DraftPreviewIn) -> DraftPreviewOut:
    content = TemplateContent.model_validate(body.model_dump(exclude={"contact_id"}))
    settings = nurture().settings
    result, email = service.preview_draft(
        db(),
        content,
        base_url=settings.base_url,
        contact_id=body.contact_id,
        default_language=settings.email_language,
    )
    return DraftPreviewOut(
        valid=not result.errors,
        errors=_problems(result.errors),
        warnings=_problems(result.warnings),
        subject=email.subject if email else None,
        html=email.html if email else None,
        text=email.text if email else None,
    )


@bp.operation(
    "/templates/<int:template_id>",
    "GET",
    summary="A template with its latest version",
    response=TemplateOut,
)
def get_template(template_id: int) -> TemplateOut:
    template = service.get_template(db(), template_id)
    return _out(template, service.get_version(db(), template_id))


@bp.operation(
    "/templates/<int:template_id>",
    "PATCH",
    summary="Rename a template",
    role=Role.MARKETER,
    body=TemplateRename,
    response=TemplateOut,
)
def rename_template(template_id: int, body: TemplateRename) -> TemplateOut:
    template = service.rename_template(db(), template_id, body.name)
    db().commit()
    return _out(template, service.get_version(db(), template_id))


@bp.operation(
    "/templates/<int:template_id>",
    "DELETE",
    summary="Delete (archive) a template; refused while its messages wait to be sent",
    role=Role.MARKETER,
    status=204,
)
def delete_template(template_id: int) -> None:
    service.delete_template(db(), template_id)
    db().commit()


@bp.operation(
    "/templates/<int:template_id>/versions",
    "GET",
    summary="Versions of a template, newest first",
    response=list[VersionSummary],
)
def list_versions(template_id: int) -> list[VersionSummary]:
    return [VersionSummary.model_validate(v) for v in service.list_versions(db(), template_id)]


@bp.operation(
    "/templates/<int:template_id>/versions",
    "POST",
    summary="Edit a template: save a new version (earlier versions never change)",
    role=Role.MARKETER,
    body=TemplateContent,
    response=TemplateOut,
    status=201,
)
def add_version(template_id: int, body: TemplateContent) -> TemplateOut:
    saved = service.add_version(
        db(), template_id, body, user_id=_user_id(), base_url=nurture().settings.base_url
    )
    db().commit()
    return _out(saved.template, saved.version, saved.warnings)


@bp.operation(
    "/templates/<int:template_id>/versions/<int:version_id>",
    "GET",
    summary="One version, with its source and compiled HTML and text",
    response=VersionOut,
)
def get_version(template_id: int, version_id: int) -> VersionOut:
    return VersionOut.model_validate(service.get_version(db(), template_id, version_id))


@bp.operation(
    "/templates/<int:template_id>/preview",
    "GET",
    summary="Render for a chosen contact or the sample: subject, HTML and text",
    query=PreviewIn,
    response=PreviewOut,
    read_only=True,
)
def preview(template_id: int, query: PreviewIn) -> PreviewOut:
    result = service.preview_template(
        db(),
        template_id,
        base_url=nurture().settings.base_url,
        contact_id=query.contact_id,
        version_id=query.version_id,
        default_language=nurture().settings.email_language,
    )
    return PreviewOut(
        subject=result.email.subject,
        html=result.email.html,
        text=result.email.text,
        viewports=service.VIEWPORTS,
        contact=result.contact,
    )


@bp.operation(
    "/templates/<int:template_id>/test-send",
    "POST",
    summary="Send the preview to an address now (outside the outbox; never a suppressed one)",
    role=Role.MARKETER,
    body=TestSendIn,
    response=TestSendOut,
    errors=(429,),
)
def test_send(template_id: int, body: TestSendIn) -> TestSendOut | Response:
    settings = nurture().settings
    principal = g.principal
    wait = rate_limits().hit(
        settings.test_send_rate_limit, "test-send", principal.kind, str(principal.id)
    )
    if wait is not None:
        limited = error_body("rate_limited", f"too many test sends; try again in {wait} s")
        limited.status_code = 429
        limited.headers["Retry-After"] = str(wait)
        return limited
    # A connection of its own: web threads must not share one.
    transport = SmtpTransport(SmtpSettings.from_settings(settings))
    try:
        delivery, message_id = service.send_test(
            db(),
            template_id,
            body.to,
            transport,
            settings,
            contact_id=body.contact_id,
            version_id=body.version_id,
        )
    finally:
        transport.close()
    if delivery.unavailable:
        raise InvalidInput(FieldError("to", f"the SMTP relay is unavailable: {delivery.response}"))
    return TestSendOut(
        status=delivery.status.value, response=delivery.response, message_id=message_id
    )
