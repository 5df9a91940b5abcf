"""Workflow engine throughput on PostgreSQL, each figure beside a hand-written set-based
SQL floor measured in the same run.

1. Advancement: N enrolments waiting at "wait 1 day" become due; real Celery workers
   (Redis broker, one per core) move them wait → branch (score ≥ 50) → update contact
   (tag, score) → exit. Prints enrolments/s and contact-steps per Celery task. Floor: the
   same claim, journal, branch, update and finish as raw SQL, batch by batch, in as many
   processes.
2. Ingestion: events posted to the batch API (POST /api/v1/events, 1,000 per request)
   while 50 workflows with event triggers (a property condition each) are active.
   Floor: the same events inserted and matched to triggers by raw SQL.

    .venv/bin/python bench/workflows.py --url postgresql+psycopg://root@127.0.0.1:5432/db
    .venv/bin/python bench/workflows.py --smoke --url ...      # seconds, for CI
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from sqlalchemy import func, insert, select, text  # noqa: E402

from automation import clock, wiring  # noqa: E402
from automation.clock import write_clock_file  # noqa: E402
from automation.contacts.models import Contact, CustomField, FieldType  # noqa: E402
from automation.db import Base, make_engine, make_session_factory  # noqa: E402
from automation.workflows import service  # noqa: E402
from automation.workflows.engine import run_due  # noqa: E402
from automation.workflows.enrolment import active_graphs, enroll_query  # noqa: E402
from automation.workflows.models import Enrollment, EnrollmentStatus, EnrollmentStep  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
DEFAULT_REDIS = os.environ.get("NURTURE_TEST_REDIS_URL", "redis://127.0.0.1:6379/6")
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
WORKERS = 2  # Celery workers / client processes, one per core; --workers changes it
# Fresh interpreters: a forked child would inherit the parent's broker and database
# connections (kombu's after-fork clean-up even blocks on them).
SPAWN = multiprocessing.get_context("spawn")

ADVANCE_WORKFLOW = {
    "name": "Bench: wait, branch, update, exit",
    "trigger": {"type": "manual"},
    "start": "wait",
    "nodes": [
        {"id": "wait", "type": "wait", "mode": "duration", "duration": {"days": 1}, "next": "hot"},
        {
            "id": "hot",
            "type": "branch",
            "condition": {
                "conditions": [{"field": "score", "operator": "greater_or_equal", "value": 50}]
            },
            "yes": "promote",
            "no": "end",
        },
        {
            "id": "promote",
            "type": "update_contact",
            "add_tags": ["hot"],
            "score_change": 5,
            "next": "end",
        },
        {"id": "end", "type": "exit"},
    ],
    "settings": {"reentry": {"mode": "always"}},
}


def reset(engine: Any) -> None:
    Base.metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    Base.metadata.create_all(engine)


def make_contacts(sessions: Any, count: int) -> None:
    now = T0 - timedelta(days=30)
    zones = ["Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC"]
    with sessions() as s:
        for start in range(0, count, 5000):
            s.execute(
                insert(Contact),
                [
                    {
                        "email": f"bench{i}@example.com",
                        "time_zone": zones[i % 4],
                        "score": i % 100,
                        "attributes": {"plan": ["free", "pro"][i % 2]},
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in range(start, min(start + 5000, count))
                ],
            )
        s.commit()


# --- 1. advancement -------------------------------------------------------------------


def park_enrolments(sessions: Any, count: int) -> int:
    """Everyone enrolled and waiting at "wait 1 day" (the engine puts them there)."""
    clock.set_source(lambda: T0)
    with sessions() as s:
        workflow = service.create_workflow(s, ADVANCE_WORKFLOW)
        service.publish(s, workflow.id)
        s.commit()
        graph = active_graphs(s, workflow_ids=[workflow.id])[0]
        enroll_query(s, graph, select(Contact.id), T0, {"trigger": {"type": "bench"}})
        s.commit()
    while run_due(sessions, budget_seconds=600).enrollments:
        pass
    with sessions() as s:
        waiting = s.scalar(
            select(func.count()).where(
                Enrollment.current_node == "wait", Enrollment.waiting_since.is_not(None)
            )
        )
    assert waiting == count, (waiting, count)
    return workflow.id


def run_celery_advancement(url: str, broker: str, tmp: Path, count: int) -> tuple[float, list[int]]:
    clock_file = tmp / "clock"
    write_clock_file(clock_file, T0 + timedelta(days=1))
    env = {
        **os.environ,
        "NURTURE_DATABASE_URL": url,
        "NURTURE_BROKER_URL": broker,
        "NURTURE_VAR_DIR": str(tmp / "var"),
        "NURTURE_SECRET_KEY": "bench-secret-" + "x" * 32,
        "NURTURE_CLOCK_FILE": str(clock_file),
    }
    redis.Redis.from_url(broker).flushdb()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "automation.tasks",
                "worker",
                "-Q",
                "engine",
                "--pool",
                "solo",
                "--loglevel",
                "INFO",
                "-n",
                f"bench{i}-{os.getpid()}@localhost",
            ],
            env=env,
            stdout=(tmp / f"worker{i}.log").open("wb"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        for i in range(WORKERS)
    ]
    try:
        from automation.config import load_settings
        from automation.queueing import make_celery

        celery = make_celery(load_settings(env))
        celery.set_default()
        ready = time.monotonic() + 60
        while time.monotonic() < ready:  # both workers connected
            replies = celery.control.ping(timeout=0.5) or []
            if len(replies) >= WORKERS:
                break
        engine = make_engine(url)
        started = time.perf_counter()
        for _ in range(WORKERS):
            celery.send_task("workflows.tick", queue="engine")
        while True:
            with engine.connect() as conn:
                left = conn.scalar(
                    select(func.count())
                    .select_from(Enrollment)
                    .where(Enrollment.status == EnrollmentStatus.ACTIVE)
                )
            if not left:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        engine.dispose()
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(30)
    steps = []
    for i in range(WORKERS):
        log = (tmp / f"worker{i}.log").read_text()
        for match in re.finditer(r"succeeded in ([0-9.]+)s: .*?'steps': (\d+)", log):
            if int(match.group(2)):
                steps.append((float(match.group(1)), int(match.group(2))))
    return elapsed, steps


FLOOR_BATCH = """
WITH claimed AS (
    SELECT id, contact_id, workflow_version_id, waiting_since FROM enrollments
    WHERE status = 'active' AND next_run_at <= :now
    ORDER BY next_run_at LIMIT 1000 FOR UPDATE SKIP LOCKED
), judged AS (
    SELECT c.id, c.contact_id, c.workflow_version_id, c.waiting_since, (k.score >= 50) AS hot
    FROM claimed c JOIN contacts k ON k.id = c.contact_id
), promoted AS (
    UPDATE contacts SET score = score + 5, updated_at = :now
    WHERE id IN (SELECT contact_id FROM judged WHERE hot)
), tagged AS (
    INSERT INTO contact_tags (contact_id, tag_id, added_at)
    SELECT contact_id, :tag, :now FROM judged WHERE hot
    ON CONFLICT DO NOTHING
), journal AS (
    INSERT INTO enrollment_steps
        (enrollment_id, workflow_version_id, node_id, entered_at, left_at, exit)
    SELECT id, workflow_version_id, 'wait', waiting_since, :now, 'next' FROM judged
    UNION ALL SELECT id, workflow_version_id, 'hot', :now, :now,
                     CASE WHEN hot THEN 'yes' ELSE 'no' END
    FROM judged
    UNION ALL SELECT id, workflow_version_id, 'promote', :now, :now, 'next' FROM judged WHERE hot
    UNION ALL SELECT id, workflow_version_id, 'end', :now, :now, 'exit' FROM judged
)
UPDATE enrollments SET status = 'completed', current_node = 'end', waiting_since = NULL,
    next_run_at = NULL, finished_at = :now
