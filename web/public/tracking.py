"""Public tracking endpoints: open pixel, click redirect, unsubscribe, preferences, view in
browser. No login, no cookie session, no CSRF: the signed token is the authority.

Opens and clicks make no database write (ARCHITECTURE principle 7): the click reads the
compiled version's link list once per process (versions never change) and the hit is
appended to the hit queue. Unsubscribe and preferences write at once: the law and RFC 8058
want the unsubscribe to take effect now, and those requests are rare.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import Blueprint, Flask, Response, abort, current_app, render_template_string, request
from werkzeug.datastructures import Headers
from werkzeug.urls import iri_to_uri

from automation.config import Settings, load_settings
from automation.errors import NotFound
from automation.instruments import TRACKING_HITS
from automation.runtime import build_runtime
from automation.signing import TokenClaims, TokenKind, TokenSigner, make_identity
from automation.tracking import service, topics
from automation.tracking.hits import Hit, HitQueue, make_hit_writer, new_hit_id, now_epoch
from automation.tracking.sites import origin_of
from web.auth import public

bp = Blueprint("public", __name__)

PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_STORE = "no-store, no-cache, must-revalidate, max-age=0"


class _Link(NamedTuple):
    """A compiled link as the click redirect uses it, worked out once per process."""

    url: str  # the destination with the link's own UTM parameters (as compiled: an IRI)
    location: str  # the same as a URI: the Location header when the click adds nothing
    origin: str | None  # its origin: destinations on a site origin identify the visitor
    honeypot: bool


def _link(link: dict[str, Any]) -> _Link:
    if link.get("honeypot"):
        return _Link("", "", None, True)
    # A compiled destination (http/https, checked at compile time), never the request's.
    url = with_utm(str(link["url"]), link.get("utm"))
    return _Link(url, iri_to_uri(url), origin_of(url), False)


class _Tracking:
    """Per-app pieces of the hot path, built once."""

    def __init__(self, settings: Settings) -> None:
        self.signer = TokenSigner.from_settings(settings)
        self.queue: HitQueue = make_hit_writer(settings)
        self._links: dict[int, list[_Link]] = {}
        self._lock = threading.Lock()
        # Hit ids: a random per-process prefix and a counter (no syscall per hit).
        self._prefix = new_hit_id()
        self._counter = itertools.count()
        # Campaign UTM parameters by template version (re-read every 30 s) and the
        # (contact, campaign) of messages whose clicks need them: read only for versions a
        # campaign with UTM uses, or destinations on a site origin.
        self._utm: dict[int, tuple[float, dict[int, dict[str, str]]]] = {}
        self._owners: dict[int, tuple[int, int | None] | None] = {}

    def hit_id(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"

    def links(self, version_id: int) -> list[_Link] | None:
        links = self._links.get(version_id)
        if links is None:
            from automation.email.models import TemplateVersion
            from web.database import nurture

            with nurture().sessions() as session:
                version = session.get(TemplateVersion, version_id)
                if version is None:
                    return None
                links = [_link(link) for link in version.links]
            with self._lock:
                if len(self._links) > 10_000:
                    self._links.clear()
                self._links[version_id] = links
        return links

    def campaign_utm(self, version_id: int) -> dict[int, dict[str, str]]:
        """{campaign id: utm} of the campaigns sending ``version_id`` that ask for UTM."""
        cached = self._utm.get(version_id)
        if cached is not None and time.monotonic() - cached[0] < 30:
            return cached[1]
        from sqlalchemy import select

        from automation.campaigns.models import Campaign, CampaignVariant
        from web.database import nurture

        with nurture().sessions() as session:
            rows = session.execute(
                select(Campaign.id, Campaign.utm)
                .join(CampaignVariant, CampaignVariant.campaign_id == Campaign.id)
                .where(CampaignVariant.template_version_id == version_id)
            ).all()
        found = {cid: dict(utm) for cid, utm in rows if utm}
        with self._lock:
            if len(self._utm) > 10_000:
                self._utm.clear()
            self._utm[version_id] = (time.monotonic(), found)
        return found

    def owner(self, claims: TokenClaims) -> tuple[int, int | None] | None:
        """(contact id, campaign id) of the token's message; None if it is gone."""
        if claims.message_id in self._owners:
            return self._owners[claims.message_id]
        from sqlalchemy import select

        from automation.email.models import Message
        from web.database import nurture

        with nurture().sessions() as session:
            row = session.execute(
                select(Message.contact_id, Message.campaign_id, Message.token_nonce).where(
                    Message.id == claims.message_id
                )
            ).first()
        found = (
            (row.contact_id, row.campaign_id)
            if row is not None and (row.token_nonce & 0xFFFFFFFF) == claims.nonce
            else None
        )
        with self._lock:
            if len(self._owners) > 50_000:
                self._owners.clear()
            self._owners[claims.message_id] = found
        return found


def tracking() -> _Tracking:
    found: _Tracking | None = current_app.extensions.get("nurture_tracking")
    if found is None:
        found = _Tracking(current_app.extensions["nurture"].settings)
        current_app.extensions["nurture_tracking"] = found
    return found


def _client_ip() -> str:
    return (request.remote_addr or "")[:45]


