"""Templates and their immutable versions: save (check + compile once), preview, test send,
delete."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from automation import clock
from automation.addresses import needs_smtputf8
from automation.config import DEFAULT_LANGUAGE, Settings
from automation.contacts.models import Contact, ContactStatus, CustomField
from automation.contacts.suppressions import suppression_reasons
from automation.email.compiler import CompileResult, Draft, Problem, compile_template
from automation.email.context import load_contact_contexts, sample_contact, template_context
from automation.email.identities import needs_smtputf8_for, sender_of
from automation.email.mime import AddressError, Mail, build_mime, qp_encode, wire_address
from automation.email.models import (
    Message,
    SenderIdentity,
    Template,
    TemplateKind,
    TemplateVersion,
    VersionOverride,
)
from automation.email.outbox import NEEDS_SMTPUTF8, OUTSTANDING, Delivery
from automation.email.render import (
    PREHEADER_SLOT,
    CompiledVersion,
    RenderedEmail,
    compile_version,
    preview_urls,
    render_email,
)
from automation.email.sandbox import RenderError
from automation.email.schema import TemplateContent, TemplateIn
from automation.email.transport import Envelope, Transport
from automation.errors import Conflict, FieldError, InvalidInput, NotFound
from automation.references import Target, refuse_if_used

VIEWPORTS = {"desktop": 800, "mobile": 375}


def _sample_context(session: Session, base_url: str) -> dict[str, Any]:
    return template_context(
        sample_contact(session),
        unsubscribe_url=f"{base_url}/u/preview",
        preferences_url=f"{base_url}/p/preview",
        view_in_browser_url=f"{base_url}/v/preview",
        confirm_url=f"{base_url}/f/confirm/preview",
        workflow_name="Sample workflow",
        campaign_name="Sample campaign",
    )


def validate_template(
    session: Session, content: TemplateContent, *, base_url: str = "http://nurture.localhost"
) -> CompileResult:
    """Every check a save runs, with line and column; nothing is stored."""
    if content.sender_identity_id is not None and (
        session.get(SenderIdentity, content.sender_identity_id) is None
    ):
        result = CompileResult()
        result.errors.append(
            Problem("sender_identity_id", f"no sender identity {content.sender_identity_id}")
        )
        return result
    known = set(session.scalars(select(CustomField.name)))
    draft = Draft(
        subject=content.subject,
        preheader=content.preheader,
        mjml=content.mjml,
        marketing=content.kind is TemplateKind.MARKETING,
    )
    return compile_template(draft, known_fields=known, sample=_sample_context(session, base_url))


def _raise_problems(result: CompileResult) -> None:
    if result.errors:
        raise InvalidInput(
            [p.field_error() for p in result.errors],
            message=f"the template has {len(result.errors)} problem(s)",
        )


def _new_version(
    session: Session,
    template: Template,
    content: TemplateContent,
    result: CompileResult,
    user_id: int | None,
) -> TemplateVersion:
    template.latest_version += 1
    template.updated_at = clock.now()
    version = _version_row(
        content,
        result,
        template_id=template.id,
        number=template.latest_version,
        created_at=clock.now(),
        created_by_id=user_id,
    )
    session.add(version)
    session.flush()
    return version


def _version_row(content: TemplateContent, result: CompileResult, **row: Any) -> TemplateVersion:
    """A version holding ``content`` and what it compiled to (``row`` gives ids, number…)."""
    assert result.compiled is not None
    return TemplateVersion(
        kind=content.kind,
        sender_identity_id=content.sender_identity_id,
        subject=content.subject,
        preheader=content.preheader,
        mjml=content.mjml,
        language=content.language,
        html=result.compiled.html,
        text=result.compiled.text,
        links=result.compiled.links,
        html_bytes=result.compiled.html_bytes,
        **row,
    )


@dataclass(frozen=True)
class Saved:
    template: Template
    version: TemplateVersion
    warnings: list[Problem]


def create_template(
    session: Session, data: TemplateIn, *, user_id: int | None = None, base_url: str = ""
) -> Saved:
    if session.scalar(select(Template.id).where(Template.name == data.name)) is not None:
        raise Conflict(f"a template named {data.name!r} already exists")
    result = validate_template(session, data, base_url=base_url or "http://nurture.localhost")
    _raise_problems(result)
    now = clock.now()
    template = Template(name=data.name, latest_version=0, created_at=now, updated_at=now)
    session.add(template)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a template named {data.name!r} already exists") from None
    return Saved(template, _new_version(session, template, data, result, user_id), result.warnings)


def add_version(
    session: Session,
    template_id: int,
    content: TemplateContent,
    *,
    user_id: int | None = None,
    base_url: str = "",
) -> Saved:
    """Editing a template: a new version; the earlier ones stay exactly as they were."""
    template = get_template(session, template_id, lock=True)
    result = validate_template(session, content, base_url=base_url or "http://nurture.localhost")
    _raise_problems(result)
    return Saved(
        template, _new_version(session, template, content, result, user_id), result.warnings
    )


def add_override(
    session: Session, version_id: int, *, subject: str | None, preheader: str | None
) -> VersionOverride:
    """A subject and/or preheader that replace the version's for the messages that name
    the override (a campaign variant's). The caller has checked them (validate_template
    on the content they make); no version is written, so nothing else sends them."""
    override = VersionOverride(
        template_version_id=version_id,
        subject=subject,
        preheader=preheader,
        created_at=clock.now(),
    )
    session.add(override)
    session.flush()
    return override


def delete_overrides(session: Session, override_ids: Iterable[int | None]) -> None:
    """Overrides of variants that were replaced or deleted before any message named them
    (a draft's): gone with them. One a message names is kept (its foreign key)."""
    ids = {i for i in override_ids if i is not None}
    if ids:
        named = set(
            session.scalars(select(Message.override_id).where(Message.override_id.in_(ids)))
        )
        if ids - named:
            session.execute(delete(VersionOverride).where(VersionOverride.id.in_(ids - named)))


def preheader_overridable(version: TemplateVersion) -> bool:
    """Whether the version renders its preheader per message (saved since it does), so an
    override can replace it; an older version has its preheader compiled in."""
    return "{{ " + PREHEADER_SLOT + " }}" in version.html


def rename_template(session: Session, template_id: int, name: str) -> Template:
    template = get_template(session, template_id)
    if name != template.name and session.scalar(select(Template.id).where(Template.name == name)):
        raise Conflict(f"a template named {name!r} already exists")
    template.name = name
    template.updated_at = clock.now()
    session.flush()
    return template


def get_template(session: Session, template_id: int, *, lock: bool = False) -> Template:
    query = select(Template).where(Template.id == template_id, Template.deleted_at.is_(None))
    if lock:
        query = query.with_for_update()
    template = session.scalar(query)
    if template is None:
        raise NotFound(f"template {template_id} not found")
    return template


def get_version(
    session: Session, template_id: int, version_id: int | None = None
) -> TemplateVersion:
    """A version of the template by id, or its latest."""
    template = get_template(session, template_id)
    query = select(TemplateVersion).where(TemplateVersion.template_id == template.id)
    if version_id is None:
        query = query.where(TemplateVersion.number == template.latest_version)
    else:
        query = query.where(TemplateVersion.id == version_id)
    version = session.scalar(query)
    if version is None:
        raise NotFound(f"template {template_id} has no version {version_id}")
    return version


def list_templates(session: Session) -> list[tuple[Template, TemplateVersion]]:
    rows = session.execute(
        select(Template, TemplateVersion)
        .join(
            TemplateVersion,
            (TemplateVersion.template_id == Template.id)
            & (TemplateVersion.number == Template.latest_version),
        )
        .where(Template.deleted_at.is_(None))
        .order_by(Template.name)
    )
    return [(t, v) for t, v in rows]


def list_versions(session: Session, template_id: int) -> list[TemplateVersion]:
    template = get_template(session, template_id)
    return list(
        session.scalars(
            select(TemplateVersion)
            .where(TemplateVersion.template_id == template.id)
            .order_by(TemplateVersion.number.desc())
        )
    )


def delete_template(session: Session, template_id: int) -> None:
    """Archive a template. Refused while messages of it wait to be sent, or a live
    workflow sends it (its step would skip the email from then on); its versions stay,
    since sent messages still point at them."""
    template = get_template(session, template_id, lock=True)
    refuse_if_used(session, Target.TEMPLATE, template.id, f"template {template.name!r}")
    pending = session.scalar(
        select(func.count())
        .select_from(Message)
        .join(TemplateVersion, TemplateVersion.id == Message.template_version_id)
        .where(TemplateVersion.template_id == template.id, Message.status.in_(OUTSTANDING))
    )
    if pending:
        raise Conflict(
            f"{pending} message(s) of this template are waiting to be sent; "
            "they must go out (or be cancelled with their workflow or campaign) first"
        )
    template.deleted_at = clock.now()
    template.name = f"{template.name[:150]} [deleted #{template.id}]"
    session.flush()


# --- preview and test send -------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    email: RenderedEmail
    contact: str


def preview_template(
    session: Session,
    template_id: int,
    *,
    base_url: str,
    contact_id: int | None = None,
    version_id: int | None = None,
    default_language: str = DEFAULT_LANGUAGE,
) -> Preview:
    """HTML, text and subject for a chosen contact or the sample; links go straight to
    their destinations (no tracking), unsubscribe and view links to placeholders."""
    version = compile_version(get_version(session, template_id, version_id))
    if contact_id is None:
        contact, label = sample_contact(session), "sample contact"
    else:
        found = load_contact_contexts(session, [contact_id])
        if contact_id not in found:
            raise InvalidInput(FieldError("contact_id", f"no contact {contact_id}"))
        contact, label = found[contact_id], found[contact_id]["email"]
    return Preview(_render(version, contact, base_url, default_language), label)


def preview_draft(
    session: Session,
    content: TemplateContent,
    *,
    base_url: str,
    contact_id: int | None = None,
    default_language: str = DEFAULT_LANGUAGE,
) -> tuple[CompileResult, RenderedEmail | None]:
    """An unsaved draft checked (errors with line and column) and, when it compiles,
    rendered for a chosen contact or the sample, as the editor's live preview. Nothing is
    stored."""
    result = validate_template(session, content, base_url=base_url)
    if result.errors or result.compiled is None:
        return result, None
    draft = _version_row(content, result, id=0, template_id=0, number=0)
    if contact_id is None:
        contact = sample_contact(session)
    else:
        found = load_contact_contexts(session, [contact_id])
        if contact_id not in found:
            raise InvalidInput(FieldError("contact_id", f"no contact {contact_id}"))
        contact = found[contact_id]
    return result, _render(compile_version(draft), contact, base_url, default_language)


def _render(
    version: CompiledVersion, contact: dict[str, Any], base_url: str, default_language: str
) -> RenderedEmail:
    try:
        return render_email(
            version,
            contact,
            preview_urls(version, base_url),
            workflow_name="Sample workflow",
            campaign_name="Sample campaign",
            default_language=default_language,
        )
    except RenderError as exc:
        where = f"line {exc.line}: " if exc.line else ""
        raise InvalidInput(FieldError("mjml", where + exc.message)) from None


_NOT_MAILED = (ContactStatus.UNSUBSCRIBED, ContactStatus.BOUNCED, ContactStatus.COMPLAINED)


def _test_send_refusal(session: Session, to: str) -> str | None:
    """Why ``to`` gets no test send: it is on the suppression list, or it is the address
    of a contact who unsubscribed, bounced or complained."""
    listed = suppression_reasons(session, [to])
    if listed:
        return f"is on the suppression list ({next(iter(listed.values())).value})"
    status = session.scalar(select(Contact.status).where(Contact.email == to.strip().lower()))
    if status in _NOT_MAILED:
        return f"belongs to a contact who is {ContactStatus(status).value}"
    return None


def send_test(
    session: Session,
    template_id: int,
    to: str,
    transport: Transport,
    settings: Settings,
    *,
    contact_id: int | None = None,
    version_id: int | None = None,
) -> tuple[Delivery, str]:
    """Send the preview to an address, now, outside the outbox (no frequency cap), unless
    it is suppressed: nobody who unsubscribed, bounced or complained gets mail from
    Nurture, a test included."""
    refusal = _test_send_refusal(session, to)
    if refusal:
        raise InvalidInput(FieldError("to", f"{to} {refusal}: test sends never go to it"))
    preview = preview_template(
        session,
        template_id,
        base_url=settings.base_url,
        contact_id=contact_id,
        version_id=version_id,
        default_language=settings.email_language,
    )
    version = get_version(session, template_id, version_id)
    identity = (
        session.get(SenderIdentity, version.sender_identity_id)
        if version.sender_identity_id
        else None
    )
    sender = sender_of(identity, settings.default_sender)
    message_id = f"<test.{secrets.token_urlsafe(12)}@{sender.header_domain}>"
    needing = needs_smtputf8_for(sender, to)
    utf8 = bool(needing)
    try:
        envelope_from = wire_address(sender.from_email, utf8=utf8)
        envelope_to = wire_address(to, utf8=utf8)
    except AddressError as exc:
        raise InvalidInput(FieldError("to", str(exc))) from None
    data = build_mime(
        Mail(
            utf8=utf8,
            from_name=sender.from_name,
            from_email=sender.from_email,
            to_name="",
            to_email=to,
            subject="[Test] " + preview.email.subject,
            html_qp=qp_encode(preview.email.html),
            text_qp=qp_encode(preview.email.text),
            message_id=message_id,
            date=clock.now(),
            reply_to=sender.reply_to,
        )
    )
    delivery = transport.send(Envelope(envelope_from, envelope_to, data, smtputf8_for=needing))
    if delivery.reason == NEEDS_SMTPUTF8:
        # Held, as the outbox would hold it: said clearly, never a 500.
        problem = (
            f"{', '.join(needing)} has a non-ASCII local part: sending needs SMTPUTF8, "
            "which the SMTP relay does not offer"
        )
        if needs_smtputf8(to):
            raise InvalidInput(FieldError("to", problem))
        raise Conflict(f"the template's sender: {problem}")
    return delivery, message_id
