"""Saving a template: every check reports the field, line and column; versions are
immutable; compile output (links, pixel, text part)."""

from __future__ import annotations

import re

import pytest
from emailkit import MJML, ensure_plan_field, make_identity, make_template

from automation.email.compiler import Draft, compile_template
from automation.email.context import sample_contact, template_context
from automation.email.schema import TemplateContent
from automation.email.templates import (
    add_version,
    get_version,
    list_versions,
    preview_draft,
    validate_template,
)
from automation.errors import InvalidInput


def body(inner: str, unsubscribe: bool = True) -> str:
    footer = (
        '<mj-section><mj-column><mj-text><a href="{{ unsubscribe_url }}">Unsubscribe</a>'
        "</mj-text></mj-column></mj-section>"
        if unsubscribe
        else ""
    )
    return f"<mjml>\n<mj-body>\n{inner}\n{footer}\n</mj-body>\n</mjml>"


def column(inner: str) -> str:
    return f"<mj-section><mj-column>\n{inner}\n</mj-column></mj-section>"


def problems(session, mjml, **fields):
    ensure_plan_field(session)
    content = TemplateContent(subject=fields.pop("subject", "Hi"), mjml=mjml, **fields)
    result = validate_template(session, content)
    return result.errors, result.warnings


def only(errors):
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize(
    ("inner", "line", "column", "needle"),
    [
        (column("<mj-txt>Hi</mj-txt>"), 4, 1, "unknown MJML element <mj-txt>"),
        (column("<mj-text>Hi</mj-text>\n  <mj-section></mj-section>"), 5, 3, "cannot be inside"),
        (column("<mj-text>Hi"), 4, 1, "not closed"),
        (column('<mj-include path="../../etc/passwd" />'), 4, 1, "mj-include is not allowed"),
        (column("<mj-text><script>alert(1)</script></mj-text>"), 4, 10, "<script>"),
        (column('<mj-text><a href="javascript:alert(1)">x</a></mj-text>'), 4, 10, "javascript:"),
        (column('<mj-button href=" JaVaScRiPt:alert(1)">x</mj-button>'), 4, 1, "javascript:"),
        (column('<mj-text><a href="data:text/html,hi">x</a></mj-text>'), 4, 10, "data:"),
        (column('<mj-text><img src="x" onerror="alert(1)"></mj-text>'), 4, 10, "onerror"),
    ],
)
def test_mjml_problems_name_the_line_and_column(session, inner, line, column, needle):
    errors, _ = problems(session, body(inner))
    error = only(errors)
    assert error.path == "mjml" and needle in error.message
    assert (error.line, error.column) == (line, column)
    assert f"line {line}, column {column}" in error.field_error().message


def test_positions_stay_right_after_jinja_tags_on_the_same_line(session):
    inner = column("{{ contact.first_name }}{% if true %}<mj-txt>x</mj-txt>{% endif %}")
    error = only(problems(session, body(inner))[0])
    assert (error.line, error.column) == (4, 38)


@pytest.mark.parametrize(
    ("source", "needle", "column_"),
    [
        ("{{ contact.first_name ", "Jinja syntax", 1),
        ("{% if x %}unclosed", "Jinja syntax", 1),
        ("{{ ''.__class__.__mro__ }}", "not allowed: attribute '__class__'", 7),
        ("{{ contact|attr('__class__') }}", "attr filter", 12),
        ("{{ contact['__class__'] }}", "not allowed: item", 13),
        ("{{ config.SECRET_KEY }}", "unknown variable 'config'", 4),
        ("{{ lipsum() }}", "unknown variable 'lipsum'", 4),
        ("{{ contact.password }}", "unknown contact field 'password'", 12),
        ("{{ contact.attributes.shoe_size }}", "unknown attribute 'shoe_size'", 23),
        ("{% include 'x.html' %}", "cannot include", 1),
        ("{{ contact|nonexistent }}", "unknown filter", 12),
    ],
)
def test_jinja_problems_are_reported_at_save(session, source, needle, column_):
    inner = column(f"<mj-text>\n{source}\n</mj-text>")
    errors, _ = problems(session, body(inner))
    matching = [e for e in errors if needle in e.message]
    assert matching, errors
    assert (matching[0].line, matching[0].column, matching[0].path) == (5, column_, "mjml")


def test_a_sandbox_violation_found_only_by_running_is_reported_with_its_line(session):
    inner = column("<mj-text>\n{% set f = contact.tags.pop %}{{ f() }}\n</mj-text>")
    error = only(problems(session, body(inner))[0])
    assert "not allowed" in error.message and error.line == 5


def test_a_marketing_template_needs_an_unsubscribe_link(session):
    errors, _ = problems(session, body(column("<mj-text>Hi</mj-text>"), unsubscribe=False))
    error = only(errors)
    assert "unsubscribe" in error.message and (error.line, error.column) == (2, 1)
    transactional, _ = problems(
        session, body(column("<mj-text>Receipt</mj-text>"), unsubscribe=False), kind="transactional"
    )
    assert transactional == []


def test_html_over_100_kb_is_refused(session):
    paragraph = "<p>" + "Lorem ipsum dolor sit amet. " * 40 + "</p>"
    big = column("<mj-text>" + paragraph * 100 + "</mj-text>")
    error = only(problems(session, body(big))[0])
    assert "KB" in error.message and "Gmail" in error.message


