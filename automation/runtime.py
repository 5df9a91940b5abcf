"""The process-wide settings, engine and session factory, built once per process.

Celery tasks and the CLI use ``runtime()``; the Flask app builds its own from the
settings it is given, so tests can run several apps side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

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

    def enqueue(self, task: Any, *args: Any) -> None:
        """Queue a task on this runtime's broker (after commit)."""
        enqueue(self.celery, task, *args)


def build_runtime(settings: Settings) -> Runtime:
    install_wiring()  # reactions, references and every mapper, before the first query
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
