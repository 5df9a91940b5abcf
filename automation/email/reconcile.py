"""Settling `unknown` messages from a relay's log (``nurture messages reconcile``).

A message is `unknown` when its sender stopped between handing it to the relay and
recording the answer. The relay's log knows: each message carries the Message-ID stored
on its row at claim (``internet_message_id``). Found and accepted there: `sent` (with its
`email.sent` event and the contact's count); given up by the relay: `failed` (a hard
bounce suppresses the address, as an SMTP refusal would). Not in the log: it never
reached the relay, and stays `unknown` for an operator to resend."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation import clock
from automation.contacts.models import Contact
from automation.email.models import Message, MessageStatus
from automation.email.outbox import Outcome, record_outcomes
from automation.email.relaylog import READERS, Fate, LogFormat, RelayOutcome, bare


@dataclass
class ReconcileReport:
    unknown: int = 0  # unknown messages with a Message-ID before
    sent: int = 0
    failed: int = 0
    bounced: int = 0
    not_in_log: int = 0  # still unknown

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


_Row = tuple[int, int, str, int, int | None]  # message, contact, address, attempts, identity


def _outcome(row: _Row, found: RelayOutcome) -> Outcome:
    message_id, contact_id, email, attempts, identity_id = row
    where = f"relay log line {found.line}: {found.text}"[:500]
    if found.fate is Fate.ACCEPTED:
        return Outcome(
            message_id,
            MessageStatus.SENT,
            contact_id,
            email,
            attempts,
            identity_id,
            smtp_response=where,
        )
    return Outcome(
        message_id,
        MessageStatus.FAILED,
        contact_id,
        email,
        attempts,
        identity_id,
        reason="hard_bounce" if found.fate is Fate.BOUNCED else "rejected",
        error=where,
        smtp_response=found.text[:500],
        hard_bounce=found.fate is Fate.BOUNCED,
    )


def reconcile_unknown(
    session: Session,
    log: Iterable[bytes],
    log_format: LogFormat,
    *,
    now: datetime | None = None,
) -> ReconcileReport:
    """Settle the `unknown` messages the relay's ``log`` (its lines, as bytes) accounts for."""
    rows: dict[str, _Row] = {
        bare(header or ""): (id_, contact_id, email, attempts, identity_id)
        for id_, header, contact_id, email, attempts, identity_id in session.execute(
            select(
                Message.id,
                Message.internet_message_id,
                Message.contact_id,
                Contact.email,
                Message.attempts,
                Message.sender_identity_id,
            )
            .join(Contact, Contact.id == Message.contact_id)
            .where(
                Message.status == MessageStatus.UNKNOWN,
                Message.internet_message_id.is_not(None),
            )
        )
    }
    report = ReconcileReport(unknown=len(rows))
    if not rows:
        return report
    found = READERS[log_format](log, set(rows))
    outcomes = [_outcome(rows[key], outcome) for key, outcome in found.items()]
    record_outcomes(session, None, outcomes, now=now or clock.now(), held=(MessageStatus.UNKNOWN,))
    report.sent = sum(1 for o in found.values() if o.fate is Fate.ACCEPTED)
    report.bounced = sum(1 for o in found.values() if o.fate is Fate.BOUNCED)
    report.failed = len(found) - report.sent - report.bounced
    report.not_in_log = report.unknown - len(found)
    return report
