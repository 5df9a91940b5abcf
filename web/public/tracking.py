"""Public tracking endpoints: open pixel, click redirect, unsubscribe, preferences, view in
browser. No login, no cookie session, no CSRF: the signed token is the authority.

Opens and clicks make no database write (ARCHITECTURE principle 7): the click reads the
compiled version's link list once per process (versions never change) and the hit is
appended to the hit queue. Unsubscribe and preferences write at once: the law and RFC 8058
want the unsubscribe to take effect now, and those requests are rare.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, abort, current_app, request
from werkzeug.datastructures import Headers
from werkzeug.urls import iri_to_uri

from automation.email.sandbox import RenderError
from automation.errors import InvalidInput, NotFound
from automation.instruments import TRACKING_HITS
from automation.signing import TokenClaims, TokenKind, make_identity
from automation.tracking import service, topics
from automation.tracking.bounces import (
    parse_feedback,
    parse_report,
    record_feedback,
    signature_valid,
)
from automation.tracking.hits import Hit, now_epoch
from web.auth import public
from web.database import db
from web.input import parse_json
from web.public.pages import NO_STORE, client_ip, page
from web.public.state import IDENTITY_COOKIE, TrackingState, site_origins, tracking, with_utm

bp = Blueprint("public", __name__)

PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


# The WSGI environ keys of the headers that announce a speculative (prefetch) load.
_PREFETCH_HEADERS = frozenset(("HTTP_PURPOSE", "HTTP_SEC_PURPOSE", "HTTP_X_MOZ", "HTTP_X_PURPOSE"))


def _counted(kind: str, verdict: str) -> None:
    """Count a hit; the labelled child is looked up once per process, not per request."""
    child = _COUNTERS.get((kind, verdict))
    if child is None:
        child = _COUNTERS.setdefault((kind, verdict), TRACKING_HITS.labels(kind, verdict))
    child.inc()


_COUNTERS: dict[tuple[str, str], Any] = {}


def _hit(t: TrackingState, kind: str, claims: TokenClaims) -> Hit:
    """The hit, read straight from the WSGI environ (the same values ``request.headers``
    gives): this runs on every open and click, and each ``request.headers`` lookup goes
    through two proxies, a third of the endpoint's own time."""
    environ = request.environ
    return Hit(
        id=t.hit_id(),
        kind=kind,
        message_id=claims.message_id,
        nonce=claims.nonce,
        template_version_id=claims.template_version_id,
        link_index=claims.link_index,
        at=now_epoch(),
        ip=(environ.get("REMOTE_ADDR") or "")[:45],
        user_agent=environ.get("HTTP_USER_AGENT", ""),
        head=environ.get("REQUEST_METHOD") == "HEAD",
        referer=environ.get("HTTP_REFERER", ""),
        prefetch=not _PREFETCH_HEADERS.isdisjoint(environ)
        and any("prefetch" in environ.get(k, "").lower() for k in _PREFETCH_HEADERS),
    )


@bp.route("/t/o/<token>", methods=["GET", "HEAD"], merge_slashes=False)
@public
def open_pixel(token: str) -> Response:
    t = tracking()
    claims = t.signer.verify(token, TokenKind.OPEN)
    if claims is not None:
        t.queue.push(_hit(t, "open", claims))
        _counted("open", "queued")
    else:
        _counted("open", "bad_token")
    return Response(PIXEL, mimetype="image/gif", headers={"Cache-Control": NO_STORE})


class _Redirect(Response):
    """The click's 302, its headers final when made: ``get_wsgi_headers`` hands them over
    as they are instead of copying and rescanning them, converting the Location to a URI
    and measuring the empty body on every click (`_redirect` did that once)."""

    def get_wsgi_headers(self, environ: Any) -> Headers:
        return self.headers


_HTML = "text/html; charset=utf-8"  # what Response would add: the content type stays as it was


def _redirect(location: str) -> Response:
    """A 302 to ``location``, a URI (``iri_to_uri`` applied)."""
    headers = Headers()
    # Set directly: building Headers from a list validates each value (no newline), two
    # thirds of the response's cost. These are constants and a URI (iri_to_uri quotes
    # control characters), nothing to validate.
    headers._list = [
        ("Cache-Control", NO_STORE),
        ("Content-Type", _HTML),
        ("Location", location),
        ("Content-Length", "0"),
    ]
    return _Redirect(status=302, headers=headers)


