"""Bounce and complaint intake: a provider webhook's JSON, RFC 3464 delivery status
notifications and ARF (RFC 5965) complaint reports, and the complaint-rate guard.
docs/tracking.md tells an operator how to feed them in (webhook, DSN endpoint, and
``nurture bounces ingest`` for an MTA's bounce mailbox); all three call ``record_feedback``.

Webhook JSON (``POST /webhooks/feedback``, body signed with HMAC-SHA256 of the shared
secret ``NURTURE_WEBHOOK_SECRET``, header ``X-Nurture-Signature: sha256=<hex>``)::

    {"events": [{"type": "hard_bounce" | "soft_bounce" | "complaint",
                 "email": "someone@example.com",
                 "message_id": "<Message-ID header of our message>",   (optional)
                 "from_address": "news@shop.example",                  (optional)
                 "occurred_at": "2026-11-27T10:00:00Z",                 (optional)
                 "diagnostic": "550 5.1.1 user unknown"}]}              (optional)

``from_address`` is the From address of the message the report is about, when the report
shows it (an ARF report quotes the original headers).

Suppression: a hard bounce or a complaint suppresses the address at once, also when the
address is no contact of ours (the suppression list is by address, so a later import or
form cannot mail it); soft bounces do after ``soft_bounce_limit`` of them within
``soft_bounce_days`` (the sending policy).

The complaint guard pauses a sender when, over the messages it sent in the last
``complaint_window_days``, the complaint rate is over 0.3 % AND at least
``complaint_min_count`` of them drew a complaint. The count replaces a minimum volume:
10 complaints out of 200 sent (5 %) pause a small sender, one complaint out of 50 does
not. A sender is a sender identity, or the default sender (NURTURE_DEFAULT_SENDER, the
messages with no identity; its pause lives in the sending policy row, automation/policy.py).

Which complaints count toward a sender's rate: the rate is complained messages over sent
messages, so a complaint counts only once it is tied to one of our messages:

1. by its Message-ID (ours is the message's view token), or else
2. by the report's From address: the complainer's latest message sent within the
   complaint window whose sender has that From address (or, failing that, that From
   domain) takes the complaint. This is how a feedback loop that strips or rewrites the
   Message-ID still reaches the sender, while a report about mail we did not send to
   that address in the window (forged, or another system's on the same domain) cannot
   pause anyone.

A complaint tied to neither is still recorded (event, contact status, suppression) and
reported as ``unmatched_complaints``; it counts toward no sender's rate.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import Message as MimeMessage
from email.utils import parseaddr
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from automation import clock
from automation.addresses import normalize_email
from automation.config import Settings
from automation.contacts.bounces import record_feedback_event, record_hard_bounce
from automation.contacts.consent import change_status
from automation.contacts.models import Contact, ContactStatus, Event
from automation.contacts.suppressions import SuppressionReason, suppress
from automation.email.identities import default_sender
from automation.email.models import Message, SenderIdentity
from automation.email.outbox import Feedback, note_feedback
from automation.email.schema import DefaultSenderOut
from automation.errors import FieldError, InvalidInput, NotFound, field_errors
from automation.policy import (
    ROW_ID,
    SendingPolicy,
    default_sender_resumed_at,
    effective_settings,
    pause_default_sender,
    resume_default_sender,
)
from automation.reactions import IngestedEvent, react_to_events
from automation.signing import TokenKind, TokenSigner

COMPLAINT_RATE_LIMIT = 0.003  # 0.3 %: mailbox providers start refusing mail above this
MAX_EVENTS = 1000
# A sender: a sender identity's id, or None for the default sender (NURTURE_DEFAULT_SENDER).
SenderKey = int | None


class FeedbackType(enum.StrEnum):
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    COMPLAINT = "complaint"


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: FeedbackType
    email: str = Field(..., min_length=3, max_length=254)
    message_id: str | None = Field(None, max_length=998)
    from_address: str | None = Field(None, max_length=254)
    occurred_at: datetime | None = None
    diagnostic: str | None = Field(None, max_length=1000)

    @field_validator("email")
    @classmethod
    def _normalised(cls, value: str) -> str:
        return normalize_email(value)  # its ValueError names the problem


class FeedbackBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[FeedbackIn] = Field(..., min_length=1, max_length=MAX_EVENTS)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    """False when no secret is configured: an open intake would let anyone unsubscribe."""
    if not secret or not header:
        return False
    return hmac.compare_digest(signature(secret, body), header.strip())


def parse_feedback(raw: Any) -> list[FeedbackIn]:
    try:
        return FeedbackBatchIn.model_validate(raw).events
    except ValidationError as exc:
        raise InvalidInput(field_errors(exc)) from None


# --- RFC 3464 / RFC 5965 ------------------------------------------------------------------


def _field_blocks(part: MimeMessage) -> list[MimeMessage]:
    """The header blocks of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, MimeMessage)]
    text = payload if isinstance(payload, str) else ""
    blocks = [b for b in text.replace("\r\n", "\n").split("\n\n") if b.strip()]
    return [
        message_from_bytes(b.encode(errors="surrogateescape") + b"\n\n", policy=policy.compat32)
        for b in blocks
    ]