def test_a_loop_that_renders_too_much_is_refused_at_save(session):
    inner = column(
        "<mj-text>{% for i in range(12000) %}<p>{{ i }} xxxxxxxxx</p>{% endfor %}</mj-text>"
    )
    errors, _ = problems(session, body(inner))
    assert any("KB" in e.message or "larger" in e.message for e in errors), errors


def test_subject_and_preheader_are_checked_too(session):
    errors, _ = problems(session, body(column("<mj-text>x</mj-text>")), subject="{{ nope }}")
    assert only(errors).path == "subject"
    errors, _ = problems(
        session, body(column("<mj-text>x</mj-text>")), preheader="{{ contact.first_name "
    )
    assert only(errors).path == "preheader"
    with pytest.raises(ValueError):
        TemplateContent(subject="x" * 501, mjml="x")


def test_a_missing_sender_identity_is_named(session):
    errors, _ = problems(session, MJML, sender_identity_id=999)
    assert only(errors).path == "sender_identity_id"


def test_unknown_values_for_the_sample_are_warnings_and_default_fills_them(session):
    inner = column(
        "<mj-text>{{ contact.attributes.items() | list | length }}"
        "{% for t in contact.tags %}{{ t.missing }}{% endfor %}</mj-text>"
    )
    errors, warnings = problems(session, body(inner))
    assert errors == []
    assert any("'missing' is empty" in w.message and w.line == 4 for w in warnings)


def test_the_tracking_marker_is_reserved(session):
    errors, _ = problems(session, body(column("<mj-text><!--nurture:link:0--></mj-text>")))
    assert only(errors).path == "mjml" and "reserved" in only(errors).message


def test_a_save_refused_names_every_field_path(session):
    ensure_plan_field(session)
    with pytest.raises(InvalidInput) as raised:
        make_template(session, mjml=body(column("<mj-txt/>")), subject="{{ nope }}")
    paths = {e.path for e in raised.value.errors}
    assert paths == {"subject"}  # Jinja first; MJML is checked once the Jinja is sound


def test_editing_makes_a_new_version_and_the_old_one_stays(session):
    identity = make_identity(session)
    saved = make_template(session, sender_identity_id=identity)
    first = saved.version
    html_before = first.html
    edited = add_version(
        session,
        saved.template.id,
        TemplateContent(subject="New subject", mjml=MJML, sender_identity_id=identity),
    )
    assert edited.version.number == 2 and edited.version.id != first.id
    assert get_version(session, saved.template.id).id == edited.version.id
    assert get_version(session, saved.template.id, first.id).html == html_before
    assert [v.number for v in list_versions(session, saved.template.id)] == [2, 1]


def test_compile_numbers_links_places_a_pixel_and_derives_text():
    sample = template_context(
        {"first_name": "Ada", "tags": ["vip"], "attributes": {}},
        unsubscribe_url="u",
        preferences_url="p",
        view_in_browser_url="v",
    )
    result = compile_template(
        Draft("Hi", "Pre", MJML.replace("contact.attributes.plan", "contact.score"), True),
        known_fields=set(),
        sample=sample,
    )
    assert result.errors == []
    compiled = result.compiled
    *visible, honeypot = compiled.links  # the last is the hidden scanner trap
    assert honeypot["honeypot"] is True
    assert [link["url"] for link in visible] == [
        "https://shop.example/start?utm=1&x=2",
        "https://shop.example/about",
    ]
    assert [link["text"] for link in visible] == ["Get started", "About us"]
    assert compiled.html.count('href="<!--nurture:link:0-->"') == 1
    assert 'src="<!--nurture:open-->"' in compiled.html
    assert "{% for tag in contact.tags %}" in compiled.html
    assert "[Get started](<!--nurture:link:0-->)" in compiled.text
    lines = compiled.text.splitlines()
    assert (
        lines.index('{% if "vip" in contact.tags %}')
        < lines.index("Thank you for being a VIP.")
        < lines.index("{% endif %}")
    )
    assert "<" not in re.sub(r"<!--nurture:link:\d+-->", "", compiled.text)


def test_the_sample_contact_has_every_declared_attribute(session):
    ensure_plan_field(session)
    assert sample_contact(session)["attributes"] == {"plan": "Sample Plan"}


def test_a_preheader_keeps_the_templates_own_head(session):
    """The preheader joins the template's <mj-head>: its title, default attributes and
    styles still reach the email (a second head made MJML drop them all)."""
    mjml = (
        "<mjml>\n<mj-head>\n<mj-title>Spring letter</mj-title>\n"
        '<mj-attributes><mj-all font-family="Georgia, serif" /></mj-attributes>\n'
        "<mj-style>.brand { color: #0a7f5a; }</mj-style>\n</mj-head>\n"
        + body(column('<mj-text css-class="brand">Hello</mj-text>'))[len("<mjml>\n") :]
    )
    ensure_plan_field(session)
    for preheader in ("", "Twenty per cent off, {{ contact.first_name }}"):
        result = validate_template(
            session, TemplateContent(subject="Hi", preheader=preheader, mjml=mjml)
        )
        assert not result.errors, result.errors
        html = result.compiled.html
        assert re.search(r"<title>\s*Spring letter\s*</title>", html), preheader
        assert "Georgia, serif" in html
        assert ".brand { color: #0a7f5a; }" in html
        if preheader:  # rendered per message (a campaign variant may override it)
            _, email = preview_draft(
                session,
                TemplateContent(subject="Hi", preheader=preheader, mjml=mjml),
                base_url="http://nurture.localhost",
            )
            assert "Twenty per cent off, Ada" in email.html
