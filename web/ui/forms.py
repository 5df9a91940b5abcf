"""What every page form shares: domain errors turned into per-field messages, and the
re-rendered form answered with 422 after the transaction was rolled back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from flask import render_template
from pydantic import BaseModel, ValidationError

from automation.errors import Conflict, DomainError, InvalidInput, field_errors
from web.database import db

# Errors a user can fix by changing the form; anything else (NotFound, …) is not a form error.
FORM_ERRORS = (InvalidInput, Conflict)
INVALID = 422
M = TypeVar("M", bound=BaseModel)

Errors = dict[str, str]  # field path ("email", "attributes.plan") → message; "" for the form


def errors_of(exc: DomainError) -> Errors:
    """One message per field path (the first), or the message for the form as a whole."""
    errors: Errors = {}
    for error in exc.errors:
        errors.setdefault(error.path, error.message)
    if not errors:
        errors[""] = exc.message
    return errors


def parse(model: type[M], data: Mapping[str, Any]) -> M:
    """Validate form data with a pydantic model; InvalidInput names each bad field."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise InvalidInput(field_errors(exc)) from None


def rejected(template: str, exc: DomainError, **context: Any) -> tuple[str, int]:
    """Roll back whatever the failed attempt wrote and show the form again with its errors."""
    db().rollback()
    return render_template(template, errors=errors_of(exc), **context), INVALID
