"""Every API error is JSON of one shape: {"error": {"code", "message", "details": [{path,
message}]}}. Bad input is a 4xx, never a 500."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from automation.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound, TooLarge
from web.api.access import Unauthorized

# Most specific first: a TooLarge is also an InvalidInput.
STATUS = {TooLarge: 413, InvalidInput: 422, NotFound: 404, Conflict: 409, Forbidden: 403}


def error_body(code: str, message: str, details: list[dict[str, str]] | None = None) -> Any:
    return jsonify({"error": {"code": code, "message": message, "details": details or []}})


def is_api_request() -> bool:
    return request.path.startswith("/api/")


def register_api_errors(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def domain_error(exc: DomainError) -> Any:
        status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 400)
        details = [e.as_dict() for e in exc.errors]
        if not is_api_request() and request.accept_mimetypes.best != "application/json":
            return render_template("error.html", status=status, message=exc.message), status
        return error_body(exc.code, exc.message, details), status

    @app.errorhandler(Unauthorized)
    def unauthorized(exc: Unauthorized) -> Any:
        response = error_body("unauthorized", str(exc))
        response.headers["WWW-Authenticate"] = 'Bearer realm="nurture"'
        return response, 401

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        # The exception's own headers stay (a 405's Allow, a 401's WWW-Authenticate); the
        # body and its type are ours.
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        if not is_api_request():
            page = render_template(
                "error.html", status=exc.code, message=exc.description or exc.name
            )
            return page, exc.code or 500, headers
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_body(code, exc.description or exc.name or "error"), exc.code or 500, headers


def register_public_errors(app: Flask) -> None:
    """The tracking app's errors (no pages there to render one in): JSON of the same shape."""

    @app.errorhandler(DomainError)
    def domain_error(exc: DomainError) -> Any:
        status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 400)
        return error_body(exc.code, exc.message, [e.as_dict() for e in exc.errors]), status
