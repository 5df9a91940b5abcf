"""The outbox package's API as its callers use it: parking, unparking and withdrawing
waiting messages; a channel other than email sending through the same loop; the one
suppression list and the one hard-bounce path."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import emailkit
from emailkit import make_contact, make_template
from sqlalchemy import case, func, literal, select

from automation import clock
from automation.addresses import email_hash
from automation.config import Settings
from automation.contacts.gdpr import erase_contact
from automation.contacts.models import Contact, ContactStatus, Event
from automation.contacts.suppressions import (
    Suppression,
    SuppressionReason,
    suppress,
    suppression_reasons,
)
from automation.email.models import Message, MessageStatus
from automation.email.outbox import (
    PARKED,
    Batch,
    Claimed,
    Delivery,
    DeliveryStatus,
    Undeliverable,
    claim_batch,
    park,
    queue_message,
    send_due,
    unpark,
    withdraw,
)
from automation.email.render import VersionCache
from automation.signing import TokenSigner, message_id_header
from automation.tracking.bounces import FeedbackIn, FeedbackType, record_feedback

smtp_server, sessions, sending = emailkit.smtp_server, emailkit.sessions, emailkit.sending


def _queue(session, version_id, contact_id, key):
    message_id = queue_message(
        session, dedupe_key=key, contact_id=contact_id, template_version_id=version_id
    )
    assert message_id is not None
    return message_id


def _message(sessions, message_id):
    with sessions() as s:
        return s.get(Message, message_id)


# --- park, unpark, withdraw --------------------------------------------------------------


def test_a_parked_message_is_not_claimed_until_unparked_at_its_own_time(session, settings):
    saved = make_template(session)
    first = _queue(session, saved.version.id, make_contact(session, "a@example.com"), "p:1")
    second = _queue(session, saved.version.id, make_contact(session, "b@example.com"), "p:2")
    session.commit()
    scope = Message.id.in_([first, second])

    assert park(session, scope) == 2
    assert park(session, scope) == 0  # parked already
    assert claim_batch(session, settings=settings, cache=VersionCache()).messages == []
    assert {m.next_attempt_at for m in session.scalars(select(Message))} == {PARKED}

    now = clock.now()
    later = now + timedelta(hours=2)
    # Each message's own send time, in SQL: the second one's is later, the first has none.
    own_time = case((Message.id == second, literal(later, Message.next_attempt_at.type)))
    unpark(session, scope, send_at=own_time, now=now)
    session.expire_all()
    times = {m.id: m.next_attempt_at for m in session.scalars(select(Message))}
    assert times[first] == now and times[second] == later
    claimed = claim_batch(session, settings=settings, cache=VersionCache())
    assert [m.id for m in claimed.messages] == [first]


def test_withdrawing_deletes_what_never_went_out_and_fails_what_had_an_attempt(
    session, sessions, sending, smtp_server
):
    smtp_server.behaviour.rcpt["busy"] = "451 4.7.1 Try again later"
    saved = make_template(session)
    busy = _queue(session, saved.version.id, make_contact(session, "busy@example.com"), "w:1")
    session.commit()
    send_due(sessions, sending)  # one temporary failure: deferred with an attempt
    fresh = _queue(session, saved.version.id, make_contact(session, "new@example.com"), "w:2")
    session.commit()

    assert withdraw(session, Message.id.in_([busy, fresh])) == (1, 1)
    session.commit()

    assert _message(sessions, fresh) is None
    kept = _message(sessions, busy)
    assert kept.status is MessageStatus.FAILED and kept.reason == "withdrawn"
    assert kept.attempts == 1


# --- a second channel through the same loop ----------------------------------------------


@dataclass
class Notices:
    """A channel that is not email: each message becomes a line of text; one address is
    refused at render time, one by the 'transport'."""

    settings: Settings
    cache: VersionCache = field(default_factory=VersionCache)
    delivered: list[str] = field(default_factory=list)

    def prepare(self, session, batch: Batch) -> Notices:
        return self

    def render(self, message: Claimed, now: datetime) -> str:
        if message.email.startswith("unrenderable"):
            raise Undeliverable("render_error", "no notice for this one")
        return f"notice for {message.contact['email']}"

    def send_many(self, items: Iterable[tuple[Claimed, str]]) -> Iterator[tuple[Claimed, Delivery]]:
        for message, text in items:
            if message.email.startswith("refused"):
                yield message, Delivery(DeliveryStatus.FAILED, "refused by the receiver")
                continue
            self.delivered.append(text)
            yield message, Delivery(DeliveryStatus.SENT, "accepted", provider_id="n1")


def test_the_sending_loop_runs_any_channel_through_the_same_outbox(session, sessions, settings):
    saved = make_template(session)
    ok = _queue(session, saved.version.id, make_contact(session, "ok@example.com"), "n:1")
    bad = _queue(
        session, saved.version.id, make_contact(session, "unrenderable@example.com"), "n:2"
    )
    refused = _queue(session, saved.version.id, make_contact(session, "refused@example.com"), "n:3")
    session.commit()
    channel = Notices(settings)

    report = send_due(sessions, channel)

    assert report.outcomes == {"sent": 1, "failed": 2}
    assert channel.delivered == ["notice for ok@example.com"]
    sent = _message(sessions, ok)
    assert sent.status is MessageStatus.SENT and sent.provider_message_id == "n1"
    assert (_message(sessions, bad).status, _message(sessions, bad).reason) == (
        MessageStatus.FAILED,
        "render_error",
    )
    assert _message(sessions, refused).reason == "rejected"
    with sessions() as s:
        assert s.get(Contact, sent.contact_id).emails_sent == 1


# --- the suppression list and hard bounces -----------------------------------------------


def test_an_erasure_keeps_only_the_hash_and_wins_over_an_earlier_reason(session):
    contact = make_contact(session, "gone@example.com")
    suppress(session, ["gone@example.com"], SuppressionReason.BOUNCED, source="smtp")
    suppress(session, ["gone@example.com"], SuppressionReason.MANUAL, source="ui")
    row = session.scalar(select(Suppression))
    assert (row.email, row.reason) == ("gone@example.com", SuppressionReason.BOUNCED)

    erase_contact(session, contact)
    suppress(session, ["gone@example.com"], SuppressionReason.BOUNCED, source="smtp")
    session.expire_all()

    row = session.scalar(select(Suppression))
    assert (row.email, row.reason) == (None, SuppressionReason.ERASED)
    assert suppression_reasons(session, ["Gone@Example.com", "x@example.com"]) == {
        email_hash("gone@example.com"): SuppressionReason.ERASED
    }


def test_a_bounce_at_smtp_time_and_its_later_report_record_one_event_with_one_shape(
    session, sessions, sending, smtp_server, settings
):
    smtp_server.behaviour.rcpt["gone"] = "550 5.1.1 No such user"
    saved = make_template(session)
    contact = make_contact(session, "gone@example.com")
    message_id = _queue(session, saved.version.id, contact, "b:1")
    session.commit()
    send_due(sessions, sending)

    with sessions() as s:
        [event] = s.scalars(select(Event).where(Event.name == "email.bounced"))
        assert event.properties["type"] == "hard_bounce"
        assert event.properties["message_id"] == message_id
        assert event.properties["diagnostic"].startswith("550")
        message = s.get(Message, message_id)
        signer = TokenSigner.from_settings(settings)
        tokens = signer.for_message(message.id, message.token_nonce, message.template_version_id)
        header = message_id_header(tokens, "example.com")
        report = record_feedback(
            s,
            [
                FeedbackIn(
                    type=FeedbackType.HARD_BOUNCE,
                    email="gone@example.com",
                    message_id=header,
                    diagnostic="smtp; 550 5.1.1 user unknown",
                )
            ],
            signer,
            source="dsn",
            settings=settings,
        )
        s.commit()
        assert report.suppressed == 1
        assert s.scalar(select(func.count()).where(Event.name == "email.bounced")) == 1
        assert s.get(Contact, contact).status is ContactStatus.BOUNCED
        assert s.scalar(select(func.count()).select_from(Suppression)) == 1
