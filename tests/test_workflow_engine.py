"""The engine at the domain level, on SQLite and PostgreSQL: triggers enrol, the tick moves
batches node by node, waits are rows, goals convert, leases let a dead worker's batch be
taken again. Email sending and segment conditions are covered where those modules are."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import ZoneInfo

import emailkit
import pytest
from sqlalchemy import select, update
from workflows_support import doc, make_templates

from automation import clock
from automation.contacts.models import Contact, ContactTag, CustomField, FieldType, Tag
from automation.contacts.schema import ContactIn, ContactPatch
from automation.contacts.service import create_contact, update_contact
from automation.errors import InvalidInput
from automation.workflows import service
from automation.workflows.engine import advance, claim_due
from automation.workflows.enrolment import enroll_manually
from automation.workflows.models import EnrollmentStatus, EnrollmentStep, Workflow
from automation.workflows.moves import apply_migration, plan_migration
from automation.workflows.nodes import split_path
from automation.workflows.schema import SplitNode
from automation.workflows.stats import workflow_statistics
from automation.workflows.triggers import scan_date_triggers
from automation.workflows.webhooks import SIGNATURE_HEADER, verify_signature

EXIT = {"id": "end", "type": "exit"}
smtp_server = emailkit.smtp_server


def wait(node_id: str, nxt: str | None, **duration: int) -> dict:
    return {"id": node_id, "type": "wait", "mode": "duration", "duration": duration, "next": nxt}


def test_wait_then_update_then_exit_moves_every_contact(harness):
    wf = harness.publish(
        doc(
            [
                wait("w", "u", hours=1),
                {
                    "id": "u",
                    "type": "update_contact",
                    "add_tags": ["nurtured"],
                    "score_change": 5,
                    "lifecycle_stage": "lead",
                    "set": {"first_name": "Pat"},
                    "next": "end",
                },
                EXIT,
            ]
        )
    )
    harness.events(*[{"name": "signed_up", "email": f"c{i}@example.com"} for i in range(30)])
    assert len(harness.enrollments(wf)) == 30
    harness.tick()  # everyone enters the wait
    assert {e.current_node for e in harness.enrollments(wf)} == {"w"}
    harness.clock.advance(minutes=59)
    assert harness.tick().enrollments == 0  # not due yet
    harness.clock.advance(minutes=1)
    report = harness.tick()
    assert report.enrollments == 30 and report.steps == 90
    enrolments = harness.enrollments(wf)
    assert {e.status for e in enrolments} == {EnrollmentStatus.COMPLETED}
    assert harness.path(enrolments[0].id) == [("w", "next"), ("u", "next"), ("end", "exit")]
    with harness.sessions() as s:
        contacts = s.scalars(select(Contact)).all()
        assert {(c.first_name, c.score, c.lifecycle_stage.value) for c in contacts} == {
            ("Pat", 5, "lead")
        }
        tagged = s.scalars(select(ContactTag.contact_id).join(Tag).where(Tag.name == "nurtured"))
        assert len(list(tagged)) == 30


def test_split_is_deterministic_per_contact_and_follows_the_weights(harness):
    node = SplitNode.model_validate(
        {
            "id": "ab",
            "type": "split",
            "paths": [
                {"name": "A", "weight": 1, "next": None},
                {"name": "B", "weight": 3, "next": None},
            ],
        }
    )
    picks = [split_path(contact_id, "ab", node) for contact_id in range(4000)]
    assert 850 < picks.count("A") < 1150  # a quarter, give or take
    assert picks == [split_path(contact_id, "ab", node) for contact_id in range(4000)]
    wf = harness.publish(
        doc(
            [
                {
                    "id": "ab",
                    "type": "split",
                    "paths": [
                        {"name": "A", "weight": 1, "next": "end"},
                        {"name": "B", "weight": 3, "next": "end"},
                    ],
                },
                EXIT,
            ]
        )
    )
    harness.events(*[{"name": "signed_up", "email": f"s{i}@example.com"} for i in range(40)])
    harness.tick()
    for enrolment in harness.enrollments(wf):
        taken = harness.path(enrolment.id)[0][1]
        assert taken == split_path(enrolment.contact_id, "ab", node)
    with harness.sessions() as s:
        stats = workflow_statistics(s, wf)
    split = next(n for n in stats["nodes"] if n["node_id"] == "ab")
    assert split["entered"] == 40 and sum(split["exits"].values()) == 40
    assert set(split["exits"]) <= {"A", "B"} and split["completed"] == 40


WAIT_FOR_ORDER = {
    "id": "we",
    "type": "wait",
    "mode": "event",
    "event": "order_completed",
    "timeout": {"hours": 4},
    "happened": "bought",
    "timed_out": "lost",
}


def _wait_for_order_workflow(harness) -> int:
    return harness.publish(
        doc(
            [
                WAIT_FOR_ORDER,
                {"id": "bought", "type": "update_contact", "add_tags": ["bought"], "next": None},
                {"id": "lost", "type": "update_contact", "add_tags": ["lost"], "next": None},
            ],
            trigger={"type": "event", "event": "cart_abandoned"},
        )
    )


def test_wait_for_event_wakes_on_arrival_even_if_the_tick_comes_after_the_timeout(harness):
    wf = _wait_for_order_workflow(harness)
    harness.events(
        {"name": "cart_abandoned", "email": "buyer@example.com"},
        {"name": "cart_abandoned", "email": "browser@example.com"},
    )
    harness.tick()
    harness.clock.advance(hours=1)
    harness.events({"name": "order_completed", "email": "buyer@example.com"})
    buyer = harness.contact_id("buyer@example.com")
    woken = next(e for e in harness.enrollments(wf) if e.contact_id == buyer)
    assert woken.resume_exit == "happened" and woken.next_run_at == harness.clock.now
    harness.clock.advance(hours=5)  # the next tick runs after the timeout has passed
    harness.tick()
    outcome = {e.contact_id: harness.path(e.id)[0][1] for e in harness.enrollments(wf)}
    assert outcome == {buyer: "happened", harness.contact_id("browser@example.com"): "timed_out"}


def test_an_event_after_the_timeout_does_not_count_as_happened(harness):
    wf = _wait_for_order_workflow(harness)
    harness.events({"name": "cart_abandoned", "email": "late@example.com"})
    harness.tick()
    harness.clock.advance(hours=4, minutes=1)  # timed out, but no tick ran yet
    harness.events({"name": "order_completed", "email": "late@example.com"})
    harness.tick()
    (enrolment,) = harness.enrollments(wf)
    assert harness.path(enrolment.id)[0] == ("we", "timed_out")


@pytest.mark.parametrize(
    ("reentry", "expected"),
    [
        ({"mode": "once"}, 1),
        ({"mode": "always"}, 3),
        ({"mode": "cooldown", "cooldown": {"days": 2}}, 2),
    ],
)
def test_reentry_rules(harness, reentry, expected):
    wf = harness.publish(doc([EXIT], settings={"reentry": reentry}))
    for _day in range(3):  # sign-ups on days 0, 1 and 2; each run finishes at once
        harness.events({"name": "signed_up", "email": "again@example.com"})
        harness.tick()
        harness.clock.advance(days=1, minutes=1)
    assert len(harness.enrollments(wf)) == expected


def test_one_open_enrolment_per_contact_even_within_one_batch(harness):
    wf = harness.publish(doc([wait("w", None, days=1)], settings={"reentry": {"mode": "always"}}))
    harness.events(*[{"name": "signed_up", "email": "dup@example.com"} for _ in range(5)])
    harness.events({"name": "signed_up", "email": "dup@example.com"})
    assert len(harness.enrollments(wf)) == 1


def test_workflow_goal_converts_at_once_from_anywhere(harness):
    wf = harness.publish(
        doc(
            [wait("w1", "w2", days=1), wait("w2", "end", days=1), EXIT],
            settings={"goal": {"event": "order_completed"}},
        )
    )
    harness.events(
        {"name": "signed_up", "email": "a@example.com"},
        {"name": "signed_up", "email": "b@example.com"},
    )
    harness.tick()
    harness.events({"name": "order_completed", "email": "a@example.com"})
    statuses = {e.contact_id: e.status for e in harness.enrollments(wf)}
    assert statuses[harness.contact_id("a@example.com")] is EnrollmentStatus.CONVERTED
    assert statuses[harness.contact_id("b@example.com")] is EnrollmentStatus.ACTIVE
    with harness.sessions() as s:
        stats = workflow_statistics(s, wf)
    assert stats["totals"]["converted"] == 1
    assert next(n for n in stats["nodes"] if n["node_id"] == "w1")["converted"] == 1


def test_goal_event_from_before_enrolment_does_not_convert(harness):
    harness.events({"name": "order_completed", "email": "old@example.com"})
    harness.clock.advance(minutes=5)
    wf = harness.publish(
        doc([wait("w1", None, days=1)], settings={"goal": {"event": "order_completed"}})
    )
    harness.events({"name": "signed_up", "email": "old@example.com"})
    harness.tick()
    assert harness.enrollments(wf)[0].status is EnrollmentStatus.ACTIVE


def test_goal_node_counts_conversions_and_continues(harness):
    wf = harness.publish(
        doc(
            [{"id": "g", "type": "goal", "next": "end"}, EXIT],
            settings={"reentry": {"mode": "once"}},
        )
    )
    harness.events({"name": "signed_up", "email": "g@example.com"})
    harness.tick()
    (enrolment,) = harness.enrollments(wf)
    assert enrolment.status is EnrollmentStatus.CONVERTED
    assert harness.path(enrolment.id) == [("g", "converted"), ("end", "exit")]


def test_pause_stops_entry_and_movement_resume_continues(harness):
    wf = harness.publish(doc([wait("w", "end", hours=1), EXIT]))
    harness.events({"name": "signed_up", "email": "p1@example.com"})
    harness.tick()
    with harness.sessions() as s:
        service.pause(s, wf)
        s.commit()
    harness.events({"name": "signed_up", "email": "p2@example.com"})  # nobody enters
    harness.clock.advance(hours=2)
    assert harness.tick().enrollments == 0
    assert [e.status for e in harness.enrollments(wf)] == [EnrollmentStatus.PAUSED]
    with harness.sessions() as s:
        service.resume(s, wf)
        s.commit()
    harness.tick()
    assert [e.status for e in harness.enrollments(wf)] == [EnrollmentStatus.COMPLETED]


def test_archive_exits_everyone_where_they_stand(harness):
    wf = harness.publish(doc([wait("w", "end", days=3), EXIT]))
    harness.events({"name": "signed_up", "email": "ar@example.com"})
    harness.tick()
    with harness.sessions() as s:
        service.archive(s, wf)
        s.commit()
        stats = workflow_statistics(s, wf)
    (enrolment,) = harness.enrollments(wf)
    assert enrolment.status is EnrollmentStatus.EXITED
    assert harness.path(enrolment.id) == [("w", "removed")]
    assert next(n for n in stats["nodes"] if n["node_id"] == "w")["exited"] == 1


def test_a_worker_that_dies_holding_a_batch_leaves_it_due_for_the_next_tick(harness):
    wf = harness.publish(doc([wait("w", "end", hours=1), EXIT]))
    harness.events(*[{"name": "signed_up", "email": f"l{i}@example.com"} for i in range(5)])
    with harness.sessions() as s:  # a worker claims and starts moving, then dies
        items, digests = claim_due(s, clock.now())
        assert len(items) == 5
        advance(s, items, digests, clock.now())
        s.rollback()  # what PostgreSQL does when the worker's connection closes
    assert {e.waiting_since for e in harness.enrollments(wf)} == {None}  # not moved
    assert harness.tick().enrollments == 5  # at once: no lease to wait out
    assert None not in {e.waiting_since for e in harness.enrollments(wf)}
    assert harness.path(harness.enrollments(wf)[0].id) == [("w", None)]


@pytest.mark.postgres
def test_a_worker_that_hangs_holding_a_batch_is_cut_off_and_the_batch_moves(
    harness, db_url, monkeypatch
):
    if not db_url.startswith("postgresql"):
        pytest.skip("idle_in_transaction_session_timeout: PostgreSQL")
    import time

    from sqlalchemy.exc import SQLAlchemyError

    from automation.workflows import engine

    monkeypatch.setattr(engine, "HOLD_LIMIT", timedelta(seconds=0.5))
    wf = harness.publish(doc([wait("w", "end", hours=1), EXIT]))
    harness.events(*[{"name": "signed_up", "email": f"h{i}@example.com"} for i in range(5)])
    with harness.sessions() as hung:
        items, digests = claim_due(hung, clock.now())
        assert len(items) == 5
        time.sleep(1.5)  # stuck between statements, holding the rows
        # PostgreSQL ended the hung session: another worker takes the batch.
        assert harness.tick().enrollments == 5
        with pytest.raises(SQLAlchemyError):  # and the hung one can write nothing any more
            advance(hung, items, digests, clock.now())
            hung.commit()
    assert None not in {e.waiting_since for e in harness.enrollments(wf)}
    assert [harness.path(e.id) for e in harness.enrollments(wf)] == [[("w", None)]] * 5


@pytest.mark.postgres
def test_concurrent_ticks_take_disjoint_batches(harness, db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("row locks: PostgreSQL (SQLite runs one tick at a time)")
    harness.publish(doc([{"id": "u", "type": "update_contact", "score_change": 1, "next": None}]))
    harness.events(*[{"name": "signed_up", "email": f"d{i}@example.com"} for i in range(5)])
    with harness.sessions() as first:
        held, digests = claim_due(first, clock.now(), limit=3)
        with harness.sessions() as second:  # another worker, while the first holds its rows
            other, other_digests = claim_due(second, clock.now())
            assert len(held) == 3 and len(other) == 2
            assert not {i.id for i in held} & {i.id for i in other}
            advance(second, other, other_digests, clock.now())
            second.commit()
        advance(first, held, digests, clock.now())
        first.commit()
    assert harness.tick().enrollments == 0
    with harness.sessions() as s:
        assert s.scalars(select(Contact.score)).all() == [1] * 5  # each moved exactly once


def test_erasing_or_deleting_a_contact_takes_its_journal_with_it(harness):
    from automation.contacts.gdpr import erase_contact
    from automation.contacts.service import delete_contact

    wf = harness.publish(doc([wait("w", "end", hours=1), EXIT]))
    emails = ("erased@example.com", "deleted@example.com", "kept@example.com")
    harness.events(*[{"name": "signed_up", "email": e} for e in emails])
    harness.tick()
    harness.clock.advance(hours=2)
    harness.tick()
    ids = {e.contact_id: e.id for e in harness.enrollments(wf)}
    assert all(harness.path(i) == [("w", "next"), ("end", "exit")] for i in ids.values())
    with harness.sessions() as s:
        erase_contact(s, harness.contact_id("erased@example.com"))
        delete_contact(s, harness.contact_id("deleted@example.com"))
        s.commit()
        remaining = set(s.scalars(select(EnrollmentStep.enrollment_id)))
    assert remaining == {ids[harness.contact_id("kept@example.com")]}


def test_manual_enrolment_respects_reentry(harness):
    wf = harness.publish(doc([wait("w", None, days=1)], trigger={"type": "manual"}))
    harness.events({"name": "signed_up", "email": "m1@example.com"})  # no trigger on it
    assert harness.enrollments(wf) == []
    contact = harness.contact_id("m1@example.com")
    with harness.sessions() as s:
        # An unknown contact is named and nobody is enrolled: no half-done list.
        with pytest.raises(InvalidInput) as refused:
            enroll_manually(s, wf, contact_ids=[contact, 999_999], now=clock.now())
        assert [e.as_dict() for e in refused.value.errors] == [
            {"path": "contact_ids[1]", "message": "no contact 999999"}
        ]
        assert harness.enrollments(wf) == []
        assert enroll_manually(s, wf, emails=[" M1@Example.com"], now=clock.now()) == 1
        assert enroll_manually(s, wf, contact_ids=[contact], now=clock.now()) == 0
        s.commit()
    assert harness.enrollments(wf)[0].context == {"trigger": {"type": "manual"}}


def test_field_changed_trigger_fires_on_the_matching_transition(harness):
    with harness.sessions() as s:
        for email, stage in (("lead@example.com", "lead"), ("sub@example.com", "subscriber")):
            create_contact(s, ContactIn(email=email, lifecycle_stage=stage), source="api")
        s.commit()
    wf = harness.publish(
        doc(
            [wait("w", None, days=1)],
            trigger={
                "type": "field_changed",
                "field": "lifecycle_stage",
                "from": "lead",
                "to": "mql",
            },
        )
    )
    with harness.sessions() as s:
        for email in ("lead@example.com", "sub@example.com"):
            update_contact(
                s, harness.contact_id(email), ContactPatch(lifecycle_stage="mql"), source="api"
            )
        s.commit()
    (enrolment,) = harness.enrollments(wf)
    assert enrolment.contact_id == harness.contact_id("lead@example.com")
    assert enrolment.context["trigger"] == {
        "type": "field_changed",
        "field": "lifecycle_stage",
        "from": "lead",
        "to": "mql",
    }


def test_an_update_node_can_fire_another_workflows_field_trigger(harness):
    watcher = harness.publish(
        doc(
            [wait("w", None, days=1)],
            name="Watcher",
            trigger={"type": "field_changed", "field": "lifecycle_stage", "to": "customer"},
        )
    )
    harness.publish(
        doc([{"id": "u", "type": "update_contact", "lifecycle_stage": "customer", "next": None}])
    )
    harness.events({"name": "signed_up", "email": "chain@example.com"})
    harness.tick()
    assert len(harness.enrollments(watcher)) == 1


def _declare_date_fields(harness):
    with harness.sessions() as s:
        for name in ("renewal_date", "birthday"):
            s.add(
                CustomField(
                    name=name, label=name, type=FieldType.DATE, options=[], created_at=clock.now()
                )
            )
        s.commit()


def test_date_trigger_fires_at_the_local_time_once_per_occurrence(harness):
    _declare_date_fields(harness)
    harness.clock.set(datetime(2026, 4, 30, 12, 0, tzinfo=UTC))
    with harness.sessions() as s:
        for email, zone in (
            ("tokyo@example.com", "Asia/Tokyo"),
            ("ny@example.com", "America/New_York"),
        ):
            create_contact(
                s,
                ContactIn(email=email, time_zone=zone, attributes={"renewal_date": "2026-05-08"}),
                source="api",
            )
        s.commit()
    wf = harness.publish(
        doc(
            [wait("w", None, days=30)],
            trigger={"type": "date", "field": "renewal_date", "offset_days": -7, "time": "09:00"},
        )
    )
    moments = []
    for hour in range(1, 40):  # scan hourly from 30 April 13:00 UTC
        harness.clock.set(datetime(2026, 4, 30, 12, 0, tzinfo=UTC) + timedelta(hours=hour))
        with harness.sessions() as s:
            if scan_date_triggers(s):
                moments.append(harness.clock.now)
            s.commit()
    enrolments = harness.enrollments(wf)
    assert len(enrolments) == 2  # once each, though scanned every hour
    by_contact = {e.contact_id: e.enrolled_at for e in enrolments}
    tokyo = by_contact[harness.contact_id("tokyo@example.com")].astimezone(ZoneInfo("Asia/Tokyo"))
    ny = by_contact[harness.contact_id("ny@example.com")].astimezone(ZoneInfo("America/New_York"))
    assert (tokyo.date().isoformat(), tokyo.hour) == ("2026-05-01", 9)
    assert (ny.date().isoformat(), ny.hour) == ("2026-05-01", 9)
    assert enrolments[0].trigger_key == "2026-05-08"


def test_anniversary_trigger_fires_every_year(harness):
    _declare_date_fields(harness)
    harness.clock.set(datetime(2026, 6, 1, tzinfo=UTC))
    with harness.sessions() as s:
        create_contact(
            s,
            ContactIn(
                email="bday@example.com",
                time_zone="Europe/Paris",
                attributes={"birthday": "1990-06-02"},
            ),
            source="api",
        )
        s.commit()
    wf = harness.publish(
        doc(
            [EXIT],
            trigger={"type": "anniversary", "field": "birthday", "time": "08:00"},
            settings={"reentry": {"mode": "always"}},
        )
    )
    for moment in (
        datetime(2026, 6, 2, 5, 59, tzinfo=UTC),  # 07:59 in Paris: not yet
        datetime(2026, 6, 2, 6, 0, tzinfo=UTC),  # 08:00 in Paris
        datetime(2026, 6, 2, 12, 0, tzinfo=UTC),
        datetime(2027, 6, 2, 6, 30, tzinfo=UTC),  # a year later
    ):
        harness.clock.set(moment)
        with harness.sessions() as s:
            scan_date_triggers(s)
            s.commit()
        harness.tick()
    assert [e.trigger_key for e in harness.enrollments(wf)] == ["2026-06-02", "2027-06-02"]


def test_waits_keep_local_time_across_daylight_saving(harness):
    """New York leaves EST for EDT on Sunday 8 March 2026. 09:00 local is 14:00 UTC on
    Friday 6 March and 13:00 UTC from Sunday on; "2 days" are calendar days."""
    harness.clock.set(datetime(2026, 3, 6, 2, 0, tzinfo=UTC))  # Thursday 21:00 in New York
    with harness.sessions() as s:
        create_contact(
            s, ContactIn(email="nyc@example.com", time_zone="America/New_York"), source="api"
        )
        s.commit()
    weekdays = ["mon", "tue", "wed", "thu", "fri"]
    nine = {"type": "wait", "mode": "time_of_day", "time": "09:00", "weekdays": weekdays}
    wf = harness.publish(
        doc(
            [
                {**nine, "id": "nine", "next": "two_days"},
                wait("two_days", "nine_again", days=2),
                {**nine, "id": "nine_again", "next": None},
            ]
        )
    )
    harness.events({"name": "signed_up", "email": "nyc@example.com"})
    expected = [
        ("nine", datetime(2026, 3, 6, 14, 0, tzinfo=UTC)),  # Friday 09:00 EST
        ("two_days", datetime(2026, 3, 8, 13, 0, tzinfo=UTC)),  # Sunday 09:00 EDT (47 h)
        ("nine_again", datetime(2026, 3, 9, 13, 0, tzinfo=UTC)),  # Monday 09:00 EDT
    ]
    for node, due in expected:
        harness.tick()
        (enrolment,) = harness.enrollments(wf)
        assert (enrolment.current_node, enrolment.next_run_at) == (node, due)
        harness.clock.set(due)
    harness.tick()
    assert harness.enrollments(wf)[0].status is EnrollmentStatus.COMPLETED


def test_migration_preview_and_apply_keep_the_wait_start(harness):
    wf = harness.publish(doc([{**wait("w2", "end", days=2), "name": "Wait 2 days"}, EXIT]))
    harness.events(*[{"name": "signed_up", "email": f"mig{i}@example.com"} for i in range(3)])
    harness.tick()
    started = harness.clock.now
    harness.clock.advance(hours=12)
    with harness.sessions() as s:
        service.update_draft(
            s, wf, doc([{**wait("w3", "end", days=3), "name": "Wait 3 days"}, EXIT])
        )
        service.publish(s, wf)
        s.commit()
        with pytest.raises(Exception) as refused:
            plan_migration(s, wf, from_version=1)
        assert "3 contacts are at 'Wait 2 days', which version 2 does not have" in str(
            refused.value
        )
        plan = plan_migration(s, wf, from_version=1, node_map={"w2": "w3"})
        assert [m.message for m in plan.moves] == [
            "3 contacts waiting at 'Wait 2 days' will move to 'Wait 3 days'"
        ]
        assert apply_migration(s, plan, clock.now()) == 3
        s.commit()
    enrolments = harness.enrollments(wf)
    assert {e.current_node for e in enrolments} == {"w3"}
    assert {e.next_run_at for e in enrolments} == {started + timedelta(days=3)}
    assert harness.path(enrolments[0].id) == [("w2", "migrated"), ("w3", None)]
    harness.clock.set(started + timedelta(days=3))
    harness.tick()
    assert {e.status for e in harness.enrollments(wf)} == {EnrollmentStatus.COMPLETED}
    # The old visit ended at the migration and says where it went; the wait at the new
    # node counted from when it began, and its row says so.
    with harness.sessions() as s:
        journal = s.execute(
            select(EnrollmentStep.node_id, EnrollmentStep.entered_at, EnrollmentStep.left_at)
            .add_columns(EnrollmentStep.exit, EnrollmentStep.detail)
            .where(EnrollmentStep.enrollment_id == enrolments[0].id)
            .order_by(EnrollmentStep.id)
        ).all()
    assert [tuple(row) for row in journal] == [
        ("w2", started, started + timedelta(hours=12), "migrated",
         {"migrated_to": {"version": 2, "node": "w3"}}),
        ("w3", started, started + timedelta(days=3), "next", None),
        ("end", started + timedelta(days=3), started + timedelta(days=3), "exit", None),
    ]  # fmt: skip


def test_a_wait_is_journaled_once_when_it_ends(harness):
    wf = harness.publish(doc([wait("w", "end", hours=1), EXIT]))
    harness.events({"name": "signed_up", "email": "once@example.com"})
    harness.tick()
    arrived = harness.clock.now
    (enrolment,) = harness.enrollments(wf)

    def journal() -> list[tuple[Any, ...]]:
        with harness.sessions() as s:
            rows = s.execute(
                select(
                    EnrollmentStep.node_id,
                    EnrollmentStep.entered_at,
                    EnrollmentStep.left_at,
                    EnrollmentStep.exit,
                )
                .where(EnrollmentStep.enrollment_id == enrolment.id)
                .order_by(EnrollmentStep.id)
            )
            return [tuple(row) for row in rows]

    # Waiting: the enrolment is the open visit; nothing is journaled until it ends.
    assert journal() == []
    assert harness.path(enrolment.id) == [("w", None)]
    harness.clock.advance(minutes=30)
    harness.tick()  # not due: nothing changes
    assert journal() == []
    harness.clock.advance(minutes=30)
    harness.tick()
    left = harness.clock.now
    assert journal() == [("w", arrived, left, "next"), ("end", left, left, "exit")]


def test_stats_count_entered_waiting_completed(harness):
    wf = harness.publish(doc([wait("w", "end", hours=1), EXIT]))
    harness.events(*[{"name": "signed_up", "email": f"st{i}@example.com"} for i in range(4)])
    harness.tick()
    with harness.sessions() as s:
        nodes = {n["node_id"]: n for n in workflow_statistics(s, wf)["nodes"]}
    assert (nodes["w"]["entered"], nodes["w"]["waiting"], nodes["w"]["completed"]) == (4, 4, 0)
    harness.clock.advance(hours=1)
    harness.tick()
    with harness.sessions() as s:
        stats = workflow_statistics(s, wf)
    nodes = {n["node_id"]: n for n in stats["nodes"]}
    assert (nodes["w"]["entered"], nodes["w"]["waiting"], nodes["w"]["completed"]) == (4, 0, 4)
    assert nodes["end"]["completed"] == 4
    assert stats["totals"] == {
        "enrolled": 4,
        "active": 0,
        "paused": 0,
        "completed": 4,
        "converted": 0,
        "exited": 0,
        "failed": 0,
    }


class _Receiver(BaseHTTPRequestHandler):
    answers: list[tuple[int, dict]] = []
    received: list[tuple[dict, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), body))
        status, payload = self.answers.pop(0) if self.answers else (200, {})
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver():
    _Receiver.answers, _Receiver.received = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, _Receiver
    server.shutdown()
    server.server_close()


def test_webhook_is_signed_retried_and_its_answer_feeds_a_branch(harness, receiver):
    server, handler = receiver
    handler.answers = [(503, {}), (200, {"plan": "pro"})]
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    wf = harness.publish(
        doc(
            [
                {
                    "id": "hook",
                    "type": "webhook",
                    "url": url,
                    "payload": {"source": "test"},
                    "retry_backoff_seconds": 60,
                    "next": "b",
                },
                {
                    "id": "b",
                    "type": "branch",
                    "condition": {
                        "conditions": [
                            {
                                "webhook": "hook",
                                "path": "body.plan",
                                "operator": "equals",
                                "value": "pro",
                            }
                        ]
                    },
                    "yes": "pro",
                    "no": "end",
                },
                {"id": "pro", "type": "update_contact", "add_tags": ["pro"], "next": None},
                EXIT,
            ]
        )
    )
    harness.events({"name": "signed_up", "email": "hook@example.com"})
    harness.tick()
    (enrolment,) = harness.enrollments(wf)
    assert (enrolment.current_node, enrolment.attempts) == ("hook", 1)
    assert enrolment.next_run_at == harness.clock.now + timedelta(seconds=60)
    harness.clock.advance(seconds=60)
    harness.tick()
    (enrolment,) = harness.enrollments(wf)
    assert enrolment.status is EnrollmentStatus.COMPLETED
    assert harness.path(enrolment.id) == [("hook", "next"), ("b", "yes"), ("pro", "next")]
    assert enrolment.context["webhooks"]["hook"] == {
        "ok": True,
        "status": 200,
        "body": {"plan": "pro"},
        "attempts": 2,
    }
    headers, body = handler.received[-1]
    with harness.sessions() as s:
        secret = s.get(Workflow, wf).webhook_secret
    assert verify_signature(secret, headers[SIGNATURE_HEADER], body, now=harness.clock.now)
    assert not verify_signature(
        secret, headers[SIGNATURE_HEADER], body + b" ", now=harness.clock.now
    )
    assert headers["Idempotency-Key"] == f"nurture-{enrolment.id}-hook"
    sent = json.loads(body)
    assert sent["contact"]["email"] == "hook@example.com" and sent["data"] == {"source": "test"}


def test_webhook_gives_up_after_its_attempts_and_goes_on(harness):
    wf = harness.publish(
        doc(
            [
                {
                    "id": "hook",
                    "type": "webhook",
                    "url": "http://127.0.0.1:9/nothing",
                    "max_attempts": 2,
                    "retry_backoff_seconds": 1,
                    "next": None,
                }
            ]
        )
    )
    harness.events({"name": "signed_up", "email": "down@example.com"})
    harness.tick()
    harness.clock.advance(seconds=2)
    harness.tick()
    (enrolment,) = harness.enrollments(wf)
    assert enrolment.status is EnrollmentStatus.COMPLETED
    result = enrolment.context["webhooks"]["hook"]
    assert (result["ok"], result["status"], result["attempts"]) == (False, None, 2)


def test_send_waits_for_the_send_window_in_the_contacts_zone(harness):
    with harness.sessions() as s:
        create_contact(
            s, ContactIn(email="paris@example.com", time_zone="Europe/Paris"), source="api"
        )
        s.commit()
    harness.clock.set(datetime(2026, 3, 6, 20, 0, tzinfo=UTC))  # Friday 21:00 in Paris
    (template,) = make_templates(harness.sessions, "Hello")
    wf = harness.publish(
        doc(
            [{"id": "mail", "type": "send_email", "template_id": template, "next": None}],
            settings={
                "send_window": {
                    "weekdays": ["mon", "tue", "wed", "thu", "fri"],
                    "start": "09:00",
                    "end": "17:00",
                },
                "priority": 8,
            },
        )
    )
    harness.events({"name": "signed_up", "email": "paris@example.com"})
    harness.tick()
    (enrolment,) = harness.enrollments(wf)
    assert enrolment.next_run_at == datetime(2026, 3, 9, 8, 0, tzinfo=UTC)  # Monday 09:00 Paris
    harness.clock.set(enrolment.next_run_at)
    harness.tick()
    (enrolment,) = harness.enrollments(wf)
    assert enrolment.status is EnrollmentStatus.COMPLETED
    assert harness.path(enrolment.id) == [("mail", "next")]
    from automation.email.models import Message, MessageStatus

    with harness.sessions() as s:
        (message,) = s.scalars(select(Message)).all()
    assert message.dedupe_key == f"workflow:{enrolment.id}:mail"
    assert (message.workflow_node_id, message.enrollment_id) == ("mail", enrolment.id)
    assert (message.workflow_id, message.priority) == (wf, 8)  # the workflow's cap priority
    assert message.status is MessageStatus.QUEUED and message.workflow_name == "Test workflow"


@pytest.mark.postgres
def test_fifty_concurrent_posts_of_one_event_make_one_enrolment(harness, db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("concurrent writers: PostgreSQL")
    from automation.contacts.events import ingest_events

    wf = harness.publish(doc([wait("w", None, days=1)], settings={"reentry": {"mode": "always"}}))
    harness.events({"name": "page_viewed", "email": "race@example.com"})  # the contact exists
    barrier = threading.Barrier(50)
    failures = []

    def post(i: int) -> None:
        try:
            with harness.sessions() as s:
                barrier.wait(10)
                ingest_events(s, [{"name": "signed_up", "email": "race@example.com"}], source="api")
                s.commit()
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(harness.enrollments(wf)) == 1


def _contacts_in_zones(harness, zones: dict[str, str]) -> dict[str, int]:
    """One contact per name, in the zone given; "" leaves the default (no known zone) and
    any other value not a zone is written as it is, as an old import might have left it."""
    with harness.sessions() as s:
        ids = {}
        for name, zone in zones.items():
            ids[name] = create_contact(s, ContactIn(email=f"{name}@example.com"), source="api").id
            if zone:
                s.execute(update(Contact).where(Contact.id == ids[name]).values(time_zone=zone))
        s.commit()
    return ids


def test_contacts_without_a_known_zone_wait_and_are_mailed_in_the_fallback_zone(harness):
    """Monday 2 March 2026, 12:00 UTC: 07:00 in New York (the fallback), 21:00 in Tokyo.
    Without the fallback, "09:00" and the quiet hours would be read in UTC."""
    ids = _contacts_in_zones(
        harness, {"unset": "", "bogus": "Mars/Olympus_Mons", "tokyo": "Asia/Tokyo"}
    )
    new_york = {"fallback_time_zone": "America/New_York"}
    nine = harness.publish(
        doc(
            [{"id": "nine", "type": "wait", "mode": "time_of_day", "time": "09:00", "next": None}],
            name="At nine",
            settings=new_york,
        )
    )
    (template,) = make_templates(harness.sessions, "Quiet")
    quiet = harness.publish(
        doc(
            [{"id": "mail", "type": "send_email", "template_id": template, "next": None}],
            name="Not at night",
            trigger={"type": "event", "event": "browsed"},
            settings={**new_york, "quiet_hours": {"start": "20:00", "end": "08:00"}},
        )
    )
    harness.events(*[{"name": "signed_up", "email": f"{n}@example.com"} for n in ids])
    harness.events(*[{"name": "browsed", "email": f"{n}@example.com"} for n in ids])
    harness.tick()
    due = {(e.workflow_id, e.contact_id): e.next_run_at for e in harness.enrollments()}
    nine_ny = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)  # 09:00 EST
    nine_tokyo = datetime(2026, 3, 3, 0, 0, tzinfo=UTC)
    assert {name: due[(nine, i)] for name, i in ids.items()} == {
        "unset": nine_ny,
        "bogus": nine_ny,
        "tokyo": nine_tokyo,
    }
    eight_ny = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)  # quiet hours end 08:00 EST
    eight_tokyo = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)
    assert {name: due[(quiet, i)] for name, i in ids.items()} == {
        "unset": eight_ny,
        "bogus": eight_ny,
        "tokyo": eight_tokyo,
    }
    harness.clock.set(eight_ny)
    harness.tick()
    from automation.email.models import Message

    with harness.sessions() as s:
        mailed = set(s.scalars(select(Message.contact_id)))
    assert mailed == {ids["unset"], ids["bogus"]}  # Tokyo is at 22:00, still quiet


def test_wait_until_a_date_field_at_local_time_and_what_happens_without_one(harness):
    """Seven days before ``renewal_date`` at 09:00 in the contact's zone. A date already
    past, or none (missing, or not a date), goes on at once and the journal says why."""
    _declare_date_fields(harness)
    renewals = {
        "paris": "2026-03-20",  # reminded 13 March 09:00 Paris (08:00 UTC)
        "past": "2026-03-05",  # 26 February: gone
        "missing": None,
        "garbage": "next spring",
    }
    with harness.sessions() as s:
        for name, renewal in renewals.items():
            attributes = {} if renewal is None else {"renewal_date": renewal}
            create_contact(
                s,
                ContactIn(email=f"{name}@example.com", time_zone="Europe/Paris"),
                source="api",
            )
            if attributes:  # written as an import would (the API checks declared dates)
                s.execute(
                    update(Contact)
                    .where(Contact.email == f"{name}@example.com")
                    .values(attributes=attributes)
                )
        s.commit()
    wf = harness.publish(
        doc(
            [
                {
                    "id": "renewal",
                    "type": "wait",
                    "mode": "date_field",
                    "field": "attributes.renewal_date",
                    "offset_days": -7,
                    "time": "09:00",
                    "next": "u",
                },
                {"id": "u", "type": "update_contact", "add_tags": ["reminded"], "next": None},
            ]
        )
    )
    harness.events(*[{"name": "signed_up", "email": f"{n}@example.com"} for n in renewals])
    harness.tick()
    by_name = {n: harness.contact_id(f"{n}@example.com") for n in renewals}
    enrolments = {e.contact_id: e for e in harness.enrollments(wf)}
    waiting = enrolments[by_name["paris"]]
    assert waiting.status is EnrollmentStatus.ACTIVE and waiting.current_node == "renewal"
    assert waiting.next_run_at == datetime(2026, 3, 13, 8, 0, tzinfo=UTC)
    for name in ("past", "missing", "garbage"):
        assert enrolments[by_name[name]].status is EnrollmentStatus.COMPLETED, name
    with harness.sessions() as s:
        reasons = {
            step.enrollment_id: step.detail
            for step in s.scalars(select(EnrollmentStep).where(EnrollmentStep.node_id == "renewal"))
        }
    assert reasons[enrolments[by_name["past"]].id] is None
    assert reasons[enrolments[by_name["missing"]].id] == {"reason": "no date"}
    assert reasons[enrolments[by_name["garbage"]].id] == {"reason": "no date"}
    harness.clock.set(datetime(2026, 3, 13, 7, 59, tzinfo=UTC))
    assert harness.tick().enrollments == 0
    harness.clock.set(datetime(2026, 3, 13, 8, 0, tzinfo=UTC))
    harness.tick()
    with harness.sessions() as s:
        reminded = set(
            s.scalars(select(ContactTag.contact_id).join(Tag).where(Tag.name == "reminded"))
        )
    assert reminded == set(by_name.values())


def test_a_send_node_with_its_own_sender_identity_sends_from_it(harness, settings, smtp_server):
    from emailkit import make_identity, make_template

    from automation.email.models import Message
    from automation.email.outbox import send_due
    from automation.email.sender import Sending
    from automation.email.transport import SmtpSettings, SmtpTransport
    from automation.signing import TokenSigner

    with harness.sessions() as s:
        brand = make_identity(s, name="Brand", from_email="hello@shop.example")
        founder = make_identity(
            s, name="Founder", from_name="Alex from Shop", from_email="alex@shop.example"
        )
        template = make_template(s, sender_identity_id=brand).template.id
        create_contact(s, ContactIn(email="zoe@example.com"), source="api")
        s.commit()
    wf = harness.publish(
        doc(
            [
                {"id": "brand", "type": "send_email", "template_id": template, "next": "personal"},
                {
                    "id": "personal",
                    "type": "send_email",
                    "template_id": template,
                    "sender_identity_id": founder,
                    "next": None,
                },
            ]
        )
    )
    harness.events({"name": "signed_up", "email": "zoe@example.com"})
    harness.tick()
    with harness.sessions() as s:
        rows = s.execute(select(Message.workflow_node_id, Message.sender_identity_id))
        queued = {node: identity for node, identity in rows}
    assert queued == {"brand": brand, "personal": founder}
    transport = SmtpTransport(SmtpSettings(smtp_server.host, smtp_server.port))
    try:
        signer = TokenSigner.from_settings(settings)
        send_due(harness.sessions, Sending(settings, transport, signer))
    finally:
        transport.close()
    senders = sorted(
        (r.sender, r.message["From"].addresses[0].display_name) for r in smtp_server.received
    )
    assert senders == [
        ("alex@shop.example", "Alex from Shop"),
        ("hello@shop.example", "Nurture Öutdoor"),
    ]
    assert len(harness.enrollments(wf)) == 1


def test_a_sender_identity_a_live_workflow_sends_from_stays_until_it_is_gone(harness):
    from emailkit import make_identity, make_template

    from automation.email.identities import delete_sender_identity
    from automation.email.models import Message, SenderIdentity
    from automation.errors import Conflict

    with harness.sessions() as s:
        founder = make_identity(s, name="Founder", from_email="alex@shop.example")
        template = make_template(s).template.id
        s.commit()
    node = {"id": "hi", "type": "send_email", "template_id": template, "next": None}
    wf = harness.publish(doc([{**node, "sender_identity_id": founder}], name="Onboarding"))
    with harness.sessions() as s:
        with pytest.raises(Conflict) as refused:
            delete_sender_identity(s, founder)
        assert "'Onboarding'" in str(refused.value)
        s.rollback()
        # Gone anyway (behind the application's back): the contacts go on without the
        # email, saying why, and the rest of the batch moves.
        s.execute(SenderIdentity.__table__.delete().where(SenderIdentity.id == founder))
        s.commit()
    harness.events(*[{"name": "signed_up", "email": f"i{n}@example.com"} for n in range(3)])
    assert harness.tick().enrollments == 3
    assert {e.status for e in harness.enrollments(wf)} == {EnrollmentStatus.COMPLETED}
    with harness.sessions() as s:
        assert s.scalars(select(Message.id)).all() == []
        skipped = {
            (detail or {}).get("skipped")
            for detail in s.scalars(
                select(EnrollmentStep.detail).where(EnrollmentStep.node_id == "hi")
            )
        }
    assert skipped == {f"sender identity {founder} no longer exists"}


def test_a_template_a_live_workflow_sends_cannot_be_deleted_and_if_gone_is_skipped(harness):
    from emailkit import make_template

    from automation.email.models import Message, Template
    from automation.email.templates import delete_template
    from automation.errors import Conflict

    with harness.sessions() as s:
        template = make_template(s, name="Welcome").template.id
        s.commit()
    node = {"id": "hi", "type": "send_email", "template_id": template, "next": None}
    wf = harness.publish(doc([node], name="Onboarding"))
    with harness.sessions() as s:
        with pytest.raises(Conflict) as refused:
            delete_template(s, template)
        assert str(refused.value) == (
            "template 'Welcome' is used by workflow 'Onboarding'; change those first"
        )
        s.rollback()
        # Archived anyway (behind the application's back): the email is skipped, saying why.
        s.execute(update(Template).where(Template.id == template).values(deleted_at=clock.now()))
        s.commit()
    harness.events({"name": "signed_up", "email": "t@example.com"})
    harness.tick()
    assert [e.status for e in harness.enrollments(wf)] == [EnrollmentStatus.COMPLETED]
    with harness.sessions() as s:
        assert s.scalars(select(Message.id)).all() == []
        (detail,) = s.scalars(select(EnrollmentStep.detail).where(EnrollmentStep.node_id == "hi"))
    assert detail == {"skipped": f"template {template} no longer exists"}
    with harness.sessions() as s:
        service.archive(s, wf)
        s.execute(update(Template).where(Template.id == template).values(deleted_at=None))
        delete_template(s, template)  # nothing live sends it now
        s.commit()


def test_update_node_removes_tags_from_its_contacts_only(harness):
    with harness.sessions() as s:
        for name in ("ana", "ben"):
            contact = ContactIn(email=f"{name}@example.com", tags=["trial", "newsletter"])
            create_contact(s, contact, source="api")
        s.commit()
    harness.publish(
        doc(
            [
                {
                    "id": "u",
                    "type": "update_contact",
                    # Spaces around a name, as typed in the editor: the same tag as
                    # add_tags (and the contacts API) would mean.
                    "remove_tags": [" trial ", "never-had-it"],
                    "add_tags": ["customer "],
                    "next": None,
                }
            ],
            trigger={"type": "event", "event": "order_completed"},
        )
    )
    harness.events({"name": "order_completed", "email": "ana@example.com"})
    harness.tick()
    with harness.sessions() as s:
        tags = {
            (email, name)
            for email, name in s.execute(
                select(Contact.email, Tag.name)
                .join(ContactTag, ContactTag.contact_id == Contact.id)
                .join(Tag, Tag.id == ContactTag.tag_id)
            )
        }
    assert tags == {
        ("ana@example.com", "newsletter"),
        ("ana@example.com", "customer"),
        ("ben@example.com", "trial"),
        ("ben@example.com", "newsletter"),
    }
