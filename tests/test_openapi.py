from __future__ import annotations

import re
from typing import Any

from web.api.openapi import error_statuses
from web.api.routing import OPERATIONS


def test_openapi_document_lists_every_declared_operation(api, app):
    doc = api.get("/openapi.json").json
    assert doc["openapi"].startswith("3.")
    for op in OPERATIONS:
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", op.path)
        assert op.method.lower() in doc["paths"][path], path
    create = doc["paths"]["/contacts"]["post"]
    ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert "email" in schema["required"]
    assert "time_zone" in schema["properties"]


def test_openapi_routes_match_the_flask_url_map(app):
    """Every /api/v1 rule is declared (so documented), except the document itself."""
    declared = {("/api/v1" + op.path, op.method) for op in OPERATIONS}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1") or rule.rule == "/api/v1/openapi.json":
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (rule.rule, method) in declared, rule.rule


def test_every_api_operation_enforces_its_role(api, app):
    """Walk the URL map as a viewer: anything above viewer must answer 403."""
    viewer = api.as_role("viewer")
    for op in OPERATIONS:
        if op.role.value == "viewer":
            continue
        path = re.sub(r"<(?:int|bigid):\w+>", "1", op.path)
        path = re.sub(r"<\w+>", "x", path)
        response = (
            getattr(viewer, op.method.lower())(path) if op.method != "GET" else viewer.get(path)
        )
        assert response.status_code == 403, (op.method, op.path, response.status_code)


def test_paths_are_relative_to_the_server_url(api):
    """A generated client joins the two: /api/v1 must be in exactly one of them."""
    doc = api.get("/openapi.json").json
    assert doc["servers"][0]["url"] == "http://nurture.test/api/v1"
    assert not [p for p in doc["paths"] if p.startswith("/api/")]
    assert api.get("/contacts").status_code == 200  # server URL + "/contacts" is served


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_ref_resolves_and_same_named_models_stay_apart(api):
    doc = api.get("/openapi.json").json
    schemas = doc["components"]["schemas"]
    refs = _refs(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in schemas, ref
    assert "$defs" not in str(doc)

    def response_schema(path: str) -> dict[str, Any]:
        ref = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        return schemas[ref["schema"]["$ref"].rsplit("/", 1)[1]]

    # Templates and workflows each have a VersionOut: each operation gets its own.
    template_version = response_schema("/templates/{template_id}/versions/{version_id}")
    workflow_version = response_schema("/workflows/{workflow_id}/versions/{number}")
    assert "mjml" in template_version["properties"]
    assert "definition" in workflow_version["properties"]
    validate = doc["paths"]["/templates/validate"]["post"]["responses"]["200"]
    ref = validate["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "warnings" in schemas[ref]["properties"]


def test_every_operation_declares_the_errors_it_answers(api):
    doc = api.get("/openapi.json").json
    create = doc["paths"]["/contacts"]["post"]["responses"]
    assert {"201", "400", "401", "403", "409", "413", "422"} <= set(create)
    get = doc["paths"]["/contacts/{contact_id}"]["get"]["responses"]
    assert {"200", "401", "403", "404"} <= set(get)
    for op in OPERATIONS:
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", op.path)
        declared = doc["paths"][path][op.method.lower()]["responses"]
        assert {str(s) for s in error_statuses(op)} | {str(op.status)} == set(declared), path
        for status, response in declared.items():
            if status != "204":
                assert response.get("content"), (path, status)


def test_constraints_are_in_the_document(api):
    doc = api.get("/openapi.json").json
    schemas = doc["components"]["schemas"]
    contact_in = schemas["ContactIn"]["properties"]
    assert contact_in["email"]["format"] == "email"
    assert contact_in["first_name"]["maxLength"] == 100
    params = {p["name"]: p for p in doc["paths"]["/messages"]["get"]["parameters"]}
    assert params["page"]["schema"]["maximum"] == 1_000_000
    contact_id = params["contact_id"]["schema"]
    assert (contact_id["type"], contact_id["minimum"], contact_id["maximum"]) == (
        "integer",
        1,
        2**63 - 1,
    )
    assert params["template_id"]["schema"]["maximum"] == 2**31 - 1
    path_id = doc["paths"]["/templates/{template_id}"]["get"]["parameters"][0]
    assert path_id["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
    upload = doc["paths"]["/imports"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload
