"""The segments API: CRUD, live count, sample, explain, export, refresh and list members."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from automation.segments.membership import refresh_segment


@pytest.fixture
def crowd(api):
    api.post(
        "/fields", {"name": "plan", "label": "Plan", "type": "choice", "options": ["free", "pro"]}
    )
    ids = {}
    for name, plan, tags in [
        ("ana", "pro", ["vip"]),
        ("ben", "free", ["vip"]),
        ("chloe", "pro", []),
        ("dan", "free", []),
    ]:
        body = {
            "email": f"{name}@example.com",
            "first_name": name.title(),
            "attributes": {"plan": plan},
            "tags": tags,
        }
        ids[name] = api.post("/contacts", body).get_json()["id"]
    return ids


PRO = {"field": "attributes.plan", "operator": "equals", "value": "pro"}


def refresh(app: Any, segment_id: int) -> None:
    with app.extensions["nurture"].sessions() as s:
        refresh_segment(s, segment_id)
        s.commit()


def test_create_read_update_delete(api, crowd):
    created = api.post("/segments", {"name": "Pro", "description": "Paying", "conditions": [PRO]})
    assert created.status_code == 201
    segment = created.get_json()
    assert segment["kind"] == "dynamic" and segment["conditions"] == [PRO]
    assert segment["refreshed_at"] is None
    assert api.get(f"/segments/{segment['id']}").get_json()["name"] == "Pro"
    assert api.post("/segments", {"name": "Pro", "conditions": [PRO]}).status_code == 409
    patched = api.patch(
        f"/segments/{segment['id']}", {"name": "Pro plan", "conditions": [PRO, {"tags": ["vip"]}]}
    )
    assert patched.status_code == 200
    assert patched.get_json()["conditions"] == [PRO, {"tags": ["vip"]}]
    assert [s["name"] for s in api.get("/segments").get_json()] == ["Pro plan"]
    assert api.delete(f"/segments/{segment['id']}").status_code == 204
    assert api.get(f"/segments/{segment['id']}").status_code == 404


def test_conditions_are_stored_in_canonical_form(api, crowd):
    written = {"event": "order", "operator": "performed", "where": [], "within_days": None}
    segment = api.post("/segments", {"name": "Buyers", "conditions": [written]}).get_json()
    assert segment["conditions"] == [{"event": "order"}]


def test_a_segment_in_use_cannot_be_deleted(api, crowd):
    pro = api.post("/segments", {"name": "Pro", "conditions": [PRO]}).get_json()
    api.post("/segments", {"name": "VIP pros", "conditions": [{"segment": pro["id"]}]})
    response = api.delete(f"/segments/{pro['id']}")
    assert response.status_code == 409
    assert "'VIP pros'" in response.get_json()["error"]["message"]


def test_a_segment_a_live_workflow_or_an_unsent_campaign_uses_cannot_be_deleted(api, crowd):
    from emailkit import MJML

    pro = api.post("/segments", {"name": "Pro", "conditions": [PRO]}).get_json()
    buyers = api.post("/segments", {"name": "Buyers", "kind": "static"}).get_json()

    def workflow(name: str, *nodes: dict[str, Any]) -> int:
        created = api.post(
            "/workflows",
            {"name": name, "trigger": {"type": "manual"}, "start": nodes[0]["id"], "nodes": nodes},
        ).get_json()
        assert "id" in created, created
        assert api.post(f"/workflows/{created['id']}/publish").status_code == 201
        return int(created["id"])

    end = {"id": "end", "type": "exit"}
    condition = {"conditions": [{"segment": pro["id"]}]}
    branch = {"id": "b", "type": "branch", "condition": condition, "yes": "end", "no": "end"}
    branching = workflow("Pro branch", branch, end)
    workflow("Tag buyers", {"id": "u", "type": "update_contact", "add_to_lists": [buyers["id"]]})
    version = api.post("/templates", {"name": "Sale", "subject": "Sale!", "mjml": MJML})
    campaign = api.post(
        "/campaigns",
        {
            "name": "Spring",
            "include_segment_ids": [buyers["id"]],
            "exclude_segment_ids": [pro["id"]],
            "variants": [{"template_version_id": version.get_json()["version"]["id"]}],
        },
    ).get_json()
    refused = api.delete(f"/segments/{pro['id']}")
    assert refused.status_code == 409
    assert refused.get_json()["error"]["message"] == (
        "segment 'Pro' is used by workflow 'Pro branch', campaign 'Spring'; change those first"
    )
    listed = api.delete(f"/segments/{buyers['id']}").get_json()["error"]["message"]
    assert "workflow 'Tag buyers'" in listed and "campaign 'Spring'" in listed
    assert api.post(f"/workflows/{branching}/archive").status_code == 200
    assert api.delete(f"/campaigns/{campaign['id']}").status_code == 204
    assert api.delete(f"/segments/{pro['id']}").status_code == 204


def test_count_sample_and_explain_work_without_saving(api, crowd):
    tree = {"conditions": [PRO]}
    assert api.post("/segments/count", tree).get_json() == {"count": 2}
    sample = api.post("/segments/sample", {**tree, "size": 1}).get_json()
    assert [c["email"] for c in sample] == ["chloe@example.com"]
    explained = api.post(
        "/segments/explain",
        {"conditions": [{"any": [PRO, {"tags": ["vip", "beta"]}]}], "contact_id": crowd["ben"]},
    ).get_json()
    assert explained["matches"] is True
    group = explained["conditions"][0]
    assert group["kind"] == "any" and group["result"] is True
    field, tags = group["children"]
    assert field == {
        "path": "conditions[0].any[0]",
        "kind": "field",
        "result": False,
        "observed": {"value": "free"},
        "children": [],
    }
    assert tags["observed"] == {"has": ["vip"], "lacks": ["beta"]}
    assert api.post("/segments/explain", {**tree, "contact_id": 999}).status_code == 404


def test_saved_segment_count_sample_explain_and_export(api, app, crowd):
    segment = api.post("/segments", {"name": "Pro", "conditions": [PRO]}).get_json()
    assert api.get(f"/segments/{segment['id']}/count").get_json() == {"count": 2}
    sample = api.get(f"/segments/{segment['id']}/sample?size=5").get_json()
    assert {c["email"] for c in sample} == {"ana@example.com", "chloe@example.com"}
    assert api.get(f"/segments/{segment['id']}/sample?size=0").status_code == 422
    explained = api.get(f"/segments/{segment['id']}/explain/{crowd['ana']}").get_json()
    assert explained["matches"] is True
    refresh(app, segment["id"])
    with api.get(f"/segments/{segment['id']}/members.csv") as response:
        assert response.status_code == 200 and response.mimetype == "text/csv"
        rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [r["email"] for r in rows] == ["ana@example.com", "chloe@example.com"]
    assert rows[0]["entered_at"] and rows[0]["status"] == "subscribed"


def test_refresh_endpoint_reports_the_difference(api, app, crowd):
    segment = api.post("/segments", {"name": "Pro", "conditions": [PRO]}).get_json()
    first = api.post(f"/segments/{segment['id']}/refresh").get_json()
    assert first == {"segment_id": segment["id"], "entered": 2, "left": 0, "member_count": 2}
    api.patch(f"/contacts/{crowd['dan']}", {"attributes": {"plan": "pro"}})
    # the edit refreshed dan at once; the segment now counts 3
    assert api.get(f"/segments/{segment['id']}").get_json()["member_count"] == 3
    events = api.get(f"/contacts/{crowd['dan']}/events").get_json()
    assert [(e["name"], e["properties"]) for e in events] == [
        ("segment.entered", {"segment_id": segment["id"], "segment": "Pro"})
    ]


def test_static_list_members_by_json_and_csv(api, crowd):
    listed = api.post("/segments", {"name": "Webinar", "kind": "static"}).get_json()
    assert listed["kind"] == "static" and listed["conditions"] is None
    url = f"/segments/{listed['id']}/members"
    added = api.post(
        url,
        {
            "emails": ["ANA@example.com ", "nobody@example.com"],
            "contact_ids": [crowd["ben"], 424242],
        },
    ).get_json()
    assert added == {
        "entered": 2,
        "left": 0,
        "member_count": 2,
        "unknown": ["424242", "nobody@example.com"],
        "unknown_count": 2,
    }
    upload = io.BytesIO(b"Name,Email\nChloe,chloe@example.com\nDan,dan@example.com\n")
    response = api.client.post(
        f"/api/v1{url}/csv",
        data={"file": (upload, "list.csv"), "mode": "replace"},
        headers=api._headers(),
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["entered"] == 2 and response.get_json()["left"] == 2
    assert api.get(f"/segments/{listed['id']}/count").get_json() == {"count": 2}
    removed = api.post(url, {"mode": "remove", "contact_ids": [crowd["dan"]]}).get_json()
    assert removed["left"] == 1 and removed["member_count"] == 1
    with api.get(f"/segments/{listed['id']}/members.csv") as response:
        rows = response.get_data(as_text=True)
    assert "chloe@example.com" in rows and "dan@example.com" not in rows


def test_member_edits_are_refused_for_dynamic_segments_and_bad_csv(api, crowd):
    dynamic = api.post("/segments", {"name": "Pro", "conditions": [PRO]}).get_json()
    assert (
        api.post(f"/segments/{dynamic['id']}/members", {"contact_ids": [crowd["ana"]]}).status_code
        == 409
    )
    listed = api.post("/segments", {"name": "L", "kind": "static"}).get_json()
    response = api.client.post(
        f"/api/v1/segments/{listed['id']}/members/csv",
        data={"file": (io.BytesIO(b"name\nx\n"), "x.csv")},
        headers=api._headers(),
        content_type="multipart/form-data",
    )
    assert response.status_code == 422
    assert response.get_json()["error"]["details"][0]["path"] == "file"
    response = api.client.post(
        f"/api/v1/segments/{listed['id']}/members/csv",
        data={"file": (io.BytesIO(b"email\na@example.com\n"), "x.csv"), "mode": "merge"},
        headers=api._headers(),
        content_type="multipart/form-data",
    )
    assert response.get_json()["error"]["details"][0]["path"] == "mode"
    assert api.post(f"/segments/{listed['id']}/refresh").status_code == 409


def test_viewers_can_preview_but_not_change(api, crowd):
    viewer = api.as_role("viewer")
    assert viewer.post("/segments/count", {"conditions": [PRO]}).status_code == 200
    assert viewer.post("/segments", {"name": "x", "conditions": [PRO]}).status_code == 403


def test_an_abandoned_export_holds_no_database_session(api, app, crowd):
    segment = api.post("/segments", {"name": "Pro", "conditions": [PRO]}).get_json()
    response = api.get(f"/segments/{segment['id']}/members.csv")
    assert response.status_code == 200
    assert api.get("/segments/999/members.csv").status_code == 404
    # never read, never closed: the next test's TRUNCATE must still go through
    del response
