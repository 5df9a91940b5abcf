"""The two documented examples (docs/workflows.md), end to end: PostgreSQL, Redis, a real
Celery worker and beat, an SMTP server on loopback, and a clock file every process reads.
The lead nurture starts on real submissions of its lead form. Each contact receives
exactly the expected emails at the expected local times, across the US daylight-saving
change of 8 March 2026; a worker killed holding a batch plus a flushed Redis give the same
emails and the same final state, with no duplicates."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from conftest import REDIS_URL
from e2e_stack import build_stack, next_moment, unsent_messages
from emailkit import make_template, start_smtp
from sqlalchemy import func, select, update

from automation import clock
from automation.contacts.events import ingest_events
from automation.contacts.models import Contact, ContactTag, Tag
from automation.contacts.schema import ContactIn, ContactPatch
from automation.contacts.service import create_contact, update_contact
from automation.email.models import Message
from automation.forms.service import submit_form
from automation.runtime import use_runtime
from automation.workflows import service
from automation.workflows.examples import example, example_form
from automation.workflows.models import Enrollment, EnrollmentStatus
from automation.workflows.nodes import split_path

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]
STEP = timedelta(seconds=2)  # every step lands this long after the moment it is for


class _Crm(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def world(tmp_path, postgres_url):
    broker = redis.Redis.from_url(REDIS_URL)
    broker.flushdb()  # our own Redis database only
    smtp = start_smtp()
    _Crm.received = []
    crm = ThreadingHTTPServer(("127.0.0.1", 0), _Crm)
    threading.Thread(target=crm.serve_forever, daemon=True).start()
    stack = build_stack(
        tmp_path,
        postgres_url,
        REDIS_URL,
        datetime(2026, 3, 1, tzinfo=UTC),
        NURTURE_SMTP_HOST=smtp.host,
        NURTURE_SMTP_PORT=str(smtp.port),
        NURTURE_SMTP_TLS="none",
    )
    stack.pending_checks.append(unsent_messages)
    yield stack, smtp, f"http://127.0.0.1:{crm.server_address[1]}/crm"
    stack.stop()
    smtp.controller.stop()
    crm.shutdown()
    clock.set_source(None)
    use_runtime(None)
    broker.flushdb()


def publish(stack, document: dict[str, Any], templates: dict[int, int]) -> int:
    for node in document["nodes"]:
        if node["type"] == "send_email":
            node["template_id"] = templates[node["template_id"]]
    with stack.sessions() as s:
        workflow = service.import_workflow(s, document, publish_now=True)
        s.commit()
        return workflow.id


def templates(stack, numbers: range) -> dict[int, int]:
    """The example's template n becomes a real template whose subject starts "Tn "."""
    out = {}
    with stack.sessions() as s:
        for n in numbers:
            saved = make_template(
                s, name=f"Example {n}", subject=f"T{n} for {{{{ contact.email }}}}"
            )
            out[n] = saved.template.id
        s.commit()
    return out


def contacts(stack, **zones: str) -> dict[str, int]:
    with stack.sessions() as s:
        ids = {
            name: create_contact(
                s, ContactIn(email=f"{name}@example.com", time_zone=zone), source="api"
            ).id
            for name, zone in zones.items()
        }
        s.commit()
    return ids


def ingest(stack, *events: dict[str, Any]) -> None:
    with stack.sessions() as s:
        ingest_events(s, list(events), source="api")
        s.commit()