# The WSGI environ keys of the headers that announce a speculative (prefetch) load.
_PREFETCH_HEADERS = frozenset(("HTTP_PURPOSE", "HTTP_SEC_PURPOSE", "HTTP_X_MOZ", "HTTP_X_PURPOSE"))


def _counted(kind: str, verdict: str) -> None:
    """Count a hit; the labelled child is looked up once per process, not per request."""
    child = _COUNTERS.get((kind, verdict))
    if child is None:
        child = _COUNTERS.setdefault((kind, verdict), TRACKING_HITS.labels(kind, verdict))
    child.inc()


_COUNTERS: dict[tuple[str, str], Any] = {}


def _hit(t: _Tracking, kind: str, claims: TokenClaims) -> Hit:
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


def with_utm(url: str, utm: dict[str, str] | None) -> str:
    """``url`` with the template's UTM parameters added (existing ones are kept)."""
    if not utm:
        return url
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = {k for k, _ in query}
    query += [(k, str(v)) for k, v in utm.items() if k not in present and v]
    return urlunsplit(parts._replace(query=urlencode(query)))


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
    from web.site import IDENTITY_COOKIE, site_origins  # web.site imports this module

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


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{{ title }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}
button{font-size:1rem;padding:.5rem 1rem}</style></head><body><h1>{{ title }}</h1>
<p>{{ text }}</p>
{% if action %}<form method="post" action="{{ action }}">
{% for tag, label, checked in topics %}<p><label><input type="checkbox" name="topic"
 value="{{ tag }}"{% if checked %} checked{% endif %}> {{ label }}</label></p>
{% endfor %}
{% for name, label in buttons %}<button name="do" value="{{ name }}">{{ label }}</button>
{% endfor %}</form>{% endif %}</body></html>"""


def _page(
    title: str, text: str, action: str = "", buttons: Any = (), status: int = 200, topics: Any = ()
) -> Any:
    html = render_template_string(
        PAGE, title=title, text=text, action=action, buttons=buttons, topics=topics
    )
    return Response(html, status=status, headers={"Cache-Control": NO_STORE})


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
    from web.database import db

    claims = _claims(token, TokenKind.UNSUBSCRIBE)
    session = db()
    try:
        if request.method == "GET":  # scanners follow every GET: change nothing
            found = service.recipient(session, claims)
            return _page(
                "Unsubscribe",
                f"Stop marketing email to {_masked(found.contact.email)}?",
                action=request.path,
                buttons=[("unsubscribe", "Unsubscribe")],
            )
        one_click = request.form.get("List-Unsubscribe") == "One-Click"
        found = service.unsubscribe(
            session,
            claims,
            ip=_client_ip(),
            source="list_unsubscribe_post" if one_click else "unsubscribe_page",
        )
        session.commit()
    except NotFound:
        abort(404)
    if one_click:
        return Response("", status=200)
    return _page(
        "You are unsubscribed", f"{_masked(found.contact.email)} gets no more marketing email."
    )


@bp.route("/p/<token>", methods=["GET", "POST"], merge_slashes=False)
@public
def preferences(token: str) -> Any:
    from web.database import db

    claims = _claims(token, TokenKind.PREFERENCES)
    session = db()
    try:
        if request.method == "POST":
            if request.form.get("do") == "unsubscribe":
                service.unsubscribe(session, claims, ip=_client_ip(), source="preferences_page")
            elif request.form.get("do") == "resubscribe":
                service.resubscribe(session, claims, ip=_client_ip())
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
    return _page(
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
    from web.database import db

    claims = _claims(token, TokenKind.VIEW)
    settings = current_app.extensions["nurture"].settings
    try:
        html = service.view_in_browser(db(), claims, tracking().signer, settings.base_url)
    except NotFound:
        abort(404)
    response = Response(html, mimetype="text/html", headers={"Cache-Control": NO_STORE})
    # The email's own inline styles; no scripts at all.
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'"
    )
    return response


def create_tracking_app(settings: Settings | None = None) -> Flask:
    """A process that serves only the public tracking URLs (scaled apart from the UI)."""
    settings = settings or load_settings()
    app = Flask(__name__)
    # No SECRET_KEY: these pages use no cookie session (opening one costs ~0.3 ms a hit).
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024)
    app.extensions["nurture"] = build_runtime(settings)
    from web import database

    app.teardown_appcontext(database.close_session)
    app.register_blueprint(bp)
    from web.site import bp as site_bp

    app.register_blueprint(site_bp)
    return app


def _json_error(status: int, code: str, message: str, details: list[dict[str, str]]) -> Any:
    from flask import jsonify

    body = {"error": {"code": code, "message": message, "details": details}}
    return jsonify(body), status


def _feedback(parse: Any) -> Any:
    from automation.errors import InvalidInput
    from automation.tracking.bounces import record_feedback, signature_valid
    from web.database import db

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
    import json

    from automation.errors import FieldError, InvalidInput
    from automation.tracking.bounces import parse_feedback

    def parse(body: bytes) -> Any:
        try:
            raw = json.loads(body)
        except ValueError:
            raise InvalidInput(FieldError("body", "not valid JSON")) from None
        return parse_feedback(raw)

    return _feedback(parse)


@bp.route("/webhooks/dsn", methods=["POST"])
@public
def dsn_webhook() -> Any:
    """A delivery status notification or ARF report, posted as the raw mail."""
    from automation.tracking.bounces import parse_report

    return _feedback(parse_report)
