"""The sending loop: claim a batch, let the channel render and transport each message,
record each outcome as soon as the channel reports it. No transaction is open while the
channel talks to the outside: a recorder thread writes the outcomes, a small group per
transaction (whatever arrived while the previous group was being written), so the relay
never waits for the database and a sender killed mid-batch leaves little unrecorded.

The sender hands a message to the channel only while fewer than ``IN_FLIGHT`` messages of
the batch are without a committed outcome. So when a sender dies, of its rows still
`sending` only the first ``IN_FLIGHT`` (in the batch's order, by id) can have reached the
relay; ``expire_leases`` makes those `unknown` and puts the others back in the queue."""

from __future__ import annotations

import threading
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
from automation.email.outbox.claiming import IN_FLIGHT, Batch, Claimed, claim_batch
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
        reason=delivery.reason
        or {
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


class RecorderFailed(RuntimeError):
    """Outcomes could not be written (the database went away): the sender stopped."""


class Recorder:
    """Writes a batch's outcomes from a thread of its own, in the order they come, each
    group of those waiting in one transaction; counts what is committed so the sender can
    keep at most ``IN_FLIGHT`` messages without a recorded outcome."""

    def __init__(self, sessions: sessionmaker[Session], owner: str) -> None:
        self.sessions, self.owner = sessions, owner
        self.outcomes: list[Outcome] = []  # every outcome, for the report and metrics
        self._waiting: list[Outcome] = []
        self._committed = 0
        self._closed = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="outcomes", daemon=True)
        self._thread.start()

    def add(self, outcome: Outcome) -> None:
        with self._changed:
            self.outcomes.append(outcome)
            self._waiting.append(outcome)
            self._changed.notify_all()

    def make_room(self, taken: int) -> bool:
        """Wait until one more message may be taken (``taken`` were, some of them still in
        the channel's hands); False if recording failed (then nothing more may go)."""
        with self._changed:
            while taken + 1 - self._committed > IN_FLIGHT and self._error is None:
                self._changed.wait()
            return self._error is None

    def close(self) -> None:
        """Write what is left and stop; raises RecorderFailed if any group failed."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()
        if self._error is not None:
            raise RecorderFailed(str(self._error)) from self._error

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._closed:
                    self._changed.wait()
                if not self._waiting:
                    return
                group, self._waiting = self._waiting, []
            try:
                with transaction(self.sessions) as session:
                    record_outcomes(session, self.owner, group)
            except BaseException as exc:  # handed to the sender, which raises it
                with self._changed:
                    self._error = exc
                    self._changed.notify_all()
                return
            with self._changed:
                self._committed += len(group)
                self._changed.notify_all()


def deliver(channel: Channel, batch: Batch, prepared: Prepared, recorder: Recorder) -> None:
    """Render and send each claimed message, rendering each just before the transport
    takes it, and hand each outcome to the recorder as it comes; stop handing messages to
    the relay well before the lease runs out (the rest go back to the queue untouched)."""
    margin = timedelta(seconds=max(5.0, channel.settings.send_lease_seconds * 0.2))
    stop_at = batch.lease_expires_at - margin
    unavailable: str | None = None

    def rendered() -> Iterator[tuple[Claimed, Any]]:
        for taken, message in enumerate(batch.messages):
            if not recorder.make_room(taken):
                return  # the rest stay leased: expire_leases puts them back in the queue
            now = clock.now()
            if now >= stop_at:
                recorder.add(_outcome(message, MessageStatus.QUEUED))
                continue
            if unavailable is not None:
                recorder.add(
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
                recorder.add(
                    _outcome(message, MessageStatus.FAILED, reason=exc.reason, error=exc.error)
                )
                continue
            yield message, item

    for message, delivery in channel.send_many(rendered()):
        if delivery.unavailable:
            unavailable = delivery.response  # the later messages are not even rendered
        recorder.add(_from_delivery(message, delivery))


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
    outcomes: list[Outcome] = []
    if prepared is not None:
        recorder = Recorder(sessions, batch.owner)
        try:
            deliver(channel, batch, prepared, recorder)
        finally:
            recorder.close()
        outcomes = recorder.outcomes
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
