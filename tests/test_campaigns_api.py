"""The campaigns API: create, audience preview, schedule, pause / resume / cancel, manual
winner, report, CSV export, click map; bad input is a 422 naming the field."""

from __future__ import annotations

import csv
import io

import pytest
from emailkit import MJML

from automation.campaigns.service import run_due


@pytest.fixture
def ready(api):
    api.post("/fields", {"name": "plan", "label": "Plan", "type": "text"})
    ids = [
        api.post("/contacts", {"email": f"p{n}@example.com", "first_name": f"P{n}"}).get_json()[
            "id"
        ]
        for n in range(6)
    ]
    listed = api.post("/segments", {"name": "Buyers", "kind": "static"}).get_json()
    api.post(f"/segments/{listed['id']}/members", {"contact_ids": ids})
    version = api.post("/templates", {"name": "Sale", "subject": "Sale!", "mjml": MJML}).get_json()[
        "version"
    ]["id"]
    return {"list": listed["id"], "version": version}


def _create(api, ready, **extra):
    body = {
        "name": "Spring",
        "include_segment_ids": [ready["list"]],
        "variants": [{"template_version_id": ready["version"]}],
        **extra,
    }
    return api.post("/campaigns", body)


def test_create_preview_schedule_pause_resume_report_and_export(api, app, ready):
    assert api.post("/campaigns/audience", {"include_segment_ids": [ready["list"]]}).json == {
        "count": 6
    }
    response = _create(api, ready)
    assert response.status_code == 201, response.json
    campaign = response.json
    assert campaign["status"] == "draft" and campaign["variants"][0]["name"] == "A"
    assert api.get(f"/campaigns/{campaign['id']}/audience").json == {"count": 6}
    assert api.post(f"/campaigns/{campaign['id']}/schedule", {}).json["status"] == "scheduled"
    with app.extensions["nurture"].sessions() as s:
        run_due(s)
        s.commit()
    assert api.post(f"/campaigns/{campaign['id']}/pause").json["status"] == "paused"
    assert api.post(f"/campaigns/{campaign['id']}/resume").json["status"] == "sending"
    report = api.get(f"/campaigns/{campaign['id']}/report").json
    assert report["totals"]["audience"] == 6 and report["totals"]["queued"] == 6
    rows = list(csv.reader(io.StringIO(api.get(f"/campaigns/{campaign['id']}/report.csv").text)))
    assert rows[0][0] == "section" and rows[1][:1] == ["total"]
    page = api.get(f"/campaigns/{campaign['id']}/click-map")
    assert page.status_code == 200 and "0 clicks" in page.text
    assert api.post(f"/campaigns/{campaign['id']}/cancel").json["status"] == "cancelled"
    assert api.get(f"/campaigns/{campaign['id']}/report").json["totals"]["queued"] == 0
    assert [c["id"] for c in api.get("/campaigns").json] == [campaign["id"]]


def test_ab_campaign_manual_winner_over_the_api(api, app, ready):
    campaign = _create(
        api,
        ready,
        variants=[
            {"template_version_id": ready["version"]},
            {"template_version_id": ready["version"], "preheader": "Other preheader"},
        ],
        ab_test={"test_percent": 50, "test_minutes": 60, "fallback": "manual"},
    ).json
    api.post(f"/campaigns/{campaign['id']}/schedule", {})
    with app.extensions["nurture"].sessions() as s:
        run_due(s)
        s.commit()
    b = campaign["variants"][1]["id"]
    picked = api.post(f"/campaigns/{campaign['id']}/winner", {"variant_id": b}).json
    assert picked["winner_variant_id"] == b and picked["status"] == "sending"
    assert picked["winner_source"] == "manual"


def test_bad_input_is_a_422_naming_the_field(api, ready):
    response = _create(api, ready, ab_test={"test_percent": 150, "test_minutes": 1})
    assert response.status_code == 422
    paths = {d["path"] for d in response.json["error"]["details"]}
    assert paths == {"variants", "ab_test.test_percent", "ab_test.test_minutes"}
    campaign = _create(api, ready).json
    response = api.post(
        f"/campaigns/{campaign['id']}/schedule", {"mode": "at", "send_at": "2001-01-01T00:00Z"}
    )
    assert response.status_code == 422
    assert response.json["error"]["details"][0]["path"] == "send_at"
    assert api.post(f"/campaigns/{campaign['id']}/resume").status_code == 409
    assert api.get("/campaigns/9999").status_code == 404


def test_viewers_read_but_do_not_send(api, ready):
    campaign = _create(api, ready).json
    viewer = api.as_role("viewer")
    assert viewer.get(f"/campaigns/{campaign['id']}/report").status_code == 200
    assert viewer.post(f"/campaigns/{campaign['id']}/schedule", {}).status_code == 403
    assert api.delete(f"/campaigns/{campaign['id']}").status_code == 204


def test_update_and_winner_method_name_bad_fields(api, ready):
    two = [
        {"template_version_id": ready["version"]},
        {"template_version_id": ready["version"], "subject": "Other"},
    ]
    bad = _create(api, ready, variants=two, ab_test={"winner_method": "coin_flip"})
    assert bad.status_code == 422
    assert [d["path"] for d in bad.json["error"]["details"]] == ["ab_test.winner_method"]
    made = _create(api, ready, variants=two, ab_test={"winner_method": "bayesian"}).json
    assert made["winner_method"] == "bayesian"
    other = _create(api, ready, name="Other").json
    clash = api.put(f"/campaigns/{made['id']}", {**_body(ready), "name": "Other"})
    assert clash.status_code == 422 and clash.json["error"]["details"][0]["path"] == "name"
    ok = api.put(f"/campaigns/{made['id']}", {**_body(ready), "name": "Renamed"})
    assert ok.status_code == 200 and len(ok.json["variants"]) == 1
    assert ok.json["name"] == "Renamed" and ok.json["test_percent"] == 0
    api.post(f"/campaigns/{other['id']}/schedule", {})
    api.post(f"/campaigns/{other['id']}/cancel")
    assert api.put(f"/campaigns/{other['id']}", _body(ready)).status_code == 409


def _body(ready):
    return {
        "name": "Spring",
        "include_segment_ids": [ready["list"]],
        "variants": [{"template_version_id": ready["version"]}],
    }
