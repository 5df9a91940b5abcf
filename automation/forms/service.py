"""Lead-capture forms: definitions, the embeddable snippet, submissions and double opt-in.

A submission creates or updates the contact, records consent with the form's wording and
the visitor's IP, links the visitor's site events to the contact it creates (never to an
existing one: anyone can type a known address) and stores a
``form.submitted`` event (workflows trigger on it). With double opt-in nothing about an
existing contact changes and no event is stored until the confirmation link (a signed
CONFIRM token of the confirmation message) is followed.

Anyone can post a form with anyone's address, so a post proves nothing about who sent it:

- it never overwrites what an existing contact holds (names, attributes): it only fills
  in what is empty. A followed confirmation link proves the address, and applies all.
- an unsubscribed, bounced or complained address is never re-subscribed by a single opt-in
  post: it gets the double opt-in confirmation instead, and only following it subscribes.
- an erased contact's address comes back only with a new explicit consent: a form with
  consent wording (its box ticked) or double opt-in. A single opt-in form without consent
  wording creates nothing for it.
"""

from __future__ import annotations

import html
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation import clock
from automation.addresses import normalize_email
from automation.contacts import tags as tag_ops
from automation.contacts.attributes import coerce_text, field_types
from automation.contacts.consent import change_status, record_consent
from automation.contacts.events import ingest_events
from automation.contacts.models import Contact, ContactStatus, CustomField
from automation.contacts.service import find_contact_by_email
from automation.contacts.suppressions import erased_addresses, forget_erasure
from automation.email.models import Message, Template, TemplateKind, TemplateVersion
from automation.email.outbox import queue_message
from automation.email.schema import TemplateIn
from automation.email.templates import create_template
from automation.errors import Conflict, FieldError, InvalidInput, NotFound
from automation.forms.models import SUBMITTED_EVENT, Form, FormSubmission, SubmissionStatus
from automation.forms.schema import CONTACT_FIELDS, FormFieldOut, FormIn
from automation.reactions import react_to_contact_changes
from automation.references import Target, refuse_if_used
from automation.segments.membership import add_members
from automation.segments.models import Segment, SegmentKind
from automation.segments.service import missing_segments
from automation.signing import TokenClaims
from automation.tracking.site import SiteReport, link_visitors, relink_anonymous

HONEYPOT_FIELD = "nurture_website"  # hidden from people; a bot that fills it is ignored
CONSENT_FIELD = "consent"
VISITOR_FIELD = "nurture_visitor"
MAX_VALUE = 500
CONFIRMATION_TEMPLATE = "Form confirmation (built-in)"
CONFIRMATION_MJML = """<mjml><mj-body><mj-section><mj-column>
<mj-text font-size="18px">Please confirm your subscription</mj-text>
<mj-text>Someone, hopefully you, asked to receive email from us at {{ contact.email }}.
Confirm it with the button below; if it was not you, ignore this message.</mj-text>
<mj-button href="{{ confirm_url }}">Yes, subscribe me</mj-button>
</mj-column></mj-section></mj-body></mjml>"""


# --- definitions -----------------------------------------------------------------------


def _check(session: Session, data: FormIn) -> list[dict[str, Any]]:
    """The stored field list; InvalidInput naming every bad field of the definition."""
    errors: list[FieldError] = []
    custom = field_types(session)
    seen: set[str] = set()
    stored = []
    for i, f in enumerate(data.fields):
        if f.name in seen:
            errors.append(FieldError(f"fields[{i}].name", f"{f.name} appears twice"))
        seen.add(f.name)
        if f.name not in CONTACT_FIELDS and f.name not in custom:
            errors.append(
                FieldError(
                    f"fields[{i}].name",
                    f"{f.name!r} is neither email, first_name, last_name nor a declared "
                    "custom field",
                )
            )
        stored.append(
            {"name": f.name, "label": f.label, "required": f.required or f.name == "email"}
        )
    if "email" not in seen:
        errors.append(FieldError("fields", "a form needs an email field"))
    errors += missing_segments(
        session, [(list_id, f"lists[{i}]") for i, list_id in enumerate(data.lists)], static=True
    )
    if data.redirect_url is not None and (
        urlsplit(data.redirect_url).scheme not in ("http", "https")
        or not urlsplit(data.redirect_url).netloc
    ):
        errors.append(FieldError("redirect_url", "an http(s) URL"))
    if data.confirmation_template_id is not None:
        kind = session.scalar(
            select(TemplateVersion.kind)
            .join(Template, Template.id == TemplateVersion.template_id)
            .where(
                Template.id == data.confirmation_template_id,
                Template.deleted_at.is_(None),
                TemplateVersion.number == Template.latest_version,
            )
        )
        if kind is None:
            errors.append(FieldError("confirmation_template_id", "no such template"))
        elif kind is not TemplateKind.TRANSACTIONAL:
            errors.append(
                FieldError("confirmation_template_id", "must be a transactional template")
            )
    if errors:
        raise InvalidInput(errors)
    return stored


