"""Scale-out of sending: end-to-end messages/s with 1, 2 and 3 Celery send workers on this
machine, and the efficiency of each step (messages/s per worker relative to one worker).

Each run: a fresh schema, N contacts, N queued messages of the ~30 KB newsletter from
bench/send.py; then K real Celery workers (``celery worker -Q <queue> --pool solo``, Redis
broker, the production task ``email.send_due``) started and warmed up; a driver queues
one ``email.send_due`` per worker (as beat does) whenever the queue runs dry, and the
clock runs from the first of those to the last message marked sent. The SMTP server is
postfix's ``smtp-sink`` (C) as in bench/send.py, or an aiosmtpd sink without it.

The baseline for efficiency is the 1-worker run of the same invocation; the floor is
one in-process sender calling ``send_due`` directly (what bench/send.py measures), so
the cost of Celery and of separate processes shows. On a 2-core machine the third
worker oversubscribes the cores (PostgreSQL and the sink run there too).

    nice .venv/bin/python bench/scale.py --url postgresql+psycopg://root@127.0.0.1:5432/nurture_ops
    .venv/bin/python bench/scale.py --smoke --url …      # seconds (CI)
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from send import BASE_URL, Sink, find_smtp_sink, prepare, reset
from sqlalchemy import func, select

from automation import wiring
from automation.config import load_settings
from automation.contacts.models import Contact
from automation.db import make_engine, make_session_factory
from automation.email.models import Message, MessageStatus
from automation.email.outbox import queue_for_contacts, send_due
from automation.email.sender import Sending
from automation.email.transport import SmtpSettings, SmtpTransport
from automation.queueing import make_celery
from automation.signing import TokenSigner

DEFAULT_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
DEFAULT_BROKER = os.environ.get("NURTURE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parent.parent


def _env(url: str, broker: str, port: int, batch: int) -> dict[str, str]:
    return {
        **os.environ,
        "NURTURE_DATABASE_URL": url,
        "NURTURE_BROKER_URL": broker,
        "NURTURE_SECRET_KEY": "bench-" + "k" * 40,
        "NURTURE_BASE_URL": BASE_URL,
        "NURTURE_VAR_DIR": tempfile.mkdtemp(prefix="nurture-scale-"),
        "NURTURE_SMTP_HOST": "127.0.0.1",
        "NURTURE_SMTP_PORT": str(port),
        "NURTURE_SMTP_TLS": "none",
        "NURTURE_SEND_BATCH_SIZE": str(batch),
    }


def _sent(sessions) -> int:
    with sessions() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(Message)
                .where(Message.status == MessageStatus.SENT)
            )
            or 0
        )


def _queue(sessions, version_id: int, prefix: str, limit: int | None = None) -> int:
    """Queue one message per contact (the first ``limit`` contacts)."""
    with sessions() as s:
        count = queue_for_contacts(
            s,
            select(Contact.id).order_by(Contact.id).limit(limit),
            template_version_id=version_id,
            dedupe_prefix=prefix,
        )
        s.commit()
    return count


class Workers:
    """``count`` Celery send workers, each consuming a queue of its own, so a run can
    use the first k of them and all start (and warm up) once."""

    def __init__(self, url: str, broker: str, port: int, batch: int, count: int) -> None:
        self.env = _env(url, broker, port, batch)
        self.logs = Path(self.env["NURTURE_VAR_DIR"])
        tag = uuid.uuid4().hex[:8]
        self.queues = [f"scale-{tag}-{k}" for k in range(count)]
        self.celery = make_celery(load_settings(self.env))
        self.redis = redis.Redis.from_url(broker)
        self.processes = [
            subprocess.Popen(
                [
                    *(sys.executable, "-m", "celery", "-A", "automation.tasks", "worker"),
                    *("-Q", queue, "--pool", "solo", "--without-mingle", "--without-gossip"),
                    *("--loglevel", "WARNING", "-n", f"{queue}@localhost"),
                ],
                env=self.env,
                cwd=ROOT,
                stdout=(self.logs / f"{queue}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
            for queue in self.queues
        ]

    def kick(self, queues: list[str]) -> None:
        """One send tick for each worker whose queue is empty (beat's job in production)."""
        for queue in queues:
            if self.redis.llen(queue) == 0:
                self.celery.send_task("email.send_due", queue=queue)

    def wait_for(
        self, sessions, queues: list[str], count: int, timeout: float
    ) -> list[tuple[float, int]]:
        """Kick ``queues`` until ``count`` messages are sent; (time, sent) samples."""
        samples = []
        deadline = time.monotonic() + timeout
        while True:
            done = _sent(sessions)
            samples.append((time.perf_counter(), done))
            if done >= count:
                return samples
            if any(p.poll() is not None for p in self.processes):
                raise SystemExit(f"a worker exited: see {self.logs}")
            if time.monotonic() > deadline:
                raise SystemExit(f"only {done} of {count} sent after {timeout} s: {self.logs}")
            self.kick(queues)
            time.sleep(0.2)  # each poll is a count over the messages table

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.redis.delete(*self.queues)


def main() -> None:
    wiring.install()  # reactions, references and every model, as build_runtime does
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--broker", default=DEFAULT_BROKER, help="Redis URL for Celery")
    parser.add_argument("--messages", type=int, default=20_000, help="messages per run")
    parser.add_argument("--batch", type=int, default=200, help="NURTURE_SEND_BATCH_SIZE")
    parser.add_argument("--workers", default="1,2,3", help="worker counts to run")
    parser.add_argument("--sink", help="path to smtp-sink")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (CI)")
    args = parser.parse_args()
    counts = [int(c) for c in args.workers.split(",")]
    if args.smoke:
        args.messages, args.batch, counts = 200, 50, [1, 2]
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, load {os.getloadavg()[0]:.2f}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    engine = make_engine(args.url)
    sessions = make_session_factory(engine)
    reset(engine)
    version_id = prepare(sessions, args.messages)
    sink = Sink(find_smtp_sink(args.sink))
    workers = Workers(args.url, args.broker, sink.port, args.batch, max(counts))
    try:
        print(
            f"send scale-out: {args.messages:,} messages per run, batches of {args.batch}, "
            f"Celery workers --pool solo, sink: {sink.kind}"
        )
        # Warm each worker in turn (compiled template cached, SMTP connection open).
        sent = 0
        for k, name in enumerate(workers.queues):
            sent += _queue(sessions, version_id, f"warm{k}:", limit=20)
            workers.wait_for(sessions, [name], sent, 600)
        # Floor: the same send in this process, send_due called directly (no Celery).
        sent += _queue(sessions, version_id, "floor:")
        settings = load_settings(workers.env)
        transport = SmtpTransport(SmtpSettings("127.0.0.1", sink.port))
        sending = Sending(settings, transport, TokenSigner.from_settings(settings))
        # A send tick queued twice during the warm-up may still wake a worker now and take a
        # batch of these: the floor counts only what it sent itself, and everything must
        # still go out exactly once before the workers' runs start.
        started = time.perf_counter()
        report = send_due(sessions, sending, budget_seconds=3600)
        floor = report.outcomes.get("sent", 0) / (time.perf_counter() - started)
        transport.close()
        workers.wait_for(sessions, [], sent, 600)
        assert _sent(sessions) == sent
        print(f"  floor, one in-process sender (send_due, no Celery): {floor:7,.0f} msg/s")
        base: float | None = None
        for k in counts:
            time.sleep(2)  # the last ticks return (nothing left to claim)
            sent += _queue(sessions, version_id, f"run{k}:")
            started = time.perf_counter()
            samples = workers.wait_for(sessions, workers.queues[:k], sent, 3600)
            elapsed = samples[-1][0] - started
            first = sent - args.messages

            def at(fraction: float, samples=samples, first=first) -> float:
                target = first + args.messages * fraction
                return next(t for t, done in samples if done >= target)

            # Steady state: 10 % to 90 % of the run (no start-up or tail), when the run
            # is many batches long; otherwise the end-to-end rate.
            steady = (
                0.8 * args.messages / (at(0.9) - at(0.1))
                if args.messages >= 10 * args.batch and at(0.9) > at(0.1)
                else args.messages / elapsed
            )
            base = base or steady / k
            print(
                f"  {k} worker(s): {args.messages / elapsed:7,.0f} msg/s end to end "
                f"({elapsed:.1f} s), steady {steady:7,.0f} msg/s, {steady / k:6,.0f} per "
                f"worker, efficiency {steady / (k * base):.2f}, {steady / floor:.2f} of the "
                f"floor  (load {os.getloadavg()[0]:.1f})"
            )
    finally:
        workers.stop()
        sink.stop()
        engine.dispose()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
