"""End to end on PostgreSQL + Redis with a real Celery worker and beat, driven by a clock
file every process reads: contacts move through waits at their local times across a
daylight-saving change; a worker killed mid-batch and a flushed Redis change nothing;
fifty concurrent posts of one event make one enrolment."""

from __future__ import annotations

import json
import threading
import urllib.request
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis
from conftest import REDIS_URL, make_api_key
from e2e_stack import build_stack
from sqlalchemy import select
from workflows_support import doc

from automation import clock
from automation.contacts.events import ingest_events
from automation.contacts.models import Contact
from automation.contacts.schema import ContactIn
from automation.contacts.service import create_contact
from automation.runtime import use_runtime
from automation.workflows import service
from automation.workflows.models import Enrollment, EnrollmentStatus, EnrollmentStep

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

NEW_YORK = ZoneInfo("America/New_York")
# Thursday 5 March 2026, 22:00 in New York. US clocks go forward on Sunday 8 March.
START = datetime(2026, 3, 6, 3, 0, tzinfo=UTC)
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


@pytest.fixture
def stack(tmp_path, postgres_url):
    broker = redis.Redis.from_url(REDIS_URL)
    broker.flushdb()  # our own Redis database only
    built = build_stack(tmp_path, postgres_url, REDIS_URL, START)
    yield built
    built.stop()
    clock.set_source(None)
    use_runtime(None)
    broker.flushdb()


def _tagging_workflow() -> dict:
    """Tags stand in for emails: each step tags the contact, so the journal and the tags
    say when (in local time) each contact reached each step."""
    return doc(
        [
            {
                "id": "morning",
                "type": "wait",
                "mode": "time_of_day",
                "time": "09:00",
                "weekdays": WEEKDAYS,
                "next": "first",
            },
            {
                "id": "first",
                "type": "update_contact",
                "add_tags": ["first"],
                "score_change": 1,
                "next": "two-days",
            },
            {
                "id": "two-days",
                "type": "wait",
                "mode": "duration",
                "duration": {"days": 2},
                "next": "second",
            },
            {
                "id": "second",
                "type": "update_contact",
                "add_tags": ["second"],
                "score_change": 1,
                "next": "end",
            },
            {"id": "end", "type": "exit"},
        ],
        settings={"reentry": {"mode": "once"}},
    )


def _contacts(stack, count: int) -> list[int]:
    zones = ["America/New_York", "Europe/Paris", "Asia/Tokyo"]
    with stack.sessions() as s:
        ids = [
            create_contact(
                s, ContactIn(email=f"e2e{i}@example.com", time_zone=zones[i % 3]), source="api"
            ).id
            for i in range(count)
        ]
        s.commit()
    return ids


def _expected_moments(zone: str) -> tuple[datetime, datetime]:
    """When a contact of ``zone`` entering at START reaches 'first' and 'second'."""
    local = START.astimezone(ZoneInfo(zone))
    day = local.date()
    while True:  # the next weekday 09:00 at or after START
        moment = datetime(day.year, day.month, day.day, 9, 0, tzinfo=ZoneInfo(zone))
        if moment >= START and moment.strftime("%a").lower()[:3] in WEEKDAYS:
            break
        day += timedelta(days=1)
    second_day = moment.date() + timedelta(days=2)
    second = datetime(
        second_day.year, second_day.month, second_day.day, 9, 0, tzinfo=ZoneInfo(zone)
    )
    return moment.astimezone(UTC), second.astimezone(UTC)


