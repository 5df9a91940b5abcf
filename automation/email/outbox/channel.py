"""The seam between the outbox and a way out. The sending loop (sending.py) claims a batch,
hands each message to a :class:`Channel` to render and transport, and records what the
channel reports; it knows nothing of MIME or SMTP. Email is the first channel
(automation/email/sender.py); outbound webhooks, notifications or SMS would be others,
sending from the same outbox with the same leases, screening and outcomes."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from automation.config import Settings
from automation.email.outbox.claiming import Batch, Claimed
from automation.email.render import VersionCache


class DeliveryStatus(enum.StrEnum):
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Delivery:
    """What the way out said about one message."""

    status: DeliveryStatus
    response: str
    code: int | None = None
    provider_id: str | None = None
    hard_bounce: bool = False
    # The relay told us to slow down (4xx, 421, lost connection): throttle the identity.
    slow_down: bool = False
    unavailable: bool = False  # the relay could not be reached: nothing was tried
    reason: str | None = None  # why, when the default for the status does not say it


# Held, not failed: the message needs SMTPUTF8 (a non-ASCII local part in an address) and
# the relay does not offer it. Nothing was tried; it waits, retried with backoff, and never
# runs out of attempts (the relay may be configured to offer it).
NEEDS_SMTPUTF8 = "needs_smtputf8"


class Undeliverable(Exception):
    """This message cannot be made into something to send (it fails for good)."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error


class Prepared(Protocol):
    """One batch, ready to render message by message."""

    def render(self, message: Claimed, now: datetime) -> Any:
        """What the transport takes for ``message``; raises Undeliverable."""
        ...


class Channel(Protocol):
    """A way out for claimed messages: render each, then transport them."""

    settings: Settings
    cache: VersionCache  # compiled templates, kept between batches

    def prepare(self, session: Session, batch: Batch) -> Prepared:
        """Load what rendering the batch needs (in the claim's transaction)."""
        ...

    def send_many(self, items: Iterable[tuple[Claimed, Any]]) -> Iterator[tuple[Claimed, Delivery]]:
        """One (message, delivery) per item, in order; items pulled as they are sent."""
        ...
