"""The one place that reads the time, so tests and dry runs can control it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

_source: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def now() -> datetime:
    """Current time, timezone-aware UTC."""
    return _source()


def set_source(source: Callable[[], datetime] | None) -> None:
    """Replace the time source (a frozen or stepping clock); None restores the system clock."""
    global _source
    _source = source if source is not None else (lambda: datetime.now(UTC))