WHERE id IN (SELECT id FROM claimed)
"""


def _floor_worker(url: str, tag_id: int, ready: Any, go: Any, queue: Any) -> None:
    engine = make_engine(url)
    now = (T0 + timedelta(days=1)).replace(tzinfo=None)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        ready.release()
        go.wait()
        moved = 0
        while True:
            result = conn.execute(text(FLOOR_BATCH), {"now": now, "tag": tag_id})
            conn.commit()
            if result.rowcount == 0:
                break
            moved += result.rowcount
    queue.put(moved)
    engine.dispose()


def run_floor_advancement(url: str) -> float:
    engine = make_engine(url)
    with engine.begin() as conn:
        tag_id = conn.scalar(
            text(
                "INSERT INTO tags (name, created_at) VALUES ('hot', now()) "
                "ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id"
            )
        )
    engine.dispose()
    elapsed, _ = _in_parallel(_floor_worker, [(url, tag_id) for _ in range(WORKERS)])
    return elapsed


def analyze(url: str) -> None:
    engine = make_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()


def save_parked(url: str) -> None:
    with make_engine(url).begin() as conn:
        for table in ("enrollments", "enrollment_steps", "contacts", "contact_tags"):
            conn.execute(text(f"DROP TABLE IF EXISTS bench_saved_{table}"))
            conn.execute(text(f"CREATE TABLE bench_saved_{table} AS SELECT * FROM {table}"))


def restore_parked(url: str) -> None:
    with make_engine(url).begin() as conn:
        conn.execute(text("TRUNCATE enrollment_steps, enrollments, contact_tags"))
        conn.execute(text("DELETE FROM contacts"))
        for table in ("contacts", "enrollments", "enrollment_steps", "contact_tags"):
            conn.execute(text(f"INSERT INTO {table} SELECT * FROM bench_saved_{table}"))
            conn.execute(text(f"DROP TABLE bench_saved_{table}"))
        conn.execute(text("ANALYZE"))


# --- 2. ingestion ---------------------------------------------------------------------


def ingestion_workflows(sessions: Any, count: int) -> None:
    clock.set_source(lambda: T0)
    with sessions() as s:
        for i in range(count):
            document = {
                "name": f"Bench trigger {i}",
                "trigger": {
                    "type": "event",
                    "event": f"evt_{i}",
                    "where": [{"property": "total", "operator": "greater_than", "value": 10}],
                },
                "start": "wait",
                "nodes": [
                    {
                        "id": "wait",
                        "type": "wait",
                        "mode": "duration",
                        "duration": {"days": 1},
                        "next": None,
                    }
                ],
                "settings": {"reentry": {"mode": "always"}},
            }
            workflow = service.create_workflow(s, document)
            service.publish(s, workflow.id)
        s.commit()


def event_batches(total: int, contacts: int, seed: int) -> list[list[dict[str, Any]]]:
    out = []
    for start in range(0, total, 1000):
        batch = []
        for i in range(start, min(start + 1000, total)):
            n = i * 7919 + seed
            batch.append(
                {
                    # half the events hit one of the 50 triggers, half are other behaviour
                    "name": f"evt_{n % 100}",
                    "email": f"bench{n % contacts}@example.com",
                    "properties": {"total": n % 40, "sku": f"sku-{n % 13}"},
                }
            )
        out.append(batch)
    return out


def _post_worker(
    url: str, total: int, contacts: int, seed: int, ready: Any, go: Any, queue: Any
) -> None:
    from web import create_app

    tmp = tempfile.mkdtemp()
    from automation.config import load_settings

    settings = load_settings(
        {
            "NURTURE_DATABASE_URL": url,
            "NURTURE_VAR_DIR": tmp,
            "NURTURE_SECRET_KEY": "bench-secret-" + "x" * 32,
            "NURTURE_BROKER_URL": f"sqla+sqlite:///{tmp}/broker.sqlite",
        }
    )
    clock.set_source(lambda: T0 + timedelta(hours=1))
    app = create_app(settings, {"TESTING": True})
    from automation.accounts.models import Role
    from automation.accounts.service import create_api_key

    with app.extensions["nurture"].sessions() as s:
        token = create_api_key(s, f"bench {seed}", role=Role.MARKETER).token
        s.commit()
    from automation.processes import keep_out_of_collector

    keep_out_of_collector()  # as web/wsgi.py does once the app is built
    client = app.test_client()
    batches = event_batches(total, contacts, seed)
    bodies = [json.dumps({"events": b}) for b in batches]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    ready.release()
    go.wait()
    created = 0
    for body in bodies:
        response = client.post("/api/v1/events", data=body, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)[:500]
        created += response.json["created"]
    queue.put(created)


def _in_parallel(target: Any, args: list[tuple[Any, ...]]) -> tuple[float, list[Any]]:
    """Start one process per args tuple, let them all set up, then time them together."""
    ready, go, queue = SPAWN.Semaphore(0), SPAWN.Event(), SPAWN.Queue()
    processes = [SPAWN.Process(target=target, args=(*a, ready, go, queue)) for a in args]
    for p in processes:
        p.start()
    for _ in processes:
        ready.acquire(timeout=300)
    started = time.perf_counter()
    go.set()
    results = [queue.get(timeout=1800) for _ in processes]
    elapsed = time.perf_counter() - started
    for p in processes:
        p.join()
    return elapsed, results


def run_api_ingestion(url: str, total: int, contacts: int) -> tuple[float, int]:
    per = total // WORKERS
    elapsed, created = _in_parallel(
        _post_worker, [(url, per, contacts, seed) for seed in range(WORKERS)]
    )
    return elapsed, sum(created)


FLOOR_INGEST = """
WITH input AS (
    SELECT * FROM unnest(CAST(:names AS text[]), CAST(:emails AS text[]), CAST(:props AS jsonb[]))
        AS v(name, email, properties)
), resolved AS (
    SELECT i.name, c.id AS contact_id, i.properties
    FROM input i JOIN contacts c ON c.email = i.email
), stored AS (
    INSERT INTO events (contact_id, name, properties, occurred_at, received_at, source)
    SELECT contact_id, name, properties, :now, :now, 'api' FROM resolved
    RETURNING contact_id, name, properties
)
INSERT INTO enrollments (workflow_id, workflow_version_id, contact_id, status, current_node,
                         next_run_at, attempts, context, enrolled_at)
