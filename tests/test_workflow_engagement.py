"""Email engagement drives workflows only when a person engaged: opens and clicks come in
through the real tracking ingestion (``ingest_hits``), classified as tracking classifies
them. A human open starts an "email opened" trigger, ends a wait for ``email.opened`` and
meets an ``email.opened`` goal; an Apple Mail Privacy Protection prefetch or a security
gateway's scan is stored and reported, and does none of those."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from emailkit import make_contact, make_identity, make_template, mark_sent
from sqlalchemy import select
from workflows_support import doc

from automation import clock
from automation.contacts.models import Event
from automation.contacts.service import find_contact_by_email
from automation.email.models import SenderIdentity, TemplateVersion
from automation.email.outbox import queue_message
from automation.tracking.classify import HitClass
from automation.tracking.hits import Hit
from automation.tracking.ingest import IngestReport, ingest_hits
from automation.workflows.dry_run import dry_run
from automation.workflows.models import EnrollmentStatus

EXIT = {"id": "end", "type": "exit"}
HUMAN = {"ip": "203.0.113.9", "user_agent": "Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15"}
APPLE_MPP = {"ip": "17.58.1.2", "user_agent": "Mozilla/5.0"}  # Apple's 17.0.0.0/8 proxies
SAFE_LINKS = {"ip": "40.92.10.20", "user_agent": HUMAN["user_agent"]}  # Exchange Online


def template(harness: Any, name: str) -> int:
    with harness.sessions() as s:
        if not s.scalar(select(SenderIdentity.id)):
            make_identity(s)
        template_id = make_template(s, name=name, subject=f"{name}").template.id
        s.commit()
    return template_id


def sent(harness: Any, email: str, template_id: int) -> dict[str, int]:
    """A message of the template's latest version, delivered to ``email`` half an hour ago
    (so no hit on it is too soon after delivery to be a person's)."""
    with harness.sessions() as s:
        contact_id = _contact(s, email)
        version_id = s.scalar(
            select(TemplateVersion.id)
            .where(TemplateVersion.template_id == template_id)
            .order_by(TemplateVersion.number.desc())
        )
        message_id = queue_message(
            s,
            dedupe_key=f"test:{email}:{template_id}",
            contact_id=contact_id,
            template_version_id=version_id,
        )
        nonce = mark_sent(s, message_id, timedelta(minutes=30))
        s.commit()
    return {"id": message_id, "nonce": nonce & 0xFFFFFFFF, "version_id": version_id}


def _contact(session: Any, email: str) -> int:
    found = find_contact_by_email(session, email)
    return found.id if found is not None else make_contact(session, email)


def hit(message: dict[str, int], kind: str = "open", **who: str) -> Hit:
    return Hit(
        id=secrets.token_hex(8),
        kind=kind,
        message_id=message["id"],
        nonce=message["nonce"],
        template_version_id=message["version_id"],
        link_index=0 if kind == "click" else None,
        at=clock.now().timestamp(),
        ip=who["ip"],
        user_agent=who["user_agent"],
    )


def ingest(harness: Any, *hits: Hit) -> IngestReport:
    with harness.sessions() as s:
        report = ingest_hits(s, list(hits))
        s.commit()
    return report


def enrolled(harness: Any, workflow_id: int) -> set[int]:
    return {e.contact_id for e in harness.enrollments(workflow_id)}


def enrol_and_mail_two(harness: Any, template_id: int) -> tuple[dict[str, int], dict[str, int]]:
    """iphone@ and reader@ sign up (and enter the workflow), and an hour later each is
    sent ``template_id``: their two messages."""
    harness.events(
        {"name": "signed_up", "email": "iphone@example.com"},
        {"name": "signed_up", "email": "reader@example.com"},
    )
    harness.tick()
    harness.clock.advance(hours=1)
    return (
        sent(harness, "iphone@example.com", template_id),
        sent(harness, "reader@example.com", template_id),
    )


def test_a_human_open_or_click_starts_an_engagement_trigger_and_a_machine_one_does_not(harness):
    guide, other = template(harness, "Guide"), template(harness, "Other")
    opened = harness.publish(
        doc([EXIT], name="Opened the guide", trigger={"type": "email_opened", "template_id": guide})
    )
    clicked = harness.publish(
        doc([EXIT], name="Clicked any", trigger={"type": "email_clicked", "template_id": None})
    )
    reader = sent(harness, "reader@example.com", guide)
    iphone = sent(harness, "iphone@example.com", guide)
    elsewhere = sent(harness, "elsewhere@example.com", other)
    office = sent(harness, "office@example.com", other)
    report = ingest(
        harness,
        hit(reader, **HUMAN),
        hit(iphone, **APPLE_MPP),
        hit(elsewhere, **HUMAN),  # a person, but another template than the trigger's
        hit(office, "click", **SAFE_LINKS),
        hit(elsewhere, "click", **HUMAN),
    )
    assert (report.stored, report.human, report.machine) == (5, 3, 2)
    assert enrolled(harness, opened) == {harness.contact_id("reader@example.com")}
    assert enrolled(harness, clicked) == {harness.contact_id("elsewhere@example.com")}
    # The machine hits are still stored, classified, for reports.
    with harness.sessions() as s:
        machine = {
            e.properties["classification"]
            for e in s.scalars(select(Event).where(Event.name.like("email.%")))
            if e.properties["machine"]
        }
    assert machine == {HitClass.APPLE_MPP, HitClass.SCANNER}


WAIT_FOR_OPEN = {
    "id": "wait",
    "type": "wait",
    "mode": "event",
    "event": "email.opened",
    "timeout": {"days": 1},
    "happened": "read",
    "timed_out": "unread",
}


def test_a_machine_open_does_not_end_a_wait_for_an_open(harness):
    news = template(harness, "News")
    wf = harness.publish(
        doc(
            [
                WAIT_FOR_OPEN,
                {"id": "read", "type": "update_contact", "add_tags": ["read"], "next": None},
                {"id": "unread", "type": "update_contact", "add_tags": ["unread"], "next": None},
            ]
        )
    )
    iphone, reader = enrol_and_mail_two(harness, news)
    assert ingest(harness, hit(iphone, **APPLE_MPP), hit(reader, **HUMAN)).machine == 1
    waiting = {e.contact_id: e for e in harness.enrollments(wf)}
    iphone_id, reader_id = (harness.contact_id(f"{w}@example.com") for w in ("iphone", "reader"))
    assert waiting[reader_id].resume_exit == "happened"
    assert waiting[iphone_id].resume_exit is None
    assert waiting[iphone_id].waiting_event == "email.opened"
    harness.clock.advance(days=1, minutes=1)
    harness.tick()
    exits = {e.contact_id: harness.path(e.id)[0] for e in harness.enrollments(wf)}
    assert exits == {iphone_id: ("wait", "timed_out"), reader_id: ("wait", "happened")}


def test_a_machine_open_does_not_meet_an_open_goal(harness):
    news = template(harness, "News")
    wf = harness.publish(
        doc(
            [{"id": "w", "type": "wait", "mode": "duration", "duration": {"days": 1}}],
            settings={"goal": {"event": "email.opened"}},
        )
    )
    iphone, reader = enrol_and_mail_two(harness, news)
    ingest(harness, hit(iphone, **APPLE_MPP), hit(reader, **HUMAN))
    iphone_id, reader_id = (harness.contact_id(f"{w}@example.com") for w in ("iphone", "reader"))
    statuses = {e.contact_id: e.status for e in harness.enrollments(wf)}
    assert statuses == {iphone_id: EnrollmentStatus.ACTIVE, reader_id: EnrollmentStatus.CONVERTED}
    # The next tick checks the goal again from the events table: the prefetch is there,
    # and still does not count.
    harness.clock.advance(days=1, minutes=1)
    harness.tick()
    statuses = {e.contact_id: e.status for e in harness.enrollments(wf)}
    assert statuses == {
        iphone_id: EnrollmentStatus.COMPLETED,
        reader_id: EnrollmentStatus.CONVERTED,
    }


def test_the_dry_run_does_not_let_a_stored_machine_open_end_a_wait(harness):
    news = template(harness, "News")
    wf = harness.publish(
        doc(
            [
                WAIT_FOR_OPEN,
                {"id": "read", "type": "exit"},
                {"id": "unread", "type": "exit"},
            ]
        )
    )
    entered = clock.now()
    harness.clock.advance(hours=1)
    iphone = sent(harness, "iphone@example.com", news)
    reader = sent(harness, "reader@example.com", news)
    ingest(harness, hit(iphone, **APPLE_MPP), hit(reader, **HUMAN))
    exits = {}
    with harness.sessions() as s:
        for who in ("iphone", "reader"):
            run = dry_run(
                s, wf, harness.contact_id(f"{who}@example.com"), timeline=[], start_at=entered
            )
            exits[who] = (run.steps[0].node_id, run.steps[0].exit)
    assert exits == {"iphone": ("wait", "timed_out"), "reader": ("wait", "happened")}
