"""Domain errors. Adapters map them to HTTP statuses or CLI messages; the domain never does."""

from __future__ import annotations

from dataclasses import dataclass


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