SELECT DISTINCT ON (t.workflow_id, s.contact_id) t.workflow_id, t.version_id, s.contact_id,
       'active', 'wait', :now, 0, jsonb_build_object('trigger', s.properties), :now
FROM stored s JOIN bench_triggers t ON t.event = s.name
WHERE (s.properties ->> 'total')::numeric > 10
ON CONFLICT DO NOTHING
"""


def _floor_ingest_worker(
    url: str, total: int, contacts: int, seed: int, ready: Any, go: Any, queue: Any
) -> None:
    engine = make_engine(url)
    batches = event_batches(total, contacts, seed)
    now = (T0 + timedelta(hours=1)).replace(tzinfo=None)
    ready.release()
    go.wait()
    with engine.connect() as conn:
        for batch in batches:
            conn.execute(
                text(FLOOR_INGEST),
                {
                    "names": [e["name"] for e in batch],
                    "emails": [e["email"] for e in batch],
                    "props": [json.dumps(e["properties"]) for e in batch],
                    "now": now,
                },
            )
            conn.commit()
    queue.put(len(batches))
    engine.dispose()


def run_floor_ingestion(url: str, total: int, contacts: int) -> float:
    with make_engine(url).begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_triggers"))
        conn.execute(
            text(
                "CREATE TABLE bench_triggers AS SELECT w.id AS workflow_id, v.id AS version_id, "
                "v.trigger_event AS event FROM workflows w JOIN workflow_versions v "
                "ON v.id = w.active_version_id"
            )
        )
    per = total // WORKERS
    # The same events as the API run (same seeds), into a database reset the same way.
    elapsed, _ = _in_parallel(
        _floor_ingest_worker, [(url, per, contacts, seed) for seed in range(WORKERS)]
    )
    with make_engine(url).begin() as conn:
        conn.execute(text("DROP TABLE bench_triggers"))
    return elapsed


def explain_claim(url: str) -> list[str]:
    with make_engine(url).connect() as conn:
        rows = conn.execute(
            text(
                "EXPLAIN SELECT id FROM enrollments WHERE status = 'active' "
                "AND next_run_at <= now() "
                "ORDER BY next_run_at LIMIT 1000 FOR UPDATE SKIP LOCKED"
            )
        ).scalars()
        return [r for r in rows if "Scan" in r or "Limit" in r][:3]


def main() -> None:
    wiring.install()  # reactions, references and every model, as build_runtime does
    global WORKERS
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--redis", default=DEFAULT_REDIS)
    parser.add_argument("--enrolments", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--contacts", type=int, default=20_000, help="for the ingestion part")
    parser.add_argument("--workflows", type=int, default=50)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    parser.add_argument(
        "--workers",
        type=int,
        default=WORKERS,
        help="Celery workers and floor/client processes (both sides get the same number)",
    )
    parser.add_argument(
        "--part", choices=["both", "advancement", "ingestion"], default="both", help="what to run"
    )
    args = parser.parse_args()
    WORKERS = args.workers
    if args.smoke:
        args.enrolments, args.events, args.contacts = 600, 2000, 500
    engine = make_engine(args.url)
    sessions = make_session_factory(engine)
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}"
    )

    if args.part != "ingestion":
        advancement(args, engine, sessions)
    if args.part != "advancement":
        ingestion(args, engine, sessions)
    engine.dispose()


def finished_and_journaled(sessions: Any) -> tuple[int, int]:
    """(completed enrolments, journal rows)."""
    with sessions() as s:
        done = s.scalar(select(func.count()).where(Enrollment.status == EnrollmentStatus.COMPLETED))
        journal = s.scalar(select(func.count()).select_from(EnrollmentStep))
    return done or 0, journal or 0


def advancement(args: Any, engine: Any, sessions: Any) -> None:
    reset(engine)
    make_contacts(sessions, args.enrolments)
    with sessions() as s:
        s.add(
            CustomField(
                name="plan",
                label="Plan",
                type=FieldType.CHOICE,
                options=["free", "pro"],
                created_at=T0,
            )
        )
        s.commit()
    print("setting up: contacts and enrolments waiting at 'wait 1 day' ...", flush=True)
    started = time.perf_counter()
    park_enrolments(sessions, args.enrolments)
    parked = time.perf_counter() - started
    save_parked(args.url)
    analyze(args.url)  # both runs start from tables with planner statistics
    print("engine run ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        elapsed, steps = run_celery_advancement(args.url, args.redis, Path(tmp), args.enrolments)
    outcome = finished_and_journaled(sessions)
    assert outcome[0] == args.enrolments, outcome
    plan = explain_claim(args.url)
    restore_parked(args.url)
    floor = run_floor_advancement(args.url)
    # The floor does the same work: the same enrolments finished, the same journal rows.
    assert finished_and_journaled(sessions) == outcome, (finished_and_journaled(sessions), outcome)
    rate, floor_rate = args.enrolments / elapsed, args.enrolments / floor
    print(
        f"advancement: {args.enrolments:,} enrolments wait → branch → update → exit, "
        f"{WORKERS} Celery workers"
    )
    print(f"  engine:  {elapsed:6.2f} s  {rate:9,.0f} enrolments/s")
    print(
        f"  floor:   {floor:6.2f} s  {floor_rate:9,.0f} enrolments/s  "
        f"(raw SQL, {WORKERS} processes)"
    )
    print(f"  engine/floor time: {elapsed / floor:.2f}x")
    print(
        f"  before that, entering the wait (trigger → wait, one process, in-process ticks): "
        f"{parked:.2f} s, {args.enrolments / parked:,.0f} enrolments/s"
    )
    if steps:
        counts = [n for _, n in steps]
        print(
            f"  Celery tasks that moved contacts: {len(steps)}; contact-steps per task: "
            f"min {min(counts):,}, mean {sum(counts) // len(counts):,}; "
            f"task run times {', '.join(f'{t:.2f} s' for t, _ in steps)}"
        )
    for line in plan:
        print(f"  claim plan: {line.strip()}")


def ingestion(args: Any, engine: Any, sessions: Any) -> None:
    reset(engine)
    make_contacts(sessions, args.contacts)
    ingestion_workflows(sessions, args.workflows)
    analyze(args.url)
    ingest_time, created = run_api_ingestion(args.url, args.events, args.contacts)
    with sessions() as s:
        enrolled = s.scalar(select(func.count()).select_from(Enrollment))
    reset(engine)
    make_contacts(sessions, args.contacts)
    ingestion_workflows(sessions, args.workflows)
    analyze(args.url)
    floor_time = run_floor_ingestion(args.url, args.events, args.contacts)
    with sessions() as s:
        floor_enrolled = s.scalar(select(func.count()).select_from(Enrollment))
    total = (args.events // WORKERS) * WORKERS
    print(
        f"ingestion: {total:,} events through POST /api/v1/events (1,000 per request), "
        f"{args.workflows} active workflows, {WORKERS} client processes"
    )
    print(
        f"  API:     {ingest_time:6.2f} s  {total / ingest_time:9,.0f} events/s  "
        f"({created:,} stored, {enrolled:,} enrolments)"
    )
    print(
        f"  floor:   {floor_time:6.2f} s  {total / floor_time:9,.0f} events/s  "
        f"(raw SQL insert + trigger match, {floor_enrolled:,} enrolments)"
    )
    print(f"  API/floor time: {ingest_time / floor_time:.2f}x")


if __name__ == "__main__":
    main()
