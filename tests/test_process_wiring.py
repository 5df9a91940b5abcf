"""How processes are wired: each app runs on the runtime built from the settings it is
given, the worker registers every task the producers queue by name, and the beat schedule
takes its periods from the settings."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import make_settings

import automation.runtime
from automation.config import load_settings
from automation.queueing import TASK_QUEUES, beat_schedule, make_celery
from automation.runtime import use_runtime
from automation.tracking.hits import Hit, SpoolHitQueue

ROOT = Path(__file__).resolve().parent.parent


def _run_python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter started in ``cwd``, with no NURTURE_* variable but
    ``env`` (so a default ``var/`` would land in ``cwd``)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_importing_web_and_creating_apps_builds_no_runtime_from_the_environment(tmp_path):
    own = tmp_path / "own"
    code = f"""
        import pkgutil, sys, importlib
        import web
        for module in pkgutil.walk_packages(web.__path__, "web."):
            if module.name != "web.wsgi":  # gunicorn's entry point: create_app() from the env
                importlib.import_module(module.name)
        from automation.config import load_settings
        from web import create_app, create_tracking_app
        settings = load_settings({{
            "NURTURE_VAR_DIR": {str(own)!r},
            "NURTURE_SECRET_KEY": "wiring-test-" + "x" * 40,
        }})
        app = create_app(settings)
        tracking_app = create_tracking_app(settings)
        assert app.extensions["nurture"].settings is settings
        assert tracking_app.extensions["nurture"].settings is settings
        import automation.runtime
        assert automation.runtime._current is None, "a process-global runtime was built"
        assert "automation.tasks" not in sys.modules, "the web imported the worker module"
        print("ok")
    """
    result = _run_python(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert not (tmp_path / "var").exists()  # no default var/, no secret key written there
    assert sorted(p.name for p in tmp_path.iterdir()) == ["own"]


def test_the_worker_registers_every_task_producers_queue_by_name(tmp_path):
    code = """
        from automation.queueing import TASK_QUEUES
        from automation.tasks import celery_app
        registered = {name for name in celery_app.tasks if not name.startswith("celery.")}
        assert registered == set(TASK_QUEUES), registered ^ set(TASK_QUEUES)
        scheduled = {entry["task"] for entry in celery_app.conf.beat_schedule.values()}
        assert scheduled <= registered, scheduled - registered
        print("ok")
    """
    result = _run_python(code, cwd=tmp_path, NURTURE_VAR_DIR=str(tmp_path / "var"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_beat_schedule_defaults_are_the_periods_beat_always_had(tmp_path):
    settings = load_settings({"NURTURE_VAR_DIR": str(tmp_path), "NURTURE_SECRET_KEY": "k" * 48})
    periods = {name: entry["schedule"] for name, entry in beat_schedule(settings).items()}
    assert periods == {
        "segments.reconcile": 600.0,
        "email.send_due": 5.0,
        "email.expire_leases": 30.0,
        "workflows-tick": 2.0,
        "workflows-scan-dates": 60.0,
        "campaigns.tick": 10.0,
        "tracking.drain_hits": 2.0,
        "tracking.drain_site": 2.0,
        "tracking.sunset": 3600.0,
        "tracking.expire_anonymous": 86400.0,
        "contacts.sweep_import_jobs": 60.0,
    }
    expires = {
        name: entry["options"].get("expires") for name, entry in beat_schedule(settings).items()
    }
    assert expires["email.send_due"] == 10
    assert expires["workflows-tick"] == 10
    assert expires["workflows-scan-dates"] == 60.0
    assert expires["campaigns.tick"] == 20


def test_beat_periods_come_from_the_settings(tmp_path):
    settings = load_settings(
        {
            "NURTURE_VAR_DIR": str(tmp_path),
            "NURTURE_SECRET_KEY": "k" * 48,
            "NURTURE_WORKFLOW_TICK_SECONDS": "7",
            "NURTURE_LEASE_EXPIRY_SECONDS": "45",
            "NURTURE_WORKFLOW_DATE_SCAN_SECONDS": "120",
        }
    )
    schedule = make_celery(settings).conf.beat_schedule
    assert schedule["workflows-tick"]["schedule"] == 7.0
    assert schedule["workflows-tick"]["options"] == {"queue": "engine", "expires": 35.0}
    assert schedule["email.expire_leases"]["schedule"] == 45.0
    assert schedule["workflows-scan-dates"]["schedule"] == 120.0
    assert all(
        entry["options"]["queue"] == TASK_QUEUES[entry["task"]] for entry in schedule.values()
    )


def test_readyz_checks_the_apps_own_spool_without_a_process_runtime(tmp_path, sqlite_url):
    from web import create_app

    use_runtime(None)
    settings = make_settings(tmp_path, sqlite_url, NURTURE_HIT_QUEUE_URL="redis://127.0.0.1:1/0")
    spool = SpoolHitQueue(settings.var_dir / "hits")
    ten_minutes_ago = time.time_ns() - 600 * 10**9
    old = Hit("old", "open", 1, 2, 3, None, time.time(), "10.0.0.1", "Mozilla/5.0")
    (spool.directory / f"batch-{ten_minutes_ago:020d}.spool").write_bytes(
        b"\n" + old.encode() + b"\n"
    )
    app = create_app(settings, {"TESTING": True})
    try:
        checks = {c["name"]: c for c in app.test_client().get("/readyz").get_json()["checks"]}
        assert not checks["hit_spool"]["ok"]
        assert automation.runtime._current is None  # readiness never built one
    finally:
        app.extensions["nurture"].engine.dispose()
