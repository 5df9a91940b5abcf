"""Workflow documents are checked before they are saved; every error carries the JSON path
and a message naming the node it is about."""

from __future__ import annotations

import pytest
from workflows_support import doc

from automation.contacts.models import CustomField, FieldType
from automation.errors import InvalidInput
from automation.workflows.validation import check_definition, validate_definition

WAIT = {
    "id": "w1",
    "name": "Wait 2 days",
    "type": "wait",
    "mode": "duration",
    "duration": {"days": 2},
}
EXIT = {"id": "end", "type": "exit"}


def errors_of(document, session=None) -> dict[str, str]:
    _, errors = check_definition(session, document)
    return {e.path: e.message for e in errors}


def test_a_valid_document_passes():
    definition = validate_definition(None, doc([{**WAIT, "next": "end"}, EXIT]))
    assert [n.id for n in definition.nodes] == ["w1", "end"]


def test_dangling_edge_names_the_node_and_the_missing_target():
    errors = errors_of(doc([{**WAIT, "next": "nowhere"}, EXIT]))
    assert errors["nodes[0].next"] == (
        "wait 'w1' (Wait 2 days): its 'next' exit leads to 'nowhere', which does not exist"
    )


def test_node_without_a_path_from_the_trigger_is_named():
    errors = errors_of(doc([{**WAIT, "next": "end"}, EXIT, {"id": "lost", "type": "exit"}]))
    assert errors["nodes[2]"] == "exit 'lost': no path leads here from the trigger"


def test_start_must_name_an_existing_node():
    document = doc([{**WAIT, "next": "end"}, EXIT])
    document["start"] = "ghost"
    assert "ghost" in errors_of(document)["start"]
    document["start"] = None
    assert errors_of(document)["start"].startswith("the trigger leads nowhere")


def test_branch_missing_an_exit_is_named():
    branch = {
        "id": "b1",
        "name": "Opened?",
        "type": "branch",
        "condition": {"conditions": [{"webhook": "h1", "path": "ok"}]},
        "yes": "end",
    }
    hook = {"id": "h1", "type": "webhook", "url": "https://example.com/hook", "next": "b1"}
    errors = errors_of(doc([hook, branch, EXIT]))
    assert errors["nodes[1].no"] == (
        "branch 'b1' (Opened?): missing the 'no' exit (use an exit node to end a path)"
    )


def test_wait_for_event_needs_both_exits():
    wait = {
        "id": "we",
        "type": "wait",
        "mode": "event",
        "event": "order_completed",
        "timeout": {"days": 1},
        "happened": "end",
    }
    assert "missing the 'timed_out' exit" in errors_of(doc([wait, EXIT]))["nodes[0].timed_out"]


def test_split_weights_must_be_positive():
    split = {
        "id": "ab",
        "type": "split",
        "paths": [
            {"name": "A", "weight": 0, "next": "end"},
            {"name": "B", "weight": -2, "next": "end"},
        ],
    }
    errors = errors_of(doc([split, EXIT]))
    assert (
        errors["nodes[0].paths[0].weight"] == "split 'ab': path 'A' needs a positive weight, not 0"
    )
    assert (
        errors["nodes[0].paths[1].weight"] == "split 'ab': path 'B' needs a positive weight, not -2"
    )


def test_a_cycle_without_a_wait_is_rejected_naming_the_loop():
    nodes = [
        {"id": "u1", "type": "update_contact", "score_change": 1, "next": "u2"},
        {"id": "u2", "type": "update_contact", "score_change": 1, "next": "u1"},
    ]
    errors = errors_of(doc(nodes))
    assert errors["nodes[0]"] == (
        "update_contact 'u1': in a loop with no wait (u1 → u2 → u1); add a wait node to the loop"
    )


def test_a_cycle_through_a_wait_is_allowed():
    nodes = [
        {"id": "u1", "type": "update_contact", "score_change": 1, "next": "w"},
        {"id": "w", "type": "wait", "mode": "duration", "duration": {"days": 7}, "next": "u1"},
    ]
    assert errors_of(doc(nodes)) == {}


def test_duplicate_node_ids_are_named():
    errors = errors_of(doc([{**WAIT, "next": "end"}, EXIT, {"id": "end", "type": "exit"}]))
    assert errors["nodes[2].id"] == "exit 'end': the id 'end' is used twice"


def test_schema_errors_inside_a_node_name_the_node():
    bad_wait = {"id": "w1", "name": "Wait", "type": "wait", "mode": "duration", "duration": {}}
    errors = errors_of(doc([bad_wait]))
    assert errors["nodes[0].duration"] == "wait 'w1' (Wait): a duration must be longer than zero"
    errors = errors_of(doc([{"id": "s1", "type": "send_email"}]))
    assert errors["nodes[0].template_id"] == "send_email 's1': Field required"
    errors = errors_of(doc([{"id": "x1", "type": "teleport"}]))
    assert errors["nodes[0]"].startswith("teleport 'x1': unknown node type")
    errors = errors_of(doc([{"id": "w1", "type": "wait", "mode": "forever"}]))
    assert errors["nodes[0]"].startswith("wait 'w1': unknown node type")


def test_bad_local_times_and_zones_are_reported_with_their_paths():
    wait = {"id": "w1", "type": "wait", "mode": "time_of_day", "time": "25:99"}
    assert errors_of(doc([wait]))["nodes[0].time"] == "wait 'w1': expected a local time as HH:MM"
    document = doc([{**WAIT, "next": None}], settings={"fallback_time_zone": "Mars/Olympus"})
    assert "unknown time zone" in errors_of(document)["settings.fallback_time_zone"]


