"""An import job never stays ``running`` for ever: a crash inside its task or a worker that
dies under it leaves it ``failed`` with its reason, and the job page stops polling."""

from __future__ import annotations

import io
import os
import signal
import time
from typing import Any

import pytest
from conftest import REDIS_URL, ApiClient, login, make_api_key, make_settings, start_worker
from sqlalchemy import text

from automation.accounts.models import Role
from automation.accounts.service import create_user
from automation.contacts.jobs import run_import_job
from automation.db import make_engine, make_session_factory

pytestmark = [pytest.mark.postgres]


def _app(tmp_path: Any, postgres_url: str, **env: str) -> Any:
    from web import create_app

    return create_app(make_settings(tmp_path, postgres_url, **env), {"TESTING": True})


def _upload(api: ApiClient, rows: int) -> int:
    body = "Email,First Name\n" + "".join(f"p{i}@example.com,P{i}\n" for i in range(rows))
    response = api.client.post(
        "/api/v1/imports",
        headers=api._headers(),
        data={"file": (io.BytesIO(body.encode()), "people.csv"), "permission": "consent"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    return int(response.json["id"])


def _job_page(app: Any, job_id: int) -> tuple[dict[str, Any], str]:
    with app.extensions["nurture"].sessions() as s:
        create_user(s, "viewer@example.com", "a long password 1", role=Role.VIEWER)
        s.commit()
    client = app.test_client()
    login(client, "viewer@example.com", "a long password 1")
    progress = client.get(f"/contacts/import/{job_id}/progress").get_json()
    return progress, client.get(f"/contacts/import/{job_id}").get_data(as_text=True)


def test_an_import_whose_task_crashes_becomes_failed_with_its_reason(tmp_path, postgres_url):
    app = _app(tmp_path, postgres_url)
    api = ApiClient(app.test_client(), make_api_key(app), app)
    job_id = _upload(api, 3)
    # The database refuses the worker's writes (a lock it may not wait for): the task
    # meets an error no import code expects.
    impatient = make_engine(postgres_url, connect_args={"options": "-c lock_timeout=200"})
    locker = make_engine(postgres_url)
    try:
        with locker.connect() as conn, conn.begin():
            conn.execute(text("LOCK TABLE contacts IN EXCLUSIVE MODE"))
            run_import_job(make_session_factory(impatient), job_id)
        job = api.get(f"/imports/{job_id}").json
        assert job["status"] == "failed"
        assert "internal error" in job["error"]
        assert api.get("/contacts").json["total"] == 0
        progress, page = _job_page(app, job_id)
        assert progress["status"] == "failed" and progress["finished"] is True
        assert 'data-poll="false"' in page and "internal error" in page
        # A redelivered task finds it failed and leaves it so.
        run_import_job(app.extensions["nurture"].sessions, job_id)
        assert api.get(f"/imports/{job_id}").json["status"] == "failed"
    finally:
        impatient.dispose()
        locker.dispose()
        app.extensions["nurture"].engine.dispose()


@pytest.mark.redis
@pytest.mark.slow
def test_a_job_whose_worker_is_killed_is_failed_by_the_sweep(tmp_path, postgres_url):
    import redis

    redis.Redis.from_url(REDIS_URL).delete("engine")
    env = {"NURTURE_BROKER_URL": REDIS_URL}
    app = _app(tmp_path, postgres_url, **env)
    settings = app.extensions["nurture"].settings
    api = ApiClient(app.test_client(), make_api_key(app), app)
    worker = start_worker(settings, REDIS_URL)
    sweeper = None
    try:
        job_id = _upload(api, 400_000)
        deadline = time.monotonic() + 120
        while api.get(f"/imports/{job_id}").json["rows_done"] == 0:
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            time.sleep(0.2)
        os.kill(worker.pid, signal.SIGKILL)  # mid-import: the job is left running
        worker.wait(20)
        assert api.get(f"/imports/{job_id}").json["status"] == "running"
        sweeper = start_worker(
            settings,
            REDIS_URL,
            beat=True,
            env={"NURTURE_IMPORT_SWEEP_SECONDS": "1", "NURTURE_IMPORT_STALE_SECONDS": "2"},
        )
        deadline = time.monotonic() + 90
        while (job := api.get(f"/imports/{job_id}").json)["status"] == "running":
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.5)
        assert job["status"] == "failed"
        assert "stopped" in job["error"] and "no progress" in job["error"]
        assert 0 < job["rows_done"] < 400_000
        progress, page = _job_page(app, job_id)
        assert progress["finished"] is True and 'data-poll="false"' in page
    finally:
        for process in (worker, sweeper):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(20)
        app.extensions["nurture"].engine.dispose()
