"""Workflows over the API and the CLI: documents, validation, versions, pause/resume,
migrations, manual enrolment, dry runs, statistics, export and import."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from workflows_support import doc, make_templates

from automation import clock
from automation.cli import main

NODES = [
    {
        "id": "w2",
        "name": "Wait 2 days",
        "type": "wait",
        "mode": "duration",
        "duration": {"days": 2},
        "next": "tag",
    },
    {"id": "tag", "name": "Tag", "type": "update_contact", "add_tags": ["nurtured"], "next": "end"},
    {"id": "end", "type": "exit"},
]


@pytest.fixture
def frozen():
    now = [datetime(2026, 3, 2, 9, 0, tzinfo=UTC)]
    clock.set_source(lambda: now[0])
    yield now
    clock.set_source(None)


def _create(api, document=None) -> dict:
    response = api.post("/workflows", document or doc(NODES))
    assert response.status_code == 201, response.json
    return response.json


def test_create_publish_and_read_versions(api):
    created = _create(api)
    assert created["status"] == "draft" and created["active_version"] is None
    assert created["has_unpublished_changes"] is True
    assert len(created["webhook_secret"]) == 64
    published = api.post(f"/workflows/{created['id']}/publish")
    assert published.status_code == 201 and published.json["number"] == 1
    again = api.post(f"/workflows/{created['id']}/publish")
    assert again.status_code == 409
    changed = doc([{**NODES[0], "duration": {"days": 3}}, *NODES[1:]])
    assert api.put(f"/workflows/{created['id']}", changed).status_code == 200
    assert api.post(f"/workflows/{created['id']}/publish").json["number"] == 2
    versions = api.get(f"/workflows/{created['id']}/versions").json
    assert [v["number"] for v in versions] == [2, 1]
    assert versions[1]["definition"]["nodes"][0]["duration"]["days"] == 2  # unchanged
    one = api.get(f"/workflows/{created['id']}/versions/1").json
    assert one["number"] == 1
    listed = api.get("/workflows").json
    assert [(w["name"], w["status"], w["active_version"]) for w in listed] == [
        ("Test workflow", "active", 2)
    ]


def test_invalid_documents_get_422_naming_the_node(api):
    bad = doc([{**NODES[0], "next": "gone"}, *NODES[1:]])
    response = api.post("/workflows", bad)
    assert response.status_code == 422
    details = {d["path"]: d["message"] for d in response.json["error"]["details"]}
    assert details["nodes[0].next"].startswith(
        "wait 'w2' (Wait 2 days): its 'next' exit leads to 'gone'"
    )
    assert "nodes[1]" in details  # the tag node is now unreachable
    checked = api.post("/workflows/validate", bad).json
    assert checked["valid"] is False and len(checked["errors"]) == 3
    assert api.post("/workflows/validate", doc(NODES)).json == {"valid": True, "errors": []}
    response = api.client.post(
        "/api/v1/workflows",
        data="[1]",
        headers={**api._headers(), "Content-Type": "application/json"},
    )
    assert response.status_code == 422


def test_pause_resume_archive_and_delete(api):
    workflow = _create(api)
    wid = workflow["id"]
    assert api.post(f"/workflows/{wid}/pause").status_code == 409  # a draft cannot pause
    api.post(f"/workflows/{wid}/publish")
    assert api.post(f"/workflows/{wid}/pause").json["status"] == "paused"
    assert api.post(f"/workflows/{wid}/resume").json["status"] == "active"
    assert api.delete(f"/workflows/{wid}").status_code == 409  # published: archive instead
    assert api.post(f"/workflows/{wid}/archive").json["status"] == "archived"
    assert api.get("/workflows").json == []
    draft = _create(api)
    assert api.delete(f"/workflows/{draft['id']}").status_code == 204
    assert api.get(f"/workflows/{draft['id']}").status_code == 404


def test_manual_enrolment_stats_and_migration(api, frozen):
    contact = api.post("/contacts", {"email": "ana@example.com"}).json
    workflow = _create(api)
    wid = workflow["id"]
    assert (
        api.post(f"/workflows/{wid}/enrollments", {"contact_ids": [contact["id"]]}).status_code
        == 409
    )
    api.post(f"/workflows/{wid}/publish")
    enrolled = api.post(f"/workflows/{wid}/enrollments", {"contact_ids": [contact["id"]]})
    assert enrolled.json == {"enrolled": 1}
    assert api.post(f"/workflows/{wid}/enrollments", {}).status_code == 422
    from automation.runtime import runtime
    from automation.workflows.engine import run_due

    run_due(runtime().sessions)
    stats = api.get(f"/workflows/{wid}/stats").json
    wait_node = next(n for n in stats["nodes"] if n["node_id"] == "w2")
    assert (wait_node["entered"], wait_node["waiting"]) == (1, 1)
    assert stats["totals"]["active"] == 1
    rows = api.get(f"/workflows/{wid}/enrollments?status=active").json
    assert [r["current_node"] for r in rows] == ["w2"]
    assert api.get(f"/workflows/{wid}/enrollments?status=nope").status_code == 422

    renamed = doc(
        [{**NODES[0], "id": "w3", "name": "Wait 3 days", "duration": {"days": 3}}, *NODES[1:]]
    )
    api.put(f"/workflows/{wid}", renamed)
    api.post(f"/workflows/{wid}/publish")
    refused = api.post(f"/workflows/{wid}/migrations/preview", {"from_version": 1})
    assert refused.status_code == 422
    assert refused.json["error"]["details"][0]["path"] == "node_map.w2"
    preview = api.post(
        f"/workflows/{wid}/migrations/preview", {"from_version": 1, "node_map": {"w2": "w3"}}
    ).json
    assert preview["applied"] is False
    assert [m["message"] for m in preview["moves"]] == [
        "1 contact waiting at 'Wait 2 days' will move to 'Wait 3 days'"
    ]
    bad_map = api.post(
        f"/workflows/{wid}/migrations/preview", {"from_version": 1, "node_map": {"w2": "nope"}}
    )
    assert bad_map.json["error"]["details"][0] == {
        "path": "node_map.w2",
        "message": "version 2 has no node 'nope'",
    }
    applied = api.post(
        f"/workflows/{wid}/migrations", {"from_version": 1, "node_map": {"w2": "w3"}}
    )
    assert applied.json["applied"] is True and applied.json["contacts"] == 1
    rows = api.get(f"/workflows/{wid}/enrollments").json
    assert rows[0]["current_node"] == "w3"
    removed = api.delete(f"/workflows/{wid}/enrollments/{rows[0]['id']}")
    assert removed.status_code == 204
    assert api.delete(f"/workflows/{wid}/enrollments/{rows[0]['id']}").status_code == 404


def test_dry_run_shows_the_path_and_local_times(api, frozen):
    contact = api.post("/contacts", {"email": "dry@example.com", "time_zone": "Europe/Paris"}).json
    (template,) = make_templates(api.app.extensions["nurture"].sessions, "Reminder")
    nodes = [
        {
            "id": "wait_order",
            "type": "wait",
            "mode": "event",
            "event": "order_completed",
            "timeout": {"days": 1},
            "happened": "thanks",
            "timed_out": "nudge",
        },
        {"id": "thanks", "type": "update_contact", "add_tags": ["buyer"], "next": None},
        {
            "id": "nudge",
            "type": "send_email",
            "name": "Reminder",
            "template_id": template,
            "next": None,
        },
    ]
    workflow = _create(
        api, doc(nodes, settings={"quiet_hours": {"start": "21:00", "end": "08:00"}})
    )
    run = api.post(
        f"/workflows/{workflow['id']}/dry-run",
        {"contact_id": contact["id"], "start_at": "2026-03-02T20:30:00Z"},
    ).json
    assert run["outcome"] == "completed"
    assert [(s["node_id"], s["exit"]) for s in run["steps"]] == [
        ("wait_order", "timed_out"),
        ("nudge", "next"),
    ]
    # timed out at 21:30 Paris the next day: inside quiet hours, so held until 08:00
    assert run["emails"] == [
        {
            "at": "2026-03-04T07:00:00Z",
            "local_time": "2026-03-04 08:00 CET (Wed)",
            "node_id": "nudge",
            "template_id": template,
        }
    ]
    bought = api.post(
        f"/workflows/{workflow['id']}/dry-run",
        {
            "contact_id": contact["id"],
            "start_at": "2026-03-02T20:30:00Z",
            "timeline": [{"at": "2026-03-03T10:00:00Z", "name": "order_completed"}],
        },
    ).json
    assert [(s["node_id"], s["exit"]) for s in bought["steps"]] == [
        ("wait_order", "happened"),
        ("thanks", "next"),
    ]
    assert bought["emails"] == []
    bad = api.post(
        f"/workflows/{workflow['id']}/dry-run",
        {"contact_id": contact["id"], "timeline": [{"at": "2026-03-03T10:00:00", "name": "x"}]},
    )
    assert bad.status_code == 422 and bad.json["error"]["details"][0]["path"] == "timeline[0]"


def test_export_and_import_round_trip(api):
    workflow = _create(api)
    exported = api.get(f"/workflows/{workflow['id']}/export").json
    assert exported["format"] == "nurture.workflow/1"
    imported = api.post("/workflows/import?publish=true", exported)
    assert imported.status_code == 201
    assert (
        imported.json["status"] == "active"
        and imported.json["definition"] == workflow["definition"]
    )
    assert api.get(f"/workflows/{workflow['id']}/export?version=1").status_code == 404


def test_viewer_reads_but_cannot_change(api):
    workflow = _create(api)
    viewer = api.as_role("viewer")
    assert viewer.get(f"/workflows/{workflow['id']}").status_code == 200
    assert viewer.post(f"/workflows/{workflow['id']}/publish").status_code == 403


def test_cli_validate_and_import(tmp_path, settings, session, monkeypatch):
    monkeypatch.setenv("NURTURE_DATABASE_URL", settings.database_url)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(doc(NODES)))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc([{**NODES[0], "next": "gone"}, *NODES[1:]])))
    runner = CliRunner()
    result = runner.invoke(main, ["workflow", "validate", str(good)])
    assert result.exit_code == 0 and "valid" in result.output
    result = runner.invoke(main, ["workflow", "validate", str(bad)])
    assert result.exit_code == 1
    assert (
        "nodes[0].next: wait 'w2' (Wait 2 days): its 'next' exit leads to 'gone'" in result.output
    )
    result = runner.invoke(main, ["workflow", "import", str(good), "--publish"])
    assert result.exit_code == 0, result.output
    assert "imported workflow 1 (Test workflow), active" in result.output
    result = runner.invoke(main, ["workflow", "import", str(bad)])
    assert result.exit_code == 1 and "nodes[0].next" in result.output
    result = runner.invoke(main, ["workflow", "export", "1"])
    assert json.loads(result.output)["nodes"][0]["id"] == "w2"
    (tmp_path / "broken.json").write_text("{not json")
    result = runner.invoke(main, ["workflow", "validate", str(tmp_path / "broken.json")])
    assert result.exit_code == 1 and "not valid JSON" in result.output


def test_bulk_enrolment_of_a_segment_over_the_api(api):
    for i in range(3):
        api.post("/contacts", {"email": f"seg{i}@example.com", "score": 60 + i})
    segment = api.post(
        "/segments",
        {
            "name": "Hot",
            "conditions": [{"field": "score", "operator": "greater_than", "value": 60}],
        },
    ).json
    from automation.segments.membership import refresh_segment

    with api.app.extensions["nurture"].sessions() as s:
        refresh_segment(s, segment["id"])
        s.commit()
    workflow = _create(api, doc(NODES, trigger={"type": "manual"}))
    api.post(f"/workflows/{workflow['id']}/publish")
    enrolled = api.post(f"/workflows/{workflow['id']}/enrollments", {"segment_id": segment["id"]})
    assert enrolled.json == {"enrolled": 2}
    missing = api.post(f"/workflows/{workflow['id']}/enrollments", {"segment_id": 999})
    assert missing.status_code == 404


def test_enrolment_by_email_names_every_unknown_contact_and_enrols_nobody(api):
    api.post("/contacts", {"email": "known@example.com"})
    api.post("/contacts", {"email": "other@example.com"})
    workflow = _create(api, doc(NODES, trigger={"type": "manual"}))
    url = f"/workflows/{workflow['id']}/enrollments"
    assert api.post(url, {"emails": ["known@example.com"]}).status_code == 409  # not live
    api.post(f"/workflows/{workflow['id']}/publish")
    refused = api.post(
        url, {"emails": ["known@example.com", "nobody@example.com", "not an address"]}
    )
    assert refused.status_code == 422
    details = refused.json["error"]["details"]
    assert [d["path"] for d in details] == ["emails[1]", "emails[2]"]
    assert "nobody@example.com" in details[0]["message"]
    assert api.get(url).json == []
    assert api.post(url, {"emails": []}).status_code == 422  # nothing named
    enrolled = api.post(url, {"emails": ["Known@Example.com", "other@example.com"]})
    assert enrolled.json == {"enrolled": 2}
    again = api.post(url, {"emails": ["known@example.com"]})
    assert again.json == {"enrolled": 0}  # already in it