def _header(block: MimeMessage, *names: str) -> str:
    """The first of ``names`` present, as text: a field with 8-bit bytes (a localised
    Diagnostic-Code) comes back from the compat32 parser as a Header object, not a str."""
    for name in names:
        value = block.get(name)
        if value is not None:
            return str(value).strip()
    return ""


def _address(value: str | None) -> str:
    value = (value or "").strip()
    if ";" in value:
        value = value.split(";", 1)[1]
    return value.strip().strip("<>")


def _original_headers(mail: MimeMessage) -> MimeMessage | None:
    """The headers of the message a report is about (text/rfc822-headers or message/rfc822)."""
    for part in mail.walk():
        if part.get_content_type() in ("text/rfc822-headers", "message/rfc822"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], MimeMessage):
                return inner[0]
            if isinstance(inner, str):
                return message_from_bytes(
                    inner.encode(errors="surrogateescape"), policy=policy.compat32
                )
    return None


def _item(**values: Any) -> FeedbackIn:
    try:
        return FeedbackIn(**values)
    except ValidationError as exc:
        raise InvalidInput(field_errors(exc)) from None


REPORT_PARTS = {
    "delivery-status": "message/delivery-status",
    "feedback-report": "message/feedback-report",
}


def parse_report(raw: bytes) -> list[FeedbackIn]:
    """Feedback items in a multipart/report mail: a DSN (RFC 3464: Action failed + 5.x.x is
    a hard bounce, 4.x.x or Action delayed a soft one) or an ARF abuse report. Items that
    are not failures (delivered, relayed) are left out. InvalidInput for other mail, and
    for a report without its machine-readable part (a truncated or hand-made mail)."""
    mail = message_from_bytes(raw, policy=policy.compat32)
    if mail.get_content_type() != "multipart/report":
        raise InvalidInput(FieldError("body", "not a multipart/report message"))
    report_type = str(mail.get_param("report-type") or "").lower()
    if report_type not in REPORT_PARTS:
        raise InvalidInput(FieldError("body", f"unsupported report-type {report_type!r}"))
    wanted = REPORT_PARTS[report_type]
    parts = [p for p in mail.walk() if p.get_content_type() == wanted]
    if not parts:
        raise InvalidInput(FieldError("body", f"a {report_type} report without a {wanted} part"))
    original = _original_headers(mail)
    original_id = sender = None
    if original is not None:
        original_id = _header(original, "Message-ID") or None
        sender = parseaddr(_header(original, "From"))[1] or None
    items: list[FeedbackIn] = []
    for part in parts:
        if report_type == "delivery-status":
            for block in _field_blocks(part)[1:]:  # the first block is per-message
                action = _header(block, "Action").lower()
                status = _header(block, "Status")
                email = _address(_header(block, "Final-Recipient", "Original-Recipient"))
                if not email or action not in ("failed", "delayed"):
                    continue
                hard = action == "failed" and status.startswith("5")
                items.append(
                    _item(
                        type=FeedbackType.HARD_BOUNCE if hard else FeedbackType.SOFT_BOUNCE,
                        email=email,
                        message_id=original_id,
                        from_address=sender,
                        diagnostic=(_header(block, "Diagnostic-Code") or status)[:1000],
                    )
                )
        else:
            for block in _field_blocks(part)[:1]:
                if _header(block, "Feedback-Type").lower() not in ("abuse", "fraud"):
                    continue
                email = _address(_header(block, "Original-Rcpt-To"))
                if email:
                    items.append(
                        _item(
                            type=FeedbackType.COMPLAINT,
                            email=email,
                            message_id=original_id,
                            from_address=sender,
                        )
                    )
    return items