def _unique_name(session: Session, name: str, exclude: int | None = None) -> None:
    q = select(Form.id).where(Form.name == name)
    if exclude is not None:
        q = q.where(Form.id != exclude)
    if session.scalar(q) is not None:
        raise Conflict(f"a form named {name!r} exists", [FieldError("name", "already used")])


def create_form(session: Session, data: FormIn) -> Form:
    fields = _check(session, data)
    _unique_name(session, data.name)
    now = clock.now()
    form = Form(public_id=secrets.token_urlsafe(12), created_at=now, updated_at=now)
    _apply(form, data, fields)
    session.add(form)
    session.flush()
    return form


def update_form(session: Session, form_id: int, data: FormIn) -> Form:
    form = get_form(session, form_id)
    fields = _check(session, data)
    _unique_name(session, data.name, exclude=form.id)
    if data.name != form.name:
        _check_rename(session, form)
    _apply(form, data, fields)
    form.updated_at = clock.now()
    session.flush()
    return form


def _apply(form: Form, data: FormIn, fields: list[dict[str, Any]]) -> None:
    form.name = data.name
    form.fields = fields
    form.consent_text = data.consent_text
    form.double_opt_in = data.double_opt_in
    form.tags = list(dict.fromkeys(data.tags))
    form.lists = list(dict.fromkeys(data.lists))
    form.success_message = data.success_message
    form.redirect_url = data.redirect_url
    form.confirmation_template_id = data.confirmation_template_id


def get_form(session: Session, form_id: int) -> Form:
    form = session.get(Form, form_id)
    if form is None:
        raise NotFound(f"form {form_id} not found")
    return form


def form_by_public_id(session: Session, public_id: str) -> Form:
    form = session.scalar(select(Form).where(Form.public_id == public_id[:32]))
    if form is None:
        raise NotFound("no such form")
    return form


def list_forms(session: Session) -> list[Form]:
    return list(session.scalars(select(Form).order_by(Form.name)))


def _check_rename(session: Session, form: Form) -> None:
    """A live workflow whose trigger names the form by its name (documents written before
    triggers named forms by id, like the shipped examples) would stop starting: refused."""
    refuse_if_used(
        session,
        Target.FORM_NAME,
        form.name,
        f"the name of form {form.name!r}",
        field="name",
        advice="choose the form in their trigger (the canvas lists the forms) and publish, "
        "then rename it",
    )


def delete_form(session: Session, form_id: int) -> None:
    """Delete a form; refused while a live workflow starts on it (the workflow would never
    start again, silently)."""
    form = get_form(session, form_id)
    refuse_if_used(session, Target.FORM, (form.id, form.name), f"form {form.name!r}")
    session.delete(form)
    session.flush()


def field_specs(session: Session, form: Form) -> list[FormFieldOut]:
    """The form's fields with their input type and choices (from the custom fields)."""
    custom = field_types(session)
    out = []
    for f in form.fields:
        c = custom.get(f["name"])
        kind = "email" if f["name"] == "email" else (c.type.value if c else "text")
        options = list(c.options) if c else []
        out.append(FormFieldOut(**f, type=kind, options=options))
    return out


_INPUT_TYPES = {"email": "email", "number": "number", "date": "date", "text": "text"}


