"""The demo data set brings three good-looking templates that render and send."""

from __future__ import annotations

import emailkit
from sqlalchemy import select

from automation.contacts.models import Contact, ContactStatus
from automation.db import make_engine, make_session_factory
from automation.demo import load_demo
from automation.email.models import Message, MessageStatus
from automation.email.outbox import queue_message, send_due
from automation.email.sender import Sending
from automation.email.templates import list_templates, preview_template
from automation.email.transport import SmtpSettings, SmtpTransport
from automation.signing import TokenSigner

smtp_server = emailkit.smtp_server


def test_the_demo_templates_preview_and_send(session, settings, smtp_server):
    assert "3 email templates" in load_demo(session, contacts=40)
    session.commit()
    # The demo's example workflows (docs/workflows.md) bring templates of their own.
    ours = {"Abandoned cart", "Newsletter: spring", "Welcome"}
    templates = [(t, v) for t, v in list_templates(session) if t.name in ours]
    assert sorted(t.name for t, _v in templates) == sorted(ours)
    contact = session.scalar(
        select(Contact.id).where(Contact.status == ContactStatus.SUBSCRIBED).limit(1)
    )
    for template, version in templates:
        preview = preview_template(session, template.id, base_url="http://x", contact_id=contact)
        assert "Unsubscribe" in preview.email.text and "<mj-" not in preview.email.html
        assert version.sender_identity_id is not None
        queue_message(
            session,
            dedupe_key=f"demo:{template.id}",
            contact_id=contact,
            template_version_id=version.id,
        )
    session.commit()
    engine = make_engine(settings.database_url)
    transport = SmtpTransport(SmtpSettings(smtp_server.host, smtp_server.port))
    send_due(
        make_session_factory(engine),
        Sending(settings, transport, TokenSigner.from_settings(settings)),
    )
    transport.close()
    engine.dispose()
    assert len(smtp_server.received) == 3
    assert {m.status for m in session.scalars(select(Message))} == {MessageStatus.SENT}