# --- recording --------------------------------------------------------------------------


@dataclass
class FeedbackReport:
    suppressed: int = 0
    soft: int = 0
    unknown: int = 0  # addresses that are no contact of ours
    unmatched_complaints: int = 0  # tied to none of our messages: counted toward no rate
    paused_identities: list[int] = field(default_factory=list)
    default_sender_paused: bool = False

    def as_dict(self) -> dict[str, Any]:
        """What the webhooks answer and the CLI prints."""
        return {
            "suppressed": self.suppressed,
            "soft_bounces": self.soft,
            "unknown": self.unknown,
            "unmatched_complaints": self.unmatched_complaints,
            "paused_sender_identities": self.paused_identities,
            "default_sender_paused": self.default_sender_paused,
        }


def _message_of(session: Session, header: str | None, signer: TokenSigner) -> Message | None:
    """Our Message-ID header is the message's view token: no lookup column needed."""
    if not header:
        return None
    token = header.strip().strip("<>").split("@", 1)[0]
    claims = signer.verify(token, TokenKind.VIEW)
    if claims is None:
        return None
    message = session.get(Message, claims.message_id)
    if message is None or (message.token_nonce & 0xFFFFFFFF) != claims.nonce:
        return None
    return message


def _message_from(
    session: Session, contact_id: int, from_address: str | None, policy: Settings
) -> Message | None:
    """The contact's latest message sent within the complaint window whose sender has the
    report's From address, else its From domain (see the module docstring)."""
    if not from_address or "@" not in from_address:
        return None
    since = clock.now() - timedelta(days=policy.complaint_window_days)
    rows = session.execute(
        select(Message, SenderIdentity.from_email)
        .outerjoin(SenderIdentity, SenderIdentity.id == Message.sender_identity_id)
        .where(Message.contact_id == contact_id, Message.sent_at >= since)
        .order_by(Message.sent_at.desc())
        .limit(100)
    ).all()
    fallback = default_sender(policy.default_sender).from_email
    wanted = from_address.strip().lower()
    sent_from = [(message, (address or fallback).lower()) for message, address in rows]
    for message, address in sent_from:
        if address == wanted:
            return message
    domain = wanted.rsplit("@", 1)[1]
    for message, address in sent_from:
        if address.rsplit("@", 1)[-1] == domain:
            return message
    return None


_STATUS = {
    FeedbackType.HARD_BOUNCE: (ContactStatus.BOUNCED, SuppressionReason.BOUNCED, "email.bounced"),
    FeedbackType.SOFT_BOUNCE: (
        ContactStatus.BOUNCED,
        SuppressionReason.BOUNCED,
        "email.soft_bounced",
    ),
    FeedbackType.COMPLAINT: (
        ContactStatus.COMPLAINED,
        SuppressionReason.COMPLAINED,
        "email.complained",
    ),
}


def record_feedback(
    session: Session,
    items: list[FeedbackIn],
    signer: TokenSigner,
    *,
    source: str,
    settings: Settings,
) -> FeedbackReport:
    """Record bounces and complaints: events, message marks, suppressions, contact status;
    then run the complaint guard for every sender a complaint was tied to. ``settings``
    are the environment's; the saved sending policy is applied here."""
    policy = effective_settings(session, settings)
    report = FeedbackReport()
    now = clock.now()
    new_events: list[IngestedEvent] = []
    complained_senders: set[SenderKey] = set()
    for item in items:
        email = normalize_email(item.email)
        status, reason, event_name = _STATUS[item.type]
        complaint = item.type is FeedbackType.COMPLAINT
        contact = session.scalar(select(Contact).where(Contact.email == email))
        message = _message_of(session, item.message_id, signer)
        if contact is None and message is not None:
            contact = session.get(Contact, message.contact_id)
        if complaint and message is None and contact is not None:
            message = _message_from(session, contact.id, item.from_address, policy)
        if complaint and message is None:
            report.unmatched_complaints += 1
        if contact is None:
            report.unknown += 1
            if item.type is not FeedbackType.SOFT_BOUNCE:
                suppress(session, [email], reason, source=source, now=now)
                report.suppressed += 1
            continue
        at = item.occurred_at or now
        if message is not None:
            reported = Feedback.COMPLAINED if complaint else Feedback.BOUNCED
            note_feedback(session, message.id, reported, now=now)
            if complaint:
                complained_senders.add(message.sender_identity_id)
        if item.type is FeedbackType.HARD_BOUNCE:
            event = record_hard_bounce(
                session,
                contact,
                email,
                message_id=message.id if message is not None else None,
                diagnostic=item.diagnostic,
                source=source,
                occurred_at=at,
                now=now,
            )
            if event is not None:
                new_events.append(event)
            report.suppressed += 1
            continue
        event = record_feedback_event(
            session,
            contact.id,
            event_name,
            item.type.value,
            diagnostic=item.diagnostic,
            message_id=message.id if message is not None else None,
            source=source,
            occurred_at=at,
            now=now,
        )
        if event is not None:
            new_events.append(event)
        if item.type is FeedbackType.SOFT_BOUNCE:
            report.soft += 1
            recent = session.scalar(
                select(func.count())
                .select_from(Event)
                .where(
                    Event.contact_id == contact.id,
                    Event.name == "email.soft_bounced",
                    Event.occurred_at >= now - timedelta(days=policy.soft_bounce_days),
                )
            )
            if (recent or 0) < policy.soft_bounce_limit:
                continue
        suppress(session, [email], reason, source=source, now=now)
        if contact.status is not status and contact.status is not ContactStatus.COMPLAINED:
            change_status(session, contact, status, source=source)
        report.suppressed += 1
    react_to_events(session, new_events)
    for sender in sorted(complained_senders, key=lambda k: -1 if k is None else k):
        if guard_complaint_rate(session, sender, policy):
            if sender is None:
                report.default_sender_paused = True
            else:
                report.paused_identities.append(sender)
    return report


