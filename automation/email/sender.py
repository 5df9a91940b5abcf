"""Email, the outbox's first channel: render a claimed message (tokens, template, MIME) and
hand it to an SMTP transport. The sending loop itself is channel-agnostic
(automation/email/outbox/sending.py); this module is what it calls for email."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation.bulk import update_rows
from automation.config import Settings
from automation.email.context import load_contact_contexts
from automation.email.identities import Sender, needs_smtputf8_for, sender_of
from automation.email.mime import AddressError, Mail, build_mime, list_id_header, wire_address
from automation.email.models import Message, SenderIdentity
from automation.email.outbox import Batch, Claimed, Delivery, Undeliverable, get_message
from automation.email.render import (
    CompiledOverride,
    CompiledVersion,
    RenderedEmail,
    VersionCache,
    preview_urls,
    render_email,
    render_for_send,
    tracking_urls,
)
from automation.email.sandbox import RenderError
from automation.email.transport import Envelope, SmtpSettings, Transport, pooled_transport
from automation.errors import FieldError, InvalidInput
from automation.processes import keep_out_of_collector
from automation.signing import MessageTokens, TokenSigner, message_id_header


@dataclass
class Sending:
    """The email channel, kept by a sender process between batches: its SMTP connection,
    token signer and compiled-version cache."""

    settings: Settings
    transport: Transport
    signer: TokenSigner
    cache: VersionCache = field(default_factory=VersionCache)

    @classmethod
    def from_settings(cls, settings: Settings, transport: Transport | None = None) -> Sending:
        return cls(
            settings,
            transport or pooled_transport(SmtpSettings.from_settings(settings)),
            TokenSigner.from_settings(settings),
        )

    def prepare(self, session: Session, batch: Batch) -> EmailBatch:
        """The From of each sender identity in the batch (the default sender for none), and
        each message's Message-ID, stored on its row in the claim's transaction: before
        anything reaches the relay, so that even a message whose sender dies mid-send can
        be found in the relay's log (``nurture messages reconcile``)."""
        ids = {m.sender_identity_id for m in batch.messages} - {None}
        identities = session.scalars(select(SenderIdentity).where(SenderIdentity.id.in_(ids)))
        default = self.settings.default_sender
        senders: dict[int | None, Sender] = {None: sender_of(None, default)}
        senders.update({i.id: sender_of(i, default) for i in identities})
        tokens = {
            m.id: self.signer.for_message(m.id, m.nonce, batch.versions[m.version_id].id)
            for m in batch.messages
        }
        headers = {
            m.id: message_id_header(tokens[m.id], _sender(senders, m).header_domain)
            for m in batch.messages
        }
        update_rows(
            session,
            Message,
            [{"id": id_, "internet_message_id": header} for id_, header in headers.items()],
        )
        overrides = self.cache.get_overrides(
            session, {m.override_id for m in batch.messages if m.override_id is not None}
        )
        return EmailBatch(self, batch, senders, tokens, headers, overrides)

    def send_many(
        self, items: Iterable[tuple[Claimed, Envelope]]
    ) -> Iterator[tuple[Claimed, Delivery]]:
        return self.transport.send_many(items)


def _mailto(settings: Settings, sender: Sender, token: str) -> str:
    mailbox = settings.unsubscribe_mailto or f"unsubscribe@{sender.domain}"
    return f"mailto:{mailbox}?subject={quote('unsubscribe ' + token)}"


def _origin(message: Claimed) -> str:
    """Where a message comes from, unique in the workspace: a campaign, or a workflow's
    send node (node ids repeat from one workflow to the next)."""
    if message.campaign_id is not None:
        return f"c{message.campaign_id}"
    if message.workflow_node_id is not None:
        return f"w{message.workflow_id or 0}.{message.workflow_node_id}"
    return "x"


def _feedback_id(message: Claimed, version: CompiledVersion) -> str:
    """Gmail's Feedback-ID, ``a:b:c:SenderId``: the origin (campaign, or workflow and
    node), the template with its kind, the sender identity, and us. Complaint reports
    are grouped by each field, so each names one thing."""
    origin = re.sub(r"[^A-Za-z0-9_.-]", "-", _origin(message))[:60]  # ":" separates fields
    kind = "m" if version.marketing else "t"
    identity = f"i{message.sender_identity_id}" if message.sender_identity_id else "default"
    return f"{origin}:{kind}{version.template_id}:{identity}:nurture"


def _list_id(message: Claimed, sender: Sender) -> str | None:
    """RFC 2919 List-Id of marketing mail, under the sender's domain: the workspace's
    campaigns are one list, each workflow another (a transactional email is on none)."""
    if not message.marketing:
        return None
    if message.campaign_id is not None:
        return list_id_header(f"{sender.from_name} campaigns", "campaigns", sender.domain)
    if message.workflow_id is not None:
        name = message.workflow_name or f"{sender.from_name} workflow"
        return list_id_header(name, f"w{message.workflow_id}.workflows", sender.domain)
    return list_id_header(sender.from_name, "mail", sender.domain)


