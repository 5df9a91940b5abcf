"""What every request's input must be before a view reads it: JSON that is JSON (no NaN or
Infinity, which PostgreSQL's JSONB refuses; not nested past a bound) and text without NUL
characters or lone surrogates (which PostgreSQL cannot store and UTF-8 cannot encode).

Every JSON body goes through ``parse_json`` and every form field and query string value
through ``check_request_text``, so a bad byte gets a 4xx naming its field wherever it is
sent, instead of a database error later.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request

from automation.db import json_depth
from automation.errors import FieldError, InvalidInput, NotFound, join_path

# Deep enough for every document Nurture reads (a workflow, a segment tree, event
# properties bounded at 32 levels), shallow enough that no reader recurses into trouble.
MAX_JSON_DEPTH = 64
FORM_TYPES = frozenset(("application/x-www-form-urlencoded", "multipart/form-data"))
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(raw: bytes | str, field: str = "body") -> Any:
    """The JSON document in ``raw``, or InvalidInput naming ``field`` and what is wrong."""
    try:
        value = json.loads(raw, parse_constant=_no_constants)
    except RecursionError:  # the C scanner's own limit, far past MAX_JSON_DEPTH
        raise InvalidInput(FieldError(field, "the JSON is nested too deeply")) from None
    except ValueError as exc:  # also UnicodeDecodeError
        raise InvalidInput(FieldError(field, f"not valid JSON: {exc}")) from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise InvalidInput(
            FieldError(field, f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels")
        )
    problems = text_problems(value, (field,) if field != "body" else ())
    if problems:
        raise InvalidInput(problems)
    return value


def _text_problem(text: str) -> str | None:
    found = _BAD_TEXT.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character"
    return "contains a lone surrogate (not valid Unicode)"


def text_problems(value: Any, prefix: tuple[str | int, ...] = ()) -> list[FieldError]:
    """A FieldError for each string in a JSON value (keys too) that holds a NUL or a lone
    surrogate, with the path of the field it is in."""
    out: list[FieldError] = []
    pending: list[tuple[Any, tuple[str | int, ...]]] = [(value, prefix)]
    while pending:
        item, path = pending.pop()
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                out.append(FieldError(join_path(path) or "body", problem))
        elif isinstance(item, dict):
            for key, child in item.items():
                problem = _text_problem(key)
                if problem:
                    key = _BAD_TEXT.sub("\ufffd", key)
                    out.append(FieldError(join_path((*path, key)), f"its name {problem}"))
                pending.append((child, (*path, key)))
        elif isinstance(item, list):
            pending.extend((child, (*path, i)) for i, child in enumerate(item))
    return sorted(out, key=lambda e: e.path)


def check_request_text() -> None:
    """Refuse a request whose path segments, query string, form fields or upload file names
    hold a NUL (a ``before_request`` hook of every app). A path segment with one names
    nothing, as an id too large for its column names nothing: 404, so a mutated public
    token is turned away like any other (docs/architecture.md, principle 6)."""
    for key, value in (request.view_args or {}).items():
        if isinstance(value, str) and text_problems({key: value}, ("path",)):
            raise NotFound(f"no such {key.replace('_', ' ')}")
    problems: list[FieldError] = []
    for key, value in request.args.items(multi=True):
        problems += text_problems({key or "": value}, ("query",))
    if request.mimetype in FORM_TYPES:
        for key, value in request.form.items(multi=True):
            problems += text_problems({key or "": value})
        for key, upload in request.files.items(multi=True):
            problems += text_problems({key or "": {"filename": upload.filename or ""}})
    if problems:
        raise InvalidInput(problems)
