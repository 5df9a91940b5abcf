"""The node kinds: the schema's union, the editor's description (automation/workflows/kinds.py)
and the code that runs each kind agree. mypy checks the dispatch itself (every ``match`` on a
node ends in ``assert_never``); these check what it cannot: the registry served to the canvas,
and that the dry run walks a node of every kind."""

from __future__ import annotations

from typing import Any, get_args

from pydantic import Tag, TypeAdapter
from workflows_support import doc, make_templates

from automation.workflows.kinds import KINDS, PALETTE, TYPES, node_kinds
from automation.workflows.schema import NODE_TAGS, Node, SplitPath, WorkflowNode

NODES: TypeAdapter[Any] = TypeAdapter(Node)


def _schema_models() -> dict[str, type]:
    return {
        meta.tag: get_args(member)[0]
        for member in get_args(get_args(Node)[0])
        for meta in get_args(member)[1:]
        if isinstance(meta, Tag)
    }


def test_every_node_kind_of_the_schema_is_described_for_the_editor():
    assert set(KINDS) == NODE_TAGS
    models = _schema_models()
    assert {tag: kind.model for tag, kind in KINDS.items()} == models
    # The type checker's union (what the dispatch matches on) names the same models.
    assert set(get_args(WorkflowNode)) == set(models.values())
    assert {kind.type for kind in KINDS.values()} == set(TYPES)
    assert {kind for _, _, kind in PALETTE} <= set(KINDS)


def test_the_declared_exit_keys_are_the_ones_the_engine_follows():
    for tag, kind in KINDS.items():
        values: dict[str, Any] = {key: f"to-{key}" for key in kind.exits}
        if kind.exit_items is not None:
            values[kind.exit_items] = [
                SplitPath.model_construct(name=name, weight=1, next=f"to-{name}")
                for name in ("A", "B")
            ]
        node = kind.model.model_construct(id="n", **values)
        targets = {f"to-{key}" for key in kind.exits} | (
            {"to-A", "to-B"} if kind.exit_items else set()
        )
        assert set(node.exits().values()) == targets, tag


def test_a_new_node_of_each_kind_is_valid_once_the_page_fills_in_its_blanks():
    page_fills = {
        "template_id": 7,
        "field": "attributes.renewal_date",
        "event": "order_completed",
        "url": "https://example.com/hook",
    }
    for tag, kind in KINDS.items():
        node: dict[str, Any] = {"id": "n", "type": kind.type, **kind.starter}
        if kind.mode is not None:
            node["mode"] = kind.mode
        for key, value in page_fills.items():
            if key in node and node[key] in (None, ""):
                node[key] = value
        parsed = NODES.validate_python(node)
        assert isinstance(parsed, kind.model), tag


def test_the_canvas_gets_the_node_kinds_from_the_api_and_its_page(api):
    served = api.as_role("viewer").get("/workflows/node-kinds")
    assert served.status_code == 200
    assert served.json == node_kinds().model_dump(mode="json")
    assert served.json["kinds"]["wait:event"]["exits"] == ["happened", "timed_out"]
    assert served.json["kinds"]["wait:event"]["fields"] == ["event", "where", "timeout"]
    assert "/workflows/node-kinds" in api.get("/openapi.json").json["paths"]


def test_a_dry_run_walks_a_node_of_every_kind(api):
    assert (
        api.post("/fields", {"name": "renewal", "label": "Renewal", "type": "date"}).status_code
        == 201
    )
    contact = api.post(
        "/contacts", {"email": "every@example.com", "attributes": {"renewal": "2000-01-01"}}
    ).json
    (template,) = make_templates(api.app.extensions["nurture"].sessions, "Every kind")
    nodes = [
        {"id": "d", "type": "wait", "mode": "duration", "duration": {"hours": 1}, "next": "t"},
        {"id": "t", "type": "wait", "mode": "time_of_day", "time": "09:00", "next": "f"},
        {
            "id": "f",
            "type": "wait",
            "mode": "date_field",
            "field": "attributes.renewal",
            "next": "e",
        },
        {
            "id": "e",
            "type": "wait",
            "mode": "event",
            "event": "never",
            "timeout": {"hours": 1},
            "happened": "s",
            "timed_out": "s",
        },
        {"id": "s", "type": "send_email", "template_id": template, "next": "b"},
        {
            "id": "b",
            "type": "branch",
            "condition": {"conditions": [{"workflow_email": "sent", "node": "s"}]},
            "yes": "ab",
            "no": "ab",
        },
        {
            "id": "ab",
            "type": "split",
            "paths": [
                {"name": "A", "weight": 1, "next": "u"},
                {"name": "B", "weight": 1, "next": "u"},
            ],
        },
        {"id": "u", "type": "update_contact", "add_tags": ["walked"], "next": "h"},
        {"id": "h", "type": "webhook", "url": "https://example.com/hook", "next": "g"},
        {"id": "g", "type": "goal", "next": "x"},
        {"id": "x", "type": "exit"},
    ]
    created = api.post("/workflows", doc(nodes))
    assert created.status_code == 201, created.json
    run = api.post(
        f"/workflows/{created.json['id']}/dry-run",
        {"contact_id": contact["id"], "horizon_days": 1000},
    )
    assert run.status_code == 200, run.json
    by_id = {node["id"]: node for node in nodes}
    walked = {
        f"wait:{by_id[s['node_id']]['mode']}" if s["type"] == "wait" else s["type"]
        for s in run.json["steps"]
    }
    assert walked == NODE_TAGS
    assert run.json["outcome"] == "converted"
