"""Typed custom attributes: values are checked against the declared custom fields."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime
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


@dataclass(frozen=True)
class TextFormat:
    """How a file writes dates and numbers (an import declares it)."""

    date_format: str | None = None  # a strptime format, e.g. %m/%d/%Y; ISO is always read
    decimal_comma: bool = False  # 1.234,5 rather than 1,234.5


PLAIN = TextFormat()
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_GROUPED = {
    False: re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?"),
    True: re.compile(r"[+-]?\d{1,3}(\.\d{3})+(,\d+)?"),
}
_SPACES = str.maketrans("", "", " \u00a0\u202f'\u2019")


def check_date_format(date_format: str) -> str:
    """``date_format`` if it is a strptime format that reads a day, a month and a year;
    ValueError naming what is missing otherwise."""
    missing = [
        part
        for part, codes in (("day", "dj"), ("month", "mbB"), ("year", "Yy"))
        if not any(f"%{c}" in date_format for c in codes)
    ]
    if missing or len(date_format) > 32:
        raise ValueError(
            "a date format such as %m/%d/%Y or %d.%m.%Y"
            + (f" (it has no {', '.join(missing)})" if missing else "")
        )
    try:
        datetime(2026, 11, 25).strftime(date_format)
    except ValueError:
        raise ValueError("a date format such as %m/%d/%Y or %d.%m.%Y") from None
    return date_format


def _number(raw: str, fmt: TextFormat) -> int | float:
    text = raw.translate(_SPACES)
    decimal = "," if fmt.decimal_comma else "."
    if _GROUPED[fmt.decimal_comma].fullmatch(text):
        text = text.replace("." if fmt.decimal_comma else ",", "")
    text = text.replace(decimal, ".") if fmt.decimal_comma else text
    if len(text) > 40 or not _NUMBER.fullmatch(text) or not math.isfinite(float(text)):
        raise ValueError("expected a number")
    number = float(text)
    return int(number) if number.is_integer() and not any(c in text for c in ".eE") else number


def _date(raw: str, fmt: TextFormat) -> str:
    try:
        return date.fromisoformat(raw).isoformat()
    except ValueError:
        pass
    if fmt.date_format:
        try:
            return datetime.strptime(raw, fmt.date_format).date().isoformat()
        except ValueError:
            pass
        example = datetime(2026, 11, 25).strftime(fmt.date_format)
        raise ValueError(f"expected a date as {fmt.date_format} (e.g. {example}) or YYYY-MM-DD")
    raise ValueError("expected a date as YYYY-MM-DD")


def coerce_text(field: CustomField, raw: str, fmt: TextFormat = PLAIN) -> Any:
    """Parse text typed by a person (a CSV cell, a form input) into the field's type, as
    tolerantly as a person reads it: choices in any case, numbers with thousands
    separators, dates in the declared format."""
    raw = raw.strip()
    if raw == "":
        return None
    if field.type is FieldType.NUMBER:
        return _number(raw, fmt)
    if field.type is FieldType.BOOLEAN:
        lowered = raw.lower()
        if lowered in {"true", "yes", "1", "y", "on"}:
            return True
        if lowered in {"false", "no", "0", "n", "off"}:
            return False
        raise ValueError("expected true/false")
    if field.type is FieldType.DATE:
        return _date(raw, fmt)
    if field.type is FieldType.CHOICE:
        by_case = {option.casefold(): option for option in field.options}
        return coerce_value(field, by_case.get(raw.casefold(), raw))
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
