"""What a process runs on: its settings, engine, session factory and Celery app, built
together from one ``Settings`` by ``build_runtime``.

The worker (``automation.tasks``) and the CLI use the process's ``runtime()``, built from
the environment on first use; the Flask app builds its own from the settings it is given
(and never calls ``runtime()``), so tests can run several apps side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from automation import clock
from automation.config import Settings, load_settings
from automation.db import make_engine, make_session_factory
from automation.processes import keep_out_of_collector
from automation.queueing import enqueue, make_celery
from automation.wiring import install as install_wiring


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    celery: Celery

    def enqueue(self, task: str, *args: Any) -> None:
        """Queue the task named ``task`` (a key of ``TASK_QUEUES``, e.g. ``"segments.refresh"``)
        on this runtime's broker. Call only after the transaction it reads has committed."""
        enqueue(self.celery, task, *args)


def build_runtime(settings: Settings) -> Runtime:
    install_wiring()  # reactions, references and every mapper, before the first query
    if settings.embedded:
        settings.var_dir.mkdir(parents=True, exist_ok=True)  # the SQLite broker's directory
    if settings.clock_file:  # test-only: every process of an end-to-end test follows one file
        clock.set_source(clock.file_source(settings.clock_file))
    engine = make_engine(settings.database_url)
    return Runtime(settings, engine, make_session_factory(engine), make_celery(settings))


_current: Runtime | None = None


def runtime() -> Runtime:
    global _current
    if _current is None:
        _current = build_runtime(load_settings())
        keep_out_of_collector()
    return _current


def use_runtime(value: Runtime | None) -> None:
    """Install a runtime for this process (tests, or a CLI given explicit settings)."""
    global _current
    _current = value
