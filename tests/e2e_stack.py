"""A real deployment in miniature for end-to-end workflow tests: PostgreSQL, Redis as the
broker, a Celery worker and Celery beat as subprocesses, a web app on a real port, an
SMTP server on loopback, and a clock all of them read from one file the test steps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import func, or_, select, text
from werkzeug.serving import make_server

from automation import clock
from automation.clock import file_source, write_clock_file
from automation.workflows.models import Enrollment, EnrollmentStatus

# A worker moving a workflow batch holds row locks on enrollments, in a transaction with an id.
HOLDING_A_BATCH = text(
    "SELECT a.backend_xid::text FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid"
    " WHERE l.relation = 'enrollments'::regclass AND l.mode = 'RowShareLock'"
    " AND a.backend_xid IS NOT NULL AND l.pid <> pg_backend_pid() LIMIT 1"
)
XACT_STATUS = text("SELECT pg_xact_status(CAST(:xid AS xid8))")


@dataclass
class Stack:
    tmp: Path
    settings: Any
    env: dict[str, str]
    sessions: Any
    clock_file: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    server: Any = None
    base_url: str = ""
    pending_checks: list[Callable[[Any, datetime], int]] = field(default_factory=list)

    # --- processes -------------------------------------------------------------------

    def start(self, name: str) -> None:
        commands = {
            "worker": [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "automation.tasks",
                "worker",
                "-Q",
                "engine,send",
                "--pool",
                "solo",
                "--loglevel",
                "WARNING",
                "-n",
                f"e2e-{os.getpid()}-{time.monotonic_ns()}@localhost",
            ],
            "beat": [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "automation.tasks",
                "beat",
                "--loglevel",
                "WARNING",
                "--schedule",
                str(self.tmp / "beat-schedule"),
            ],
        }
        self.spawn(name, commands[name])

    def spawn(self, name: str, command: list[str]) -> None:
        """Run ``command`` with the stack's environment; output goes to ``<name>.log``."""
        log = (self.tmp / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            command, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def kill(self, name: str) -> None:
        """SIGKILL: no clean-up, no acknowledgement, exactly like a crashed machine."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def kill_mid_batch(self, broker_url: str) -> None:
        """SIGKILL the worker while it moves a workflow batch (its transaction holds row
        locks on enrollments), check the batch was rolled back, flush Redis and start a new
        worker."""
        deadline = time.monotonic() + 30
        xid = None
        while xid is None and time.monotonic() < deadline:
            with self.sessions() as s:
                xid = s.scalar(HOLDING_A_BATCH)
            time.sleep(0.002)
        assert xid, "no worker was seen moving a batch"
        self.kill("worker")
        with self.sessions() as s:
            while (outcome := s.scalar(XACT_STATUS, {"xid": xid})) == "in progress":
                time.sleep(0.01)
                s.rollback()  # a fresh snapshot each look
        assert outcome == "aborted", "the worker was meant to die in the middle of a batch"
        redis.Redis.from_url(broker_url).flushdb()
        self.start("worker")

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()
        if self.server is not None:
            self.server.shutdown()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.tmp.glob("*.log"))
        )

    # --- the web app on a real port ------------------------------------------------

    def serve(self, app: Any) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    # --- time ------------------------------------------------------------------------

    def set_time(self, value: datetime) -> None:
        write_clock_file(self.clock_file, value)

    def now(self) -> datetime:
        return clock.now()

    def settle(self, timeout: float = 90.0) -> None:
        """Wait until nothing is due at the current (test) time: no enrolment due or
        leased, and nothing the other checks report (queued messages)."""
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                assert process.poll() is None, f"{name} exited\n{self.logs()}"
            with self.sessions() as s:
                now = clock.now()
                busy = (
                    s.scalar(
                        select(func.count())
                        .select_from(Enrollment)
                        .where(
                            Enrollment.status == EnrollmentStatus.ACTIVE,
                            Enrollment.next_run_at <= now,
                        )
                    )
                    or 0
                )
                busy += sum(check(s, now) for check in self.pending_checks)
            if busy == 0:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 0.6:  # a tick may be mid-commit
                    return
            else:
                quiet_since = None
            time.sleep(0.2)
        raise AssertionError(f"not settled after {timeout} s\n{self.logs()}")


def unsent_messages(session: Any, now: datetime) -> int:
    """Messages due or being sent: a step has not settled while any remain."""
    from automation.email.models import Message, MessageStatus

    return (
        session.scalar(
            select(func.count())
            .select_from(Message)
            .where(
                or_(
                    Message.status == MessageStatus.SENDING,
                    (Message.status.in_([MessageStatus.QUEUED, MessageStatus.DEFERRED]))
                    & (Message.next_attempt_at <= now),
                )
            )
        )
        or 0
    )


def next_moment(session: Any, now: datetime) -> datetime | None:
    """The next time anything is due: a wait, a held send, a deferred message."""
    from automation.email.models import Message, MessageStatus

    waits = session.scalar(
        select(func.min(Enrollment.next_run_at)).where(
            Enrollment.status == EnrollmentStatus.ACTIVE, Enrollment.next_run_at > now
        )
    )
    mail = session.scalar(
        select(func.min(Message.next_attempt_at)).where(
            Message.status.in_([MessageStatus.QUEUED, MessageStatus.DEFERRED]),
            Message.next_attempt_at > now,
        )
    )
    found = [m for m in (waits, mail) if m is not None]
    return min(found) if found else None


def build_stack(
    tmp: Path, database_url: str, broker_url: str, start: datetime, **env: str
) -> Stack:
    from conftest import make_settings

    from automation.runtime import build_runtime, use_runtime

    clock_file = tmp / "clock"
    write_clock_file(clock_file, start)
    clock.set_source(file_source(clock_file))
    settings = make_settings(tmp, database_url, NURTURE_BROKER_URL=broker_url, **env)
    runtime = build_runtime(settings)
    use_runtime(runtime)
    process_env = {
        **os.environ,
        "NURTURE_DATABASE_URL": settings.database_url,
        "NURTURE_BROKER_URL": broker_url,
        "NURTURE_VAR_DIR": str(settings.var_dir),
        "NURTURE_SECRET_KEY": settings.secret_key,
        "NURTURE_BASE_URL": settings.base_url,
        "NURTURE_CLOCK_FILE": str(clock_file),
        "NURTURE_WORKFLOW_TICK_SECONDS": "0.5",
        "NURTURE_WORKFLOW_DATE_SCAN_SECONDS": "1",
        **env,
    }
    return Stack(tmp, settings, process_env, runtime.sessions, clock_file)
