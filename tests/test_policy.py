"""The sending policy an admin saves: it overrides the environment's defaults, bad values
are refused field by field with nothing saved, and the senders apply a saved cap at once."""

from __future__ import annotations

import emailkit
from emailkit import make_contact, make_template

from automation.email.models import Message, MessageStatus
from automation.email.outbox import queue_message, send_due
from automation.email.sender import Sending
from automation.email.transport import SmtpSettings, SmtpTransport
from automation.signing import TokenSigner

smtp_server = emailkit.smtp_server


def test_admin_saves_the_policy_and_it_overrides_the_environment(api):
    default = api.get("/settings/sending-policy")
    assert default.status_code == 200
    assert default.json["frequency_cap"] == 0 and default.json["saved"] == []

    saved = api.put(
        "/settings/sending-policy",
        {"frequency_cap": 3, "frequency_cap_days": 5, "sunset_days": 180},
    )
    assert saved.status_code == 200, saved.json
    assert (saved.json["frequency_cap"], saved.json["frequency_cap_days"]) == (3, 5)
    assert saved.json["frequency_cap_action"] == "defer"  # not saved: the environment's
    assert saved.json["saved"] == ["frequency_cap", "frequency_cap_days", "sunset_days"]
    assert api.get("/settings/sending-policy").json["sunset_days"] == 180

    # null returns a field to the environment's value
    back = api.put("/settings/sending-policy", {"frequency_cap": None})
    assert back.json["frequency_cap"] == 0 and back.json["saved"] == []


def test_bad_policy_values_are_named_and_nothing_is_saved(api):
    api.put("/settings/sending-policy", {"frequency_cap": 2})
    bad = api.put(
        "/settings/sending-policy",
        {"frequency_cap": -1, "frequency_cap_action": "later", "sunset": 3},
    )
    assert bad.status_code == 422
    named = {d["path"] for d in bad.json["error"]["details"]}
    assert {"frequency_cap", "frequency_cap_action", "sunset"} <= named
    assert api.get("/settings/sending-policy").json["frequency_cap"] == 2  # unchanged


def test_only_admins_read_or_change_the_policy(api):
    marketer = api.as_role("marketer")
    assert marketer.get("/settings/sending-policy").status_code == 403
    assert marketer.put("/settings/sending-policy", {"frequency_cap": 1}).status_code == 403


def test_a_saved_cap_is_applied_by_the_sender_without_a_restart(app, api, smtp_server):
    runtime = app.extensions["nurture"]
    settings = runtime.settings
    assert settings.frequency_cap == 0  # the environment sets no cap
    transport = SmtpTransport(SmtpSettings(smtp_server.host, smtp_server.port))
    sending = Sending(settings, transport, TokenSigner.from_settings(settings))
    with runtime.sessions() as s:
        template = make_template(s)
        contact = make_contact(s, "ana@example.com")
        ids = [
            queue_message(
                s,
                dedupe_key=f"news:{i}",
                contact_id=contact,
                template_version_id=template.version.id,
            )
            for i in range(2)
        ]
        s.commit()
    assert api.put("/settings/sending-policy", {"frequency_cap": 1}).status_code == 200
    send_due(runtime.sessions, sending)
    transport.close()
    with runtime.sessions() as s:
        statuses = [s.get(Message, i).status for i in ids]
    assert statuses == [MessageStatus.SENT, MessageStatus.DEFERRED]
    assert len(smtp_server.received) == 1


def test_the_settings_page_saves_the_policy_and_names_bad_fields(app, client, user_factory):
    from conftest import login
    from test_ui_forms import Form

    user_factory("admin@example.com", "correct horse battery", "admin")
    user_factory("m@example.com", "correct horse battery", "marketer")
    login(client, "m@example.com", "correct horse battery")
    assert Form(client).post("/settings/sending", {"frequency_cap": "2"}).status_code == 403
    client.post("/logout", data={"csrf_token": Form(client).token})
    login(client, "admin@example.com", "correct horse battery")

    bad = Form(client).post(
        "/settings/sending",
        {
            "frequency_cap": "-3",
            "frequency_cap_days": "",
            "sunset_days": "x",
            "complaint_window_days": "0",
        },
    )
    assert bad.status_code == 422
    html = bad.get_data(as_text=True)
    assert 'id="e-frequency_cap"' in html and 'id="e-sunset_days"' in html
    assert 'id="e-complaint_window_days"' in html and 'id="e-soft_bounce_limit"' not in html
    assert 'value="-3"' in html  # what was typed stays in the form
    runtime = app.extensions["nurture"]
    from automation.policy import get_policy

    with runtime.sessions() as s:
        assert get_policy(s, runtime.settings).saved == []  # nothing half-saved

    done = Form(client).post(
        "/settings/sending",
        {"frequency_cap": "4", "frequency_cap_days": "7", "frequency_cap_action": "skip"},
    )
    assert done.status_code == 302
    page = client.get("/settings/sending").get_data(as_text=True)
    assert "at most <strong>4</strong> marketing emails" in page and "skipped" in page
    assert "at least <strong>3</strong> complaints" in page  # the environment's minimum
    with runtime.sessions() as s:
        current = get_policy(s, runtime.settings)
    assert (current.frequency_cap, current.frequency_cap_action) == (4, "skip")
