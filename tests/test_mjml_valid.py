"""Valid MJML is accepted (issue 16, item 9) and an email links only the web fonts its
template asks for (item 10): saved over the API, asserted on the stored HTML and on the
save check's answer."""

from __future__ import annotations

import re

import pytest

UNSUBSCRIBE = '<a href="{{ unsubscribe_url }}">Unsubscribe</a>'


def mjml(body: str, head: str = "") -> str:
    """A template: the head's content, then the body's sections and an unsubscribe link."""
    return (
        f"<mjml>\n<mj-head>\n{head}\n</mj-head>\n<mj-body>\n{body}\n"
        f"<mj-section><mj-column><mj-text>{UNSUBSCRIBE}</mj-text></mj-column></mj-section>\n"
        "</mj-body>\n</mjml>"
    )


def saved_html(api, source: str) -> str:
    """Save the template (the product's save check runs) and return the stored HTML."""
    response = api.post("/templates", {"name": "T", "subject": "Hi", "mjml": source})
    assert response.status_code == 201, response.json
    return response.json["version"]["html"]


def check(api, source: str) -> dict:
    response = api.post("/templates/validate", {"subject": "Hi", "mjml": source})
    assert response.status_code == 200
    return response.json


def assert_clean_messages(answer: dict) -> None:
    """No message is a developer's: every one names its line, none says how to install a
    package or that something is not implemented."""
    for problem in answer["errors"] + answer["warnings"]:
        message = problem["message"].lower()
        assert "pip install" not in message and "not yet implemented" not in message, problem


def test_mj_style_inline_is_inlined_into_the_elements(api):
    source = mjml(
        '<mj-section><mj-column><mj-text css-class="brand">Hello</mj-text></mj-column>'
        "</mj-section>",
        head='<mj-style inline="inline">.brand { color: #0a7f5a; }</mj-style>',
    )
    answer = check(api, source)
    assert answer["valid"] is True and answer["warnings"] == [], answer
    html = saved_html(api, source)
    [element] = re.findall(r'<[^>]*class="brand"[^>]*>', html)
    assert re.search(r'style="[^"]*color: ?#0a7f5a', element), element
    assert "<link" not in html  # the inliner re-writes the HTML; MJML's font link stays out


@pytest.mark.parametrize("font", ["Roboto", "Open Sans", "Lato", "Ubuntu", "Droid Sans"])
def test_mj_font_named_like_a_default_font_is_linked_and_used(api, font):
    href = f"https://fonts.example.com/css?family={font.replace(' ', '+')}:400,700"
    source = mjml(
        "<mj-section><mj-column><mj-text>Hello</mj-text></mj-column></mj-section>",
        head=f'<mj-font name="{font}" href="{href}" />\n'
        f"<mj-attributes><mj-all font-family=\"'{font}', Arial, sans-serif\" /></mj-attributes>",
    )
    answer = check(api, source)
    assert answer["valid"] is True, answer
    assert_clean_messages(answer)
    html = saved_html(api, source)
    assert f'<link href="{href}" rel="stylesheet" type="text/css">' in html
    assert f"@import url({href});" in html
    assert "fonts.googleapis.com" not in html  # the template's font, not MJML's default URL
    assert f"font-family:'{font}', Arial, sans-serif" in html


def test_no_email_links_a_font_its_template_does_not_declare(api):
    """mj-text's default font is Ubuntu: MJML links Google Fonts for it in every email."""
    source = mjml(
        "<mj-section><mj-column><mj-text>Default font</mj-text>"
        '<mj-button href="https://shop.example/">Open Sans, undeclared</mj-button>'
        '<mj-text font-family="Roboto, Lato, sans-serif">Named, undeclared</mj-text>'
        "</mj-column></mj-section>",
        head='<mj-font name="Inter" href="https://fonts.example.com/inter.css" />',
    )
    html = saved_html(api, source)
    assert "font-family:Ubuntu, Helvetica, Arial, sans-serif" in html  # MJML's default stays
    assert "<link" not in html and "@import" not in html  # Inter is declared but never used


def test_a_declared_font_used_only_in_mj_style_is_linked(api):
    href = "https://fonts.example.com/css2?family=Merriweather:wght@400;700&display=swap"
    source = mjml(
        '<mj-section><mj-column><mj-text css-class="serif">Hi</mj-text></mj-column></mj-section>',
        head=f'<mj-font name="Merriweather" href="{href}" />\n'
        "<mj-style>.serif div { font-family: Merriweather, Georgia, serif; }</mj-style>",
    )
    html = saved_html(api, source)
    link = f'<link href="{href.replace("&", "&amp;")}" rel="stylesheet" type="text/css">'
    assert html.count(link) == 1 and html.index(link) < html.index("</head>")
    assert f"@import url({href});" in html  # CSS knows no entities


