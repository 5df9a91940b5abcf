"""Values in conditions: what a value must look like for an operator and a type, and how a
text value is read (numbers, calendar dates, instants)."""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from typing import Any

from automation.segments.fields import (
    NO_VALUE,
    ORDER,
    PROPERTY_OPERATORS,
    RELATIVE,
    TEXT_MATCH,
    Op,
    Operator,
    ValueType,
)
from automation.segments.schema import MAX_DAYS, Path, PropertyCondition

MAX_VALUES = 1000  # values in one in / not_in list
MAX_TEXT = 2000


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def is_date_text(value: Any) -> bool:
    if not isinstance(value, str) or not _DATE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def parse_instant(value: Any) -> datetime:
    """An aware UTC datetime from an ISO string with an offset, or a date (midnight UTC)."""
    if not isinstance(value, str):
        raise ValueError("expected an ISO date or date-time")
    if is_date_text(value):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("expected an ISO date or date-time, e.g. 2026-01-31T09:00:00Z") from None
    if parsed.tzinfo is None:
        raise ValueError("a date-time needs a time zone offset, e.g. Z")
    return parsed.astimezone(UTC)


def property_kind(value: Any) -> ValueType | None:
    """The type an event property comparison takes from its value."""
    if isinstance(value, bool):
        return ValueType.BOOLEAN
    if is_number(value):
        return ValueType.NUMBER
    if isinstance(value, str):
        return ValueType.TEXT
    return None


def _scalar_error(kind: ValueType, options: tuple[str, ...], value: Any) -> str | None:
    if kind is ValueType.TEXT:
        if not isinstance(value, str):
            return "expected text"
        return f"text longer than {MAX_TEXT} characters" if len(value) > MAX_TEXT else None
    if kind is ValueType.CHOICE:
        if not isinstance(value, str):
            return "expected text"
        if options and value not in options:
            return f"expected one of {', '.join(options)}"
        return None
    if kind is ValueType.NUMBER:
        return None if is_number(value) else "expected a number"
    if kind is ValueType.BOOLEAN:
        return None if isinstance(value, bool) else "expected true or false"
    if kind is ValueType.DATE:
        return None if is_date_text(value) else "expected a date as YYYY-MM-DD"
    try:
        parse_instant(value)
    except ValueError as exc:
        return str(exc)
    return None


def _ordered(kind: ValueType, low: Any, high: Any) -> bool:
    if kind is ValueType.DATETIME:
        return parse_instant(low) <= parse_instant(high)
    return bool(low <= high)


def value_errors(
    kind: ValueType, options: tuple[str, ...], operator: Operator, value: Any
) -> list[tuple[tuple[str | int, ...], str]]:
    """(sub-path, message) for a value that does not fit the operator and the type."""
    if operator in NO_VALUE:
        return [] if value is None else [(("value",), f"{operator.value} takes no value")]
    if operator in RELATIVE:
        if not isinstance(value, int) or isinstance(value, bool):
            return [(("value",), "expected a whole number of days")]
        if not 0 <= value <= MAX_DAYS:
            return [(("value",), f"expected 0 to {MAX_DAYS} days")]
        return []
    if operator in (Op.IN, Op.NOT_IN):
        if not isinstance(value, list) or not value:
            return [(("value",), "expected a non-empty list")]
        if len(value) > MAX_VALUES:
            return [(("value",), f"at most {MAX_VALUES} values")]
        return [
            (("value", i), message)
            for i, item in enumerate(value)
            if (message := _scalar_error(kind, options, item))
        ]
    if operator is Op.BETWEEN:
        if not isinstance(value, list) or len(value) != 2:
            return [(("value",), "expected [low, high]")]
        errors: list[tuple[Path, str]] = [
            (("value", i), message)
            for i, item in enumerate(value)
            if (message := _scalar_error(kind, options, item))
        ]
        if not errors and not _ordered(kind, value[0], value[1]):
            errors.append((("value",), "low is greater than high"))
        return errors
    if operator in TEXT_MATCH:
        if not isinstance(value, str) or not value:
            return [(("value",), "expected non-empty text")]
        return [(("value",), f"text longer than {MAX_TEXT}")] if len(value) > MAX_TEXT else []
    message = _scalar_error(kind, options, value)
    return [(("value",), message)] if message else []


def property_value_kind(operator: Operator, value: Any) -> ValueType | None:
    """The comparison type of a (valid) property condition; None for is_set / is_not_set."""
    if operator in NO_VALUE:
        return None
    if operator in TEXT_MATCH:
        return ValueType.TEXT
    sample = value[0] if isinstance(value, list) and value else value
    return property_kind(sample)


def property_errors(cond: PropertyCondition) -> list[tuple[tuple[str | int, ...], str]]:
    if cond.operator not in PROPERTY_OPERATORS:
        allowed = ", ".join(o.value for o in PROPERTY_OPERATORS)
        return [(("operator",), f"not valid for event properties; use one of {allowed}")]
    if cond.operator in NO_VALUE or cond.operator in TEXT_MATCH:
        return value_errors(ValueType.TEXT, (), cond.operator, cond.value)
    sample = cond.value[0] if isinstance(cond.value, list) and cond.value else cond.value
    kind = property_kind(sample)
    if kind is None:
        return [(("value",), "expected text, a number or true/false")]
    if kind is ValueType.BOOLEAN and cond.operator in ORDER:
        return [(("value",), "compare text or numbers, not true/false")]
    return value_errors(kind, (), cond.operator, cond.value)
