"""The sending loop: claim a batch, let the channel render and transport each message,
record the outcomes. Two short transactions per batch; no transaction is open while the
channel talks to the outside."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from automation import clock
from automation.db import transaction
from automation.email.models import MessageStatus
from automation.email.outbox.channel import (
    Channel,
    Delivery,
    DeliveryStatus,
    Prepared,
    Undeliverable,
)
from automation.email.outbox.claiming import Batch, Claimed, claim_batch
from automation.email.outbox.outcomes import Outcome, record_outcomes
from automation.instruments import BATCH_SECONDS, BATCH_SIZE, HELD, MESSAGES, RENDER_ERRORS

D = DeliveryStatus
_STATUS = {
    D.SENT: MessageStatus.SENT,
    D.DEFERRED: MessageStatus.DEFERRED,
    D.FAILED: MessageStatus.FAILED,
    D.UNKNOWN: MessageStatus.UNKNOWN,
}


@dataclass
class SendReport:
    batches: int = 0
    claimed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, count: int = 1) -> None:
        self.outcomes[key] = self.outcomes.get(key, 0) + count


def _outcome(message: Claimed, status: MessageStatus, **values: Any) -> Outcome:
    return Outcome(
        message_id=message.id,
        status=status,
        contact_id=message.contact_id,
        email=message.email,
        attempts=message.attempts,
        sender_identity_id=message.sender_identity_id,
        **values,
    )


def _from_delivery(message: Claimed, delivery: Delivery) -> Outcome:
    error = None if delivery.status is D.SENT else delivery.response
    return _outcome(
        message,
        _STATUS[delivery.status],
        reason={
            D.FAILED: "hard_bounce" if delivery.hard_bounce else "rejected",
            D.DEFERRED: "relay_unavailable" if delivery.unavailable else "temporary_failure",
            D.UNKNOWN: "outcome_unknown",
        }.get(delivery.status),
        error=error,
        smtp_response=None if delivery.unavailable else delivery.response,
        provider_id=delivery.provider_id,
        hard_bounce=delivery.hard_bounce,
        slow_down=delivery.slow_down,
    )


def deliver(channel: Channel, batch: Batch, prepared: Prepared) -> list[Outcome]:
    """Render and send each claimed message, rendering each just before the transport
    takes it; stop handing messages to the relay well before the lease runs out (the rest
    go back to the queue untouched)."""
    outcomes: list[Outcome] = []
    margin = timedelta(seconds=max(5.0, channel.settings.send_lease_seconds * 0.2))
    stop_at = batch.lease_expires_at - margin
    unavailable: str | None = None

    def rendered() -> Iterator[tuple[Claimed, Any]]:
        for message in batch.messages:
            now = clock.now()
            if now >= stop_at:
                outcomes.append(_outcome(message, MessageStatus.QUEUED))
                continue
            if unavailable is not None:
                outcomes.append(
                    _outcome(
                        message,
                        MessageStatus.DEFERRED,
                        reason="relay_unavailable",
                        error=unavailable,
                    )
                )
                continue
            try:
                item = prepared.render(message, now)
            except Undeliverable as exc:
                outcomes.append(
                    _outcome(message, MessageStatus.FAILED, reason=exc.reason, error=exc.error)
                )
                continue
            yield message, item

    for message, delivery in channel.send_many(rendered()):
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
    sessions: sessionmaker[Session], channel: Channel, *, limit: int | None = None
) -> tuple[int, list[Outcome], Batch]:
    started = time.perf_counter()
    with transaction(sessions) as session:
        batch = claim_batch(session, settings=channel.settings, cache=channel.cache, limit=limit)
        prepared = channel.prepare(session, batch) if batch.messages else None
    outcomes = deliver(channel, batch, prepared) if prepared is not None else []
    if outcomes:
        with transaction(sessions) as session:
            record_outcomes(session, batch.owner, outcomes)
    claimed = len(batch.messages) + sum(batch.held.values())
    if claimed:
        count_batch(batch, outcomes, time.perf_counter() - started)
    return claimed, outcomes, batch


def send_due(
    sessions: sessionmaker[Session],
    channel: Channel,
    *,
    budget_seconds: float = 50.0,
    max_batches: int | None = None,
) -> SendReport:
    """Send batches until nothing is due or the time budget is spent (a Celery task runs
    this; beat queues it every few seconds, and any number of workers may run it)."""
    report = SendReport()
    deadline = time.monotonic() + budget_seconds
    while time.monotonic() < deadline and (max_batches is None or report.batches < max_batches):
        claimed, outcomes, batch = send_batch(sessions, channel)
        if not claimed:
            break
        report.batches += 1
        report.claimed += claimed
        for outcome in outcomes:
            report.add(outcome.status.value)
        for reason, count in batch.held.items():
            report.add(reason, count)
    return report