def drive(
    stack,
    until: datetime,
    interventions: list[tuple[datetime, Callable[[], None]]],
    *,
    crash: bool,
) -> None:
    """Step the clock from one due moment to the next (and to each intervention) until
    ``until``; with ``crash``, SIGKILL the worker holding the first big batch."""
    pending = sorted(interventions, key=lambda item: item[0])
    crashed = False
    while True:
        with stack.sessions() as s:
            due = next_moment(s, stack.now())
            backlog = (
                s.scalar(
                    select(func.count())
                    .select_from(Enrollment)
                    .where(
                        Enrollment.status == EnrollmentStatus.ACTIVE, Enrollment.next_run_at == due
                    )
                )
                if due
                else 0
            )
        if pending and (due is None or pending[0][0] <= due):
            moment, action = pending.pop(0)
            stack.set_time(moment)
            action()
            stack.settle()
            continue
        if due is None or due >= until:
            break
        stack.set_time(due + STEP)
        if crash and not crashed and (backlog or 0) >= 100:
            crashed = True
            stack.kill_mid_batch(REDIS_URL)
        stack.settle()
    assert crashed or not crash, "no batch was big enough to crash in"
    stack.set_time(until)
    stack.settle()


def mail_log(stack, smtp, document: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(recipient, send node, local time) of every email: each message row must be sent,
    and the SMTP server must have received exactly those emails, each once."""
    template_of = {
        n["id"]: n["template_id"] for n in document["nodes"] if n["type"] == "send_email"
    }
    with stack.sessions() as s:
        zones = dict(s.execute(select(Contact.email, Contact.time_zone)).all())
        rows = s.execute(
            select(Contact.email, Message.workflow_node_id, Message.sent_at, Message.status)
            .join(Contact, Contact.id == Message.contact_id)
            .order_by(Message.sent_at, Contact.email)
        ).all()
    log = []
    for email, node, at, status in rows:
        assert status.value == "sent", (email, node, status)
        zone = ZoneInfo(zones[email] if zones[email] != "UTC" else "America/New_York")
        log.append((email, node, at.astimezone(zone).strftime("%a %d %H:%M %Z")))
    received = sorted((r.recipients[0], r.message["Subject"].split()[0]) for r in smtp.received)
    assert received == sorted((email, f"T{template_of[node]}") for email, node, _ in log)
    return log


def final_state(stack) -> dict[str, Any]:
    with stack.sessions() as s:
        statuses = dict(
            s.execute(
                select(Contact.email, Enrollment.status).join(
                    Contact, Contact.id == Enrollment.contact_id
                )
            ).all()
        )
        tags = s.execute(
            select(Contact.email, Tag.name)
            .join(ContactTag, ContactTag.contact_id == Contact.id)
            .join(Tag, Tag.id == ContactTag.tag_id)
        ).all()
        scores = dict(s.execute(select(Contact.email, Contact.score)).all())
    return {
        "status": {k: v.value for k, v in statuses.items()},
        "tags": sorted(tags),
        "scores": scores,
    }


# --- abandoned cart -------------------------------------------------------------------

# Saturday 7 March 2026, 18:00 in New York (EST); US clocks go forward that night.
CART_T0 = datetime(2026, 3, 7, 23, 0, tzinfo=UTC)
CROWD = 150


def run_abandoned_cart(world, *, crash: bool) -> tuple[list[Any], dict[str, Any], dict[str, int]]:
    stack, smtp, _ = world
    ids = templates(stack, range(1, 5))
    people = contacts(
        stack,
        ny="America/New_York",
        paris="Europe/Paris",
        buyer="Europe/London",
        small="Asia/Tokyo",
        late="America/New_York",
        **{f"crowd{i:03d}": "America/New_York" for i in range(CROWD)},
    )
    publish(stack, example("abandoned_cart"), ids)
    stack.set_time(CART_T0)
    stack.start("worker")
    stack.start("beat")
    carts = [
        {
            "name": "cart_abandoned",
            "email": f"{who}@example.com",
            "properties": {"cart_total": total},
        }
        for who, total in [("ny", 50), ("paris", 35), ("buyer", 99), ("small", 10), ("late", 60)]
    ] + [
        {
            "name": "cart_abandoned",
            "email": f"crowd{i:03d}@example.com",
            "properties": {"cart_total": 25},
        }
        for i in range(CROWD)
    ]

    def ny_opens_the_reminder() -> None:  # what the tracking worker records for a human open
        with stack.sessions() as s:
            s.execute(
                update(Message)
                .where(Message.contact_id == people["ny"], Message.workflow_node_id == "reminder-1")
                .values(first_open_at=clock.now(), last_open_at=clock.now(), opens=1)
            )
            s.commit()

    drive(
        stack,
        CART_T0 + timedelta(days=4),
        [
            (CART_T0, lambda: ingest(stack, *carts)),
            (
                CART_T0 + timedelta(minutes=30),
                lambda: ingest(stack, {"name": "order_completed", "email": "buyer@example.com"}),
            ),
            (CART_T0 + timedelta(hours=5), ny_opens_the_reminder),
            (
                CART_T0 + timedelta(hours=13),
                lambda: ingest(stack, {"name": "order_completed", "email": "late@example.com"}),
            ),
        ],
        crash=crash,
    )
    return mail_log(stack, smtp, example("abandoned_cart")), final_state(stack), people


def expected_cart_mail(people: dict[str, int]) -> list[tuple[str, str, str]]:
    from automation.workflows.schema import SplitNode

    split = SplitNode.model_validate(
        next(n for n in example("abandoned_cart")["nodes"] if n["type"] == "split")
    )
    offer = {"discount": "offer-discount", "free-shipping": "offer-shipping"}[
        split_path(people["ny"], "offer-test", split)
    ]
    mail = [
        # an hour after the cart, Saturday 19:00 EST, outside quiet hours
        ("ny@example.com", "reminder-1", "Sat 07 19:00 EST"),
        ("late@example.com", "reminder-1", "Sat 07 19:00 EST"),
        # 01:00 in Paris is quiet: held until 08:00
        ("paris@example.com", "reminder-1", "Sun 08 08:00 CET"),
        # one calendar day later: 19:00 again, now EDT (23 hours later)
        ("ny@example.com", offer, "Sun 08 19:00 EDT"),
        ("paris@example.com", "reminder-2", "Mon 09 08:00 CET"),
    ]
    mail += [(f"crowd{i:03d}@example.com", "reminder-1", "Sat 07 19:00 EST") for i in range(CROWD)]
    mail += [(f"crowd{i:03d}@example.com", "reminder-2", "Sun 08 19:00 EDT") for i in range(CROWD)]
    return sorted(mail)


def submit_ebook_form(stack, people: list[str]) -> None:
    """Each of ``people`` submits the example's lead form, as its public endpoint does."""
    with stack.sessions() as s:
        form = example_form(s)
        for who in people:
            submit_form(s, form, {"email": f"{who}@example.com", "consent": "on"}, ip="203.0.113.7")
        s.commit()


def check_cart(result: tuple[list[Any], dict[str, Any], dict[str, int]]) -> None:
    log, state, people = result
    assert sorted(log) == expected_cart_mail(people)
    assert state["status"]["buyer@example.com"] == "converted"  # ordered: the goal
    assert state["status"]["late@example.com"] == "converted"
    assert "small@example.com" not in state["status"]  # a 10 cart does not enter
    assert state["status"]["ny@example.com"] == "completed"
    assert state["status"]["paris@example.com"] == "completed"
    tagged = {email for email, tag in state["tags"] if tag == "cart-recovery"}
    assert tagged == {"ny@example.com", "paris@example.com"} | {
        f"crowd{i:03d}@example.com" for i in range(CROWD)
    }


def test_abandoned_cart_end_to_end(world):
    check_cart(run_abandoned_cart(world, crash=False))


def test_abandoned_cart_survives_a_killed_worker_and_a_flushed_broker(world):
    check_cart(run_abandoned_cart(world, crash=True))


# --- lead nurture ---------------------------------------------------------------------

# Thursday 5 March 2026, 10:00 in New York (EST).
NURTURE_T0 = datetime(2026, 3, 5, 15, 0, tzinfo=UTC)


def run_lead_nurture(world, *, crash: bool) -> tuple[list[Any], dict[str, Any], dict[str, int]]:
    stack, smtp, crm_url = world
    ids = templates(stack, range(5, 8))
    people = contacts(
        stack,
        lead="America/New_York",
        reader="Europe/Paris",
        closer="UTC",  # zone unknown: the workflow's fallback, New York
        early="America/Los_Angeles",
        **{f"crowd{i:03d}": "Europe/Paris" for i in range(CROWD)},
    )
    with stack.sessions() as s:
        update_contact(s, people["lead"], ContactPatch(score=45), source="api")
        s.commit()
    with stack.sessions() as s:
        example_form(s)  # the lead form the example's trigger names ("ebook")
        s.commit()
    document = example("lead_nurture")
    for node in document["nodes"]:
        if node["type"] == "webhook":
            node["url"] = crm_url
    publish(stack, document, ids)
    stack.set_time(NURTURE_T0)
    stack.start("worker")
    stack.start("beat")
    readers = ["lead", "reader", "closer", "early", *[f"crowd{i:03d}" for i in range(CROWD)]]

    def closer_becomes_sql() -> None:
        with stack.sessions() as s:
            update_contact(s, people["closer"], ContactPatch(lifecycle_stage="sql"), source="api")
            s.commit()

    drive(
        stack,
        NURTURE_T0 + timedelta(days=16),
        [
            (NURTURE_T0, lambda: submit_ebook_form(stack, readers)),
            (NURTURE_T0 + timedelta(days=3), closer_becomes_sql),
        ],
        crash=crash,
    )
    return mail_log(stack, smtp, example("lead_nurture")), final_state(stack), people


def expected_nurture_mail() -> list[tuple[str, str, str]]:
    mail = [
        ("lead@example.com", "welcome", "Thu 05 10:00 EST"),
        # two days later is Saturday; the next weekday 09:00 is Monday, after the change
        ("lead@example.com", "case-study", "Mon 09 09:00 EDT"),
        ("closer@example.com", "welcome", "Thu 05 10:00 EST"),
        # 07:00 in Los Angeles is before the send window: held until 09:00
        ("early@example.com", "welcome", "Thu 05 09:00 PST"),
        ("early@example.com", "case-study", "Mon 09 09:00 PDT"),
        ("early@example.com", "last-chance", "Thu 12 09:00 PDT"),
    ]
    for who in ["reader", *[f"crowd{i:03d}" for i in range(CROWD)]]:
        mail += [
            (f"{who}@example.com", "welcome", "Thu 05 16:00 CET"),
            (f"{who}@example.com", "case-study", "Mon 09 09:00 CET"),
            (f"{who}@example.com", "last-chance", "Thu 12 09:00 CET"),
        ]
    return sorted(mail)


def check_nurture(result: tuple[list[Any], dict[str, Any], dict[str, int]], crm: list[Any]) -> None:
    log, state, _ = result
    assert sorted(log) == expected_nurture_mail()
    assert state["status"]["lead@example.com"] == "completed"
    assert state["status"]["closer@example.com"] == "converted"
    assert state["scores"]["lead@example.com"] == 55
    tags = {(email, tag) for email, tag in state["tags"]}
    assert ("lead@example.com", "sales-ready") in tags
    assert ("reader@example.com", "cold-lead") in tags and (
        "early@example.com",
        "cold-lead",
    ) in tags
    assert [c["contact"]["email"] for c in crm] == ["lead@example.com"]  # once, signed
    assert crm[0]["data"] == {"pipeline": "inbound"}


def test_lead_nurture_end_to_end(world):
    check_nurture(run_lead_nurture(world, crash=False), _Crm.received)


def test_lead_nurture_survives_a_killed_worker_and_a_flushed_broker(world):
    check_nurture(run_lead_nurture(world, crash=True), _Crm.received)
