from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta

import pytest

from automation import clock
from automation.ops.leases import acquire_lease, run_exclusively
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
        from automation.ops import leases

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
    body = client.get("/metrics").get_data(as_text=True)
    assert 'nurture_contacts{status="subscribed"} 1.0' in body
    assert "nurture_messages_total" in body


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
