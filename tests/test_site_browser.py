"""One browser story for site tracking and forms: a website on its own origin embeds the
snippet and a form; the visitor's events before the form land on the new contact."""

from __future__ import annotations

import threading

import pytest
import sitekit
from sqlalchemy import select
from test_site_tracking import drain
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from automation.contacts.models import Contact, Event
from automation.email.catcher import free_port
from automation.forms.schema import FormIn
from automation.forms.service import create_form, embed_html, field_specs
from automation.tracking.sites import add_site_origin

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.redis]
app = sitekit.site_app  # the `page` fixture serves this app (conftest.live_server)


def test_a_site_visitor_tracked_then_subscribed_through_the_form(app, page, live_server):
    port = free_port()
    site = f"http://127.0.0.1:{port}"
    with app.extensions["nurture"].sessions() as s:
        add_site_origin(s, site)
        form = create_form(
            s,
            FormIn(
                name="Newsletter",
                fields=[{"name": "email", "label": "Email", "required": True}],
                consent_text="Yes, email me.",
                success_message="Thank you!",
            ),
        )
        snippet = embed_html(
            field_specs(s, form),
            form,
            f"{live_server}/f/{form.public_id}",
            f"{live_server}/t/nurture.js",
        )
        s.commit()
    html = f"""<!doctype html><html><head><title>Tents</title>
<script>window.nurture = {{q: [], track: function () {{
  this.q.push(["track"].concat([].slice.call(arguments))); }}}};
nurture.track("cart_abandoned", {{value: 3, sku: "tent-2p"}});</script></head>
<body><h1>Tents</h1>{snippet}</body></html>"""

    @Request.application
    def website(request: Request) -> Response:
        return Response(html, mimetype="text/html")

    server = make_server("127.0.0.1", port, website, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        with page.expect_response(lambda r: r.url.endswith("/t/collect")) as first:
            page.goto(f"{site}/tents")
        assert first.value.status == 202
        page.fill("input[name=email]", "visitor@example.com")
        page.check("input[name=consent]")
        page.click("button[type=submit]")
        page.wait_for_selector(".nurture-message:text('Thank you!')")
    finally:
        server.shutdown()
    assert errors == []
    drain(app)
    with app.extensions["nurture"].sessions() as s:
        contact_id = s.scalar(select(Contact.id).where(Contact.email == "visitor@example.com"))
        names = sorted(s.scalars(select(Event.name).where(Event.contact_id == contact_id)))
        cart = s.scalar(select(Event.properties).where(Event.name == "cart_abandoned"))
    assert names == ["cart_abandoned", "form.submitted", "page.viewed"]
    assert cart["sku"] == "tent-2p" and cart["value"] == 3
