from __future__ import annotations

import re

from web.api.routing import OPERATIONS


def test_openapi_document_lists_every_declared_operation(api, app):
    doc = api.get("/openapi.json").json
    assert doc["openapi"].startswith("3.")
    for op in OPERATIONS:
        path = "/api/v1" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", op.path)
        assert op.method.lower() in doc["paths"][path], path
    create = doc["paths"]["/api/v1/contacts"]["post"]
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
        path = re.sub(r"<int:\w+>", "1", op.path)
        path = re.sub(r"<\w+>", "x", path)
        response = (
            getattr(viewer, op.method.lower())(path) if op.method != "GET" else viewer.get(path)
        )
        assert response.status_code == 403, (op.method, op.path, response.status_code)
