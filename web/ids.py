"""Ids and page numbers from requests: the URL converters ``<int:x>`` (an Integer key) and
``<bigid:x>`` (a BigId key, automation/db.py), and the same rule for a query or form field
(``request.args.get("version", type=row_id)``).

Any run of digits is an id; one beyond what the column can hold is read as NO_ROW (0), an
id no row has, so the view answers it as it answers every unknown id (a 404, or "no such
contact" on a form) instead of PostgreSQL refusing the comparison ("integer out of
range"). Refusing the URL match instead would be wrong twice: Werkzeug would then answer
405 when the same path is declared for another method, and no view would decide."""

from __future__ import annotations

from typing import Any

from werkzeug.routing import BaseConverter

from automation.db import BIG_ID_MAX, ID_MAX, PAGE_MAX

NO_ROW = 0


def _digits(value: str) -> str:
    value = value.strip()
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"not a number: {value[:20]!r}")
    return value


def _bounded_id(value: str, top: int) -> int:
    digits = _digits(value)
    if len(digits) > len(str(top)):
        return NO_ROW
    number = int(digits)
    return number if number <= top else NO_ROW


def row_id(value: str) -> int:
    """An Integer key from a query or form field (ValueError if it is not a number, which
    makes Werkzeug's ``get(..., type=row_id)`` give the default)."""
    return _bounded_id(value, ID_MAX)


def big_row_id(value: str) -> int:
    """A BigId key from a query or form field."""
    return _bounded_id(value, BIG_ID_MAX)


def page_number(value: str) -> int:
    """A page number from a query string; one out of range gives the default page."""
    digits = _digits(value)
    if len(digits) > len(str(PAGE_MAX)) or not 1 <= int(digits) <= PAGE_MAX:
        raise ValueError(f"not a page: {digits[:20]}")
    return int(digits)


class RowIdConverter(BaseConverter):
    regex = r"\d+"
    weight = 50
    top = ID_MAX

    def to_python(self, value: str) -> Any:
        return _bounded_id(value, self.top)

    def to_url(self, value: Any) -> str:
        return str(int(value))


class BigRowIdConverter(RowIdConverter):
    top = BIG_ID_MAX


CONVERTERS = {"int": RowIdConverter, "bigid": BigRowIdConverter}
