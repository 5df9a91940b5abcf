"""Every CSV Nurture writes goes through here, so no cell opens as a formula.

Spreadsheets run a cell that starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or
carriage return before one) as a formula: a contact named ``=HYPERLINK(...)`` from an
anonymous form post would run in the marketer's spreadsheet. Such text cells get a leading
``'`` (OWASP's advice), which spreadsheets show as text. Numbers stay numbers: only text
can carry a formula.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import IO, Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: Any) -> Any:
    """``value`` as a spreadsheet reads it as data: text that starts like a formula is
    prefixed with ``'``; anything else is unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def write_rows(out: IO[str], rows: Iterable[Iterable[Any]]) -> None:
    """Write ``rows`` as CSV to a text file opened with ``newline=""``."""
    writer = csv.writer(out)
    for row in rows:
        writer.writerow([escape_cell(value) for value in row])


def csv_text(rows: Iterable[Iterable[Any]]) -> str:
    """``rows`` as one CSV string."""
    out = io.StringIO()
    write_rows(out, rows)
    return out.getvalue()


def csv_chunks(rows: Iterable[Iterable[Any]], rows_per_chunk: int = 1000) -> Iterator[str]:
    """``rows`` as CSV text in chunks of ``rows_per_chunk`` rows, for a streamed download."""
    out = io.StringIO()
    writer = csv.writer(out)
    for count, row in enumerate(rows, start=1):
        writer.writerow([escape_cell(value) for value in row])
        if count % rows_per_chunk == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()
