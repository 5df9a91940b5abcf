"""What is sent is checked (issue 17, item 6): the rendered HTML, per recipient, at save (for
the sample contact), at send and on the view-in-browser page; the source checks alone let
``|safe``, ``{% raw %}``, CDATA, ``java{{''}}script:`` and contact data through."""

from __future__ import annotations

import re

import emailkit
import pytest
from emailkit import MJML

from automation.email.html_checks import html_problems, inert_skeleton
from automation.email.models import Message, MessageStatus
from automation.email.outbox import queue_message, send_due

smtp_server = emailkit.smtp_server
sessions = emailkit.sessions
sending = emailkit.sending


def with_text(html: str) -> str:
    return MJML.replace("<mj-text>Your plan:", f"<mj-text>{html}</mj-text>\n<mj-text>Your plan:")


def with_raw(html: str) -> str:
    return MJML.replace(
        "<mj-section>",
        f"<mj-section><mj-column><mj-raw>{html}</mj-raw>"
        "</mj-column></mj-section>\n    <mj-section>",
        1,
    )


BYPASSES = {
    "script through |safe": (with_text("{{ '<script>alert(1)</script>'|safe }}"), "<script>"),
    "script through raw": (
        with_text("{% raw %}<script>alert(1)</script>{% endraw %}"),
        "<script>",
    ),
    "script after a CDATA": (with_text("<![CDATA[><script>alert(1)</script>]]>"), "<script>"),
    "script in a conditional comment": (
        with_raw("<!--[if mso]><script>alert(1)</script><![endif]-->"),
        "<script>",
    ),
    "javascript: split by Jinja": (
        with_text("<a href=\"java{{ '' }}script:alert(1)\">x</a>"),
        "javascript: URL in href",
    ),
    "javascript: from an expression": (
        with_text("<a href=\"{{ 'javascript:alert(1)' }}\">x</a>"),
        "javascript: URL in href",
    ),
    "javascript: with entities": (
        with_text('<a href="&#106;avascript&colon;alert(1)">x</a>'),
        "javascript:",
    ),
    "url(javascript:) in style": (
        with_text('<div style="background:url(javascript:alert(1))">x</div>'),
        "in style= on <div>",
    ),
    "escaped url(javascript:) in style": (
        with_text("<div style=\"background:url('\\6a avascript:alert(1)')\">x</div>"),
        "javascript: URL in CSS",
    ),
    "style element through |safe": (
        with_text("{{ '<style>p{background:url(\"javascript:x\")}</style>'|safe }}"),
        "in <style>",
    ),
    "meta refresh": (
        with_raw('<meta http-equiv="refresh" content="0;url=https://evil.example">'),
        'http-equiv="refresh"',
    ),
    "base": (with_raw('<base href="https://evil.example/">'), "<base>"),
    "object": (with_text('<object data="https://evil.example/x"></object>'), "<object>"),
    "embed": (with_text('<embed src="https://evil.example/x">'), "<embed>"),
    "iframe srcdoc": (
        with_text('<iframe srcdoc="&lt;script&gt;alert(1)&lt;/script&gt;"></iframe>'),
        "srcdoc=",
    ),
    "script in math": (
        with_text("{{ '<math><mi><script>alert(1)</script></mi></math>'|safe }}"),
        "<script>",
    ),
}


@pytest.fixture
def plan_field(api):
    api.post("/fields", {"name": "plan", "label": "Plan", "type": "text"})
    api.post("/fields", {"name": "site", "label": "Site", "type": "text"})


@pytest.mark.parametrize("name", BYPASSES)
def test_a_save_refuses_what_the_rendered_html_would_carry(api, plan_field, name):
    mjml, needle = BYPASSES[name]
    body = api.post("/templates/validate", {"subject": "Hi", "mjml": mjml}).json
    assert body["valid"] is False
    assert any(needle in e["message"] for e in body["errors"]), body["errors"]
    saved = api.post("/templates", {"name": name, "subject": "Hi", "mjml": mjml})
    assert saved.status_code == 422