def embed_html(specs: list[FormFieldOut], form: Form, action_url: str, script_url: str) -> str:
    """The snippet a website pastes: a plain HTML form (works without JavaScript) that the
    site script enhances (visitor id, answer shown in place)."""
    e = html.escape
    rows = []
    for f in specs:
        req = " required" if f.required else ""
        label = e(f.label)
        if f.type == "boolean":
            rows.append(
                f'  <p><label><input type="checkbox" name="{e(f.name)}" value="true"{req}> '
                f"{label}</label></p>"
            )
        elif f.type == "choice":
            options = "".join(f'<option value="{e(o)}">{e(o)}</option>' for o in f.options)
            rows.append(
                f'  <p><label>{label}<br><select name="{e(f.name)}"{req}>'
                f'<option value=""></option>{options}</select></label></p>'
            )
        else:
            kind = _INPUT_TYPES.get(f.type, "text")
            rows.append(
                f'  <p><label>{label}<br><input type="{kind}" name="{e(f.name)}"{req}></label></p>'
            )
    if form.consent_text:
        rows.append(
            f'  <p><label><input type="checkbox" name="{CONSENT_FIELD}" value="true" required> '
            f"{e(form.consent_text)}</label></p>"
        )
    rows.append(
        f'  <p style="position:absolute;left:-9999px" aria-hidden="true"><label>Leave empty '
        f'<input type="text" name="{HONEYPOT_FIELD}" tabindex="-1" autocomplete="off"></label></p>'
    )
    rows.append('  <p><button type="submit">Subscribe</button></p>')
    body = "\n".join(rows)
    return (
        f'<form method="post" action="{e(action_url)}" data-nurture-form="{e(form.public_id)}">\n'
        f'{body}\n</form>\n<script src="{e(script_url)}" async></script>'
    )


# --- submissions ---------------------------------------------------------------------------


# Statuses a single opt-in post may not undo: the address must confirm (double opt-in).
NEEDS_CONFIRMED_OPT_IN = frozenset(
    {ContactStatus.UNSUBSCRIBED, ContactStatus.BOUNCED, ContactStatus.COMPLAINED}
)


@dataclass(frozen=True)
class SubmitResult:
    status: str  # confirmed | pending | ignored (honeypot)
    contact_id: int | None = None
    submission_id: int | None = None
    message_id: int | None = None  # the confirmation email (double opt-in)


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"true", "on", "yes", "1"}


def parse_submission(
    form: Form, custom: Mapping[str, CustomField], raw: Mapping[str, Any]
) -> dict[str, Any]:
    """The submitted values by field name, typed; InvalidInput naming each bad field."""
    errors: list[FieldError] = []
    values: dict[str, Any] = {}
    for f in form.fields:
        name = f["name"]
        given = raw.get(name)
        if isinstance(given, bool | int | float) and not isinstance(given, str):
            given = str(given).lower()
        if given is not None and not isinstance(given, str):
            errors.append(FieldError(name, "must be text"))
            continue
        text = (given or "").strip()
        if len(text) > MAX_VALUE:
            errors.append(FieldError(name, f"longer than {MAX_VALUE} characters"))
            continue
        if not text:
            if f["required"]:
                errors.append(FieldError(name, f"{f['label']} is required"))
            continue
        try:
            if name == "email":
                values[name] = normalize_email(text)
            elif name in CONTACT_FIELDS:
                values[name] = text[:100]
            else:
                values[name] = coerce_text(custom[name], text)
        except (ValueError, KeyError) as exc:
            errors.append(FieldError(name, str(exc) or "not valid"))
    if form.consent_text and not _truthy(raw.get(CONSENT_FIELD, "")):
        errors.append(FieldError(CONSENT_FIELD, "please accept to subscribe"))
    if errors:
        raise InvalidInput(errors)
    return values


