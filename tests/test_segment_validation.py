"""Bad filter trees get a 422 whose details name the JSON path of each problem; never a 500."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def fields(api):
    for body in (
        {"name": "plan", "label": "Plan", "type": "choice", "options": ["free", "pro"]},
        {"name": "birthday", "label": "Birthday", "type": "date"},
        {"name": "ltv", "label": "Lifetime value", "type": "number"},
    ):
        assert api.post("/fields", body).status_code == 201


def paths(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    assert body["error"]["code"] == "validation_error"
    return {d["path"]: d["message"] for d in body["error"]["details"]}


def score(operator: str, value: Any = None) -> dict[str, Any]:
    node: dict[str, Any] = {"field": "score", "operator": operator}
    if value is not None:
        node["value"] = value
    return node


OK = score("greater_than", 1)

BAD: list[tuple[str, list[Any], str, str]] = [
    # (label, conditions, expected path, words in the message)
    (
        "unknown field",
        [{"field": "shoe_size", "operator": "equals", "value": 1}],
        "conditions[0].field",
        "unknown field",
    ),
    (
        "undeclared attribute",
        [{"any": [OK, {"field": "attributes.shoe", "operator": "is_set"}]}],
        "conditions[0].any[1].field",
        "no custom field named 'shoe'",
    ),
    (
        "unknown operator",
        [OK, OK, {"any": [{"field": "score", "operator": "resembles"}]}],
        "conditions[2].any[0].operator",
        "Input should be",
    ),
    (
        "operator not valid for the type",
        [score("contains", "1")],
        "conditions[0].operator",
        "not valid for a number field",
    ),
    (
        "anniversary of a date-time",
        [{"field": "created_at", "operator": "anniversary_today"}],
        "conditions[0].operator",
        "not valid for a datetime field",
    ),
    ("text for a number", [score("equals", "high")], "conditions[0].value", "expected a number"),
    ("boolean is not a number", [score("equals", True)], "conditions[0].value", "number"),
    ("one bad item in a list", [score("in", [1, "two", 3])], "conditions[0].value[1]", "number"),
    ("empty in list", [score("in", [])], "conditions[0].value", "non-empty list"),
    ("between needs two", [score("between", [1])], "conditions[0].value", "[low, high]"),
    ("between reversed", [score("between", [5, 1])], "conditions[0].value", "low is greater"),
    ("value where none is taken", [score("is_set", 3)], "conditions[0].value", "takes no value"),
    (
        "negative days",
        [{"field": "created_at", "operator": "within_last_days", "value": -1}],
        "conditions[0].value",
        "days",
    ),
    (
        "choice outside options",
        [{"field": "attributes.plan", "operator": "equals", "value": "enterprise"}],
        "conditions[0].value",
        "expected one of free, pro",
    ),
    (
        "bad calendar date",
        [{"field": "attributes.birthday", "operator": "equals", "value": "1990-02-30"}],
        "conditions[0].value",
        "YYYY-MM-DD",
    ),
    (
        "date-time without offset",
        [{"field": "created_at", "operator": "greater_than", "value": "2026-01-01T10:00:00"}],
        "conditions[0].value",
        "time zone offset",
    ),
    (
        "empty contains",
        [{"field": "email", "operator": "contains", "value": ""}],
        "conditions[0].value",
        "non-empty",
    ),
    ("empty group", [{"all": [OK, {"any": []}]}], "conditions[0].all[1].any", "at least 1"),
    ("empty tag list", [{"tags": []}], "conditions[0].tags", "at least 1"),
    ("not a condition", [OK, "score > 1"], "conditions[1]", "a condition is an object"),
    ("no known key", [{"feild": "score"}], "conditions[0]", "one of the keys"),
    ("unexpected key", [{**OK, "glue": "and"}], "conditions[0].glue", "Extra inputs"),
    (
        "count without times",
        [{"event": "order", "operator": "at_least"}],
        "conditions[0].times",
        "needs times",
    ),
    ("times without count", [{"event": "order", "times": 2}], "conditions[0].times", "at_least"),
    (
        "two windows",
        [{"event": "order", "within_days": 3, "since": "2026-01-01"}],
        "conditions[0].since",
        "not both",
    ),
    ("bad event name", [{"event": "order placed!"}], "conditions[0].event", "pattern"),
    (
        "property operator",
        [{"event": "order", "where": [{"property": "total", "operator": "anniversary_today"}]}],
        "conditions[0].where[0].operator",
        "not valid for event properties",
    ),
    (
        "property name",
        [{"event": "order", "where": [{"property": "0.total", "operator": "is_set"}]}],
        "conditions[0].where[0].property",
        "pattern",
    ),
    (
        "property value",
        [
            {
                "event": "order",
                "where": [{"property": "total", "operator": "equals", "value": {"a": 1}}],
            }
        ],
        "conditions[0].where[0].value",
        "text, a number or true/false",
    ),
    (
        "last performed operator",
        [{"last_performed": "order", "operator": "contains", "value": "x"}],
        "conditions[0].operator",
        "date-time",
    ),
    (
        "count on received but not opened",
        [{"email": "received_not_opened", "operator": "at_least", "times": 2}],
        "conditions[0].operator",
        "takes no count",
    ),
    ("unknown email activity", [{"email": "forwarded"}], "conditions[0].email", "Input should"),
    ("unknown segment", [{"segment": 999}], "conditions[0].segment", "no segment with id 999"),
]


@pytest.mark.parametrize("label,conditions,path,words", BAD, ids=[b[0] for b in BAD])
def test_bad_conditions_are_refused_at_their_path(api, fields, label, conditions, path, words):
    for url in ("/segments/validate", "/segments/count"):
        found = paths(api.post(url, {"conditions": conditions}))
        assert path in found, (label, found)
        assert words in found[path], (label, found[path])
    found = paths(api.post("/segments", {"name": "bad", "conditions": conditions}))
    assert path in found
    assert api.get("/segments").get_json() == []


def test_every_error_in_a_tree_is_reported_at_once(api, fields):
    found = paths(
        api.post(
            "/segments/validate",
            {
                "conditions": [
                    score("contains", "x"),
                    {"any": [{"field": "nope", "operator": "in"}]},
                    score("equals", "x"),
                ]
            },
        )
    )
    assert set(found) == {
        "conditions[0].operator",
        "conditions[1].any[0].field",
        "conditions[2].value",
    }


def test_nesting_beyond_the_limit_is_refused_at_the_deep_node(api):
    node: dict[str, Any] = OK
    for _ in range(12):
        node = {"not": node}
    found = paths(api.post("/segments/validate", {"conditions": [node]}))
    assert found == {"conditions[0]" + ".not" * 8: "groups are nested deeper than 8 levels"}


def test_absurdly_deep_json_is_a_422_not_a_500(api):
    body = '{"conditions": [' + '{"not": ' * 50_000 + "{}" + "}" * 50_000 + "]}"
    response = api.client.post(
        "/api/v1/segments/validate",
        data=body,
        headers={**api._headers(), "Content-Type": "application/json"},
    )
    assert paths(response) == {"body": "the JSON is nested too deeply"}


def test_too_many_conditions_are_refused(api):
    found = paths(api.post("/segments/validate", {"conditions": [{"any": [OK] * 400}]}))
    assert "at most 300" in found["conditions"]


def test_empty_conditions_are_refused(api):
    assert "conditions" in paths(api.post("/segments/validate", {"conditions": []}))
    assert "conditions" in paths(api.post("/segments", {"name": "x", "kind": "dynamic"}))
    static = {"name": "x", "kind": "static", "conditions": [OK]}
    assert "conditions" in paths(api.post("/segments", static))


def test_regex_and_sql_in_values_are_data(api):
    for value in [".*", "^a|b$", "%", "_", "'; DROP TABLE contacts; --", "\\", "a' OR '1'='1"]:
        response = api.post(
            "/segments/count",
            {
                "conditions": [
                    {
                        "any": [
                            {"field": "email", "operator": "contains", "value": value},
                            {"field": "first_name", "operator": "equals", "value": value},
                        ]
                    }
                ]
            },
        )
        assert response.status_code == 200, value
        assert response.get_json() == {"count": 0}
    assert api.get("/contacts").status_code == 200  # the table is still there


def test_reference_cycles_are_refused_with_the_chain(api):
    a = api.post("/segments", {"name": "A", "conditions": [OK]}).get_json()
    b = api.post("/segments", {"name": "B", "conditions": [{"segment": a["id"]}]}).get_json()
    c = api.post("/segments", {"name": "C", "conditions": [{"segment": b["id"]}]}).get_json()
    found = paths(api.patch(f"/segments/{a['id']}", {"conditions": [{"segment": c["id"]}]}))
    message = found["conditions[0].segment"]
    assert "reference cycle" in message and "'C'" in message and "'B'" in message
    found = paths(
        api.patch(f"/segments/{a['id']}", {"conditions": [{"any": [OK, {"segment": a["id"]}]}]})
    )
    assert found == {"conditions[0].any[1].segment": "a segment cannot refer to itself"}
    # the stored definition is unchanged
    assert api.get(f"/segments/{a['id']}").get_json()["conditions"] == [OK]


def _docs_example(kind: str) -> dict[str, Any]:
    """The JSON block of docs/segments.md's "Bad input" section: the tree, or its answer."""
    import json
    import pathlib
    import re

    text = (pathlib.Path(__file__).parents[1] / "docs" / "segments.md").read_text()
    section = text.split("## Bad input", 1)[1]
    tree, answer = re.findall(r"```json\n(.*?)```", section, re.S)[:2]
    return json.loads(tree if kind == "tree" else answer.replace("…", ""))


def test_the_mixed_example_of_the_docs_gets_every_error_in_one_answer(api):
    assert (
        api.post(
            "/fields",
            {"name": "plan", "label": "Plan", "type": "choice", "options": ["free", "pro"]},
        ).status_code
        == 201
    )
    promised = {d["path"]: d["message"] for d in _docs_example("answer")["error"]["details"]}
    for url, extra in (("/segments/validate", {}), ("/segments", {"name": "mixed"})):
        found = paths(api.post(url, {**_docs_example("tree"), **extra}))
        assert set(found) == set(promised), url
        for path, message in promised.items():
            assert found[path].startswith(message.rstrip(", ")), (path, found[path])
    assert api.get("/segments").get_json() == []


def test_a_patch_with_a_bad_shape_also_names_the_unknown_fields(api):
    created = api.post("/segments", {"name": "s", "conditions": [OK]})
    assert created.status_code == 201
    found = paths(
        api.patch(
            f"/segments/{created.get_json()['id']}",
            {
                "conditions": [
                    {"not": {"field": "nope", "operator": "equals", "value": 1}},
                    {"tags": "vip-not-a-list"},
                ]
            },
        )
    )
    assert set(found) == {"conditions[0].not.field", "conditions[1].tags"}
