"""Who is calling the API: an API key (Authorization: Bearer) or a logged-in browser."""

from __future__ import annotations

from dataclasses import dataclass

from flask import g, request
from flask_wtf.csrf import CSRFError, validate_csrf
from wtforms import ValidationError as WTFValidationError

from automation.accounts.models import Role
from automation.accounts.service import verify_api_key
from web.database import db


class Unauthorized(Exception):
    pass


@dataclass(frozen=True)
class Principal:
    kind: str  # "api_key" | "user"
    id: int
    role: Role
    user_id: int | None


def authenticate_request() -> Principal:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("use Authorization: Bearer <api key>")
        key = verify_api_key(db(), token.strip())
        if key is None:
            raise Unauthorized("unknown or revoked API key")
        db().commit()  # last_used_at
        return Principal("api_key", key.id, key.role, key.created_by_id)
    user = getattr(g, "user", None)
    if user is None:
        raise Unauthorized("authentication required: send an API key as a Bearer token")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        # A browser session is cookie-based, so state changes need the CSRF token.
        try:
            validate_csrf(request.headers.get("X-CSRFToken", ""))
        except (CSRFError, WTFValidationError) as exc:
            raise Unauthorized(f"CSRF check failed: {exc}") from None
    return Principal("user", user.id, user.role, user.id)
