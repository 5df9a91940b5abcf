"""The outbox: every message is a `messages` row before anything sends it (the state
diagram and the one transition check are in states.py). Callers use this API; nothing
outside the package writes the table."""

from automation.email.outbox.channel import (
    NEEDS_SMTPUTF8,
    Channel,
    Delivery,
    DeliveryStatus,
    Prepared,
    Undeliverable,
)
from automation.email.outbox.claiming import Batch, Claimed, claim_batch, expire_leases
from automation.email.outbox.outcomes import (
    MAX_ATTEMPTS,
    Feedback,
    Outcome,
    backoff,
    note_feedback,
    record_outcomes,
)
from automation.email.outbox.parking import PARKED, park, unpark, withdraw
from automation.email.outbox.queueing import (
    QueueItem,
    queue_for_contacts,
    queue_message,
    queue_messages,
)
from automation.email.outbox.reads import get_message, resend_message, search_messages
from automation.email.outbox.sending import SendReport, send_batch, send_due
from automation.email.outbox.states import (
    ALLOWED,
    OUTSTANDING,
    WAITING,
    IllegalTransition,
    check_transition,
)

__all__ = [
    "ALLOWED",
    "MAX_ATTEMPTS",
    "NEEDS_SMTPUTF8",
    "OUTSTANDING",
    "PARKED",
    "WAITING",
    "Batch",
    "Channel",
    "Claimed",
    "Delivery",
    "DeliveryStatus",
    "Feedback",
    "IllegalTransition",
    "Outcome",
    "Prepared",
    "QueueItem",
    "SendReport",
    "Undeliverable",
    "backoff",
    "check_transition",
    "claim_batch",
    "expire_leases",
    "get_message",
    "note_feedback",
    "park",
    "queue_for_contacts",
    "queue_message",
    "queue_messages",
    "record_outcomes",
    "resend_message",
    "search_messages",
    "send_batch",
    "send_due",
    "unpark",
    "withdraw",
]
