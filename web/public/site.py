"""Public site endpoints: the tracking snippet, the collect endpoint, lead-capture form
posts and the double opt-in confirmation. No login, no cookie session, no CSRF token: the
Origin check (CORS limited to the configured site origins), validation, a honeypot and a
rate limit guard them. Collect writes nothing to the database (the "site" queue); a form
post writes at once (a contact and its consent must exist when the visitor is told so).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, redirect, request

from automation.errors import FieldError, InvalidInput, NotFound
from automation.forms import service as forms
from automation.signing import TokenKind, verify_identity, verify_identity_hash
from automation.tracking.hits import HitQueue, make_hit_writer
from automation.tracking.site import MAX_BODY_BYTES, VISITOR_ID, parse_collect, records_of
from automation.tracking.sites import origin_of
from web.auth import public
from web.database import db
from web.input import parse_json
from web.public.pages import NO_STORE, client_ip, page
from web.public.state import IDENTITY_COOKIE, app_state, site_origins, tracking
from web.ratelimits import rate_limits

bp = Blueprint("site", __name__)

SCRIPT = (Path(__file__).parent / "nurture.js").read_bytes()
SCRIPT_ETAG = hashlib.sha256(SCRIPT).hexdigest()[:16]


class _Site:
    """Per-app pieces built once: the site queue."""

    def __init__(self, settings: Any) -> None:
        self.queue: HitQueue = make_hit_writer(settings, "site")


def site() -> _Site:
    return app_state("nurture_site", _Site)


def _origin() -> str | None:
    """The request's Origin when it is an allowed site origin (or Nurture itself)."""
    origin = request.headers.get("Origin")
    if not origin:
        return None
    clean = origin_of(origin)
    own = origin_of(current_app.extensions["nurture"].settings.base_url)
    if clean is not None and (clean in site_origins() or clean == own):
        return origin
    return None


def _cors(response: Response, origin: str | None) -> Response:
    response.headers["Vary"] = "Origin"
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
    return response


def _error(status: int, code: str, message: str, details: list[FieldError] | None = None) -> Any:
    body = {
        "error": {"code": code, "message": message, "details": [d.as_dict() for d in details or []]}
    }
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = NO_STORE
    return response


def _rate_limited(origin: str | None, per_minute: int, *key: str) -> Any:
    """A 429 with Retry-After when ``key`` is over ``per_minute``, else None."""
    wait = rate_limits().hit(per_minute, *key)
    if wait is None:
        return None
    response = _error(429, "rate_limited", f"too many requests; try again in {wait} s")
    response.headers["Retry-After"] = str(wait)
    return _cors(response, origin)


def _settings() -> Any:
    return current_app.extensions["nurture"].settings


def _preflight(methods: str) -> Response:
    origin = _origin()
    if origin is None:
        return _cors(_error(403, "forbidden", "this origin is not an allowed site origin"), None)
    response = Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = methods
    response.headers["Access-Control-Allow-Headers"] = "Content-Type, Accept"
    response.headers["Access-Control-Max-Age"] = "600"
    return _cors(response, origin)


@bp.route("/t/nurture.js", methods=["GET"])
@public
def script() -> Response:
    """Our own snippet, cacheable for an hour (revalidated with its ETag)."""
    if request.if_none_match.contains(SCRIPT_ETAG):
        return Response(status=304)
    response = Response(SCRIPT, mimetype="application/javascript")
    response.headers["Cache-Control"] = "public, max-age=3600"
    response.headers["ETag"] = f'"{SCRIPT_ETAG}"'
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def _json_body() -> Any:
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise InvalidInput(FieldError("body", f"larger than {MAX_BODY_BYTES // 1024} KB"))
    raw = request.get_data(cache=False)
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidInput(FieldError("body", f"larger than {MAX_BODY_BYTES // 1024} KB"))
    return parse_json(raw)