@bp.route("/t/c/<token>", methods=["GET", "HEAD"], merge_slashes=False)
@public
def click(token: str) -> Response:
    t = tracking()
    claims = t.signer.verify(token, TokenKind.CLICK)
    links = t.links(claims.template_version_id) if claims is not None else None
    if claims is None or links is None or claims.link_index is None:
        _counted("click", "bad_token")
        return Response("Not found", status=404, mimetype="text/plain")
    if claims.link_index >= len(links):
        return Response("Not found", status=404, mimetype="text/plain")
    link = links[claims.link_index]
    t.queue.push(_hit(t, "click", claims))
    _counted("click", "queued")
    if link.honeypot:  # the compiler's hidden trap: recorded, and nowhere to go
        return Response("", status=200, mimetype="text/plain", headers={"Cache-Control": NO_STORE})
    by_campaign = t.campaign_utm(claims.template_version_id)
    owner = t.owner(claims) if by_campaign else None
    campaign_utm = by_campaign.get(owner[1]) if owner is not None and owner[1] else None
    on_site = link.origin is not None and link.origin in site_origins()
    if campaign_utm is None and not on_site:
        return _redirect(link.location)
    url = with_utm(link.url, campaign_utm)
    identity = None
    if on_site:  # the contact's signed identifier: the site snippet stores it first-party
        owner = owner or t.owner(claims)
        if owner is not None:
            identity = make_identity(t.signer, owner[0], int(time.time() // 3600))
            url = with_utm(url, {IDENTITY_COOKIE: identity})
    response = _redirect(iri_to_uri(url))
    if identity is not None:  # and a cookie, for a tracking domain on the same site
        secure = url.startswith("https://")
        response.set_cookie(
            IDENTITY_COOKIE,
            identity,
            max_age=400 * 86400,
            httponly=True,
            secure=secure,
            samesite="None" if secure else "Lax",
        )
    return response


def _claims(token: str, kind: TokenKind) -> TokenClaims:
    claims = tracking().signer.verify(token, kind)
    if claims is None:
        abort(404)
    return claims


def _masked(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}…@{domain}"


@bp.route("/u/<token>", methods=["GET", "POST"], merge_slashes=False)
@public
def unsubscribe(token: str) -> Any:
    claims = _claims(token, TokenKind.UNSUBSCRIBE)
    session = db()
    try:
        if request.method != "POST":  # scanners follow every GET and HEAD: change nothing
            found = service.recipient(session, claims)
            return page(
                "Unsubscribe",
                f"Stop marketing email to {_masked(found.contact.email)}?",
                action=request.path,
                buttons=[("unsubscribe", "Unsubscribe")],
            )
        one_click = request.form.get("List-Unsubscribe") == "One-Click"
        found = service.unsubscribe(
            session,
            claims,
            ip=client_ip(),
            source="list_unsubscribe_post" if one_click else "unsubscribe_page",
        )
        session.commit()
    except NotFound:
        abort(404)
    if one_click:
        return Response("", status=200)
    return page(
        "You are unsubscribed", f"{_masked(found.contact.email)} gets no more marketing email."
    )


@bp.route("/p/<token>", methods=["GET", "POST"], merge_slashes=False)
@public
def preferences(token: str) -> Any:
    claims = _claims(token, TokenKind.PREFERENCES)
    session = db()
    try:
        if request.method == "POST":
            if request.form.get("do") == "unsubscribe":
                service.unsubscribe(session, claims, ip=client_ip(), source="preferences_page")
            elif request.form.get("do") == "resubscribe":
                service.resubscribe(session, claims, ip=client_ip())
            elif request.form.get("do") == "topics":
                found = service.recipient(session, claims)
                topics.choose_topics(session, found.contact.id, request.form.getlist("topic"))
            session.commit()
        found = service.recipient(session, claims)
        offered = topics.list_topics(session)
        chosen = topics.chosen_topics(session, found.contact.id) if offered else set()
    except NotFound:
        abort(404)
    subscribed = found.contact.status.value == "subscribed"
    choices = [(t.tag, t.label, t.tag in chosen) for t in offered] if subscribed else []
    buttons = (
        [("topics", "Save my topics")] * bool(choices)
        + [("unsubscribe", "Unsubscribe from marketing email")]
        if subscribed
        else [("resubscribe", "Subscribe again")]
        if found.contact.status.value == "unsubscribed"
        else []
    )
    return page(
        "Email preferences",
        f"{_masked(found.contact.email)} is {found.contact.status.value}."
        + (" Choose the topics you want to hear about." if choices else ""),
        action=request.path,
        buttons=buttons,
        topics=choices,
    )


@bp.route("/v/<token>", merge_slashes=False)
@public
def view(token: str) -> Any:
    claims = _claims(token, TokenKind.VIEW)
    settings = current_app.extensions["nurture"].settings
    try:
        html = service.view_in_browser(
            db(),
            claims,
            tracking().signer,
            settings.base_url,
            default_language=settings.email_language,
        )
    except NotFound:
        abort(404)
    except RenderError:
        # Rendered again with today's contact data, the email fails the budget or the HTML
        # checks (check_html): show nothing of it.
        return page(
            "This email cannot be shown",
            "Its content could not be shown in the browser. The email itself is unchanged.",
            status=422,
        )
    response = Response(html, mimetype="text/html", headers={"Cache-Control": NO_STORE})
    # The email's own inline styles; no scripts, forms, frames or <base> at all (the HTML
    # was checked already: this is the second wall).
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return response


def _json_error(status: int, code: str, message: str, details: list[dict[str, str]]) -> Any:
    from flask import jsonify

    body = {"error": {"code": code, "message": message, "details": details}}
    return jsonify(body), status


def _feedback(parse: Any) -> Any:
    settings = current_app.extensions["nurture"].settings
    body = request.get_data(cache=True)
    if not signature_valid(
        settings.webhook_secret, body, request.headers.get("X-Nurture-Signature")
    ):
        return _json_error(401, "unauthorized", "missing or wrong X-Nurture-Signature", [])
    try:
        items = parse(body)
        session = db()
        report = record_feedback(
            session, items, tracking().signer, source="webhook", settings=settings
        )
        session.commit()
    except InvalidInput as exc:
        return _json_error(422, exc.code, exc.message, [e.as_dict() for e in exc.errors])
    return report.as_dict()


@bp.route("/webhooks/feedback", methods=["POST"])
@public
def feedback_webhook() -> Any:
    """Bounces and complaints as JSON (shape in automation/tracking/bounces.py)."""

    def parse(body: bytes) -> Any:
        return parse_feedback(parse_json(body))

    return _feedback(parse)


@bp.route("/webhooks/dsn", methods=["POST"])
@public
def dsn_webhook() -> Any:
    """A delivery status notification or ARF report, posted as the raw mail."""
    return _feedback(parse_report)
