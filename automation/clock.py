"""The one place that reads the time, so tests and dry runs can control it.

Test-only: when ``NURTURE_CLOCK_FILE`` (``Settings.clock_file``) names a file, every
process whose runtime is built with it (a Celery worker, the web app, the CLI) reads the
current time from that file, which holds one ISO 8601 time with an offset
(``2026-03-07T09:00:00+00:00``). End-to-end tests step that file to drive real workers
through days of waits in seconds. Never set it in production: a missing or unreadable
file falls back to the system clock.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path


def _system() -> datetime:
    return datetime.now(UTC)


def file_source(path: str | os.PathLike[str]) -> Callable[[], datetime]:
    """A time source that reads ``path`` on every call (test-only, see the module doc)."""
    file = Path(path)

    def read() -> datetime:
        try:
            value = datetime.fromisoformat(file.read_text().strip())
        except (OSError, ValueError):
            return _system()
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    return read


def write_clock_file(path: str | os.PathLike[str], value: datetime) -> None:
    """Set the time every process following ``path`` sees (atomic replace)."""
    file = Path(path)
    temporary = file.with_name(file.name + ".tmp")
    temporary.write_text(value.astimezone(UTC).isoformat())
    temporary.replace(file)


_source: Callable[[], datetime] = _system


def now() -> datetime:
    """Current time, timezone-aware UTC."""
    return _source()


def set_source(source: Callable[[], datetime] | None) -> None:
    """Replace the time source (a frozen or stepping clock, or a ``file_source``); None
    restores the system clock."""
    global _source
    _source = source if source is not None else _system
