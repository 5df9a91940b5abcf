"""The email rates, each defined once. The dashboard, the campaign report (totals and
variants), the split report and the A/B test all take their rates from here, so one
campaign shows the same open rate everywhere.

- *sent*: the SMTP server accepted the message; *delivered*: sent and not bounced since.
- **open rate** = unique human opens / delivered (a person's click counts as an open:
  docs/tracking.md, "What counts as opened");
- **click rate** = unique human clicks / delivered; **click-to-open** = clicks / opens;
- **unsubscribe rate** = unsubscribed / delivered; **complaint rate** = complaints /
  delivered; **bounce rate** = bounced / sent.

A rate with nothing to divide by is None ("—" on a page; the report's API answers 0.0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from automation.email.models import Message, MessageStatus

RATES = (
    "open_rate",
    "click_rate",
    "click_to_open",
    "bounce_rate",
    "unsubscribe_rate",
    "complaint_rate",
)


def ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class EmailCounts:
    sent: int = 0
    delivered: int = 0
    bounced: int = 0
    opened: int = 0  # messages with a human open
    clicked: int = 0  # messages with a human click
    unsubscribed: int = 0
    complained: int = 0

    def rates(self) -> dict[str, float | None]:
        return {
            "open_rate": ratio(self.opened, self.delivered),
            "click_rate": ratio(self.clicked, self.delivered),
            "click_to_open": ratio(self.clicked, self.opened),
            "bounce_rate": ratio(self.bounced, self.sent),
            "unsubscribe_rate": ratio(self.unsubscribed, self.delivered),
            "complaint_rate": ratio(self.complained, self.delivered),
        }

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), **self.rates()}


def _flag(condition: Any) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def message_counts(session: Session, where: Sequence[Any]) -> EmailCounts:
    """The counts of the messages matching ``where``, from their rows (the tracking worker
    stamps ``first_open_at`` / ``first_click_at`` for human engagement only)."""
    sent = Message.status == MessageStatus.SENT
    row = session.execute(
        select(
            _flag(sent),
            _flag(and_(sent, Message.bounced_at.is_(None))),
            _flag(Message.bounced_at.is_not(None)),
            _flag(Message.first_open_at.is_not(None)),
            _flag(Message.first_click_at.is_not(None)),
            _flag(Message.unsubscribed_at.is_not(None)),
            _flag(Message.complained_at.is_not(None)),
        ).where(*where)
    ).one()
    return EmailCounts(*(int(v) for v in row))


__all__ = ["RATES", "EmailCounts", "message_counts", "ratio"]
