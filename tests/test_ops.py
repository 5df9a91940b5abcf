from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta

import emailkit
import pytest
from conftest import METRICS_AUTH
from prometheus_client.parser import text_string_to_metric_families

from automation import clock
from automation.leases import acquire_lease, run_exclusively
from automation.ops.logs import JsonFormatter, log_context


def test_lease_has_one_holder_until_it_expires(session):
    assert acquire_lease(session, "tick", "a", timedelta(seconds=10))
    assert not acquire_lease(session, "tick", "b", timedelta(seconds=10))
    assert acquire_lease(session, "tick", "a", timedelta(seconds=10))  # renewal
    session.commit()
    real = clock.now()
    clock.set_source(lambda: real + timedelta(seconds=11))
    try:
        assert acquire_lease(session, "tick", "b", timedelta(seconds=10))  # taken over
        assert not acquire_lease(session, "tick", "a", timedelta(seconds=10))
    finally:
        clock.set_source(None)


@pytest.mark.postgres
def test_racing_schedulers_run_a_singleton_job_once(postgres_url):
    from automation.db import make_engine, make_session_factory

    engine = make_engine(postgres_url, pool_size=10)
    sessions = make_session_factory(engine)
    ran: list[int] = []
    barrier = threading.Barrier(8)

    def scheduler(i: int) -> None:
        barrier.wait()
        # each thread is a different holder (a different scheduler host)
        from automation import leases

        with sessions() as s:
            won = leases.acquire_lease(s, "reconcile", f"host-{i}", timedelta(seconds=30))
            s.commit()
        if won:
            ran.append(i)

    threads = [threading.Thread(target=scheduler, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ran) == 1
    assert run_exclusively(sessions, "other", timedelta(seconds=5), lambda: "done") == "done"
    engine.dispose()


def test_a_singleton_job_is_free_for_the_next_worker_once_a_run_ends(settings):
    from automation.db import make_engine, make_session_factory
    from automation.leases import lease_holder

    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)

    def run(holder: str, work=lambda: "ran"):
        return run_exclusively(sessions, "drain", timedelta(minutes=2), work, holder=holder)

    def inside() -> str:
        assert run("worker-b") is None  # held while worker-a runs it
        return "ran"

    assert run("worker-a", inside) == "ran"
    # Worker A finished: worker B takes the next tick at once, not after the two minutes.
    assert run("worker-b") == "ran"
    with sessions() as s:
        assert lease_holder(s, "drain") is None
    engine.dispose()


def test_health_endpoints(client, settings):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    checks = {c["name"]: c for c in ready.json["checks"]}
    assert checks["database"]["ok"] is True
    assert checks["broker"]["ok"] is True  # the embedded broker needs no server
    # No SMTP server listens on the configured catcher port in this test.
    assert checks["smtp"]["ok"] is False
    assert ready.status_code == 503 and ready.json["status"] == "not ready"


def test_metrics_exposes_database_gauges(client, api):
    api.post("/contacts", {"email": "m@example.com"})
    body = client.get("/metrics", headers=METRICS_AUTH).get_data(as_text=True)
    assert 'nurture_contacts{status="subscribed"} 1.0' in body
    assert "nurture_messages_total" in body


smtp_server = emailkit.smtp_server


