"""Draining the hit queue, and the public pages' actions (unsubscribe, preferences)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from automation import clock
from automation.config import DEFAULT_LANGUAGE
from automation.contacts.consent import change_status
from automation.contacts.models import Contact, ContactStatus, Event
from automation.db import dialect_insert
from automation.email.context import load_contact_contexts
from automation.email.models import Message
from automation.email.outbox import Feedback, note_feedback
from automation.email.render import VersionCache, render_email, tracking_urls
from automation.errors import NotFound
from automation.instruments import BATCH_SECONDS, BATCH_SIZE, TRACKING_HITS
from automation.reactions import IngestedEvent, react_to_events
from automation.signing import TokenClaims, TokenSigner
from automation.tracking.draining import drain_in_batches
from automation.tracking.hits import HitQueue, decode_all
from automation.tracking.ingest import IngestReport, ingest_hits

DRAIN_LEASE = "tracking.drain"


def drain_hits(
    sessions: sessionmaker[Session],
    queue: HitQueue,
    *,
    batch_size: int = 5000,
    max_batches: int = 50,
    half_life_days: float = 30.0,
) -> IngestReport:
    """Ingest queued hits (see automation/tracking/draining.py for the batching rules)."""
    total = IngestReport()

    def ingest(session: Session, lines: list[bytes]) -> None:
        started = time.perf_counter()
        report = ingest_hits(session, decode_all(lines), half_life_days=half_life_days)
        total.add(report)
        for cls, n in report.classes.items():
            TRACKING_HITS.labels("ingested", cls).inc(n)
        BATCH_SIZE.labels("tracking").observe(len(lines))
        BATCH_SECONDS.labels("tracking").observe(time.perf_counter() - started)

    drain_in_batches(
        sessions,
        queue,
        ingest,
        lease=DRAIN_LEASE,
        batch_size=batch_size,
        max_batches=max_batches,
    )
    return total


@dataclass(frozen=True)
class Recipient:
    message: Message
    contact: Contact


def recipient(session: Session, claims: TokenClaims) -> Recipient:
    """The message and contact a genuine token names; NotFound if the row is gone or the
    token was made for another database (nonce mismatch)."""
    message = session.get(Message, claims.message_id)
    if (
        message is None
        or (message.token_nonce & 0xFFFFFFFF) != claims.nonce
        or message.template_version_id != claims.template_version_id
    ):
        raise NotFound("no such message")
    contact = session.get(Contact, message.contact_id)
    if contact is None:
        raise NotFound("no such contact")
    return Recipient(message, contact)


def unsubscribe(session: Session, claims: TokenClaims, *, ip: str | None, source: str) -> Recipient:
    """Unsubscribe the message's contact at once, with consent evidence and an
    `email.unsubscribed` event. Repeating it changes nothing."""
    found = recipient(session, claims)
    contact, message = found.contact, found.message
    if contact.status in (ContactStatus.SUBSCRIBED, ContactStatus.PENDING):
        change_status(
            session,
            contact,
            ContactStatus.UNSUBSCRIBED,
            source=source,
            ip=ip,
            consent_text=f"unsubscribe link of message {message.id}",
        )
    now = clock.now()
    if message.unsubscribed_at is None:
        note_feedback(session, message.id, Feedback.UNSUBSCRIBED, now=now)
    properties = {
        "message_id": message.id,
        "template_version_id": message.template_version_id,
        "source": source,
    }
    for key in ("campaign_id", "campaign_variant_id", "enrollment_id", "workflow_node_id"):
        if getattr(message, key) is not None:
            properties[key] = getattr(message, key)
    row = session.execute(
        dialect_insert(session, Event)
        .values(
            contact_id=contact.id,
            name="email.unsubscribed",
            properties=properties,
            occurred_at=now,
            received_at=now,
            source="tracking",
            idempotency_key=f"email.unsubscribed:{message.id}",
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(Event.id)
    ).first()
    if row is not None:
        react_to_events(
            session,
            [IngestedEvent(row[0], contact.id, "email.unsubscribed", properties, now)],
        )
    return found


def resubscribe(session: Session, claims: TokenClaims, *, ip: str | None) -> Recipient:
    """From the preferences page: an unsubscribed contact opts back in (recorded)."""
    found = recipient(session, claims)
    if found.contact.status is ContactStatus.UNSUBSCRIBED:
        change_status(
            session,
            found.contact,
            ContactStatus.SUBSCRIBED,
            source="preferences_page",
            ip=ip,
            consent_text=f"resubscribed from the preferences page of message {found.message.id}",
        )
    return found


def view_in_browser(
    session: Session,
    claims: TokenClaims,
    signer: TokenSigner,
    base_url: str,
    *,
    default_language: str = DEFAULT_LANGUAGE,
) -> str:
    """The message's HTML as its recipient got it (links tracked, no open pixel)."""
    from dataclasses import replace

    found = recipient(session, claims)
    message = found.message
    version = VersionCache(1).for_message(session, message.template_version_id, message.override_id)
    tokens = signer.for_message(message.id, message.token_nonce, message.template_version_id)
    urls = replace(tracking_urls(tokens, base_url, len(version.links)), open="")
    contact = load_contact_contexts(session, [found.contact.id])[found.contact.id]
    return render_email(
        version,
        contact,
        urls,
        workflow_name=message.workflow_name,
        campaign_name=message.campaign_name,
        default_language=default_language,
    ).html
