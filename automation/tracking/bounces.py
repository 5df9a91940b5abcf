"""Bounce and complaint intake: a provider webhook's JSON, RFC 3464 delivery status
notifications and ARF (RFC 5965) complaint reports, and the complaint-rate guard.

Webhook JSON (``POST /webhooks/feedback``, body signed with HMAC-SHA256 of the shared
secret ``NURTURE_WEBHOOK_SECRET``, header ``X-Nurture-Signature: sha256=<hex>``)::

    {"events": [{"type": "hard_bounce" | "soft_bounce" | "complaint",
                 "email": "someone@example.com",
                 "message_id": "<Message-ID header of our message>",   (optional)
                 "occurred_at": "2026-11-27T10:00:00Z",                 (optional)
                 "diagnostic": "550 5.1.1 user unknown"}]}              (optional)

A hard bounce or a complaint suppresses the address at once; soft bounces do after
SOFT_BOUNCE_LIMIT of them within SOFT_BOUNCE_DAYS.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import Message as MimeMessage
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from automation import clock
from automation.contacts.addresses import email_hash, normalize_email
from automation.contacts.consent import change_status
from automation.contacts.events import validation_errors
from automation.contacts.models import Contact, ContactStatus, Event
from automation.db import dialect_insert
from automation.email.models import Message, SenderIdentity, Suppression, SuppressionReason
from automation.errors import FieldError, InvalidInput
from automation.reactions import IngestedEvent, react_to_events
from automation.tracking.tokens import TokenKind, TokenSigner

SOFT_BOUNCE_LIMIT = 3
SOFT_BOUNCE_DAYS = 30
COMPLAINT_RATE_LIMIT = 0.003  # 0.3 %: mailbox providers start refusing mail above this
COMPLAINT_WINDOW_DAYS = 30
COMPLAINT_MIN_SENT = 1000  # below this a single complaint says little
MAX_EVENTS = 1000


class FeedbackType(enum.StrEnum):
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    COMPLAINT = "complaint"


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: FeedbackType
    email: str = Field(..., min_length=3, max_length=254)
    message_id: str | None = Field(None, max_length=998)
    occurred_at: datetime | None = None
    diagnostic: str | None = Field(None, max_length=1000)


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
        raise InvalidInput(validation_errors(exc)) from None


# --- RFC 3464 / RFC 5965 ------------------------------------------------------------------


def _field_blocks(part: MimeMessage) -> list[MimeMessage]:
    """The header blocks of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, MimeMessage)]
    text = payload if isinstance(payload, str) else ""
    blocks = [b for b in text.replace("\r\n", "\n").split("\n\n") if b.strip()]
    return [message_from_bytes(b.encode() + b"\n\n", policy=policy.compat32) for b in blocks]


def _address(value: str | None) -> str:
    value = (value or "").strip()
    if ";" in value:
        value = value.split(";", 1)[1]
    return value.strip().strip("<>")


def parse_report(raw: bytes) -> list[FeedbackIn]:
    """Feedback items in a multipart/report mail: a DSN (RFC 3464: Action failed + 5.x.x is
    a hard bounce, 4.x.x or Action delayed a soft one) or an ARF abuse report. Items that
    are not failures (delivered, relayed) are left out. InvalidInput for other mail."""
    mail = message_from_bytes(raw, policy=policy.compat32)
    if mail.get_content_type() != "multipart/report":
        raise InvalidInput(FieldError("body", "not a multipart/report message"))
    report_type = str(mail.get_param("report-type") or "").lower()
    original_id: str | None = None
    for part in mail.walk():
        if part.get_content_type() in ("text/rfc822-headers", "message/rfc822"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], MimeMessage):
                original_id = inner[0].get("Message-ID")
            elif isinstance(inner, str):
                original_id = message_from_bytes(inner.encode()).get("Message-ID")
    items: list[FeedbackIn] = []
    for part in mail.walk():
        ctype = part.get_content_type()
        if report_type == "delivery-status" and ctype == "message/delivery-status":
            for block in _field_blocks(part)[1:]:  # the first block is per-message
                action = (block.get("Action") or "").strip().lower()
                status = (block.get("Status") or "").strip()
                email = _address(block.get("Final-Recipient") or block.get("Original-Recipient"))
                if not email or action not in ("failed", "delayed"):
                    continue
                hard = action == "failed" and status.startswith("5")
                items.append(
                    FeedbackIn(
                        type=FeedbackType.HARD_BOUNCE if hard else FeedbackType.SOFT_BOUNCE,
                        email=email,
                        message_id=original_id,
                        diagnostic=(block.get("Diagnostic-Code") or status)[:1000],
                    )
                )
        elif report_type == "feedback-report" and ctype == "message/feedback-report":
            for block in _field_blocks(part)[:1]:
                if (block.get("Feedback-Type") or "").strip().lower() not in ("abuse", "fraud"):
                    continue
                email = _address(block.get("Original-Rcpt-To"))
                if email:
                    items.append(
                        FeedbackIn(type=FeedbackType.COMPLAINT, email=email, message_id=original_id)
                    )
    if not items and report_type not in ("delivery-status", "feedback-report"):
        raise InvalidInput(FieldError("body", f"unsupported report-type {report_type!r}"))
    return items