def submit_form(
    session: Session,
    form: Form,
    raw: Mapping[str, Any],
    *,
    ip: str | None,
    visitor_id: str | None = None,
) -> SubmitResult:
    """Handle one post of ``form`` (see the module docstring). Bad input: InvalidInput
    naming the field, and nothing written."""
    if str(raw.get(HONEYPOT_FIELD) or "").strip():
        return SubmitResult("ignored")
    values = parse_submission(form, field_types(session), raw)
    contact = find_contact_by_email(session, values["email"])
    now = clock.now()
    created = contact is None
    if created and erased_addresses(session, [values["email"]]):
        if not (form.consent_text or form.double_opt_in):
            return SubmitResult("ignored")  # no new explicit consent: it stays erased
        forget_erasure(session, values["email"])
    if contact is None:
        contact = Contact(
            email=values["email"],
            status=ContactStatus.PENDING if form.double_opt_in else ContactStatus.SUBSCRIBED,
            source=f"form:{form.id}",
            confirmed_at=None if form.double_opt_in else now,
            attributes={},
            created_at=now,
            updated_at=now,
        )
        session.add(contact)
        session.flush()
        record_consent(
            session, contact, None, source=f"form:{form.id}", ip=ip, consent_text=form.consent_text
        )
    confirming = form.double_opt_in or contact.status in NEEDS_CONFIRMED_OPT_IN
    if confirming and not created:
        waiting = _waiting_confirmation(session, form, contact)
        if waiting is not None:  # one confirmation a day: posts never flood an inbox
            return SubmitResult("pending", contact.id, waiting.id, waiting.message_id)
    submission = FormSubmission(
        form_id=form.id,
        contact_id=contact.id,
        data=values,
        status=SubmissionStatus.PENDING,
        ip=ip,
        visitor_id=visitor_id,
        created_at=now,
    )
    session.add(submission)
    session.flush()
    if visitor_id and created:
        # Only the contact this post created: anyone can type a known address into a
        # form, and that must not attach the typist's browsing to its contact.
        changed = link_visitors(session, {visitor_id: (contact.id, "form")})
        relink_anonymous(session, changed, SiteReport())
    if confirming:
        if created:  # a new, pending contact: no one's data
            _apply_values(session, contact, values, [], overwrite=True)
        version_id = _confirmation_version(session, form)
        message_id = queue_message(
            session,
            dedupe_key=f"form-confirm:{submission.id}",
            contact_id=contact.id,
            template_version_id=version_id,
        )
        submission.message_id = message_id
        session.flush()
        react_to_contact_changes(session, [contact.id])
        return SubmitResult("pending", contact.id, submission.id, message_id)
    _confirm(session, form, submission, contact, ip=ip, source=f"form:{form.id}", created=created)
    return SubmitResult("confirmed", contact.id, submission.id)


CONFIRMATION_RESENT_AFTER = timedelta(days=1)


def _waiting_confirmation(session: Session, form: Form, contact: Contact) -> FormSubmission | None:
    """The unconfirmed submission of this form by this contact whose confirmation went out
    less than a day ago, if any: another post then sends no second email."""
    return session.scalar(
        select(FormSubmission)
        .where(
            FormSubmission.form_id == form.id,
            FormSubmission.contact_id == contact.id,
            FormSubmission.status == SubmissionStatus.PENDING,
            FormSubmission.message_id.is_not(None),
            FormSubmission.created_at > clock.now() - CONFIRMATION_RESENT_AFTER,
        )
        .order_by(FormSubmission.id.desc())
        .limit(1)
    )


def _apply_values(
    session: Session,
    contact: Contact,
    values: Mapping[str, Any],
    tags: list[str],
    *,
    overwrite: bool,
) -> None:
    """Write the submitted values onto the contact; without ``overwrite`` (an unproven
    post about an existing contact) only where the contact holds nothing yet."""
    for name in ("first_name", "last_name"):
        if name in values and (overwrite or not getattr(contact, name)):
            setattr(contact, name, values[name])
    custom = {
        k: v
        for k, v in values.items()
        if k not in CONTACT_FIELDS and (overwrite or contact.attributes.get(k) in (None, ""))
    }
    if custom:
        contact.attributes = {**contact.attributes, **custom}
    contact.updated_at = clock.now()
    session.flush()
    tag_ops.add_tags(session, [contact.id], tags)


def _join_lists(session: Session, form: Form, contact_id: int) -> None:
    """Add the contact to the form's static lists. A list deleted (or made dynamic) since
    the form was saved is skipped: a visitor's submission never fails for it."""
    if not form.lists:
        return
    still_lists = session.scalars(
        select(Segment.id).where(Segment.id.in_(form.lists), Segment.kind == SegmentKind.STATIC)
    )
    for list_id in still_lists:
        add_members(session, list_id, [contact_id])


