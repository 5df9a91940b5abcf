"""A real Celery worker runs an uploaded import: on Redis + PostgreSQL (production shape)
and on the embedded broker + SQLite (the no-servers default)."""

from __future__ import annotations

import io
import time

import pytest
from conftest import REDIS_URL, make_settings, start_worker


def _upload_and_wait(tmp_path, db_url: str, broker_url: str) -> dict:
    from conftest import ApiClient, make_api_key

    from web import create_app

    settings = make_settings(tmp_path, db_url, NURTURE_BROKER_URL=broker_url)
    app = create_app(settings, {"TESTING": True})
    api = ApiClient(app.test_client(), make_api_key(app), app)
    rows = "".join(f"w{i}@example.com,W{i}\n" for i in range(1500))
    worker = start_worker(settings, broker_url)
    try:
        response = api.client.post(
            "/api/v1/imports",
            headers=api._headers(),
            data={
                "file": (io.BytesIO(("Email,First Name\n" + rows).encode()), "w.csv"),
                "permission": "consent",
            },
            content_type="multipart/form-data",
        )
        assert response.status_code == 202
        job_id = response.json["id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = api.get(f"/imports/{job_id}").json
            if job["status"] in ("done", "failed"):
                return job
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            time.sleep(0.3)
        raise AssertionError("no import in 60 s:\n" + (tmp_path / "worker.log").read_text())
    finally:
        worker.terminate()
        worker.wait(20)
        app.extensions["nurture"].engine.dispose()


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_worker_imports_over_redis_and_postgres(tmp_path, postgres_url):
    import redis

    redis.Redis.from_url(REDIS_URL).delete("engine")  # a stale queue from an earlier run
    job = _upload_and_wait(tmp_path, postgres_url, REDIS_URL)
    assert job["status"] == "done" and job["report"]["created"] == 1500


@pytest.mark.slow
def test_worker_imports_on_the_embedded_broker(tmp_path, sqlite_url):
    job = _upload_and_wait(tmp_path, sqlite_url, f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}")
    assert job["status"] == "done" and job["report"]["created"] == 1500
