"""What a template check found, and where: the path (``mjml``, ``subject`` …) with the
line and column of the source it was found in."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any

from automation.errors import FieldError


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def field_error(self) -> FieldError:
        where = ""
        if self.line is not None:
            where = f"line {self.line}" + (f", column {self.column}" if self.column else "")
            where += ": "
        return FieldError(self.path, where + self.message)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "message": self.message,
            "line": self.line,
            "column": self.column,
        }


class SourceLines:
    """Offsets ↔ (line, column), both 1-based."""

    def __init__(self, text: str) -> None:
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def position(self, offset: int) -> tuple[int, int]:
        index = bisect.bisect_right(self.starts, offset) - 1
        return index + 1, offset - self.starts[index] + 1

    def offset(self, line: int, column0: int) -> int:
        return self.starts[min(line, len(self.starts)) - 1] + column0