def _run(stack, *, crash: bool) -> dict[int, list[tuple[str, datetime]]]:
    with stack.sessions() as s:
        workflow = service.create_workflow(s, _tagging_workflow())
        service.publish(s, workflow.id)
        s.commit()
    contacts = _contacts(stack, 300)
    stack.start("worker")
    stack.start("beat")
    with stack.sessions() as s:
        ingest_events(
            s,
            [{"name": "signed_up", "email": f"e2e{i}@example.com"} for i in range(300)],
            source="api",
        )
        s.commit()
    stack.settle()
    moments = sorted(
        {
            m
            for zone in ("America/New_York", "Europe/Paris", "Asia/Tokyo")
            for m in _expected_moments(zone)
        }
    )
    crashed = False
    for moment in moments:
        if crash and not crashed:
            stack.set_time(moment)  # a worker claims the due batch ...
            stack.kill_mid_batch(REDIS_URL)  # ... and is killed moving it
            crashed = True
        # The dead worker's batch was rolled back and is due again at once: the new
        # worker moves it within the same minute as the undisturbed run.
        stack.set_time(moment + timedelta(seconds=2))
        stack.settle()
    stack.set_time(moments[-1] + timedelta(days=1))
    stack.settle()
    with stack.sessions() as s:
        steps = s.execute(
            select(Enrollment.contact_id, EnrollmentStep.node_id, EnrollmentStep.entered_at)
            .join(Enrollment, Enrollment.id == EnrollmentStep.enrollment_id)
            .where(EnrollmentStep.node_id.in_(["first", "second"]))
            .order_by(EnrollmentStep.id)
        ).all()
        statuses = set(s.scalars(select(Enrollment.status)))
        scores = set(s.scalars(select(Contact.score)))
    assert statuses == {EnrollmentStatus.COMPLETED}
    assert scores == {2}
    out: dict[int, list[tuple[str, datetime]]] = {c: [] for c in contacts}
    for contact_id, node, at in steps:
        out[contact_id].append((node, at.replace(second=0, microsecond=0)))
    return out


def _check_local_times(result, stack) -> None:
    with stack.sessions() as s:
        zones = dict(s.execute(select(Contact.id, Contact.time_zone)).all())
    for contact_id, visits in result.items():
        first, second = _expected_moments(zones[contact_id])
        assert [node for node, _ in visits] == ["first", "second"], contact_id
        assert visits[0][1] == first and visits[1][1] == second, (zones[contact_id], visits)
        local = [at.astimezone(ZoneInfo(zones[contact_id])) for _, at in visits]
        assert [(t.hour, t.minute) for t in local] == [(9, 0), (9, 0)]


def test_waits_run_in_a_real_worker_and_beat_at_local_times_across_dst(stack):
    result = _run(stack, crash=False)
    _check_local_times(result, stack)
    new_yorker = next(
        c
        for c, v in result.items()
        if v[0][1].astimezone(NEW_YORK).utcoffset() == timedelta(hours=-5)
    )
    # Friday 09:00 EST is 14:00 UTC; two calendar days later is Sunday 09:00 EDT, 13:00 UTC.
    assert [at.hour for _, at in result[new_yorker]] == [14, 13]


def test_a_killed_worker_and_a_flushed_broker_change_nothing(stack):
    result = _run(stack, crash=True)
    _check_local_times(result, stack)  # the same moments as an undisturbed run, once each


def test_fifty_concurrent_posts_of_one_event_make_one_enrolment(stack):
    from web import create_app

    app = create_app(stack.settings, {"TESTING": True})
    stack.serve(app)
    token = make_api_key(app)
    with stack.sessions() as s:
        workflow = service.create_workflow(
            s,
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
                settings={"reentry": {"mode": "always"}},
            ),
        )
        service.publish(s, workflow.id)
        s.commit()
    body = json.dumps({"events": [{"name": "signed_up", "email": "crowd@example.com"}]}).encode()
    barrier = threading.Barrier(50)
    statuses: list[int] = []

    def post() -> None:
        request = urllib.request.Request(  # noqa: S310  # our own test server
            stack.base_url + "/api/v1/events",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        barrier.wait(10)
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310  # as above
            statuses.append(response.status)

    threads = [threading.Thread(target=post) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 50
    with stack.sessions() as s:
        assert s.scalar(select(Contact.id).where(Contact.email == "crowd@example.com")) is not None
        enrolments = s.scalars(
            select(Enrollment).where(Enrollment.workflow_id == workflow.id)
        ).all()
    assert len(enrolments) == 1
    app.extensions["nurture"].engine.dispose()
