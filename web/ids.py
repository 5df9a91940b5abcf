"""URL converters for ids: ``<int:x>`` for an Integer key, ``<bigid:x>`` for a BigId key
(automation/db.py). Any run of digits matches; one beyond what the column can hold is read
as 0, an id no row has, so the view answers it as it answers every unknown id (a 404)
instead of PostgreSQL refusing the comparison ("integer out of range").

Refusing the match instead would be wrong twice: Werkzeug would then answer 405 when the
same path is declared for another method, and the refusal would happen in no view."""

from __future__ import annotations

from typing import Any

from werkzeug.routing import BaseConverter

from automation.db import BIG_ID_MAX, ID_MAX

NO_ROW = 0


class RowIdConverter(BaseConverter):
    regex = r"\d+"
    weight = 50
    top = ID_MAX

    def to_python(self, value: str) -> Any:
        if len(value) > len(str(self.top)):
            return NO_ROW
        number = int(value)
        return number if number <= self.top else NO_ROW

    def to_url(self, value: Any) -> str:
        return str(int(value))


class BigRowIdConverter(RowIdConverter):
    top = BIG_ID_MAX


CONVERTERS = {"int": RowIdConverter, "bigid": BigRowIdConverter}
