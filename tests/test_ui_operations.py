"""Operator views: the outbox backlog and tick lag computed from rows, paused sender
identities resumed by an admin only, and the read-only sending policy page (admins only,
the SMTP password never shown)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import login, make_settings
from emailkit import make_contact, make_template
from test_ui_forms import Form

from automation import clock
from automation.accounts.models import Role
from automation.accounts.service import create_user
from automation.campaigns.models import Campaign, CampaignStatus
from automation.config import load_settings
from automation.email import identities
from automation.email.models import SenderIdentity
from automation.email.outbox import queue_message
from automation.ops.backlog import (
    outbox_backlog,
    paused_sender_count,
    paused_senders,
    tick_lag,
)
from automation.policy import pause_default_sender

PASSWORD = "correct horse battery"


@pytest.fixture
def settings(tmp_path, sqlite_url):
    return make_settings(tmp_path, sqlite_url, NURTURE_SMTP_PASSWORD="hunter2-secret")


@pytest.fixture(autouse=True)
def frozen():
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    clock.set_source(lambda: now)
    yield now
    clock.set_source(None)


def _world(session):
    now = clock.now()
    sender = identities.create_sender_identity(
        session,
        identities.parse_sender_identity(
            {"name": "News", "from_name": "Shop", "from_email": "news@example.com"}
        ),
    )
    plain = make_template(session, name="Plain").version.id
    branded = make_template(session, name="Branded", sender_identity_id=sender.id).version.id
    a, b, c = (make_contact(session, f"{n}@example.com") for n in "abc")
    queue_message(
        session,
        dedupe_key="1",
        contact_id=a,
        template_version_id=plain,
        send_at=now - timedelta(minutes=3),
    )
    queue_message(
        session,
        dedupe_key="2",
        contact_id=b,
        template_version_id=plain,
        send_at=now + timedelta(hours=1),
    )
    queue_message(
        session,
        dedupe_key="3",
        contact_id=c,
        template_version_id=branded,
        send_at=now - timedelta(minutes=1),
    )
    sender.paused_at, sender.paused_reason = now, "complaint rate 0.50 % is over 0.3 %"
    session.add(
        Campaign(
            name="Late",
            status=CampaignStatus.SCHEDULED,
            created_at=now,
            updated_at=now,
            next_run_at=now - timedelta(seconds=40),
        )
    )
    session.flush()
    return sender


def test_backlog_tick_lag_and_paused_senders_come_from_rows(session):
    sender = _world(session)
    now = clock.now()
    backlog = outbox_backlog(session, now=now)
    assert backlog.by_status["queued"] == 3
    assert backlog.due == 2  # the one for later is not due
    assert backlog.oldest_due_seconds == 180
    assert backlog.paused_identity_messages == 1
    lag = tick_lag(session, now=now)
    assert (lag.campaigns_due, lag.workflows_due) == (1, 0)
    assert lag.campaigns_seconds == 40
    settings = load_settings({"NURTURE_DEFAULT_SENDER": "Shop <shop@example.com>"})
    assert [(p.identity_id, p.waiting) for p in paused_senders(session, settings)] == [
        (sender.id, 1)
    ]
    assert paused_sender_count(session) == 1
    # The default sender (messages with no identity: two here, one due) pauses too.
    assert pause_default_sender(session, "complaint rate 0.40 % is over 0.3 %")
    assert paused_sender_count(session) == 2
    assert outbox_backlog(session, now=now).paused_identity_messages == 3
    default = paused_senders(session, settings)[-1]
    assert (default.identity_id, default.from_email, default.waiting) == (
        None,
        "shop@example.com",
        2,
    )


def test_operations_page_and_resume_need_the_admin(app, client):
    with app.extensions["nurture"].sessions() as s:
        sender_id = _world(s).id
        create_user(s, "admin@example.com", PASSWORD, role=Role.ADMIN)
        create_user(s, "m@example.com", PASSWORD, role=Role.MARKETER)
        s.commit()
    login(client, "m@example.com", PASSWORD)
    html = client.get("/outbox").get_data(as_text=True)
    assert 'id="backlog-due">2<' in html and "complaint rate 0.50 %" in html
    assert "Resume</button>" not in html  # marketers see, admins act
    assert Form(client).post(f"/outbox/senders/{sender_id}/resume").status_code == 403
    assert client.get("/settings/sending").status_code == 403
    client.post("/logout", data={"csrf_token": Form(client).token})
    login(client, "admin@example.com", PASSWORD)
    assert Form(client).post("/outbox/senders/99999/resume").status_code == 404
    assert Form(client).post(f"/outbox/senders/{sender_id}/resume").status_code == 302
    with app.extensions["nurture"].sessions() as s:
        assert s.get(SenderIdentity, sender_id).paused_at is None
    page = client.get("/settings/sending").get_data(as_text=True)
    assert "NURTURE_FREQUENCY_CAP" in page and "NURTURE_SUNSET_SENDS" in page
    assert 'id="smtp-check"' in page and "Apple Mail Privacy Protection" in page
    assert "hunter2-secret" not in page and "<td>set</td>" in page