def _scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = client.get("/metrics", headers=METRICS_AUTH).get_data(as_text=True)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def _value(scraped, name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_real_sends_render_errors_batches_and_lag(app, client, smtp_server):
    from emailkit import make_contact, make_template
    from sqlalchemy import update
    from workflows_support import doc

    from automation.contacts.events import ingest_events
    from automation.contacts.models import Contact
    from automation.email.outbox import queue_message, send_due
    from automation.email.sender import Sending
    from automation.email.transport import SmtpSettings, SmtpTransport
    from automation.signing import TokenSigner
    from automation.workflows import service
    from automation.workflows.engine import run_due

    sessions = app.extensions["nurture"].sessions
    settings = app.extensions["nurture"].settings
    start = clock.now()
    clock.set_source(lambda: start)
    try:
        with sessions() as s:
            version = make_template(s).version.id
            ok = make_contact(s, "ok@example.com")
            huge = make_contact(s, "huge@example.com")
            # Data that makes the render fail (larger than the render limit).
            s.execute(
                update(Contact).where(Contact.id == huge).values(attributes={"plan": "x" * 10**6})
            )
            for contact_id in (ok, huge):
                queue_message(
                    s,
                    dedupe_key=f"m{contact_id}",
                    contact_id=contact_id,
                    template_version_id=version,
                )
            workflow = service.create_workflow(
                s, doc([{"id": "tag", "type": "update_contact", "add_tags": ["seen"]}])
            )
            service.publish(s, workflow.id)
            ingest_events(s, [{"name": "signed_up", "email": "ok@example.com"}], source="api")
            s.commit()
        clock.set_source(lambda: start + timedelta(seconds=90))
        before = _scrape(client)
        # Nothing has run yet: both the message and the enrolment wait 90 s.
        assert _value(before, "nurture_tick_lag_seconds", queue="outbox") == 90.0
        assert _value(before, "nurture_tick_lag_seconds", queue="workflow") == 90.0
        assert _value(before, "nurture_outbox_messages", status="queued") == 2.0

        run_due(sessions)
        transport = SmtpTransport(SmtpSettings(smtp_server.host, smtp_server.port))
        send_due(sessions, Sending(settings, transport, TokenSigner.from_settings(settings)))
        transport.close()
        after = _scrape(client)
    finally:
        clock.set_source(None)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert len(smtp_server.received) == 1
    assert grew("nurture_messages_total", status="sent") == 1
    assert grew("nurture_messages_total", status="failed") == 1
    assert grew("nurture_render_errors_total") == 1
    assert grew("nurture_batch_size_count", job="send") == 1
    assert grew("nurture_batch_size_sum", job="send") == 2
    assert grew("nurture_batch_size_count", job="workflow") == 1
    assert grew("nurture_batch_seconds_count", job="workflow") == 1
    assert _value(after, "nurture_tick_lag_seconds", queue="outbox") == 0.0
    assert _value(after, "nurture_tick_lag_seconds", queue="workflow") == 0.0
    assert _value(after, "nurture_outbox_messages", status="queued") == 0.0
    assert ("nurture_queue_depth", (("queue", "hits"),)) in after


def test_readiness_reports_tick_lag_and_outbox(app, client):
    from emailkit import make_contact, make_template

    from automation.email.outbox import queue_message

    sessions = app.extensions["nurture"].sessions
    start = clock.now()
    clock.set_source(lambda: start)
    try:
        with sessions() as s:
            contact = make_contact(s, "late@example.com")
            version = make_template(s).version.id
            queue_message(s, dedupe_key="late", contact_id=contact, template_version_id=version)
            s.commit()
        clock.set_source(lambda: start + timedelta(hours=1))
        checks = {c["name"]: c for c in client.get("/readyz").json["checks"]}
    finally:
        clock.set_source(None)
    assert checks["tick_lag"]["ok"] is False
    assert "outbox 3600 s behind" in checks["tick_lag"]["detail"]
    assert checks["outbox"]["detail"].startswith("1 queued, 0 deferred, 0 sending, 0 unknown")


def test_metrics_token_is_enforced(tmp_path, sqlite_url):
    from conftest import make_settings

    from web import create_app

    app = create_app(make_settings(tmp_path, sqlite_url, NURTURE_METRICS_TOKEN="s3cret"))
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_json_logs_carry_context_ids():
    record = logging.LogRecord("nurture", logging.INFO, __file__, 1, "sent %s", ("ok",), None)
    with log_context(message_id=42, contact_id=7):
        line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "sent ok" and line["message_id"] == 42 and line["contact_id"] == 7


def test_doctor_reports_weak_key_and_bad_base_url(tmp_path, sqlite_url):
    from conftest import make_settings

    from automation.ops.doctor import diagnose
    from automation.runtime import build_runtime

    settings = make_settings(
        tmp_path, sqlite_url, NURTURE_SECRET_KEY="short", NURTURE_BASE_URL="ftp://x"
    )
    findings = {f.topic: f for f in diagnose(build_runtime(settings))}
    assert findings["secret key"].level == "error"
    assert findings["base URL"].level == "error"
    assert findings["migrations"].level == "error"  # created by create_all, not migrated


def test_doctor_command_exit_code(tmp_path, sqlite_url):
    from click.testing import CliRunner
    from conftest import make_settings

    from automation.cli import main
    from automation.runtime import build_runtime, use_runtime

    use_runtime(build_runtime(make_settings(tmp_path, sqlite_url, NURTURE_SECRET_KEY="short")))
    try:
        result = CliRunner().invoke(main, ["doctor"])
    finally:
        use_runtime(None)
    assert result.exit_code == 1
    assert "✗ secret key: NURTURE_SECRET_KEY is too weak" in result.output