def _sender(senders: dict[int | None, Sender], message: Claimed) -> Sender:
    return senders.get(message.sender_identity_id) or senders[None]


def build_message(
    sending: Sending,
    message: Claimed,
    version: CompiledVersion,
    sender: Sender,
    tokens: MessageTokens,
    now: datetime,
    message_id: str,
) -> bytes:
    """The wire bytes of one message: render, then MIME. Raises RenderError, AddressError."""
    base = sending.settings.base_url
    urls = tracking_urls(tokens, base, len(version.links))
    email = render_for_send(
        version,
        message.contact,
        urls,
        workflow_name=message.workflow_name,
        campaign_name=message.campaign_name,
        default_language=sending.settings.email_language,
    )
    unsubscribe = None
    if version.marketing:
        token = urls.unsubscribe.rsplit("/", 1)[1]
        unsubscribe = (urls.unsubscribe, _mailto(sending.settings, sender, token))
    return build_mime(
        Mail(
            utf8=bool(needs_smtputf8_for(sender, message.email)),
            from_name=sender.from_name,
            from_email=sender.from_email,
            to_name=message.contact["full_name"],
            to_email=message.email,
            subject=email.subject,
            html_qp=email.html_qp,
            text_qp=email.text_qp,
            message_id=message_id,
            date=now,
            reply_to=sender.reply_to,
            list_unsubscribe=unsubscribe,
            feedback_id=_feedback_id(message, version),
            list_id=_list_id(message, sender),
        )
    )


@dataclass(frozen=True)
class EmailBatch:
    """One claimed batch, ready to render: the senders its messages go out from."""

    sending: Sending
    batch: Batch
    senders: dict[int | None, Sender]
    tokens: dict[int, MessageTokens]
    message_ids: dict[int, str]  # message id → its Message-ID header
    overrides: dict[int, CompiledOverride] = field(default_factory=dict)

    def render(self, message: Claimed, now: datetime) -> Envelope:
        version = self.batch.versions[message.version_id]
        if message.override_id is not None:
            override = self.overrides.get(message.override_id)
            if override is None:
                raise Undeliverable("render_error", f"no override {message.override_id}")
            version = override.apply(version)
        sender = _sender(self.senders, message)
        try:
            data = build_message(
                self.sending,
                message,
                version,
                sender,
                self.tokens[message.id],
                now,
                self.message_ids[message.id],
            )
            needing = needs_smtputf8_for(sender, message.email)
            return Envelope(
                wire_address(sender.from_email, utf8=bool(needing)),
                wire_address(message.email, utf8=bool(needing)),
                data,
                smtputf8_for=needing,
            )
        except RenderError as exc:
            where = f"line {exc.line}: " if exc.line else ""
            raise Undeliverable("render_error", where + exc.message) from None
        except AddressError as exc:
            raise Undeliverable("invalid_address", str(exc)) from None


def render_message(
    session: Session,
    message_id: int,
    settings: Settings,
    cache: VersionCache | None = None,
    *,
    tracked: bool = True,
) -> RenderedEmail:
    """Exactly what the message's recipient gets (or got): its own tokens and contact.
    The view-in-browser page and the message preview use this. ``tracked=False`` is for
    staff looking at it in the UI: no open pixel and direct links, so that viewing the
    email is not counted as the contact's open or click."""
    message = get_message(session, message_id)
    version = (cache or VersionCache(1)).for_message(
        session, message.template_version_id, message.override_id
    )
    contexts = load_contact_contexts(session, [message.contact_id])
    if tracked:
        signer = TokenSigner.from_settings(settings)
        tokens = signer.for_message(message.id, message.token_nonce, version.id)
        urls = tracking_urls(tokens, settings.base_url, len(version.links))
    else:
        urls = preview_urls(version, settings.base_url)
    try:
        return render_email(
            version,
            contexts[message.contact_id],
            urls,
            workflow_name=message.workflow_name,
            campaign_name=message.campaign_name,
            default_language=settings.email_language,
        )
    except RenderError as exc:
        raise InvalidInput(FieldError("message", exc.message)) from None


_process_sending: Sending | None = None


def process_sending(settings: Settings) -> Sending:
    """This process's sender state (its SMTP connection and compiled-version cache),
    kept from one task to the next."""
    global _process_sending
    if _process_sending is None or _process_sending.settings != settings:
        if _process_sending is None:
            # Everything imported so far lives as long as the process.
            keep_out_of_collector()
        _process_sending = Sending.from_settings(settings)
    return _process_sending
