"""Typed custom attributes: values are checked against the declared custom fields."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from automation.contacts.models import CustomField, FieldType
from automation.errors import FieldError

MAX_TEXT = 2000


def field_types(session: Session) -> dict[str, CustomField]:
    return {f.name: f for f in session.scalars(select(CustomField))}


def coerce_value(field: CustomField, value: Any) -> Any:
    """The stored form of ``value`` for ``field``, or ValueError naming what was expected.

    Dates are stored as ISO strings so they sort and compare the same in JSON on both databases.
    """
    if value is None:
        return None
    kind = field.type
    if kind is FieldType.TEXT:
        if not isinstance(value, str):
            raise ValueError("expected text")
        if len(value) > MAX_TEXT:
            raise ValueError(f"text longer than {MAX_TEXT} characters")
        return value
    if kind is FieldType.NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("expected a number")
        return value
    if kind is FieldType.BOOLEAN:
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if kind is FieldType.DATE:
        if not isinstance(value, str):
            raise ValueError("expected a date as YYYY-MM-DD")
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            raise ValueError("expected a date as YYYY-MM-DD") from None
    if kind is FieldType.CHOICE:
        if value not in field.options:
            raise ValueError(f"expected one of {', '.join(field.options)}")
        return value
    raise ValueError(f"unsupported field type {kind}")


def coerce_text(field: CustomField, raw: str) -> Any:
    """Parse a CSV cell (always text) into the field's type."""
    raw = raw.strip()
    if raw == "":
        return None
    if field.type is FieldType.NUMBER:
        try:
            number = float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
        return int(number) if number.is_integer() and "." not in raw else number
    if field.type is FieldType.BOOLEAN:
        lowered = raw.lower()
        if lowered in {"true", "yes", "1", "y"}:
            return True
        if lowered in {"false", "no", "0", "n"}:
            return False
        raise ValueError("expected true/false")
    return coerce_value(field, raw)


def validate_attributes(
    fields: dict[str, CustomField], attributes: dict[str, Any], path: str = "attributes"
) -> tuple[dict[str, Any], list[FieldError]]:
    """Coerced attributes and the errors for undeclared names or wrongly typed values."""
    clean: dict[str, Any] = {}
    errors: list[FieldError] = []
    for name, value in attributes.items():
        field = fields.get(name)
        if field is None:
            errors.append(
                FieldError(f"{path}.{name}", "undeclared attribute; declare a custom field first")
            )
            continue
        try:
            clean[name] = coerce_value(field, value)
        except ValueError as exc:
            errors.append(FieldError(f"{path}.{name}", str(exc)))
    return clean, errors
