"""Health and readiness checks: database, broker, SMTP, plus domain probes (tick lag,
outbox backlog) that other packages register.

/readyz shows every check to anyone who asks, so a detail never names a host, a port or a
user: a probe's own finding is a ``ProbeFailed`` with our words; any other exception shows
as its type only, and the full text goes to the log (``nurture doctor`` diagnoses it).
"""

from __future__ import annotations

import logging
import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass

from kombu import Connection
from sqlalchemy import text
from sqlalchemy.orm import Session

from automation import clock
from automation.config import Settings
from automation.ops.backlog import outbox_backlog, spool_backlogs, tick_lag
from automation.runtime import Runtime
from automation.tracking.hits import make_hit_queue, spool_forwarded

log = logging.getLogger(__name__)


class ProbeFailed(RuntimeError):
    """A probe's own finding: its message is ours and safe to show anyone."""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # safe to show anyone
    millis: float
    cause: str = ""  # the failure's full text, for operators only (doctor, the log)

    def public(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "millis": self.millis}


def _timed(name: str, probe: Callable[[], str]) -> Check:
    started = time.perf_counter()
    cause = ""
    try:
        detail = probe()
        ok = True
    except ProbeFailed as exc:
        detail, ok = str(exc), False
    except Exception as exc:  # a health check reports every failure, whatever it is
        cause = f"{type(exc).__name__}: {exc}"
        log.warning("readiness check %s failed: %s", name, cause)
        detail, ok = f"{type(exc).__name__} (the server log has the detail)", False
    millis = round((time.perf_counter() - started) * 1000, 1)
    return Check(name, ok, detail, millis, cause)


def check_database(runtime: Runtime) -> Check:
    def probe() -> str:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return runtime.engine.dialect.name

    return _timed("database", probe)


def check_broker(runtime: Runtime) -> Check:
    def probe() -> str:
        with Connection(runtime.settings.broker_url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
        return conn.transport_cls if isinstance(conn.transport_cls, str) else "connected"

    return _timed("broker", probe)


def check_smtp(runtime: Runtime) -> Check:
    settings = runtime.settings

    def probe() -> str:
        smtp_class = smtplib.SMTP_SSL if settings.smtp_tls == "ssl" else smtplib.SMTP
        with smtp_class(settings.smtp_host, settings.smtp_port, timeout=3) as smtp:
            code, _ = smtp.noop()
            if code != 250:
                raise ProbeFailed(f"the relay answered NOOP with {code}")
        return "the relay answered NOOP"

    return _timed("smtp", probe)


# Domain probes: each takes a session and the runtime's settings and returns a Check (e.g.
# tick lag, outbox backlog).
DOMAIN_PROBES: list[Callable[[Session, Settings], Check]] = []


def readiness(runtime: Runtime) -> list[Check]:
    """Every check, against ``runtime`` (the app's own, never a process-global one)."""
    checks = [check_database(runtime), check_broker(runtime), check_smtp(runtime)]
    if checks[0].ok and DOMAIN_PROBES:
        with runtime.sessions() as session:
            checks.extend(probe(session, runtime.settings) for probe in DOMAIN_PROBES)
    return checks


HIT_QUEUE_LIMIT = 200_000


def check_hit_queue(_session: Session, settings: Settings) -> Check:
    """Tracking hits waiting for the tracking worker: a growing queue means no drainer."""

    def probe() -> str:
        depth = make_hit_queue(settings).depth()
        if depth > HIT_QUEUE_LIMIT:
            raise ProbeFailed(f"{depth} hits queued (is the tracking worker running?)")
        return f"{depth} hits queued"

    return _timed("hit_queue", probe)


SPOOL_AGE_LIMIT_SECONDS = 300.0


def check_hit_spool(_session: Session, settings: Settings) -> Check:
    """Tracking records spooled on this machine: old ones mean nothing moves them on (no
    forwarder here, Redis unreachable, or in the embedded default no tracking worker)."""

    def probe() -> str:
        backlogs = spool_backlogs(settings)
        detail = ", ".join(
            f"{name}: {b.files} files, {b.bytes} bytes, oldest {b.oldest_seconds:.0f} s"
            for name, b in backlogs.items()
        )
        if max(b.oldest_seconds for b in backlogs.values()) > SPOOL_AGE_LIMIT_SECONDS:
            hint = (
                "is `nurture tracking forward` running here, and Redis reachable?"
                if spool_forwarded(settings)
                else "is the tracking worker running?"
            )
            raise ProbeFailed(f"{detail} ({hint})")
        return detail

    return _timed("hit_spool", probe)


DOMAIN_PROBES.extend([check_hit_queue, check_hit_spool])


LAG_LIMIT_SECONDS = 600.0


def check_tick_lag(session: Session, _settings: Settings) -> Check:
    """Due enrolments and messages nobody has picked up: no engine or send worker, or
    no scheduler, is running (or they cannot keep up)."""

    def probe() -> str:
        now = clock.now()
        lags = {
            "workflow": tick_lag(session, now=now).workflows_seconds,
            "outbox": outbox_backlog(session, now=now).oldest_due_seconds,
        }
        detail = ", ".join(f"{name} {seconds:.0f} s behind" for name, seconds in lags.items())
        if max(lags.values()) > LAG_LIMIT_SECONDS:
            raise ProbeFailed(f"{detail} (are the workers and a scheduler running?)")
        return detail

    return _timed("tick_lag", probe)


def check_outbox(session: Session, _settings: Settings) -> Check:
    """The outbox by open state; `unknown` messages wait for an operator's decision."""

    def probe() -> str:
        states = outbox_backlog(session).open_states
        return ", ".join(f"{count} {state}" for state, count in states.items())

    return _timed("outbox", probe)


DOMAIN_PROBES.extend([check_tick_lag, check_outbox])
