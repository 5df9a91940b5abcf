"""Site tracking: the snippet, the collect endpoint (validation, CORS), visitor
identification from email links and identify calls, and anonymous events re-linked."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sitekit
from emailkit import make_contact
from hypothesis import given, settings
from hypothesis import strategies as st
from sitekit import SHOP, admin_headers, verified
from sqlalchemy import select
from test_tracking import HUMAN_UA, sent_message

from automation.contacts.models import Contact, Event
from automation.errors import InvalidInput
from automation.signing import TokenSigner, make_identity
from automation.tracking.forwarding import Forwarder
from automation.tracking.hits import make_hit_queue
from automation.tracking.models import AnonymousEvent, SiteVisitor
from automation.tracking.site import (
    MAX_PROPERTIES,
    drain_site_events,
    parse_collect,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
site_app = sitekit.site_app
VISITOR = "v" * 24


def post(client: Any, body: Any, origin: str | None = SHOP, **headers: str) -> Any:
    if origin:
        headers["Origin"] = origin
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post("/t/collect", data=data, content_type="text/plain", headers=headers)


def drain(app: Any) -> Any:
    """What the forwarder and the tracking worker do: spool → Redis → database."""
    runtime = app.extensions["nurture"]
    Forwarder.from_settings(runtime.settings).forward_all()
    return drain_site_events(runtime.sessions, make_hit_queue(runtime.settings, "site"))


def events_of(app: Any, email: str) -> list[tuple[str, dict[str, Any]]]:
    with app.extensions["nurture"].sessions() as s:
        rows = s.execute(
            select(Event.name, Event.properties)
            .join(Contact, Contact.id == Event.contact_id)
            .where(Contact.email == email, Event.source == "site")
            .order_by(Event.occurred_at, Event.id)
        ).all()
    return [(n, p) for n, p in rows]


def _snippet_is_served_cacheable_with_an_etag(client: Any) -> None:
    first = client.get("/t/nurture.js")
    assert first.status_code == 200 and first.mimetype == "application/javascript"
    assert "max-age=3600" in first.headers["Cache-Control"]
    assert "nurture.track" in first.get_data(as_text=True)
    again = client.get("/t/nurture.js", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304


def test_the_snippet_is_cacheable_and_cors_answers_only_configured_site_origins(site_app):
    client = site_app.test_client()
    _snippet_is_served_cacheable_with_an_etag(client)
    ok = client.options(
        "/t/collect", headers={"Origin": SHOP, "Access-Control-Request-Method": "POST"}
    )
    assert ok.status_code == 204
    assert ok.headers["Access-Control-Allow-Origin"] == SHOP
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    evil = client.options(
        "/t/collect",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert evil.status_code == 403 and "Access-Control-Allow-Origin" not in evil.headers
    body = {"visitor_id": VISITOR, "events": [{"name": "page.viewed"}]}
    assert post(client, body, origin="https://evil.example").status_code == 403
    assert post(client, body, origin=None).status_code == 403
    accepted = post(client, body)
    assert accepted.status_code == 202 and accepted.headers["Access-Control-Allow-Origin"] == SHOP


def test_site_origins_are_admin_settings_with_validation(site_app):
    client = site_app.test_client()
    marketer = admin_headers(site_app, "marketer")
    admin = admin_headers(site_app)
    new = {"origin": "https://blog.example"}
    assert client.post("/api/v1/site-origins", json=new, headers=marketer).status_code == 403
    bad = client.post(
        "/api/v1/site-origins", json={"origin": "https://x.example/path"}, headers=admin
    )
    assert bad.status_code == 422 and bad.json["error"]["details"][0]["path"] == "origin"
    created = client.post("/api/v1/site-origins", json=new, headers=admin)
    assert created.status_code == 201
    preflight = client.options("/t/collect", headers={"Origin": "https://blog.example"})
    assert preflight.status_code == 204  # allowed at once in this process
    listed = client.get("/api/v1/site-origins", headers=marketer).json
    assert [o["origin"] for o in listed] == ["https://blog.example", SHOP]
    gone = client.delete(f"/api/v1/site-origins/{created.json['id']}", headers=admin)
    assert gone.status_code == 204
    assert (
        client.options("/t/collect", headers={"Origin": "https://blog.example"}).status_code == 403
    )


BAD_COLLECT = [
    ({"visitor_id": "short", "events": [{"name": "x"}]}, "visitor_id"),
    ({"visitor_id": VISITOR, "events": [{"name": "bad name!"}]}, "events[0].name"),
    ({"visitor_id": VISITOR, "events": [{"name": "email.opened"}]}, "events[0].name"),
    (
        {"visitor_id": VISITOR, "events": [{"name": "x", "properties": {"cart": {"a": 1}}}]},
        "events[0].properties.cart",
    ),
    (
        {"visitor_id": VISITOR, "events": [{"name": "x", "properties": {"s": "y" * 501}}]},
        "events[0].properties.s",
    ),
    (
        {
            "visitor_id": VISITOR,
            "events": [{"name": "x", "properties": {f"p{i}": i for i in range(31)}}],
        },
        "events[0].properties",
    ),
    ({"visitor_id": VISITOR, "events": [{"name": "x"}] * 21}, "events"),
    ({"visitor_id": VISITOR, "identify": {"email": "not-an-email"}}, "identify.email"),
    ({"visitor_id": VISITOR, "events": [], "extra": 1}, "extra"),
    ("{not json", "body"),
    (json.dumps({"visitor_id": VISITOR, "events": [{"name": "x" * 10}]}) + " " * 17000, "body"),
]


def test_collect_rejects_bad_input_with_a_422_naming_the_field(site_app):
    client = site_app.test_client()
    for body, path in BAD_COLLECT:
        response = post(client, body)
        assert response.status_code == 422, (path, response.json)
        assert path in [d["path"] for d in response.json["error"]["details"]], path
        assert response.headers["Access-Control-Allow-Origin"] == SHOP  # the page can read why
    assert drain(site_app).received == 0  # nothing queued


def _properties() -> Any:
    scalar = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=600)
    value = scalar | st.lists(scalar, max_size=25) | st.dictionaries(st.text(), scalar, max_size=2)
    return st.dictionaries(st.text(max_size=70), value, max_size=35)


@settings(max_examples=60, deadline=None)
@given(_properties())
def test_collect_validation_accepts_only_what_it_promises(properties):
    """Whatever the properties, parsing either rejects them naming a path under them or
    accepts a flat object of bounded scalars and short lists."""
    payload = {"visitor_id": VISITOR, "events": [{"name": "viewed", "properties": properties}]}
    try:
        parsed = parse_collect(payload)
    except InvalidInput as exc:
        assert exc.errors and all(e.path.startswith("events[0].properties") for e in exc.errors)
        return
    kept = parsed.events[0].properties
    assert len(kept) <= MAX_PROPERTIES
    for value in kept.values():
        items = value if isinstance(value, list) else [value]
        assert len(items) <= 20
        for item in items:
            assert item is None or isinstance(item, bool | int | float | str)
            assert not isinstance(item, str) or len(item) <= 500


def test_anonymous_events_attach_to_the_contact_when_the_visitor_identifies(site_app):
    client = site_app.test_client()
    with site_app.extensions["nurture"].sessions() as s:
        make_contact(s, "ada@example.com")
        s.commit()
    cart = {"name": "cart_abandoned", "properties": {"value": 42.5, "skus": ["a", "b"]}}
    assert (
        post(client, {"visitor_id": VISITOR, "events": [{"name": "page.viewed"}, cart]}).status_code
        == 202
    )
    report = drain(site_app)
    assert (report.anonymous, report.ingested) == (2, 0)
    assert events_of(site_app, "ada@example.com") == []
    # identify: the waiting events move onto the contact, then new ones go straight there
    assert (
        post(
            client, {"visitor_id": VISITOR, "identify": verified(site_app, "Ada@Example.com")}
        ).status_code
        == 202
    )
    report = drain(site_app)
    assert (report.identified, report.relinked) == (1, 2)
    post(client, {"visitor_id": VISITOR, "events": [{"name": "checkout_started"}]})
    drain(site_app)
    names = [n for n, _ in events_of(site_app, "ada@example.com")]
    assert names == ["page.viewed", "cart_abandoned", "site.identified", "checkout_started"]
    props = dict(events_of(site_app, "ada@example.com"))["cart_abandoned"]
    assert props["value"] == 42.5 and props["skus"] == ["a", "b"] and props["visitor_id"] == VISITOR
    with site_app.extensions["nurture"].sessions() as s:
        assert s.scalar(select(AnonymousEvent.id)) is None
        assert s.scalar(select(SiteVisitor.source)) == "identity_hash"
    # a replayed batch (crash before ack) stores nothing twice
    assert drain(site_app).received == 0

    # identify with an unknown email creates no contact
    post(client, {"visitor_id": VISITOR, "identify": verified(site_app, "nobody@example.com")})
    report = drain(site_app)
    assert report.unknown_emails == 1
    with site_app.extensions["nurture"].sessions() as s:
        assert s.scalar(select(Contact.id).where(Contact.email == "nobody@example.com")) is None


def test_a_click_to_the_site_identifies_the_visitor_with_a_signed_id(site_app):
    client = site_app.test_client()
    sent = sent_message(site_app, "zoe@example.com")
    response = client.get(f"/t/c/{sent['tokens'].token(2, 0)}", headers={"User-Agent": HUMAN_UA})
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}" == SHOP
    [identity] = parse_qs(location.query)["nurture_id"]
    # Encrypted, not the id: a random 32-character string may well contain the digit "1".
    assert identity != str(sent["contact_id"]) and len(identity) == 32
    assert "nurture_id=" in response.headers["Set-Cookie"]
    visitor = "w" * 20
    body = {"visitor_id": visitor, "identity": identity, "events": [{"name": "page.viewed"}]}
    assert post(client, body).status_code == 202
    drain(site_app)
    assert [n for n, _ in events_of(site_app, "zoe@example.com")] == [
        "site.identified",
        "page.viewed",
    ]
    # a forged identifier (another key) leaves the visitor anonymous
    forged = make_identity(TokenSigner("another-key-" + "y" * 32), sent["contact_id"], 0)
    post(client, {"visitor_id": "q" * 20, "identity": forged, "events": [{"name": "page.viewed"}]})
    assert drain(site_app).anonymous == 1

    # once the origin is no longer a site origin, a click carries no identifier
    with site_app.extensions["nurture"].sessions() as s:
        from automation.tracking.sites import list_site_origins, remove_site_origin

        remove_site_origin(s, list_site_origins(s)[0].id)
        s.commit()
    response = client.get(f"/t/c/{sent['tokens'].token(2, 0)}", headers={"User-Agent": HUMAN_UA})
    assert "nurture_id" not in response.headers["Location"]
    assert "Set-Cookie" not in response.headers
