"""The workflow pages through the Flask test client: the list with its live counts, the
new-workflow form's bad input answered at its field, the canvas page carrying the engine's
problems at the node they name, viewers reading without edit controls, and user-written
names reaching the page's data only escaped."""

from __future__ import annotations

import html
import json
import re

import pytest
from conftest import login
from workflows_support import doc

from automation.workflows.models import Workflow

PASSWORD = "correct horse battery"
NODES = [
    {"id": "w1", "name": "Wait a day", "type": "wait", "mode": "duration", "duration": {"days": 1}},
    {"id": "end", "type": "exit"},
]


def _client(app, user_factory, role: str):
    user_factory(f"{role}@example.com", PASSWORD, role)
    client = app.test_client()
    assert login(client, f"{role}@example.com", PASSWORD).status_code == 302
    return client


@pytest.fixture
def marketer(app, user_factory):
    return _client(app, user_factory, "marketer")


def canvas_data(page: str) -> dict:
    match = re.search(
        r'<script type="application/json" id="workflow-data">(.*?)</script>', page, re.S
    )
    assert match, "the canvas page carries its data"
    return json.loads(match.group(1))


def _published(api, name: str = "Welcome") -> int:
    nodes = [{**NODES[0], "next": "end"}, NODES[1]]
    created = api.post("/workflows", doc(nodes, name=name, trigger={"type": "manual"}))
    assert created.status_code == 201, created.json
    assert api.post(f"/workflows/{created.json['id']}/publish").status_code == 201
    return created.json["id"]


def test_list_shows_each_workflow_with_its_status_and_live_counts(marketer, api):
    workflow_id = _published(api)
    contacts = [api.post("/contacts", {"email": f"p{i}@example.com"}).json["id"] for i in range(3)]
    enrolled = api.post(f"/workflows/{workflow_id}/enrollments", {"contact_ids": contacts})
    assert enrolled.json == {"enrolled": 3}
    api.post("/workflows", doc(NODES[1:], name="Draft only", trigger={"type": "manual"}))

    page = marketer.get("/workflows").get_data(as_text=True)
    row = re.search(rf'<tr data-workflow="{workflow_id}">(.*?)</tr>', page, re.S).group(1)
    assert "Welcome" in row and ">active<" in row
    assert re.search(r'data-count="enrolled">3<', row)
    assert re.search(r'data-count="open">3<', row)
    assert "Draft only" in page and ">draft<" in page

    counts = marketer.get("/workflows/counts")
    assert counts.mimetype == "application/json"
    figures = counts.get_json()[str(workflow_id)]
    assert figures["enrolled"] == 3 and figures["active"] == 3 and figures["completed"] == 0

    # A second version: the canvas offers to migrate the three still on version 1.
    changed = doc(
        [{**NODES[0], "duration": {"days": 2}, "next": "end"}, NODES[1]],
        name="Welcome",
        trigger={"type": "manual"},
    )
    assert api.put(f"/workflows/{workflow_id}", changed).status_code == 200
    assert api.post(f"/workflows/{workflow_id}/publish").status_code == 201
    data = canvas_data(marketer.get(f"/workflows/{workflow_id}").get_data(as_text=True))
    assert [(v["number"], v["open"]) for v in data["versions"]] == [(2, 0), (1, 3)]
    assert data["workflow"]["active_version"] == 2


def test_new_workflow_without_a_name_is_refused_at_the_name_field(app, marketer):
    token = re.search(
        r'name="csrf-token" content="([^"]+)"', marketer.get("/workflows/new").get_data(True)
    ).group(1)
    response = marketer.post("/workflows/new", data={"csrf_token": token, "name": "  "})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="e-name"' in page and "give the workflow a name" in page
    with app.extensions["nurture"].sessions() as s:
        assert s.query(Workflow).count() == 0  # nothing half-written

    created = marketer.post("/workflows/new", data={"csrf_token": token, "name": "Cart"})
    assert created.status_code == 302
    page = marketer.get(created.headers["Location"]).get_data(as_text=True)
    data = canvas_data(page)
    # The starter is a valid draft: a manual trigger leading to an exit the canvas adds on.
    assert data["definition"]["trigger"] == {"type": "manual"}
    assert [n["type"] for n in data["definition"]["nodes"]] == ["exit"]
    assert data["problems"] == [] and data["editable"] is True
    assert data["workflow"]["status"] == "draft"


