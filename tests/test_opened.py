"""One meaning of "opened": a person's click on a tracked link proves the email was opened,
even when its images (the pixel) never loaded; a mail scanner's click proves nothing.

Real emails go through the outbox to a loopback SMTP server; the links are taken from the
received HTML and followed on the tracking URL with a browser's or a scanner's user agent,
without ever loading the pixel; the tracking worker's drain ingests them. Then the workflow
branch "opened the email at node N", the wait for an open, the segment conditions, the
campaign report and A/B counts, the contact counters and the dashboard all agree."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import emailkit
from campaignkit import make_list, start_campaign
from conftest import login, make_api_key
from emailkit import make_contact, make_identity, make_template
from sqlalchemy import select
from workflows_support import doc

from automation.contacts.models import Event
from automation.db import transaction
from automation.email.outbox import send_due
from automation.tracking.service import drain_hits

smtp_server, sessions, sending = emailkit.smtp_server, emailkit.sessions, emailkit.sending

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Version/17.1"
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel link scanner)"
CLICK = re.compile(r'href="http://nurture\.test(/t/c/[A-Za-z0-9_\-]+)"')


def _setup(app: Any, harness: Any) -> tuple[int, dict[str, int]]:
    # Sent an hour before the clicks (wall time): no click is "too soon after delivery".
    harness.clock.set(datetime.now(UTC) - timedelta(hours=1))
    with harness.sessions() as s:
        identity = make_identity(s)
        template = make_template(s, sender_identity_id=identity).template.id
        ids = {name: make_contact(s, f"{name}@example.com") for name in ("ana", "ben", "cy")}
        s.commit()
    return template, ids


def _follow_first_link(client: Any, received: Any, user_agent: str) -> None:
    """What the recipient's browser (or a scanner) does: follow the email's first tracked
    link. The pixel is never requested: images blocked."""
    html = received.message.get_body(("html",)).get_content()
    assert "/t/o/" in html  # the pixel is there, and stays unloaded
    response = client.get(CLICK.findall(html)[0], headers={"User-Agent": user_agent})
    assert response.status_code == 302


def _drain(app: Any) -> Any:
    from web.public.state import tracking

    with app.app_context():
        queue = tracking().queue
    return drain_hits(app.extensions["nurture"].sessions, queue)


def _by_recipient(smtp_server: Any) -> dict[str, Any]:
    return {r.recipients[0].split("@")[0]: r for r in smtp_server.received}


def test_a_human_click_without_the_pixel_is_an_open_everywhere_and_a_scanner_click_is_not(
    app, client, harness, sessions, sending, smtp_server
):
    template, ids = _setup(app, harness)
    workflow = harness.publish(
        doc(
            [
                {"id": "mail", "type": "send_email", "template_id": template, "next": "w"},
                {
                    "id": "w",
                    "type": "wait",
                    "mode": "event",
                    "event": "email.opened",
                    "timeout": {"days": 1},
                    "happened": "b",
                    "timed_out": "b",
                },
                {
                    "id": "b",
                    "type": "branch",
                    "condition": {"conditions": [{"workflow_email": "opened", "node": "mail"}]},
                    "yes": "hot",
                    "no": "reminder",
                },
                {"id": "hot", "type": "update_contact", "add_tags": ["opened"], "next": None},
                {"id": "reminder", "type": "update_contact", "add_tags": ["reminder"]},
            ]
        )
    )
    # A workflow that starts for whoever opens the email, with a goal met by an open.
    follow_up = harness.publish(
        doc(
            [
                {
                    "id": "g",
                    "type": "goal",
                    "condition": {"conditions": [{"email": "opened", "template_id": template}]},
                    "otherwise": "end",
                    "next": "done",
                },
                {"id": "done", "type": "exit"},
            ],
            trigger={"type": "email_opened", "template_id": template},
            name="Opened follow-up",
        )
    )
    harness.events(*[{"name": "signed_up", "email": f"{n}@example.com"} for n in ids])
    harness.tick()
    assert send_due(sessions, sending).outcomes == {"sent": 3}
    mail = _by_recipient(smtp_server)
    _follow_first_link(client, mail["ana"], BROWSER)
    _follow_first_link(client, mail["ben"], SCANNER)
    report = _drain(app)
    assert (report.human, report.machine) == (1, 1)

    # The wait for an open ended for Ana at once; Ben and Cy wait for the timeout.
    harness.tick()
    harness.clock.advance(days=1, minutes=1)
    harness.tick()
    started = harness.enrollments(follow_up)
    assert [(e.contact_id, e.converted_at is not None) for e in started] == [(ids["ana"], True)]
    exits = {e.contact_id: harness.path(e.id) for e in harness.enrollments(workflow)}
    assert exits[ids["ana"]][1:3] == [("w", "happened"), ("b", "yes")]
    assert exits[ids["ben"]][1:3] == [("w", "timed_out"), ("b", "no")]
    assert exits[ids["cy"]][1:3] == [("w", "timed_out"), ("b", "no")]

    token = make_api_key(app)
    headers = {"Authorization": f"Bearer {token}"}

    def count(condition: dict[str, Any]) -> int:
        answer = client.post(
            "/api/v1/segments/count", json={"conditions": [condition]}, headers=headers
        )
        assert answer.status_code == 200, answer.json
        return answer.json["count"]

    assert count({"email": "opened"}) == 1
    assert count({"email": "opened", "workflow_id": workflow}) == 1
    assert count({"email": "clicked"}) == 1  # Ben's scanner click is a machine's
    assert count({"email": "clicked", "include_machine": True}) == 2
    assert count({"event": "email.opened"}) == 1
    # The sends are events too (the outbox records email.sent): Ben and Cy received it and
    # did not open it; Ana's click proved her open.
    assert count({"email": "received"}) == 3
    assert count({"email": "received_not_opened"}) == 2

    ana = client.get(f"/api/v1/contacts/{ids['ana']}", headers=headers).json
    ben = client.get(f"/api/v1/contacts/{ids['ben']}", headers=headers).json
    assert (ana["opens"], ana["clicks"], ana["last_open_at"] is not None) == (1, 1, True)
    assert (ben["opens"], ben["clicks"], ben["last_open_at"]) == (0, 0, None)
    stats = client.get(f"/api/v1/workflows/{workflow}/stats", headers=headers).json
    mail_node = next(n for n in stats["nodes"] if n["node_id"] == "mail")
    assert mail_node["email"] == {"sent": 3, "opened": 1, "clicked": 1}

    with harness.sessions() as s:
        opened = s.scalars(select(Event).where(Event.name == "email.opened")).all()
    assert [(e.contact_id, e.properties["proof"]) for e in opened] == [(ids["ana"], "click")]


def test_the_campaign_report_and_its_ab_numbers_count_a_human_click_as_the_open(
    app, client, harness, sessions, sending, smtp_server, user_factory
):
    template, ids = _setup(app, harness)
    with transaction(harness.sessions) as s:
        version = campaigns_version(s, template)
        audience = make_list(s, "Everyone", list(ids.values()))
    campaign_id = start_campaign(harness.sessions, version, audience)
    assert send_due(sessions, sending).outcomes == {"sent": 3}
    mail = _by_recipient(smtp_server)
    _follow_first_link(client, mail["ana"], BROWSER)
    _follow_first_link(client, mail["ben"], SCANNER)
    _drain(app)

    headers = {"Authorization": f"Bearer {make_api_key(app)}"}
    totals = client.get(f"/api/v1/campaigns/{campaign_id}/report", headers=headers).json["totals"]
    assert (totals["human_unique_opens"], totals["human_unique_clicks"]) == (1, 1)
    assert (totals["machine_unique_opens"], totals["machine_unique_clicks"]) == (0, 1)
    assert totals["open_rate"] == 1 / 3
    # The A/B numbers are the report's: each variant's human unique opens.
    [variant] = client.get(f"/api/v1/campaigns/{campaign_id}/report", headers=headers).json[
        "variants"
    ]
    assert variant["human_unique_opens"] == 1

    # The dashboard says the same, for the campaign and for the period's emails.
    user_factory("viewer@example.com", "correct horse battery", "viewer")
    viewer = app.test_client()
    assert login(viewer, "viewer@example.com", "correct horse battery").status_code == 302
    page = viewer.get("/?days=7").get_data(as_text=True)
    row = re.search(r"Spring</a></td>.*?</tr>", page, re.S)
    assert row is not None and 'data-rate="open">33.3 %<' in row.group(0)
    assert re.search(r'id="tile-open-rate"><span class="num">33\.3 %<', page)
    opens = _chart_data(page)["engagement"]["series"]
    assert sum(next(s["values"] for s in opens if s["name"] == "email.opened")) == 1


def _chart_data(page: str) -> dict[str, Any]:
    import json

    raw = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', page, re.S)
    assert raw is not None
    return json.loads(raw.group(1))


def campaigns_version(session: Any, template_id: int) -> int:
    from automation.email.models import TemplateVersion

    return int(
        session.scalar(select(TemplateVersion.id).where(TemplateVersion.template_id == template_id))
    )