def test_every_mjml_component_passes_the_check(api, plan_field):
    components = MJML.replace(
        "<mj-section>",
        """<mj-hero background-url="https://img.example/h.png" background-height="200px"
        background-width="600px"><mj-text>Hero</mj-text></mj-hero>
    <mj-section background-url="https://img.example/bg.png"><mj-column>
      <mj-social><mj-social-element name="facebook" href="https://fb.example">F</mj-social-element>
      </mj-social>
      <mj-navbar><mj-navbar-link href="https://shop.example/a">A</mj-navbar-link></mj-navbar>
      <mj-carousel><mj-carousel-image src="https://img.example/1.png" /></mj-carousel>
      <mj-accordion><mj-accordion-element><mj-accordion-title>Q</mj-accordion-title>
        <mj-accordion-text>A</mj-accordion-text></mj-accordion-element></mj-accordion>
      <mj-image src="https://img.example/i.png" href="mailto:help@shop.example" />
      <mj-text><a href="tel:+4412345" style="color:rgb(1,2,3);background:url('https://x.example/a.png')">Call</a></mj-text>
    </mj-column></mj-section>
    <mj-section>""",
        1,
    )
    saved = api.post("/templates", {"name": "All", "subject": "Hi", "mjml": components})
    assert saved.status_code == 201, saved.json  # (the shipped ones: tests/test_email_demo.py)
    preview = api.get(f"/templates/{saved.json['id']}/preview")
    assert preview.status_code == 200 and "<v:" in preview.json["html"]  # Outlook's VML
    assert html_problems(preview.json["html"]) == []


SITE = '<a href="{{ contact.attributes.site }}">My site</a> {{ contact.attributes.bio|safe }}'
BIO = "About you: {{ contact.attributes.bio|safe }}"


def _queue(app, template_version_id, email, attributes):
    with app.extensions["nurture"].sessions() as s:
        contact_id = emailkit.make_contact(s, email, attributes=attributes)
        message_id = queue_message(
            s, dedupe_key=email, contact_id=contact_id, template_version_id=template_version_id
        )
        s.commit()
    return contact_id, message_id


@pytest.mark.parametrize("mjml", [SITE, BIO], ids=["link from contact data", "safe bio"])
def test_each_recipients_html_is_checked_at_send(
    api, app, plan_field, sessions, sending, smtp_server, mjml
):
    api.post("/fields", {"name": "bio", "label": "Bio", "type": "text"})
    saved = api.post("/templates", {"name": "Site", "subject": "Hi", "mjml": with_text(mjml)})
    assert saved.status_code == 201, saved.json
    version = saved.json["version"]["id"]
    ok = _queue(app, version, "ok@example.com", {"site": "https://ok.example", "bio": "<b>hi</b>"})
    js = _queue(app, version, "js@example.com", {"site": " JavaScript:alert(1)", "bio": ""})
    script = _queue(app, version, "bio@example.com", {"bio": "<script>alert(1)</script>"})
    send_due(sessions, sending)
    refused = [(script, "<script>")] + (
        [(js, "javascript: URL in href=")] if "href" in mjml else []
    )
    with sessions() as s:
        assert s.get(Message, ok[1]).status is MessageStatus.SENT
        for (_contact, message_id), needle in refused:
            failed = s.get(Message, message_id)
            assert failed.status is MessageStatus.FAILED and failed.reason == "render_error"
            assert (
                failed.error.startswith("the rendered HTML is refused") and needle in failed.error
            )
    sent = sorted(r.recipients[0] for r in smtp_server.received)
    assert sent == (["ok@example.com"] if "href" in mjml else ["js@example.com", "ok@example.com"])