def test_trigger_errors_are_labelled():
    errors = errors_of(doc([EXIT], trigger={"type": "event"}))
    assert errors["trigger.event"] == "trigger: Field required"
    errors = errors_of(doc([EXIT], trigger={"type": "sometimes"}))
    assert "trigger" in next(iter(errors))


def test_not_an_object_is_refused():
    assert errors_of(["nope"]) == {"body": "a workflow is a JSON object"}
    with pytest.raises(InvalidInput):
        validate_definition(None, "nope")


def test_reference_checks_name_fields_and_identities(session):
    session.add(
        CustomField(
            name="renewal_date", label="Renewal", type=FieldType.DATE, options=[], created_at=_now()
        )
    )
    session.add(
        CustomField(name="plan", label="Plan", type=FieldType.TEXT, options=[], created_at=_now())
    )
    session.flush()
    nodes = [
        {
            "id": "wd",
            "type": "wait",
            "mode": "date_field",
            "field": "plan",
            "next": "upd",
        },
        {
            "id": "upd",
            "name": "Tag",
            "type": "update_contact",
            "set": {"attributes.unknown": 1, "email": "x@example.com", "attributes.plan": 3},
            "add_tags": ["a"],
            "remove_tags": ["a"],
            "next": "s",
        },
        {"id": "s", "type": "send_email", "template_id": 1, "sender_identity_id": 99, "next": None},
    ]
    errors = errors_of(doc(nodes, trigger={"type": "date", "field": "missing"}), session)
    assert errors["trigger.field"] == "trigger: 'missing' is not a declared date field"
    assert errors["nodes[0].field"] == "wait 'wd': 'plan' is not a declared date field"
    assert errors["nodes[1].set.attributes.unknown"].startswith(
        "update_contact 'upd' (Tag): cannot set"
    )
    assert errors["nodes[1].set.email"].startswith("update_contact 'upd' (Tag): cannot set 'email'")
    assert errors["nodes[1].set.attributes.plan"] == "update_contact 'upd' (Tag): expected text"
    assert (
        errors["nodes[1].remove_tags"]
        == "update_contact 'upd' (Tag): tags both added and removed: a"
    )
    assert errors["nodes[2].sender_identity_id"] == "send_email 's': no sender identity 99"
    assert errors["nodes[2].template_id"] == "send_email 's': no template 1"
    ok = doc([{"id": "wd", "type": "wait", "mode": "date_field", "field": "renewal_date"}])
    assert errors_of(ok, session) == {}


def test_field_changed_trigger_needs_a_known_field(session):
    errors = errors_of(
        doc([EXIT], trigger={"type": "field_changed", "field": "shoe_size"}), session
    )
    assert errors["trigger.field"].startswith("trigger: 'shoe_size' is not a contact field")
    fine = doc([EXIT], trigger={"type": "field_changed", "field": "lifecycle_stage", "to": "mql"})
    assert errors_of(fine, session) == {}


def test_a_form_trigger_names_an_existing_form_by_id_or_by_name(session):
    from automation.forms.schema import FormFieldIn, FormIn
    from automation.forms.service import create_form
    from automation.workflows.service import stored_form

    def trigger(**form: object) -> dict:
        return doc([EXIT], trigger={"type": "form_submitted", **form})

    assert errors_of(trigger(form_id=7), session) == {"trigger.form_id": "trigger: no form 7"}
    assert errors_of(trigger(form="ebook"), session) == {
        "trigger.form": "trigger: no form named 'ebook'"
    }
    form = create_form(
        session, FormIn(name="ebook", fields=[FormFieldIn(name="email", label="Email")])
    )
    assert errors_of(trigger(form_id=form.id), session) == {}
    assert errors_of(trigger(form="ebook"), session) == {}
    for unnamed in (trigger(), trigger(form_id=form.id, form="ebook")):
        assert errors_of(unnamed, session) == {
            "trigger": "trigger: name one form: form_id (or its name, form)"
        }
    # A document written before form_id existed is stored as it was, so it still matches
    # the versions published from it (no "unpublished changes").
    legacy = {"type": "form_submitted", "form": "ebook"}
    assert stored_form(validate_definition(session, trigger(form="ebook")))["trigger"] == legacy
    assert stored_form(validate_definition(session, trigger(form_id=form.id)))["trigger"] == {
        "type": "form_submitted",
        "form_id": form.id,
    }


def test_webhook_and_email_leaves_must_name_nodes_of_the_right_kind(session):
    branch = {
        "id": "b",
        "type": "branch",
        "condition": {
            "conditions": [
                {"any": [{"webhook": "end"}, {"workflow_email": "opened", "node": "nope"}]}
            ]
        },
        "yes": "end",
        "no": "end",
    }
    errors = errors_of(doc([branch, EXIT]), session)
    assert errors["nodes[0].condition.conditions[0].any[0].webhook"] == (
        "branch 'b': 'end' is not a webhook node here"
    )
    assert errors["nodes[0].condition.conditions[0].any[1].node"] == (
        "branch 'b': 'nope' is not a send_email node here"
    )
    flat = {**branch, "condition": {"webhook": "end"}}
    assert errors_of(doc([flat, EXIT]), session)["nodes[0].condition"].startswith(
        "branch 'b': a condition is {\"conditions\": [...]}"
    )


def _now():
    from automation import clock

    return clock.now()


def test_the_documented_examples_are_the_shipped_ones_and_valid():
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    blocks = re.findall(r"```json\n(.*?)```", (root / "docs/workflows.md").read_text(), re.S)
    documents = [json.loads(b) for b in blocks if b.lstrip().startswith('{\n  "format"')]
    shipped = [
        json.loads((root / "automation/workflows/examples" / name).read_text())
        for name in ("abandoned_cart.json", "lead_nurture.json")
    ]
    assert documents[-2:] == shipped
    for document in [*documents, *shipped]:
        assert errors_of(document) == {}, document["name"]
