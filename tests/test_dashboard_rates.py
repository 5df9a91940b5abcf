"""The dashboard and the campaign report use one definition of each rate (per delivered
email; the bounce rate per sent one), its tiles count the chosen 7/30/90 days, and the
account time zone decides which day a send lands on and how pages show dates.

Emails go through the outbox to a loopback SMTP server; opens, clicks, the unsubscribe
and the bounce come back through the tracking URLs, the unsubscribe page and the signed
feedback webhook; the figures are read back from the API and the pages."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import emailkit
import pytest
from campaignkit import make_list, start_campaign
from conftest import login, make_api_key, make_settings
from emailkit import make_contact, make_identity, make_template
from sqlalchemy import select

from automation.db import transaction
from automation.email.models import TemplateVersion
from automation.email.outbox import queue_message, send_due
from automation.tracking.service import drain_hits

smtp_server, sessions, sending = emailkit.smtp_server, emailkit.sessions, emailkit.sending

SECRET = "feedback-secret-" + "z" * 24
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Version/17.1"
PASSWORD = "correct horse battery"


@pytest.fixture
def settings(tmp_path, db_url):
    return make_settings(tmp_path, db_url, NURTURE_WEBHOOK_SECRET=SECRET)


def _admin(app: Any, user_factory: Any) -> Any:
    user_factory("root@example.com", PASSWORD, "admin")
    client = app.test_client()
    assert login(client, "root@example.com", PASSWORD).status_code == 302
    return client


def _api(app: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_api_key(app)}"}


def _drain(app: Any) -> Any:
    from web.public.state import tracking

    with app.app_context():
        queue = tracking().queue
    return drain_hits(app.extensions["nurture"].sessions, queue)


def _html(received: Any) -> str:
    return received.message.get_body(("html",)).get_content()


def _bounce(client: Any, received: Any) -> None:
    body = json.dumps(
        {
            "events": [
                {
                    "type": "hard_bounce",
                    "email": received.recipients[0],
                    "message_id": received.message["Message-ID"],
                    "diagnostic": "550 5.1.1 user unknown",
                }
            ]
        }
    ).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    answer = client.post(
        "/webhooks/feedback",
        data=body,
        content_type="application/json",
        headers={"X-Nurture-Signature": f"sha256={signature}"},
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)


def _chart_data(page: str) -> dict[str, Any]:
    raw = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', page, re.S)
    assert raw is not None
    return json.loads(raw.group(1))


def _tile(page: str, tile_id: str) -> str:
    found = re.search(rf'id="{tile_id}"><span class="num">([^<]+)</span>', page)
    assert found is not None, tile_id
    return found.group(1)


def test_the_dashboard_shows_the_campaign_reports_rates(
    app, client, harness, sessions, sending, smtp_server, user_factory
):
    harness.clock.set(datetime.now(UTC) - timedelta(hours=1))
    with transaction(harness.sessions) as s:
        identity = make_identity(s)
        version = make_template(s, sender_identity_id=identity).version.id
        ids = [make_contact(s, f"{n}@example.com") for n in ("ana", "ben", "cy", "dan", "eve")]
        audience = make_list(s, "Everyone", ids)
    campaign_id = start_campaign(harness.sessions, version, audience)
    assert send_due(sessions, sending).outcomes == {"sent": 5}
    mail = {r.recipients[0].split("@")[0]: r for r in smtp_server.received}
    pixel = re.search(r'src="http://nurture\.test(/t/o/[^"]+)"', _html(mail["ana"])).group(1)
    assert client.get(pixel, headers={"User-Agent": BROWSER}).status_code == 200
    link = re.search(r'href="http://nurture\.test(/t/c/[^"]+)"', _html(mail["ben"])).group(1)
    assert client.get(link, headers={"User-Agent": BROWSER}).status_code == 302
    _drain(app)
    unsubscribe = re.search(
        r"<http://nurture\.test(/u/[^>]+)>", mail["dan"].message["List-Unsubscribe"]
    )
    one_click = client.post(unsubscribe.group(1), data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200
    _bounce(client, mail["eve"])

    # 5 sent, 1 bounced: 4 delivered; Ana and Ben opened (Ben's click is his open), Dan
    # unsubscribed.
    totals = client.get(f"/api/v1/campaigns/{campaign_id}/report", headers=_api(app)).json["totals"]
    assert (totals["sent"], totals["delivered"], totals["bounced"]) == (5, 4, 1)
    assert totals["open_rate"] == 2 / 4 and totals["click_rate"] == 1 / 4
    assert totals["bounce_rate"] == 1 / 5 and totals["unsubscribe_rate"] == 1 / 4

    page = _admin(app, user_factory).get("/?days=7").get_data(as_text=True)
    row = re.search(r"Spring</a></td>.*?</tr>", page, re.S).group(0)
    assert re.search(r'data-rate="open">50\.0 %<', row)
    assert re.search(r'data-rate="click">25\.0 %<', row)
    # Every email of the period: this campaign is all there is.
    assert _tile(page, "tile-open-rate") == "50.0 %"
    assert _tile(page, "tile-click-rate") == "25.0 %"
    assert _tile(page, "tile-bounce-rate") == "20.0 %"
    assert _tile(page, "tile-unsubscribe-rate") == "25.0 %"


def test_the_period_choice_changes_every_tile(app, harness, user_factory):
    now = datetime.now(UTC)
    harness.clock.set(now - timedelta(days=20))
    with transaction(harness.sessions) as s:
        make_contact(s, "old@example.com")
    harness.clock.set(now)
    with transaction(harness.sessions) as s:
        make_contact(s, "new@example.com")
    admin = _admin(app, user_factory)
    week = admin.get("/?days=7").get_data(as_text=True)
    month = admin.get("/?days=30").get_data(as_text=True)
    assert _tile(week, "tile-new-contacts") == "1"
    assert _tile(month, "tile-new-contacts") == "2"
    assert "new in the last 7 days" in week and "new in the last 30 days" in month


def test_a_send_at_2330_utc_lands_on_the_next_day_in_seoul(
    app, client, harness, sessions, sending, smtp_server, user_factory
):
    headers = _api(app)
    bad = client.put(
        "/api/v1/settings/workspace", json={"time_zone": "Mars/Olympus"}, headers=headers
    )
    assert bad.status_code == 422
    assert [d["path"] for d in bad.json["error"]["details"]] == ["time_zone"]
    assert client.get("/api/v1/settings/workspace", headers=headers).json == {"time_zone": "UTC"}

    harness.clock.set(datetime(2026, 3, 2, 23, 30, tzinfo=UTC))
    with transaction(harness.sessions) as s:
        identity = make_identity(s)
        make_template(s, sender_identity_id=identity)
        contact = make_contact(s, "ji-woo@example.com")
        queue_message(
            s,
            dedupe_key="tz-test",
            contact_id=contact,
            template_version_id=s.scalar(select(TemplateVersion.id)),
        )
    assert send_due(sessions, sending).outcomes == {"sent": 1}
    harness.clock.advance(minutes=10)
    admin = _admin(app, user_factory)

    def sends_per_day() -> dict[str, int]:
        data = _chart_data(admin.get("/?days=7").get_data(as_text=True))["engagement"]
        sent = next(s["values"] for s in data["series"] if s["name"] == "email.sent")
        return {d: n for d, n in zip(data["days"], sent, strict=True) if n}

    assert sends_per_day() == {"2026-03-02": 1}
    saved = client.put(
        "/api/v1/settings/workspace", json={"time_zone": "Asia/Seoul"}, headers=headers
    )
    assert saved.status_code == 200 and saved.json == {"time_zone": "Asia/Seoul"}
    assert sends_per_day() == {"2026-03-03": 1}  # 08:30 on 3 March in Seoul
    contact_page = admin.get(f"/contacts/{contact}").get_data(as_text=True)
    assert "2026-03-03 08:30" in contact_page and "2026-03-02 23:30" not in contact_page


def test_the_workspace_page_saves_the_time_zone_for_admins_only(app, user_factory):
    admin = _admin(app, user_factory)
    html = admin.get("/settings/workspace").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)
    bad = admin.post("/settings/workspace", data={"csrf_token": token, "time_zone": "Nowhere"})
    assert bad.status_code == 422 and "unknown time zone" in bad.get_data(as_text=True)
    good = admin.post("/settings/workspace", data={"csrf_token": token, "time_zone": "Asia/Seoul"})
    assert good.status_code == 302
    assert 'value="Asia/Seoul"' in admin.get("/settings/workspace").get_data(as_text=True)
    user_factory("mia@example.com", PASSWORD, "marketer")
    marketer = app.test_client()
    login(marketer, "mia@example.com", PASSWORD)
    page = marketer.get("/settings/workspace").get_data(as_text=True)
    mine = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    refused = marketer.post("/settings/workspace", data={"csrf_token": mine, "time_zone": "UTC"})
    assert refused.status_code == 403


def test_the_campaign_forms_send_time_is_in_the_account_time_zone(app, client, user_factory):
    from test_ui_campaigns import _good

    from automation.campaigns.models import Campaign

    admin = _admin(app, user_factory)
    saved = client.put(
        "/api/v1/settings/workspace", json={"time_zone": "Asia/Seoul"}, headers=_api(app)
    )
    assert saved.status_code == 200
    with transaction(app.extensions["nurture"].sessions) as s:
        version = make_template(s).version.id
        everyone = make_list(s, "Everyone", [make_contact(s, "ji-woo@example.com")])
    world = {"version": version, "everyone": everyone, "few": everyone}
    form = admin.get("/campaigns/new").get_data(as_text=True)
    assert "Send at (Asia/Seoul)" in form
    token = re.search(r'name="csrf-token" content="([^"]+)"', form).group(1)
    later = datetime.now(UTC) + timedelta(days=3)
    local = later.astimezone(ZoneInfo("Asia/Seoul")).strftime("%Y-%m-%dT%H:%M")
    data = _good(world, mode="at", send_at=local, exclude_segment_ids=[])
    del data["variants[1].template_version_id"], data["variants[1].subject"]
    answer = admin.post("/campaigns/new", data={"csrf_token": token, **data})
    assert answer.status_code == 302, answer.get_data(as_text=True)[-2000:]
    with app.extensions["nurture"].sessions() as s:
        send_at = s.scalar(select(Campaign.send_at))
    assert send_at.replace(tzinfo=UTC) == later.replace(second=0, microsecond=0)