@bp.route("/t/collect", methods=["POST", "OPTIONS"])
@public
def collect() -> Any:
    """Page views, custom events and identify calls from the snippet; queued, never
    written here. 202 when accepted; 429 past the rate of an address or a visitor."""
    if request.method == "OPTIONS":
        return _preflight("POST")
    origin = _origin()
    if origin is None:
        return _cors(
            _error(403, "forbidden", "the Origin header is missing or not an allowed site origin"),
            None,
        )
    settings = _settings()
    limited = _rate_limited(origin, settings.collect_rate_limit_address, "collect-ip", client_ip())
    if limited is not None:
        return limited
    try:
        payload = parse_collect(_json_body())
    except InvalidInput as exc:
        return _cors(_error(422, exc.code, exc.message, exc.errors), origin)
    limited = _rate_limited(
        origin, settings.collect_rate_limit_visitor, "collect-visitor", payload.visitor_id
    )
    if limited is not None:
        return limited
    token = payload.identity or request.cookies.get(IDENTITY_COOKIE)
    now = time.time()
    contact_id = (
        verify_identity(tracking().signer, token, int(now // 3600)) if token else None
    )  # a stale or forged identifier is ignored: the visitor stays anonymous
    # identify({email}) links to a contact only with the site's proof (its identity hash).
    site_origin = origin_of(origin)
    email, digest = payload.email, payload.identity_hash
    verified = (
        email is not None
        and digest is not None
        and site_origin is not None
        and verify_identity_hash(tracking().signer, site_origin, email, digest)
    )
    queue = site().queue
    records = records_of(payload, contact_id=contact_id, email_verified=verified, at=now)
    for record in records:
        queue.push_line(record.encode())
    answer: dict[str, Any] = {"accepted": len(records)}
    if payload.email is not None:
        answer["identify"] = "verified" if verified else "unverified"
    response = jsonify(answer)
    response.status_code = 202
    response.headers["Cache-Control"] = NO_STORE
    return _cors(response, origin)


# --- forms --------------------------------------------------------------------------------


def _wants_json() -> bool:
    return request.is_json or request.accept_mimetypes.best == "application/json"


def _form_values() -> dict[str, Any]:
    if request.is_json:
        body = _json_body()
        if not isinstance(body, dict):
            raise InvalidInput(FieldError("body", "must be a JSON object"))
        return body
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise InvalidInput(FieldError("body", f"larger than {MAX_BODY_BYTES // 1024} KB"))
    return {k: v for k, v in request.form.items()}


@bp.route("/f/<public_id>", methods=["POST", "OPTIONS"])
@public
def form_post(public_id: str) -> Any:
    if request.method == "OPTIONS":
        return _preflight("POST")
    origin = _origin()
    if request.headers.get("Origin") and origin is None:
        return _cors(_error(403, "forbidden", "this origin is not an allowed site origin"), None)
    limited = _rate_limited(
        origin, _settings().form_rate_limit, "form", public_id[:32], client_ip()
    )
    if limited is not None:
        return limited
    session = db()
    try:
        form = forms.form_by_public_id(session, public_id)
        values = _form_values()
        visitor = str(values.get(forms.VISITOR_FIELD) or "")
        visitor_id = visitor if VISITOR_ID.match(visitor) else None  # else: not linked
        result = forms.submit_form(session, form, values, ip=client_ip(), visitor_id=visitor_id)
        session.commit()
    except NotFound:
        return _cors(_error(404, "not_found", "no such form"), origin)
    except InvalidInput as exc:
        session.rollback()
        if _wants_json():
            return _cors(_error(422, exc.code, exc.message, exc.errors), origin)
        text = "; ".join(f"{e.path}: {e.message}" for e in exc.errors)
        return page("Please check the form", text, status=422)
    message = (
        "Almost done: check your inbox and confirm your subscription."
        if result.status == "pending"
        else form.success_message or "Thank you!"
    )
    if _wants_json():
        return _cors(jsonify({"status": result.status, "message": message}), origin)
    if form.redirect_url and result.status != "pending":
        return redirect(form.redirect_url, code=303)
    return page("Thank you", message)


@bp.route("/f/confirm/<token>", methods=["GET", "POST"], merge_slashes=False)
@public
def confirm(token: str) -> Any:
    """GET (and HEAD) shows a button and changes nothing (mail scanners follow every link,
    with either); only the POST from it confirms the subscription."""
    claims = tracking().signer.verify(token, TokenKind.CONFIRM)
    if claims is None:
        abort(404)
    session = db()
    try:
        if request.method != "POST":
            form, _ = forms.submission_of(session, claims)
            return page(
                "Confirm your subscription",
                form.consent_text or f"Subscribe through {form.name}?",
                action=request.path,
                buttons=[("confirm", "Yes, subscribe me")],
            )
        forms.confirm_submission(session, claims, ip=client_ip())
        session.commit()
    except NotFound:
        abort(404)
    return page("Subscription confirmed", "Thank you: you are subscribed.")