@pytest.mark.parametrize(
    ("font", "needle"),
    [
        ('<mj-font href="https://fonts.example.com/a.css" />', "needs a name"),
        ('<mj-font name="A" />', "needs an href"),
        ('<mj-font name="A" href="/fonts/a.css" />', "needs an href"),
        ('<mj-font name="A" href="https://x.example/a.css);x{" />', "needs an href"),
    ],
)
def test_a_font_without_a_name_or_a_stylesheet_address_is_refused_with_its_line(api, font, needle):
    answer = check(api, mjml("", head=font))
    [error] = answer["errors"]
    assert needle in error["message"] and error["line"] == 3, answer


def test_stray_text_in_a_section_is_dropped_with_a_warning_naming_the_line(api):
    source = mjml(
        "<mj-section>\n  Stray words\n  <mj-column><mj-text>Kept</mj-text></mj-column>\n"
        "</mj-section>"
    )
    answer = check(api, source)
    assert answer["valid"] is True and answer["errors"] == []
    [warning] = answer["warnings"]
    assert "left out of the email" in warning["message"]
    assert (warning["line"], warning["column"]) == (7, 3)
    html = saved_html(api, source)
    assert "Kept" in html and "Stray words" not in html


def test_mj_raw_is_accepted_under_mjml_and_inside_navbar_and_accordion(api):
    source = (
        "<mjml>\n<mj-raw><!-- generated --></mj-raw>\n<mj-body>\n<mj-section><mj-column>\n"
        '<mj-navbar><mj-raw><span class="nav-raw">|</span></mj-raw>'
        '<mj-navbar-link href="https://shop.example/a">A</mj-navbar-link></mj-navbar>\n'
        '<mj-accordion><mj-raw><span class="acc-raw"></span></mj-raw>\n'
        '<mj-accordion-element><mj-raw><span class="el-raw"></span></mj-raw>'
        "<mj-accordion-title>Q</mj-accordion-title><mj-accordion-text>A</mj-accordion-text>"
        "</mj-accordion-element></mj-accordion>\n"
        f"<mj-text>{UNSUBSCRIBE}</mj-text>\n</mj-column></mj-section>\n</mj-body>\n</mjml>"
    )
    answer = check(api, source)
    assert answer["valid"] is True, answer
    [warning] = answer["warnings"]  # the root one: MJML keeps it only at the file's start
    assert warning["line"] == 2 and "mjml-python" in warning["message"]
    html = saved_html(api, source)
    for name in ("nav-raw", "acc-raw", "el-raw"):
        assert f'class="{name}"' in html


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            '<mj-wrapper gap="20px"><mj-section><mj-column><mj-text>x</mj-text></mj-column>'
            "</mj-section></mj-wrapper>",
            "<mj-wrapper> gap: MJML spaces the wrapper's sections by it, but mjml-python",
        ),
        (
            '<mj-section><mj-column><mj-social><mj-social-element name="x" '
            'icon-position="right" href="https://x.example">X</mj-social-element></mj-social>'
            "</mj-column></mj-section>",
            "<mj-social-element> icon-position: MJML puts the icon on that side of the text, "
            "but mjml-python",
        ),
        (
            '<mj-section><mj-column><mj-divider width="50%" align="left" /></mj-column>'
            "</mj-section>",
            "<mj-divider> align: MJML puts a divider narrower than its column on that side, "
            "but mjml-python",
        ),
    ],
)
def test_attributes_mjml_supports_are_named_as_ignored_by_mjml_python(api, body, says):
    answer = check(api, mjml(body))
    assert answer["valid"] is True
    [warning] = answer["warnings"]
    assert warning["line"] == 6 and warning["message"].startswith(says), warning


def test_a_value_both_renderers_treat_alike_gets_no_warning(api):
    body = (
        '<mj-section><mj-column><mj-divider width="50%" align="center" />'
        '<mj-table cellspacing="0"><tr><td>x</td></tr></mj-table></mj-column></mj-section>'
    )
    assert check(api, mjml(body))["warnings"] == []


def test_attributes_mjml_python_reads_but_does_not_declare_get_no_warning(api):
    """mjml-python's declared lists miss attributes its code reads (MJML's own too)."""
    source = (
        '<mjml>\n<mj-body width="500px">\n<mj-section><mj-group width="80%" direction="rtl" '
        'vertical-align="middle" background-color="#eeeeee"><mj-column><mj-text>'
        f"{UNSUBSCRIBE}</mj-text></mj-column></mj-group></mj-section>\n</mj-body>\n</mjml>"
    )
    assert check(api, source)["warnings"] == []


def test_an_attribute_no_renderer_knows_is_still_named(api):
    answer = check(api, mjml('<mj-section colour="red"><mj-column></mj-column></mj-section>'))
    [warning] = answer["warnings"]
    assert warning["message"] == "<mj-section> has no attribute 'colour'; MJML ignores it"
    assert warning["line"] == 6