def complaint_rate(
    session: Session, sender: SenderKey, *, days: int, resumed_at: datetime | None = None
) -> tuple[int, int]:
    """(complaints, sent) over a sender's messages sent in the last ``days``, and only
    since an operator last resumed it: the complaints that paused it, and late ones
    about that same mail, are not counted again."""
    since = clock.now() - timedelta(days=days)
    if resumed_at is not None:
        since = max(since, resumed_at)
    of_sender = (
        Message.sender_identity_id.is_(None)
        if sender is None
        else Message.sender_identity_id == sender
    )
    sent, complaints = session.execute(
        select(func.count(Message.sent_at), func.count(Message.complained_at)).where(
            of_sender, Message.sent_at >= since
        )
    ).one()
    return int(complaints), int(sent)


def guard_complaint_rate(session: Session, sender: SenderKey, policy: Settings) -> bool:
    """Pause the sender when its complaint rate is over 0.3 % with at least
    ``complaint_min_count`` complaints (the policy in force); True if it paused now."""
    days = policy.complaint_window_days
    identity = None if sender is None else session.get(SenderIdentity, sender)
    if sender is not None and (identity is None or identity.paused_at is not None):
        return False  # gone, or paused already
    resumed_at = default_sender_resumed_at(session) if identity is None else identity.resumed_at
    complaints, sent = complaint_rate(session, sender, days=days, resumed_at=resumed_at)
    if complaints < policy.complaint_min_count or complaints / max(sent, 1) <= (
        COMPLAINT_RATE_LIMIT
    ):
        return False
    reason = (
        f"complaint rate {complaints / max(sent, 1):.2%} ({complaints} of {sent} sent in "
        f"{days} days) is over {COMPLAINT_RATE_LIMIT:.1%}"
    )
    if identity is None:
        return pause_default_sender(session, reason)
    identity.paused_at = clock.now()
    identity.paused_reason = reason
    session.flush()
    return True


def resume_identity(session: Session, identity_id: int) -> SenderIdentity:
    identity = session.get(SenderIdentity, identity_id)
    if identity is None:
        raise NotFound(f"sender identity {identity_id} not found")
    if identity.paused_at is not None:
        identity.paused_at = None
        identity.paused_reason = None
        identity.resumed_at = clock.now()
        session.flush()
    return identity


def default_sender_state(session: Session, settings: Settings) -> DefaultSenderOut:
    sender = default_sender(settings.default_sender)
    row = session.get(SendingPolicy, ROW_ID)
    return DefaultSenderOut(
        from_name=sender.from_name,
        from_email=sender.from_email,
        paused_at=row.default_sender_paused_at if row else None,
        paused_reason=row.default_sender_paused_reason if row else None,
    )


def resume_default(session: Session, settings: Settings) -> DefaultSenderOut:
    """Resume the default sender (a no-op when it is not paused)."""
    resume_default_sender(session)
    return default_sender_state(session, settings)
