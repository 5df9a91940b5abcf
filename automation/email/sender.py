"""The sender: claim a batch, render and send each message over a pooled connection,
record the outcomes. Two short transactions per batch; no transaction is open while SMTP
talks."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy.orm import Session, sessionmaker

from automation import clock
from automation.config import Settings
from automation.db import transaction
from automation.email.context import load_contact_contexts
from automation.email.identities import Sender
from automation.email.mime import AddressError, Mail, ascii_address, build_mime
from automation.email.models import MessageStatus
from automation.email.outbox import (
    Batch,
    Claimed,
    Outcome,
    claim_batch,
    get_message,
    record_outcomes,
)
from automation.email.render import (
    CompiledVersion,
    RenderedEmail,
    VersionCache,
    preview_urls,
    render_email,
    render_for_send,
    tracking_urls,
)
from automation.email.sandbox import RenderError
from automation.email.transport import (
    Delivery,
    DeliveryStatus,
    Envelope,
    SmtpSettings,
    Transport,
    pooled_transport,
)
from automation.errors import FieldError, InvalidInput
from automation.instruments import BATCH_SECONDS, BATCH_SIZE, HELD, MESSAGES, RENDER_ERRORS
from automation.processes import keep_out_of_collector
from automation.signing import MessageTokens, TokenSigner, message_id_header

S = DeliveryStatus
_STATUS = {
    S.SENT: "sent",
    S.DEFERRED: "deferred",
    S.FAILED: "failed",
    S.UNKNOWN: "unknown",
}


@dataclass
class SendReport:
    batches: int = 0
    claimed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, count: int = 1) -> None:
        self.outcomes[key] = self.outcomes.get(key, 0) + count


@dataclass
class Sending:
    """What a sender process keeps between batches."""

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


def _mailto(settings: Settings, sender: Sender, token: str) -> str:
    mailbox = settings.unsubscribe_mailto or f"unsubscribe@{sender.domain}"
    return f"mailto:{mailbox}?subject={quote('unsubscribe ' + token)}"


def _feedback_id(message: Claimed, version: CompiledVersion) -> str:
    origin = (
        f"c{message.campaign_id}"
        if message.campaign_id is not None
        else f"w{message.workflow_node_id}"
        if message.workflow_node_id is not None
        else "x"
    )
    kind = "m" if version.marketing else "t"
    origin = re.sub(r"[^A-Za-z0-9_.-]", "-", origin)[:40]  # ":" separates the fields
    return f"{origin}:{version.template_id}:{kind}:nurture"


def build_message(
    sending: Sending,
    message: Claimed,
    version: CompiledVersion,
    sender: Sender,
    tokens: MessageTokens,
    now: datetime,
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
    )
    unsubscribe = None
    if version.marketing:
        token = urls.unsubscribe.rsplit("/", 1)[1]
        unsubscribe = (urls.unsubscribe, _mailto(sending.settings, sender, token))
    return build_mime(
        Mail(
            from_name=sender.from_name,
            from_email=sender.from_email,
            to_name=message.contact["full_name"],
            to_email=message.email,
            subject=email.subject,
            html_qp=email.html_qp,
            text_qp=email.text_qp,
            message_id=message_id_header(tokens, sender.domain),
            date=now,
            reply_to=sender.reply_to,
            list_unsubscribe=unsubscribe,
            feedback_id=_feedback_id(message, version),
        )
    )


def _outcome(message: Claimed, status: str, **values: Any) -> Outcome:
    return Outcome(
        message_id=message.id,
        status=MessageStatus(status),
        contact_id=message.contact_id,
        email=message.email,
        attempts=message.attempts,
        sender_identity_id=message.sender_identity_id,
        **values,
    )


def _from_delivery(message: Claimed, delivery: Delivery) -> Outcome:
    error = None if delivery.status is S.SENT else delivery.response
    return _outcome(
        message,
        _STATUS[delivery.status],
        reason={
            S.FAILED: "hard_bounce" if delivery.hard_bounce else "rejected",
            S.DEFERRED: "relay_unavailable" if delivery.unavailable else "temporary_failure",
            S.UNKNOWN: "outcome_unknown",
        }.get(delivery.status),
        error=error,
        smtp_response=None if delivery.unavailable else delivery.response,
        provider_id=delivery.provider_id,
        hard_bounce=delivery.hard_bounce,
        slow_down=delivery.slow_down,
    )


def deliver(sending: Sending, batch: Batch) -> list[Outcome]:
    """Render and send each claimed message, rendering each just before the transport
    takes it; stop handing messages to the relay well before the lease runs out (the rest
    go back to the queue untouched)."""
    outcomes: list[Outcome] = []
    margin = timedelta(seconds=max(5.0, sending.settings.send_lease_seconds * 0.2))
    stop_at = batch.lease_expires_at - margin
    unavailable: str | None = None

    def envelopes() -> Iterator[tuple[Claimed, Envelope]]:
        for message in batch.messages:
            now = clock.now()
            if now >= stop_at:
                outcomes.append(_outcome(message, "queued"))
                continue
            if unavailable is not None:
                outcomes.append(
                    _outcome(message, "deferred", reason="relay_unavailable", error=unavailable)
                )
                continue
            version = batch.versions[message.version_id]
            sender = batch.senders.get(message.sender_identity_id) or batch.senders[None]
            tokens = sending.signer.for_message(message.id, message.nonce, version.id)
            try:
                data = build_message(sending, message, version, sender, tokens, now)
                envelope = Envelope(
                    ascii_address(sender.from_email), ascii_address(message.email), data
                )
            except RenderError as exc:
                where = f"line {exc.line}: " if exc.line else ""
                outcomes.append(
                    _outcome(message, "failed", reason="render_error", error=where + exc.message)
                )
                continue
            except AddressError as exc:
                outcomes.append(
                    _outcome(message, "failed", reason="invalid_address", error=str(exc))
                )
                continue
            yield message, envelope

    for message, delivery in sending.transport.send_many(envelopes()):
        if delivery.unavailable:
            unavailable = delivery.response  # the later messages are not even rendered
        outcomes.append(_from_delivery(message, delivery))
    return outcomes


def count_batch(batch: Batch, outcomes: list[Outcome], seconds: float) -> None:
    """Metrics for one recorded batch (after its commit, so they count what the
    database says happened)."""
    by_status = Counter(o.status.value for o in outcomes if o.status is not MessageStatus.QUEUED)
    for status, count in by_status.items():
        MESSAGES.labels(status).inc(count)
    for reason, count in batch.held.items():
        HELD.labels(reason).inc(count)
    render_errors = sum(1 for o in outcomes if o.reason == "render_error")
    if render_errors:
        RENDER_ERRORS.inc(render_errors)
    BATCH_SIZE.labels("send").observe(len(batch.messages) + sum(batch.held.values()))
    BATCH_SECONDS.labels("send").observe(seconds)


def send_batch(
    sessions: sessionmaker[Session], sending: Sending, *, limit: int | None = None
) -> tuple[int, list[Outcome], Batch]:
    started = time.perf_counter()
    with transaction(sessions) as session:
        batch = claim_batch(session, settings=sending.settings, cache=sending.cache, limit=limit)
    outcomes = deliver(sending, batch) if batch.messages else []
    if outcomes:
        with transaction(sessions) as session:
            record_outcomes(session, batch.owner, outcomes)
    claimed = len(batch.messages) + sum(batch.held.values())
    if claimed:
        count_batch(batch, outcomes, time.perf_counter() - started)
    return claimed, outcomes, batch


def send_due(
    sessions: sessionmaker[Session],
    sending: Sending,
    *,
    budget_seconds: float = 50.0,
    max_batches: int | None = None,
) -> SendReport:
    """Send batches until nothing is due or the time budget is spent (a Celery task runs
    this; beat queues it every few seconds, and any number of workers may run it)."""
    report = SendReport()
    deadline = time.monotonic() + budget_seconds
    while time.monotonic() < deadline and (max_batches is None or report.batches < max_batches):
        claimed, outcomes, batch = send_batch(sessions, sending)
        if not claimed:
            break
        report.batches += 1
        report.claimed += claimed
        for outcome in outcomes:
            report.add(outcome.status.value)
        for reason, count in batch.held.items():
            report.add(reason, count)
    return report


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
    version = (cache or VersionCache(1)).get(session, message.template_version_id)
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