@pytest.mark.parametrize(
    "body",
    [
        # mjml-python failed on each of these; MJML renders them (the reference comparison
        # in tests/test_mjml_reference.py shows Nurture now renders them alike).
        '<mj-hero background-color="#2f6f4f"><mj-text>Hi</mj-text><mj-spacer /></mj-hero>',
        '<mj-wrapper><mj-hero mode="fluid-height"><mj-text>In a wrapper</mj-text></mj-hero>'
        "</mj-wrapper>",
        '<mj-section><mj-column padding="10px" inner-border="3px solid #c0392b">'
        "<mj-text>Inner border</mj-text></mj-column></mj-section>",
    ],
)
def test_valid_mjml_that_mjml_python_failed_on_is_saved(api, body):
    answer = check(api, mjml(body))
    assert answer["valid"] is True and answer["errors"] == [], answer
    assert "<table" in saved_html(api, mjml(body))


def test_defaults_given_twice_are_merged_as_mjml_merges_them(api):
    """mjml-python answered these with "Not yet implemented"; MJML lets the later win."""
    head = (
        '<mj-attributes><mj-all font-family="Verdana" /><mj-all padding="4px" />'
        '<mj-class name="big" font-size="24px" /></mj-attributes>\n'
        '<mj-attributes><mj-text color="#2f6f4f" /><mj-text color="#c0392b" />'
        '<mj-class name="big" font-weight="700" /></mj-attributes>\n'
        '<mj-html-attributes><mj-selector path=".m div"><mj-html-attribute name="data-a">1'
        '</mj-html-attribute></mj-selector><mj-selector path=".m div"><mj-html-attribute '
        'name="data-b">2</mj-html-attribute></mj-selector></mj-html-attributes>'
    )
    body = (
        '<mj-section><mj-column><mj-text mj-class="big">Big</mj-text>'
        '<mj-text css-class="m">Marked</mj-text></mj-column></mj-section>'
    )
    answer = check(api, mjml(body, head=head))
    assert answer["valid"] is True and answer["warnings"] == [], answer
    html = saved_html(api, mjml(body, head=head))
    big = re.search(r'<div style="([^"]*)"[^>]*>Big</div>', html)
    assert big, html
    for needle in ("font-family:Verdana", "font-size:24px", "font-weight:700", "color:#c0392b"):
        assert needle in big[1]
    assert re.search(r'data-a="1"[^>]*data-b="2"|data-b="2"[^>]*data-a="1"', html)


def test_defaults_inside_an_mj_class_are_named_as_ignored_by_mjml_python(api):
    head = (
        '<mj-attributes>\n<mj-class name="card" background-color="#eeeeee">\n'
        '<mj-text color="#c0392b" />\n</mj-class>\n</mj-attributes>'
    )
    body = '<mj-section mj-class="card"><mj-column><mj-text>x</mj-text></mj-column></mj-section>'
    answer = check(api, mjml(body, head=head))
    assert answer["valid"] is True, answer
    [warning] = answer["warnings"]
    assert warning["line"] == 5 and "mjml-python" in warning["message"], warning


def test_jinja_around_rows_keeps_its_place_when_css_is_inlined(api):
    """css-inline re-parses the HTML as a browser does: bare text between table rows would
    move before the table, and a {% for %} or {% if %} there would no longer wrap them."""
    source = mjml(
        '<mj-section><mj-column>\n<mj-text css-class="x">Always</mj-text>\n'
        '{% if "vip" in contact.tags %}\n<mj-text>VIP only</mj-text>\n{% endif %}\n'
        "<mj-table>{% for t in contact.tags %}<tr><td>Row {{ t }}</td></tr>{% endfor %}"
        "</mj-table>\n</mj-column></mj-section>",
        head='<mj-style inline="inline">.x { color: #c0392b; }</mj-style>',
    )
    template = api.post("/templates", {"name": "T", "subject": "Hi", "mjml": source}).json
    previews = {}
    for email, tags in (("plain@example.com", []), ("vip@example.com", ["vip", "gold"])):
        contact = api.post("/contacts", {"email": email, "tags": tags}).json
        url = f"/templates/{template['id']}/preview?contact_id={contact['id']}"
        previews[email] = api.get(url).json["html"]
    assert "VIP only" not in previews["plain@example.com"]
    assert "Row " not in previews["plain@example.com"]
    vip = previews["vip@example.com"]
    assert "VIP only" in vip and "color: #c0392b" in vip
    tables = re.findall(r"<table\b(?:(?!</table>).)*</table>", vip, re.S)
    assert any("Row vip" in t and "Row gold" in t for t in tables)  # the rows stay inside