def _confirm(
    session: Session,
    form: Form,
    submission: FormSubmission,
    contact: Contact,
    *,
    ip: str | None,
    source: str,
    created: bool = False,
    proven: bool = False,
) -> None:
    """Apply a submission: fields, tags, lists, subscription with consent,
    ``form.submitted``. ``proven``: the address confirmed it (its values win)."""
    _apply_values(session, contact, submission.data, list(form.tags), overwrite=created or proven)
    _join_lists(session, form, contact.id)
    status_changed = False
    if contact.status is not ContactStatus.SUBSCRIBED and not created:
        # Only a confirmed opt-in gets here for an unsubscribed, bounced or complained
        # contact (submit_form); a complainer goes through pending, as the one transition
        # function demands.
        if contact.status is ContactStatus.COMPLAINED:
            change_status(
                session,
                contact,
                ContactStatus.PENDING,
                source=source,
                ip=ip,
                consent_text=form.consent_text,
            )
        status_changed = change_status(
            session,
            contact,
            ContactStatus.SUBSCRIBED,
            source=source,
            ip=ip,
            consent_text=form.consent_text,
        )
    if not status_changed and not created:
        # Already subscribed (or a new contact, recorded at creation): the form's wording
        # is still evidence of this consent.
        record_consent(
            session, contact, contact.status, source=source, ip=ip, consent_text=form.consent_text
        )
    submission.status = SubmissionStatus.CONFIRMED
    submission.confirmed_at = clock.now()
    session.flush()
    react_to_contact_changes(session, [contact.id])
    ingest_events(
        session,
        [
            {
                "name": SUBMITTED_EVENT,
                "email": contact.email,
                "properties": {
                    "form_id": form.id,
                    "form_name": form.name,
                    "submission_id": submission.id,
                    "double_opt_in": form.double_opt_in,
                    "values": dict(submission.data),
                },
                "idempotency_key": f"form.submitted:{submission.id}",
            }
        ],
        source="form",
    )


def _confirmation_version(session: Session, form: Form) -> int:
    """The latest version of the form's confirmation template, or of the built-in one
    (created on first use)."""
    template_id = form.confirmation_template_id
    if template_id is None:
        template_id = session.scalar(
            select(Template.id).where(Template.name == CONFIRMATION_TEMPLATE)
        )
        if template_id is None:
            saved = create_template(
                session,
                TemplateIn(
                    name=CONFIRMATION_TEMPLATE,
                    kind=TemplateKind.TRANSACTIONAL,
                    subject="Please confirm your subscription",
                    mjml=CONFIRMATION_MJML,
                ),
            )
            return saved.version.id
    version_id = session.scalar(
        select(TemplateVersion.id)
        .join(Template, Template.id == TemplateVersion.template_id)
        .where(Template.id == template_id, TemplateVersion.number == Template.latest_version)
    )
    if version_id is None:
        raise NotFound("the form's confirmation template is gone")
    return version_id


def submission_of(session: Session, claims: TokenClaims) -> tuple[Form, FormSubmission]:
    """The submission a genuine CONFIRM token leads to; NotFound otherwise."""
    message = session.get(Message, claims.message_id)
    if message is None or (message.token_nonce & 0xFFFFFFFF) != claims.nonce:
        raise NotFound("no such confirmation")
    submission = session.scalar(
        select(FormSubmission).where(FormSubmission.message_id == message.id)
    )
    if submission is None:
        raise NotFound("no such confirmation")
    form = session.get(Form, submission.form_id)
    if form is None:
        raise NotFound("the form was deleted")
    return form, submission


def confirm_submission(session: Session, claims: TokenClaims, *, ip: str | None) -> Contact:
    """Follow a double opt-in link: subscribe, record consent, store ``form.submitted``.
    Following it again changes nothing."""
    form, submission = submission_of(session, claims)
    contact = session.get(Contact, submission.contact_id)
    if contact is None:
        raise NotFound("no such contact")
    if submission.status is SubmissionStatus.PENDING:
        _confirm(session, form, submission, contact, ip=ip, source="form_confirmation", proven=True)
    return contact
