"""Workflows speak the segment language: branches on contact conditions (mixed with the
workflow-only leaves), property conditions on triggers and waits, goal conditions,
segment triggers, static lists, bulk enrolment of a segment, and the outbox leaves."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from workflows_support import doc, make_templates

from automation import clock
from automation.contacts.models import Contact
from automation.contacts.schema import ContactIn, ContactPatch
from automation.contacts.service import create_contact, update_contact
from automation.email.models import Message
from automation.segments.membership import refresh_segment
from automation.segments.models import SegmentKind, SegmentMembership
from automation.segments.service import create_segment
from automation.segments.shapes import (
    SegmentIn,
)
from automation.workflows.dry_run import TimelineEvent, dry_run
from automation.workflows.enrolment import enroll_manually
from automation.workflows.models import EnrollmentStatus
from automation.workflows.stats import workflow_statistics
from automation.workflows.validation import check_definition

EXIT = {"id": "end", "type": "exit"}
HOT = {"conditions": [{"field": "score", "operator": "greater_or_equal", "value": 50}]}


def _contacts(harness, **scores: int) -> dict[str, int]:
    with harness.sessions() as s:
        ids = {
            name: create_contact(
                s, ContactIn(email=f"{name}@example.com", score=score), source="api"
            ).id
            for name, score in scores.items()
        }
        s.commit()
    return ids


def _branch(condition: dict) -> list[dict]:
    return [
        {"id": "b", "type": "branch", "condition": condition, "yes": "hot", "no": "cold"},
        {"id": "hot", "type": "update_contact", "add_tags": ["hot"], "next": None},
        {"id": "cold", "type": "update_contact", "add_tags": ["cold"], "next": None},
    ]


def _exits(harness, wf: int) -> dict[int, str]:
    return {e.contact_id: harness.path(e.id)[0][1] for e in harness.enrollments(wf)}


def test_a_branch_evaluates_a_segment_condition_for_the_whole_batch(harness):
    ids = _contacts(harness, ana=70, ben=10, cy=50)
    wf = harness.publish(doc(_branch(HOT)))
    harness.events(*[{"name": "signed_up", "email": f"{n}@example.com"} for n in ids])
    harness.tick()
    assert _exits(harness, wf) == {ids["ana"]: "yes", ids["ben"]: "no", ids["cy"]: "yes"}


def test_segment_conditions_and_workflow_leaves_mix_in_one_tree(harness):
    ids = _contacts(harness, ana=70, ben=10)
    condition = {
        "conditions": [
            {
                "any": [
                    {"field": "score", "operator": "greater_than", "value": 60},
                    {"webhook": "hook", "path": "status", "operator": "is_set"},
                ]
            },
            {"not": {"tags": ["blocked"]}},
        ]
    }
    # Nothing listens on port 9: the webhook gets no answer (status null) and gives up.
    hook = {
        "id": "hook",
        "type": "webhook",
        "url": "http://127.0.0.1:9/x",
        "max_attempts": 1,
        "next": "b",
    }
    wf = harness.publish(doc([hook, *_branch(condition)]))
    harness.events(*[{"name": "signed_up", "email": f"{n}@example.com"} for n in ids])
    harness.tick()
    exits = {e.contact_id: harness.path(e.id)[1][1] for e in harness.enrollments(wf)}
    assert exits == {ids["ana"]: "yes", ids["ben"]: "no"}


def test_trigger_and_wait_property_conditions(harness):
    wf = harness.publish(
        doc(
            [
                {
                    "id": "we",
                    "type": "wait",
                    "mode": "event",
                    "event": "order_completed",
                    "where": [{"property": "total", "operator": "greater_than", "value": 100}],
                    "timeout": {"days": 1},
                    "happened": "end",
                    "timed_out": "end",
                },
                EXIT,
            ],
            trigger={
                "type": "event",
                "event": "cart_abandoned",
                "where": [{"property": "cart_total", "operator": "greater_or_equal", "value": 20}],
            },
        )
    )
    harness.events(
        {"name": "cart_abandoned", "email": "big@example.com", "properties": {"cart_total": 80}},
        {"name": "cart_abandoned", "email": "small@example.com", "properties": {"cart_total": 5}},
        {"name": "cart_abandoned", "email": "none@example.com"},
    )
    (enrolment,) = harness.enrollments(wf)
    assert enrolment.contact_id == harness.contact_id("big@example.com")
    assert enrolment.context["trigger"]["properties"] == {"cart_total": 80}
    harness.tick()
    harness.events(
        {"name": "order_completed", "email": "big@example.com", "properties": {"total": 50}}
    )
    assert harness.enrollments(wf)[0].resume_exit is None  # too small to count
    harness.events(
        {"name": "order_completed", "email": "big@example.com", "properties": {"total": 150}}
    )
    assert harness.enrollments(wf)[0].resume_exit == "happened"


def test_goal_condition_converts_when_the_contact_changes(harness):
    ids = _contacts(harness, ana=0, ben=0)
    goal = {
        "conditions": [{"field": "lifecycle_stage", "operator": "in", "value": ["sql", "customer"]}]
    }
    wf = harness.publish(
        doc(
            [
                {
                    "id": "w",
                    "type": "wait",
                    "mode": "duration",
                    "duration": {"days": 7},
                    "next": None,
                }
            ],
            settings={"goal": {"condition": goal}},
        )
    )
    harness.events(*[{"name": "signed_up", "email": f"{n}@example.com"} for n in ids])
    harness.tick()
    with harness.sessions() as s:
        update_contact(s, ids["ana"], ContactPatch(lifecycle_stage="customer"), source="api")
        s.commit()
    statuses = {e.contact_id: e.status for e in harness.enrollments(wf)}
    assert statuses == {ids["ana"]: EnrollmentStatus.CONVERTED, ids["ben"]: EnrollmentStatus.ACTIVE}
    enrolment = next(e for e in harness.enrollments(wf) if e.contact_id == ids["ana"])
    assert harness.path(enrolment.id) == [("w", "converted")]


def _hot_segment(harness) -> int:
    """The "Hot" segment, saved and refreshed; its id."""
    with harness.sessions() as s:
        segment = create_segment(s, SegmentIn(name="Hot", conditions=HOT["conditions"]))
        refresh_segment(s, segment.id)
        s.commit()
        return segment.id


def test_segment_entered_trigger_and_bulk_enrolment_of_a_segment(harness):
    ids = _contacts(harness, ana=10, ben=80, cy=90)
    segment_id = _hot_segment(harness)
    entered = harness.publish(
        doc(
            [
                {
                    "id": "w",
                    "type": "wait",
                    "mode": "duration",
                    "duration": {"days": 1},
                    "next": None,
                }
            ],
            name="Entered hot",
            trigger={"type": "segment_entered", "segment_id": segment_id},
        )
    )
    with harness.sessions() as s:
        update_contact(s, ids["ana"], ContactPatch(score=75), source="api")
        s.commit()
    assert [e.contact_id for e in harness.enrollments(entered)] == [ids["ana"]]
    manual = harness.publish(
        doc(
            [
                {
                    "id": "w",
                    "type": "wait",
                    "mode": "duration",
                    "duration": {"days": 1},
                    "next": None,
                }
            ],
            name="Manual",
            trigger={"type": "manual"},
        )
    )
    with harness.sessions() as s:
        members = select(SegmentMembership.contact_id).where(
            SegmentMembership.segment_id == segment_id
        )
        assert enroll_manually(s, manual, query=members, now=clock.now()) == 3
        assert enroll_manually(s, manual, query=members, now=clock.now()) == 0  # once
        s.commit()
    assert sorted(e.contact_id for e in harness.enrollments(manual)) == sorted(ids.values())


def test_segment_left_trigger_enrols_those_who_leave_and_no_one_else(harness):
    ids = _contacts(harness, ana=10, ben=80, cy=90)
    segment_id = _hot_segment(harness)
    left = harness.publish(
        doc(
            [{"id": "cool", "type": "update_contact", "add_tags": ["cooled"], "next": None}],
            name="Left hot",
            trigger={"type": "segment_left", "segment_id": segment_id},
        )
    )
    with harness.sessions() as s:
        update_contact(s, ids["ben"], ContactPatch(score=20), source="api")  # leaves
        update_contact(s, ids["ana"], ContactPatch(score=30), source="api")  # was never in
        update_contact(s, ids["cy"], ContactPatch(score=95), source="api")  # stays
        s.commit()
    assert [e.contact_id for e in harness.enrollments(left)] == [ids["ben"]]
    harness.tick()
    (enrolment,) = harness.enrollments(left)
    assert enrolment.status is EnrollmentStatus.COMPLETED
    assert harness.path(enrolment.id) == [("cool", "next")]
    with harness.sessions() as s:  # entering again is no reason to enrol in "left"
        update_contact(s, ids["ana"], ContactPatch(score=60), source="api")
        s.commit()
    assert [e.contact_id for e in harness.enrollments(left)] == [ids["ben"]]


def test_update_node_adds_to_and_removes_from_static_lists(harness):
    ids = _contacts(harness, ana=0)
    with harness.sessions() as s:
        vip = create_segment(s, SegmentIn(name="VIP", kind=SegmentKind.STATIC)).id
        old = create_segment(s, SegmentIn(name="Old", kind=SegmentKind.STATIC)).id
        s.commit()
    from automation.segments.membership import add_members

    with harness.sessions() as s:
        add_members(s, old, [ids["ana"]])
        s.commit()
    harness.publish(
        doc(
            [
                {
                    "id": "u",
                    "type": "update_contact",
                    "add_to_lists": [vip],
                    "remove_from_lists": [old],
                    "next": None,
                }
            ]
        )
    )
    harness.events({"name": "signed_up", "email": "ana@example.com"})
    harness.tick()
    with harness.sessions() as s:
        lists = set(
            s.scalars(
                select(SegmentMembership.segment_id).where(
                    SegmentMembership.contact_id == ids["ana"]
                )
            )
        )
    assert lists == {vip}


def test_emails_are_queued_and_the_opened_leaf_reads_the_outbox(harness):
    ids = _contacts(harness, ana=0, ben=0)
    (template,) = make_templates(harness.sessions, "Reminder")
    wf = harness.publish(
        doc(
            [
                {"id": "mail", "type": "send_email", "template_id": template, "next": "wait"},
                {
                    "id": "wait",
                    "type": "wait",
                    "mode": "duration",
                    "duration": {"days": 1},
                    "next": "b",
                },
                *_branch({"conditions": [{"workflow_email": "opened", "node": "mail"}]}),
            ],
        )
    )
    harness.events(*[{"name": "signed_up", "email": f"{n}@example.com"} for n in ids])
    harness.tick()
    harness.tick()  # running again queues nothing twice
    with harness.sessions() as s:
        messages = s.scalars(select(Message).order_by(Message.id)).all()
        assert [m.workflow_node_id for m in messages] == ["mail", "mail"]
        # What the tracking worker writes when Ana opens it:
        s.execute(
            update(Message)
            .where(Message.contact_id == ids["ana"])
            .values(first_open_at=clock.now(), opens=1, status="sent", sent_at=clock.now())
        )
        s.commit()
    harness.clock.advance(days=1)
    harness.tick()
    exits = {e.contact_id: harness.path(e.id)[2][1] for e in harness.enrollments(wf)}
    assert exits == {ids["ana"]: "yes", ids["ben"]: "no"}
    with harness.sessions() as s:
        mail = next(n for n in workflow_statistics(s, wf)["nodes"] if n["node_id"] == "mail")
    assert mail["email"] == {"sent": 1, "opened": 1, "clicked": 0}


def test_bad_conditions_are_reported_under_the_node(session):
    branch = {
        "id": "b",
        "name": "Hot?",
        "type": "branch",
        "condition": {"conditions": [{"field": "score", "operator": "contains", "value": "x"}]},
        "yes": "end",
        "no": "end",
    }
    document = doc(
        [branch, EXIT],
        trigger={
            "type": "event",
            "event": "x",
            "where": [{"property": "total", "operator": "frobs"}],
        },
    )
    _, errors = check_definition(session, document)
    found = {e.path: e.message for e in errors}
    assert found["nodes[0].condition.conditions[0].operator"].startswith("branch 'b' (Hot?): ")
    assert found["trigger.where[0].operator"].startswith("trigger: ")
    unknown = {
        **branch,
        "condition": {"conditions": [{"field": "shoe_size", "operator": "equals", "value": 1}]},
    }
    _, errors = check_definition(session, doc([unknown, EXIT]))
    assert [e.path for e in errors] == ["nodes[0].condition.conditions[0].field"]
    assert "branch 'b' (Hot?)" in errors[0].message


def test_dry_run_evaluates_segment_conditions_on_the_simulated_contact(harness):
    ids = _contacts(harness, ana=45)
    nodes = [
        {"id": "bump", "type": "update_contact", "score_change": 10, "next": "b"},
        *_branch(HOT),
    ]
    with harness.sessions() as s:
        from automation.workflows import service

        workflow = service.create_workflow(s, doc(nodes))
        s.commit()
        run = dry_run(s, workflow.id, ids["ana"], timeline=[])
        assert [(step.node_id, step.exit) for step in run.steps] == [
            ("bump", "next"),
            ("b", "yes"),  # 45 + 10 in the simulation, the stored contact is unchanged
            ("hot", "next"),
        ]
        assert s.get(Contact, ids["ana"]).score == 45
        with_event = doc(
            [
                {
                    "id": "b",
                    "type": "branch",
                    "yes": "end",
                    "no": "end",
                    "condition": {"conditions": [{"event": "viewed_pricing"}]},
                },
                EXIT,
            ]
        )
        other = service.create_workflow(s, with_event)
        s.commit()
        later = clock.now() + timedelta(hours=1)
        run = dry_run(
            s,
            other.id,
            ids["ana"],
            timeline=[TimelineEvent(clock.now(), "viewed_pricing", {})],
            start_at=later,
        )
        assert (run.steps[0].node_id, run.steps[0].exit) == ("b", "yes")


def test_the_demo_publishes_both_examples_and_starts_contacts_on_them(session):
    from automation.demo import load_demo
    from automation.workflows.models import Enrollment, Workflow, WorkflowStatus

    summary = load_demo(session, contacts=120)
    session.commit()
    assert "2 example workflows published" in summary
    workflows = {w.name: w for w in session.scalars(select(Workflow))}
    assert {n: w.status for n, w in workflows.items()} == {
        "Abandoned cart": WorkflowStatus.ACTIVE,
        "Lead nurture": WorkflowStatus.ACTIVE,
    }
    for workflow in workflows.values():
        enrolled = session.scalars(
            select(Enrollment).where(Enrollment.workflow_id == workflow.id)
        ).all()
        assert enrolled, workflow.name
    # The demo's leads came in through the e-book form, as they would from a website.
    nurtured = session.scalars(
        select(Enrollment.context).where(Enrollment.workflow_id == workflows["Lead nurture"].id)
    ).all()
    assert {c["trigger"]["type"] for c in nurtured} == {"form_submitted"}
    assert f"({len(nurtured)} leads in the nurture" in summary
    from automation.workflows.examples import load_example_workflows

    assert load_example_workflows(session) == "example workflows already loaded"
