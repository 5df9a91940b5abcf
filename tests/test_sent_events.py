"""Mail sent through the outbox is recorded as `email.sent` events in the transaction
that marks it sent: segments ("received", "received but not opened"), the contact's
events and its counters agree with `messages`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import emailkit
from emailkit import make_contact, make_identity, make_template
from sqlalchemy import func, select

from automation import clock
from automation.contacts.models import Event
from automation.email.models import Message, MessageStatus
from automation.email.outbox import queue_message, send_due
from automation.tracking.service import drain_hits

smtp_server, sessions, sending = emailkit.smtp_server, emailkit.sessions, emailkit.sending
HUMAN_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Thunderbird"
PIXEL = re.compile(r'src="http://nurture\.test(/t/o/[A-Za-z0-9_\-]+)"')


def _count(api, condition) -> int:
    answer = api.post("/segments/count", json={"conditions": [condition]})
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["count"]


def test_sent_mail_is_what_segments_the_timeline_and_counters_read(
    api, client, session, sessions, sending, smtp_server
):
    # Sent an hour ago, so that the open below is a person's, not a scanner's prefetch.
    clock.set_source(lambda: datetime.now(UTC) - timedelta(hours=1))
    identity = make_identity(session)
    first = make_template(session, sender_identity_id=identity).version
    second = make_template(session, name="Second", sender_identity_id=identity).version
    people = {name: make_contact(session, f"{name}@example.com") for name in "abcd"}
    for name in "abc":
        queue_message(
            session,
            dedupe_key=f"first:{name}",
            contact_id=people[name],
            template_version_id=first.id,
            campaign_id=41,
        )
    queue_message(
        session,
        dedupe_key="second:a",
        contact_id=people["a"],
        template_version_id=second.id,
        workflow_id=9,
        workflow_node_id="send-1",
    )
    smtp_server.behaviour.rcpt["c"] = "550 5.1.1 no such user"  # c's message fails
    session.commit()
    try:
        report = send_due(sessions, sending)
    finally:
        clock.set_source(None)
    assert report.outcomes == {"sent": 3, "failed": 1}

    # b opens the first email.
    [to_b] = [r for r in smtp_server.received if r.recipients == ["b@example.com"]]
    html = to_b.message.get_body(("html",)).get_content()
    assert client.get(PIXEL.search(html).group(1), headers={"User-Agent": HUMAN_UA}).status_code
    runtime = api.app.extensions["nurture"]
    from web.public.state import tracking

    with api.app.app_context():
        queue = tracking().queue
    assert drain_hits(runtime.sessions, queue).human == 1

    with sessions() as s:
        sent = s.execute(
            select(Message.contact_id, Message.id, Message.sent_at).where(
                Message.status == MessageStatus.SENT
            )
        ).all()
        events = s.execute(
            select(Event.contact_id, Event.properties, Event.occurred_at).where(
                Event.name == "email.sent"
            )
        ).all()
        assert s.scalar(select(func.count()).select_from(Event)) >= len(events)
    assert sorted((e.contact_id, e.properties["message_id"], e.occurred_at) for e in events) == (
        sorted((m.contact_id, m.id, m.sent_at) for m in sent)
    )
    by_message = {e.properties["message_id"]: e.properties for e in events}
    campaign_mail = next(m.id for m in sent if m.contact_id == people["b"])
    assert by_message[campaign_mail]["campaign_id"] == 41
    assert by_message[campaign_mail]["template_id"] == first.template_id
    assert "workflow_id" not in by_message[campaign_mail]

    assert _count(api, {"email": "received"}) == 2  # a and b; c's bounced, d got nothing
    assert _count(api, {"email": "received_not_opened"}) == 1  # a
    assert _count(api, {"email": "received", "operator": "at_least", "times": 2}) == 1
    assert _count(api, {"email": "received", "campaign_id": 41}) == 2
    assert _count(api, {"email": "received", "workflow_id": 9}) == 1
    assert _count(api, {"email": "received", "template_id": second.template_id}) == 1

    for name, sends in {"a": 2, "b": 1, "c": 0, "d": 0}.items():
        contact = api.get(f"/contacts/{people[name]}").get_json()
        assert contact["emails_sent"] == sends
        timeline = api.get(f"/contacts/{people[name]}/events").get_json()
        assert [e["name"] for e in timeline].count("email.sent") == sends


def test_a_message_has_one_sent_event_however_often_its_outcome_is_recorded(
    session, sessions, sending, smtp_server
):
    """A late lease holder recording the same message again adds no second event."""
    from automation.email.outbox import Outcome, record_outcomes

    make_identity(session)
    version = make_template(session).version
    contact = make_contact(session, "zoe@example.com")
    message_id = queue_message(
        session, dedupe_key="once", contact_id=contact, template_version_id=version.id
    )
    session.commit()
    assert send_due(sessions, sending).outcomes == {"sent": 1}
    with sessions() as s:
        owner = "someone-else"
        record_outcomes(
            s,
            owner,
            [Outcome(message_id, MessageStatus.SENT, contact, "zoe@example.com")],
        )
        s.commit()
        assert (
            s.scalar(select(func.count()).select_from(Event).where(Event.name == "email.sent")) == 1
        )