@pytest.mark.parametrize(
    ("html", "inert"),
    [
        ("<p>Hi {{ name }}</p>{% for t in tags %}<p>{{ t }}</p>{% endfor %}", True),
        ('<a href="{{ unsubscribe_url }}">Unsubscribe</a>', True),
        ("<title>{{ name }}</title>", True),
        ('<p title="{{ name }}">x</p>', True),
        ('<a href="{{ url }}">x</a>', False),
        ('<a href="https://shop.example/p/{{ id }}?u={{ email }}">x</a>', True),
        ('<a href="java{{ x }}script:alert(1)">x</a>', False),
        ("<a href=https://shop.example/{{ id }}>x</a>", False),
        ('<a href="{{ unsubscribe_url }}x">x</a>', False),
        ("<style>p { color: {{ colour }} }</style>", False),
        ("<title>{% if a %}</title>{% endif %}", False),
        (
            "{% if a %}<textarea>{% endif %}<script>x</script>{% if a %}</textarea>{% endif %}",
            False,
        ),
        ("<{{ x }}script>alert(1)</script>", False),
        ("<!-{{ x }}- <textarea> --><script>alert(1)</script></textarea>", False),
        ("<!--[if mso]>{{ x }}<![endif]-->", False),
        ("<p title={{ x }}>x</p>", False),
        ("<p>java{{ '' }}script:</p><script>x</script>", False),
    ],
)
def test_a_skeleton_is_inert_only_when_escaped_outputs_cannot_change_it(html, inert):
    assert inert_skeleton(f"<html><body>{html}</body></html>") is inert


def test_view_in_browser_checks_the_html_it_renders_again(
    api, app, client, plan_field, sessions, sending, smtp_server
):
    api.post("/fields", {"name": "bio", "label": "Bio", "type": "text"})
    saved = api.post("/templates", {"name": "Site", "subject": "Hi", "mjml": with_text(SITE)})
    contact_id, _ = _queue(
        app, saved.json["version"]["id"], "zoe@example.com", {"site": "https://zoe.example"}
    )
    send_due(sessions, sending)
    html = smtp_server.received[0].message.get_body(("html",)).get_content()
    view = re.search(r'https?://[^"]+(/v/[^"]+)', html).group(1)
    shown = client.get(view)
    assert shown.status_code == 200 and "https://zoe.example" in shown.get_data(as_text=True)
    assert "base-uri 'none'" in shown.headers["Content-Security-Policy"]
    # The page renders again with today's data: a contact edited to carry script
    edited = api.patch(f"/contacts/{contact_id}", {"attributes": {"site": "javascript:alert(1)"}})
    assert edited.status_code == 200, edited.json
    refused = client.get(view)
    assert refused.status_code == 422
    assert "javascript:" not in refused.get_data(as_text=True)
    api.patch(
        f"/contacts/{contact_id}",
        {
            "attributes": {
                "bio": "<meta http-equiv=refresh content='0;url=https://x.example'>",
                "site": "https://zoe.example",
            }
        },
    )
    again = client.get(view)
    assert again.status_code == 422 and "x.example" not in again.get_data(as_text=True)


CONDITIONALS = [
    '<!--[if mso]><table><tr><td style="width:600px;"><![endif]-->',
    "<!--[if mso]><script>alert(1)</script><![endif]-->",
    "<!--[if mso]><td onmouseover=alert(1)><![endif]-->",
    "<!--[if mso]><td\nonclick=alert(1)><![endif]-->",
    '<!--[if mso]><v:fill src="java\tscript:alert(1)" /><![endif]-->',
    '<!--[if mso]><a href="&#106;avascript:alert(1)">x</a><![endif]-->',
    "<!--[if mso]><td style=\"background:url('javascript:x')\"><![endif]-->",
    "<!--[if mso]><meta http-equiv=refresh content=0><![endif]-->",
]


