"""Campaign pages without a browser: the form names every bad field and writes nothing, a
good form creates and schedules in one go, the campaign page shows progress, the variant
table with intervals, the per-link table and the click map in a sandboxed iframe; the
actions obey roles and refuse illegal moves."""

from __future__ import annotations

import html as html_lib

import pytest
from campaignkit import bulk_contacts, engage, make_list, write_events
from conftest import login, make_settings
from emailkit import make_template
from sqlalchemy import func, select
from test_ui_forms import Form, field_error

from automation.accounts.models import Role
from automation.accounts.service import create_user
from automation.campaigns import service
from automation.campaigns.models import Campaign, CampaignStatus
from automation.email.models import Message, MessageStatus

PASSWORD = "correct horse battery"


@pytest.fixture
def settings(tmp_path, sqlite_url):
    return make_settings(tmp_path, sqlite_url)  # the pages are the subject, not the database


@pytest.fixture
def world(app, client):
    with app.extensions["nurture"].sessions() as s:
        create_user(s, "m@example.com", PASSWORD, role=Role.MARKETER)
        create_user(s, "v@example.com", PASSWORD, role=Role.VIEWER)
        version = make_template(s).version.id
        ids = bulk_contacts(s, "c", 12)
        everyone = make_list(s, "Everyone", ids)
        few = make_list(s, "Few", ids[:2])
        s.commit()
    login(client, "m@example.com", PASSWORD)
    return {"version": version, "everyone": everyone, "few": few, "ids": ids}


def _good(world, **extra):
    data = {
        "name": "Autumn sale",
        "include_segment_ids": [str(world["everyone"])],
        "exclude_segment_ids": [str(world["few"])],
        "variants[0].template_version_id": str(world["version"]),
        "variants[1].template_version_id": str(world["version"]),
        "variants[1].subject": "A better subject",
        "ab_test.test_percent": "100",
        "ab_test.test_minutes": "60",
        "ab_test.winner_metric": "open_rate",
        "ab_test.winner_method": "bayesian",
        "ab_test.min_sample": "1",
        "ab_test.confidence": "0.95",
        "ab_test.fallback": "manual",
        "mode": "now",
        "fallback_time_zone": "UTC",
        "action": "schedule",
    }
    data.update(extra)
    return data


def _campaigns(app) -> int:
    with app.extensions["nurture"].sessions() as s:
        return s.scalar(select(func.count()).select_from(Campaign))


def test_bad_campaign_form_names_each_field_and_writes_nothing(app, world, client):
    form = Form(client)
    page = form.post(
        "/campaigns/new",
        _good(world, name="", **{"ab_test.test_percent": "lots", "quiet_start": "25"}),
    )
    html = page.get_data(as_text=True)
    assert page.status_code == 422
    assert "at least 1 character" in field_error(html, "name")
    assert field_error(html, "ab_test.test_percent")
    # Domain checks: identical variants, a test too short, no audience.
    page = form.post(
        "/campaigns/new",
        _good(
            world,
            include_segment_ids=[],
            **{"variants[1].subject": "", "ab_test.test_minutes": "5"},
        ),
    )
    html = page.get_data(as_text=True)
    assert page.status_code == 422
    assert "at least one segment" in field_error(html, "include_segment_ids")
    assert "at least 30 minutes" in field_error(html, "ab_test.test_minutes")
    # A schedule in the past: the campaign itself was fine, but no draft is left behind.
    page = form.post("/campaigns/new", _good(world, mode="at", send_at="2020-01-01T10:00"))
    assert page.status_code == 422
    assert "past" in field_error(page.get_data(as_text=True), "send_at")
    # An audience that is empty once the exclusion is applied is refused at scheduling.
    page = form.post(
        "/campaigns/new",
        _good(world, include_segment_ids=[str(world["few"])]),
    )
    assert "empty" in field_error(page.get_data(as_text=True), "include_segment_ids")
    assert _campaigns(app) == 0


def test_a_campaign_made_in_the_form_runs_and_shows_its_results(app, world, client):
    form = Form(client)
    page = form.post("/campaigns/new", _good(world))
    assert page.status_code == 302
    with app.extensions["nurture"].sessions() as s:
        campaign = s.scalar(select(Campaign))
        assert campaign.status is CampaignStatus.SCHEDULED
        assert campaign.winner_method.value == "bayesian"
        service.run_due(s)  # what the tick queued by the form does in a worker
        messages = list(s.scalars(select(Message)))
        assert len(messages) == 10  # 12 minus the 2 excluded, each once
        for m in messages:
            m.status = MessageStatus.SENT
        write_events(s, [engage(s, messages[0], "email.clicked", machine=False, link=0)])
        s.commit()
        campaign_id = campaign.id
    html = client.get(f"/campaigns/{campaign_id}").get_data(as_text=True)
    assert 'id="variant-table"' in html and "A better subject" in html
    assert 'id="variant-chart"' in html
    frame = html[html.index('id="click-map-frame"') - 200 :]
    assert 'sandbox=""' in frame and "1 clicks" in html_lib.unescape(frame)
    assert f"/api/v1/campaigns/{campaign_id}/report.csv" in html
    progress = client.get(f"/campaigns/{campaign_id}/progress.json").json
    assert progress["done"] == 10 and progress["percent"] == 100.0
    assert client.get("/campaigns").status_code == 200
    # The test group is the whole audience here; the marketer picks B by hand.
    page = form.post(f"/campaigns/{campaign_id}/winner", {"variant_id": "x"})
    assert "variant_id" in client.get(page.location).get_data(as_text=True)
    assert form.post(f"/campaigns/{campaign_id}/pause").status_code == 302
    assert form.post(f"/campaigns/{campaign_id}/cancel").status_code == 302
    with app.extensions["nurture"].sessions() as s:
        assert s.get(Campaign, campaign_id).status is CampaignStatus.CANCELLED
    page = form.post(f"/campaigns/{campaign_id}/resume")
    assert "cannot be resumed" in client.get(page.location).get_data(as_text=True)


def test_a_draft_is_edited_and_viewers_only_read(app, world, client):
    form = Form(client)
    assert form.post("/campaigns/new", _good(world, action="draft")).status_code == 302
    with app.extensions["nurture"].sessions() as s:
        campaign_id = s.scalar(select(Campaign.id))
    edit = client.get(f"/campaigns/{campaign_id}/edit").get_data(as_text=True)
    assert "A better subject" in edit
    bad = form.post(
        f"/campaigns/{campaign_id}/edit",
        _good(world, name="Renamed", **{"variants[0].template_version_id": "999"}),
    )
    assert "no template version 999" in field_error(
        bad.get_data(as_text=True), "variants[0].template_version_id"
    )
    ok = form.post(f"/campaigns/{campaign_id}/edit", _good(world, name="Renamed", action="draft"))
    assert ok.status_code == 302
    with app.extensions["nurture"].sessions() as s:
        assert s.get(Campaign, campaign_id).name == "Renamed"
        assert len(service.variants_of(s, campaign_id)) == 2
    client.post("/logout", data={"csrf_token": form.token})
    login(client, "v@example.com", PASSWORD)
    assert client.get(f"/campaigns/{campaign_id}").status_code == 200
    assert "Pause" not in client.get(f"/campaigns/{campaign_id}").get_data(as_text=True)
    assert Form(client).post(f"/campaigns/{campaign_id}/cancel").status_code == 403
    assert client.get("/campaigns/new").status_code == 403
