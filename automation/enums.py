"""Helpers for storing Python enums as plain strings (portable across SQLite and PostgreSQL)."""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import Enum


def str_enum(enum_class: type[enum.Enum], length: int = 24) -> Enum:
    """A VARCHAR column holding the enum's values (not names), with no native DB enum type."""
    return Enum(
        enum_class,
        native_enum=False,
        length=length,
        values_callable=lambda cls: [member.value for member in cls],
        validate_strings=True,
    )


def values(enum_class: Any) -> list[str]:
    return [member.value for member in enum_class]