@pytest.mark.parametrize("comment", CONDITIONALS)
def test_conditional_comments_are_read_as_the_html_they_hold(comment):
    html = f"<html><body><p>x</p>{CONDITIONALS[0]}{comment}</body></html>"
    assert html_problems(html) == html_problems(html, walk=True)
    assert bool(html_problems(html)) is (comment != CONDITIONALS[0])


HANDLERS = [
    "<p/onclick=alert(1)>x</p>",
    "<p\nonclick=alert(1)>x</p>",
    '<p title="1"onclick=alert(1)>x</p>',
    "<P ONCLICK = alert(1)>x</P>",
    "<img src=x onerror=alert(1)>",
    "<p title='a' onmouseover='alert(1)'>say something on the day</p>",
]


@pytest.mark.parametrize("element", HANDLERS)
def test_the_element_shortcut_finds_every_event_handler(element):
    html = f'<html><body><p style="color:red">on time</p>{element}</body></html>'
    found = html_problems(html)
    assert found == html_problems(html, walk=True)
    assert any("event handler on" in p for p in found), found


def test_the_usual_template_needs_no_check_per_recipient_unless_an_output_is_markup():
    from automation.email.compiler import Draft, compile_template

    sample = {"contact": {"email": "ada@example.com", "first_name": "Ada", "tags": []}}
    sample.update(
        unsubscribe_url="https://n.example/u/x",
        preferences_url="p",
        view_in_browser_url="v",
        confirm_url="",
        workflow_name="",
        campaign_name="",
    )
    result = compile_template(Draft("Hi", "", MJML, True), known_fields={"plan"}, sample=sample)
    assert inert_skeleton(result.compiled.html)  # (the safe-bio send test: markup is checked)


@pytest.mark.parametrize(
    ("preheader", "checked"),
    [
        ("Sunrise hikes & trail snacks", False),  # static: escaped once at compile
        ("Hi {{ contact.first_name }}, <b>new</b> trails", False),  # escaped per message
        ("{{ contact.first_name|safe }}", True),  # markup: this recipient's HTML is checked
    ],
)
def test_a_preheader_keeps_an_inert_template_unchecked_per_recipient(
    monkeypatch, preheader, checked
):
    """The preheader slot is escaped text, so it must not send every recipient of a
    template with a preheader through the full HTML check (it made render + MIME 13x
    slower); markup in the preheader's own render still does."""
    from automation.email import render as render_module
    from automation.email.compiler import Draft, compile_template
    from automation.email.context import template_context
    from automation.email.models import TemplateKind, TemplateVersion
    from automation.signing import TokenSigner

    ada = {"email": "ada@example.com", "first_name": "Ada", "tags": [], "attributes": {}}
    sample = template_context(
        ada, unsubscribe_url="u", preferences_url="p", view_in_browser_url="v"
    )
    result = compile_template(
        Draft("Hi", preheader, MJML, True), known_fields={"plan"}, sample=sample
    )
    assert result.compiled is not None, result.errors
    row = TemplateVersion(
        id=1,
        template_id=1,
        number=1,
        kind=TemplateKind.MARKETING,
        subject="Hi",
        preheader=preheader,
        mjml=MJML,
        html=result.compiled.html,
        text=result.compiled.text,
        links=result.compiled.links,
        html_bytes=result.compiled.html_bytes,
    )
    version = render_module.compile_version(row)
    assert version.inert
    calls: list[str] = []
    real_check = render_module.check_html

    def counting_check(html: str) -> None:
        calls.append(html)
        real_check(html)

    monkeypatch.setattr(render_module, "check_html", counting_check)
    tokens = TokenSigner("t-" + "k" * 40).for_message(1, 7, version.id)
    urls = render_module.tracking_urls(tokens, "https://n.example", len(version.links))
    email = render_module.render_for_send(version, {**ada, "full_name": "Ada"}, urls)
    assert b"Ada" in email.html_qp or b"trail" in email.html_qp
    assert bool(calls) is checked
