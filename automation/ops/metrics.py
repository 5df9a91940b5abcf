"""Prometheus metrics. Counters and histograms are updated where the work happens;
gauges that describe the database (backlogs, lag) are read at scrape time, so every
process reports the same truth.

Under gunicorn or Celery prefork set PROMETHEUS_MULTIPROC_DIR so the counters of all
worker processes are summed (prometheus_client multiprocess mode).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from automation import clock
from automation.config import Settings
from automation.contacts.models import Contact, ImportJob
from automation.instruments import COUNTERS
from automation.ops.backlog import outbox_backlog, spool_backlogs, tick_lag
from automation.queueing import QUEUES
from automation.tracking.hits import make_hit_queue

# Scrape-time gauges read from the database: (name, help, labels, reader).
GaugeReader = Callable[[Session], Iterable[tuple[tuple[str, ...], float]]]
DATABASE_GAUGES: list[tuple[str, str, list[str], GaugeReader]] = []


def database_gauge(name: str, doc: str, labels: list[str]) -> Callable[[GaugeReader], GaugeReader]:
    def register(reader: GaugeReader) -> GaugeReader:
        DATABASE_GAUGES.append((name, doc, labels, reader))
        return reader

    return register


@database_gauge("nurture_contacts", "Contacts by subscription status", ["status"])
def _contacts(session: Session) -> Iterable[tuple[tuple[str, ...], float]]:
    rows = session.execute(select(Contact.status, func.count()).group_by(Contact.status))
    return [((status.value,), float(count)) for status, count in rows]


@database_gauge("nurture_import_jobs", "Contact import jobs by status", ["status"])
def _imports(session: Session) -> Iterable[tuple[tuple[str, ...], float]]:
    rows = session.execute(select(ImportJob.status, func.count()).group_by(ImportJob.status))
    return [((status.value,), float(count)) for status, count in rows]


@database_gauge(
    "nurture_tick_lag_seconds",
    "Seconds the oldest due row has waited for its tick (workflow) or a sender (outbox)",
    ["queue"],
)
def _lag(session: Session) -> Iterable[tuple[tuple[str, ...], float]]:
    now = clock.now()
    lag = tick_lag(session, now=now)
    return [
        (("workflow",), lag.workflows_seconds),
        (("campaign",), lag.campaigns_seconds),
        (("outbox",), outbox_backlog(session, now=now).oldest_due_seconds),
    ]


@database_gauge("nurture_outbox_messages", "Messages not yet final, by state", ["status"])
def _outbox(session: Session) -> Iterable[tuple[tuple[str, ...], float]]:
    states = outbox_backlog(session).open_states
    return [((status,), float(count)) for status, count in states.items()]


class DatabaseCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterable[Metric]:
        with self.sessions() as session:
            for name, doc, labels, reader in DATABASE_GAUGES:
                family = GaugeMetricFamily(name, doc, labels=labels)
                for values, value in reader(session):
                    family.add_metric(list(values), value)
                yield family


class QueueCollector(Collector):
    """Work waiting in the broker, read at scrape time: Celery tasks per queue (Redis
    broker) and tracking hits not yet ingested. A broker that does not answer leaves the
    gauge out rather than failing the scrape."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterable[Metric]:
        yield from _spool_families(self.settings)
        family = GaugeMetricFamily(
            "nurture_queue_depth", "Tasks or tracking hits waiting in the broker", labels=["queue"]
        )
        try:
            for name in ("hits", "site"):
                family.add_metric([name], float(make_hit_queue(self.settings, name).depth()))
            if self.settings.broker_url.startswith("redis"):
                import redis

                client = redis.Redis.from_url(self.settings.broker_url, socket_timeout=2)
                try:
                    for queue in QUEUES:
                        family.add_metric([queue], float(client.llen(queue)))
                finally:
                    client.close()
        except Exception:  # noqa: S110  # the scrape reports what it could read
            pass
        yield family


def _spool_families(settings: Settings) -> Iterable[Metric]:
    """This machine's tracking spools (automation/ops/backlog.py: spool_backlogs)."""
    files = GaugeMetricFamily(
        "nurture_spool_files", "Tracking spool files on this machine", labels=["queue"]
    )
    size = GaugeMetricFamily(
        "nurture_spool_bytes", "Bytes of tracking records spooled on this machine", labels=["queue"]
    )
    oldest = GaugeMetricFamily(
        "nurture_spool_oldest_seconds",
        "Age of the oldest record spooled on this machine (not yet forwarded or drained)",
        labels=["queue"],
    )
    try:
        backlogs = spool_backlogs(settings)
    except OSError:
        return
    for name, backlog in backlogs.items():
        files.add_metric([name], float(backlog.files))
        size.add_metric([name], float(backlog.bytes))
        oldest.add_metric([name], backlog.oldest_seconds)
    yield from (files, size, oldest)


def render_metrics(
    sessions: sessionmaker[Session], settings: Settings | None = None
) -> tuple[bytes, str]:
    """The exposition text for this process (or all processes in multiprocess mode)."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        for collector in COUNTERS:
            registry.register(collector)
    registry.register(DatabaseCollector(sessions))
    if settings is not None:
        registry.register(QueueCollector(settings))
    return generate_latest(registry), CONTENT_TYPE_LATEST
