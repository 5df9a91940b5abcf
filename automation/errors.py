"""Domain errors. Adapters map them to HTTP statuses or CLI messages; the domain never does."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class DomainError(Exception):
    code = "error"

    def __init__(self, message: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.message = message
        # The field paths the error is about, when it is about fields (forms show them there).
        self.errors: list[FieldError] = list(errors or [])


class InvalidInput(DomainError):
    """Input that breaks a rule; carries one error per offending field path."""

    code = "validation_error"

    def __init__(self, errors: list[FieldError] | FieldError, message: str | None = None) -> None:
        errors = [errors] if isinstance(errors, FieldError) else list(errors)
        first = errors[0] if errors else None
        super().__init__(
            message or (f"{first.path}: {first.message}" if first else "invalid"), errors
        )


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    """A rule about other rows (a unique name, a last admin); ``errors`` names the fields."""

    code = "conflict"


class TooLarge(InvalidInput):
    """Input over a size bound; ``errors`` names the field (``body`` for a whole request)."""

    code = "too_large"


class Forbidden(DomainError):
    code = "forbidden"


def join_path(parts: tuple[str | int, ...] | list[str | int]) -> str:
    """('items', 3, 'email') -> 'items[3].email', the path style every error uses."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def field_errors(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> list[FieldError]:
    """Pydantic errors as our FieldErrors, with paths like ``events[3].email``.

    Location parts starting with "~" are tags of discriminated unions (segments/schema.py),
    not keys of the input, so they are left out of the path. A list reported too short only
    because some of its items failed is not reported: the items' errors say why.
    """
    out = []
    for err in exc.errors():
        given = err.get("input")
        if (
            err["type"] == "too_short"
            and isinstance(given, list | tuple)
            and len(given) >= err.get("ctx", {}).get("min_length", 0)
        ):
            continue
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("~")))
        path = join_path(prefix + loc)
        message = err["msg"].removeprefix("Value error, ")
        out.append(FieldError(path or "body", message))
    return out