# --- recording --------------------------------------------------------------------------


@dataclass
class FeedbackReport:
    suppressed: int = 0
    soft: int = 0
    unknown: int = 0
    paused_identities: list[int] | None = None


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
    min_sent: int = COMPLAINT_MIN_SENT,
) -> FeedbackReport:
    report = FeedbackReport()
    now = clock.now()
    new_events: list[IngestedEvent] = []
    complained_identities: set[int] = set()
    for item in items:
        email = normalize_email(item.email)
        contact = session.scalar(select(Contact).where(Contact.email == email))
        message = _message_of(session, item.message_id, signer)
        if contact is None and message is not None:
            contact = session.get(Contact, message.contact_id)
        if contact is None:
            report.unknown += 1
            continue
        status, reason, event_name = _STATUS[item.type]
        at = item.occurred_at or now
        properties: dict[str, Any] = {"type": item.type.value, "diagnostic": item.diagnostic}
        if message is not None:
            properties["message_id"] = message.id
            column = "complained_at" if item.type is FeedbackType.COMPLAINT else "bounced_at"
            session.execute(update(Message).where(Message.id == message.id).values({column: now}))
            if item.type is FeedbackType.COMPLAINT and message.sender_identity_id is not None:
                complained_identities.add(message.sender_identity_id)
        key = f"{event_name}:{message.id}" if message is not None else None
        row = session.execute(
            dialect_insert(session, Event)
            .values(
                contact_id=contact.id,
                name=event_name,
                properties=properties,
                occurred_at=at,
                received_at=now,
                source=source,
                idempotency_key=key,
            )
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(Event.id)
        ).first()
        if row is not None:
            new_events.append(IngestedEvent(row[0], contact.id, event_name, properties, at))
        if item.type is FeedbackType.SOFT_BOUNCE:
            report.soft += 1
            recent = session.scalar(
                select(func.count())
                .select_from(Event)
                .where(
                    Event.contact_id == contact.id,
                    Event.name == "email.soft_bounced",
                    Event.occurred_at >= now - timedelta(days=SOFT_BOUNCE_DAYS),
                )
            )
            if (recent or 0) < SOFT_BOUNCE_LIMIT:
                continue
        session.execute(
            dialect_insert(session, Suppression)
            .values(
                email_hash=email_hash(email),
                email=email,
                reason=reason,
                source=source,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["email_hash"])
        )
        if contact.status is not status and contact.status is not ContactStatus.COMPLAINED:
            change_status(session, contact, status, source=source)
        report.suppressed += 1
    react_to_events(session, new_events)
    report.paused_identities = [
        i
        for i in sorted(complained_identities)
        if guard_complaint_rate(session, i, min_sent=min_sent)
    ]
    return report


def complaint_rate(
    session: Session, identity_id: int, *, days: int = COMPLAINT_WINDOW_DAYS
) -> tuple[int, int]:
    """(complaints, sent) for an identity's messages sent in the last ``days``."""
    since = clock.now() - timedelta(days=days)
    sent, complaints = session.execute(
        select(func.count(Message.sent_at), func.count(Message.complained_at)).where(
            Message.sender_identity_id == identity_id, Message.sent_at >= since
        )
    ).one()
    return int(complaints), int(sent)


def guard_complaint_rate(
    session: Session, identity_id: int, *, min_sent: int = COMPLAINT_MIN_SENT
) -> bool:
    """Pause the identity when its complaint rate is over 0.3 %; True if it paused now."""
    complaints, sent = complaint_rate(session, identity_id)
    if sent < min_sent or complaints / max(sent, 1) <= COMPLAINT_RATE_LIMIT:
        return False
    identity = session.get(SenderIdentity, identity_id)
    if identity is None or identity.paused_at is not None:
        return False
    identity.paused_at = clock.now()
    identity.paused_reason = (
        f"complaint rate {complaints / sent:.2%} ({complaints} of {sent} in "
        f"{COMPLAINT_WINDOW_DAYS} days) is over {COMPLAINT_RATE_LIMIT:.1%}"
    )
    session.flush()
    return True


def resume_identity(session: Session, identity_id: int) -> SenderIdentity:
    from automation.errors import NotFound

    identity = session.get(SenderIdentity, identity_id)
    if identity is None:
        raise NotFound(f"sender identity {identity_id} not found")
    identity.paused_at = None
    identity.paused_reason = None
    session.flush()
    return identity