def test_canvas_offers_the_lead_forms_for_a_form_trigger(marketer, api):
    fields = [{"name": "email", "label": "Email", "required": True}]
    ebook = api.post("/forms", {"name": "ebook", "fields": fields})
    webinar = api.post("/forms", {"name": "Webinar", "fields": fields, "double_opt_in": True})
    assert ebook.status_code == webinar.status_code == 201, ebook.json
    # An older document names its form by name; the canvas shows it without a problem.
    created = api.post(
        "/workflows", doc(NODES[1:], trigger={"type": "form_submitted", "form": "ebook"})
    )
    assert created.status_code == 201, created.json
    data = canvas_data(marketer.get(f"/workflows/{created.json['id']}").get_data(as_text=True))
    assert sorted(data["catalog"]["forms"], key=lambda f: f["id"]) == [
        {"id": ebook.json["id"], "name": "ebook", "double_opt_in": False},
        {"id": webinar.json["id"], "name": "Webinar", "double_opt_in": True},
    ]
    assert data["problems"] == []
    assert data["definition"]["trigger"] == {"type": "form_submitted", "form": "ebook"}


def test_canvas_shows_the_engines_problems_at_the_node_they_name(app, marketer, api):
    """A draft whose references went away since it was saved (here: template 99) comes
    back with the validator's message for that node and field, for viewers too."""
    created = api.post("/workflows", doc([{**NODES[0], "next": "end"}, NODES[1]]))
    with app.extensions["nurture"].sessions() as s:
        workflow = s.get(Workflow, created.json["id"])
        draft = dict(workflow.draft)
        draft["nodes"] = [
            {"id": "hello", "name": "Hello", "type": "send_email", "template_id": 99},
            *draft["nodes"],
        ]
        draft["start"] = "hello"
        draft["nodes"][0]["next"] = "w1"
        workflow.draft = draft
        s.commit()
    data = canvas_data(marketer.get(f"/workflows/{created.json['id']}").get_data(as_text=True))
    assert {
        "path": "nodes[0].template_id",
        "message": "send_email 'hello' (Hello): no template 99",
    } in data["problems"]


def test_viewers_read_the_canvas_without_edit_controls(app, api, user_factory):
    workflow_id = _published(api)
    viewer = _client(app, user_factory, "viewer")
    page = viewer.get(f"/workflows/{workflow_id}").get_data(as_text=True)
    assert canvas_data(page)["editable"] is False
    assert 'data-readonly="true"' in page
    for control in ('id="wf-save"', 'id="wf-publish"', 'id="dry-run"', 'id="migrate"'):
        assert control not in page
    assert viewer.get("/workflows/new").status_code == 403
    assert "New workflow" not in viewer.get("/workflows").get_data(as_text=True)


def test_user_written_names_reach_the_canvas_data_escaped(marketer, api):
    evil = "</script><script>alert(1)</script><img src=x onerror=alert(2)>"
    nodes = [{**NODES[0], "name": evil[:100], "next": "end"}, NODES[1]]
    created = api.post("/workflows", doc(nodes, name=evil, trigger={"type": "manual"}))
    assert created.status_code == 201, created.json
    page = marketer.get(f"/workflows/{created.json['id']}").get_data(as_text=True)
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert html.escape(evil, quote=False) in page  # the heading
    data = canvas_data(page)
    assert data["workflow"]["name"] == evil  # JSON-escaped, so it parses back exactly
    assert data["definition"]["nodes"][0]["name"] == evil[:100]


def test_an_archived_workflow_is_read_only_even_for_marketers(marketer, api):
    workflow_id = _published(api)
    assert api.post(f"/workflows/{workflow_id}/archive").status_code == 200
    page = marketer.get(f"/workflows/{workflow_id}").get_data(as_text=True)
    assert canvas_data(page)["editable"] is False
    assert 'id="wf-save"' not in page and 'data-readonly="true"' in page
