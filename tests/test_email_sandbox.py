"""Renders that run too long, grow too large or reach outside the sandbox stop with an
error; the process carries on and the other recipients are still sent."""

from __future__ import annotations

import time

import emailkit
import pytest
from emailkit import make_contact, make_template
from sqlalchemy import update

from automation.contacts.models import Contact
from automation.email.models import Message, MessageStatus
from automation.email.outbox import queue_message, send_due
from automation.email.sandbox import CHECK_HTML_ENV, HTML_ENV, TEXT_ENV, RenderError, render
from automation.email.sender import Sending
from automation.email.transport import SmtpSettings, SmtpTransport
from automation.signing import TokenSigner

smtp_server = emailkit.smtp_server

CONTEXT = {"contact": {"first_name": "", "tags": ["a", "b"], "attributes": {"plan": "pro"}}}

HOSTILE = {
    "mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals": "{{ self.__init__.__globals__ }}",
    "format attribute": "{{ '{0.__class__}'.format(contact) }}",
    "mutate": "{% set t = contact.tags %}{{ t.append(1) }}",
    "nested loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    ),
    "multiply": "{{ 'x' * 100000000 }}",
    "power": "{{ (9 ** 9) ** (9 ** 9) }}",
    "doubling": (
        "{% set ns = namespace(s='ab') %}"
        "{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
    ),
    "format width": "{{ '%0999999999d'|format(1) }}",
    "percent width": "{{ '%0999999999d' % 1 }}",
    "ljust": "{{ 'a'.ljust(1000000000) }}",
    "center": "{{ 'x'|center(1000000000) }}",
    "str.format width": "{{ '{:>999999999}'.format(1) }}",
    "replace": "{{ ('a' * 100000)|replace('a', 'b' * 1000) }}",
    "batch": "{{ [1]|batch(1000000000, 'x')|list }}",
    "slice": "{{ [1]|slice(1000000000)|list }}",
    "output": "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}",
    "recursion": "{% macro m(n) %}{{ m(n) }}{% endmacro %}{{ m(1) }}",
}


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_render_stops_with_an_error_quickly(source):
    started = time.monotonic()
    with pytest.raises(RenderError):
        render(HTML_ENV.from_string(source), CONTEXT)
    assert time.monotonic() - started < 5


def test_the_environment_exposes_nothing_but_the_context():
    for env in (HTML_ENV, TEXT_ENV, CHECK_HTML_ENV):
        assert set(env.globals) == {"range", "dict", "namespace"}
        assert "attr" not in env.filters


def test_autoescape_is_on_for_html_and_off_for_text():
    context = {"contact": {"first_name": "<b>Ana & Bo</b>"}}
    assert render(HTML_ENV.from_string("{{ contact.first_name }}"), context).output == (
        "&lt;b&gt;Ana &amp; Bo&lt;/b&gt;"
    )
    assert render(TEXT_ENV.from_string("{{ contact.first_name }}"), context).output == (
        "<b>Ana & Bo</b>"
    )


def test_default_fills_missing_and_empty_values():
    template = HTML_ENV.from_string(
        "{{ contact.first_name | default('there') }}/{{ contact.nickname | default('pal') }}/"
        "{{ contact.score | default(5) }}"
    )
    assert render(template, {"contact": {"first_name": "", "score": 0}}).output == "there/pal/0"


def test_one_recipient_whose_data_blows_up_the_render_fails_alone(session, settings, smtp_server):
    saved = make_template(
        session,
        mjml=emailkit.MJML.replace(
            "Your plan: {{ contact.attributes.plan",
            "{% for i in range(400) %}{{ contact.attributes.plan }}{% endfor %}"
            " {{ contact.attributes.plan",
        ),
    )
    ok = make_contact(session, "ok@example.com", attributes={"plan": "pro"})
    huge = make_contact(session, "huge@example.com")
    # An attachment-like payload stored on the contact (bypassing the API's limits).
    session.execute(
        update(Contact).where(Contact.id == huge).values(attributes={"plan": "x" * 1_000_000})
    )
    ids = {
        c: queue_message(
            session, dedupe_key=f"k{c}", contact_id=c, template_version_id=saved.version.id
        )
        for c in (ok, huge)
    }
    session.commit()
    from automation.db import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    transport = SmtpTransport(SmtpSettings(smtp_server.host, smtp_server.port))
    send_due(
        make_session_factory(engine),
        Sending(settings, transport, TokenSigner.from_settings(settings)),
    )
    transport.close()
    with make_session_factory(engine)() as s:
        assert s.get(Message, ids[ok]).status is MessageStatus.SENT
        failed = s.get(Message, ids[huge])
        assert failed.status is MessageStatus.FAILED and failed.reason == "render_error"
        assert failed.error.startswith("line ")
        assert "larger than" in failed.error or "too much work" in failed.error
    engine.dispose()
    assert [r.recipients for r in smtp_server.received] == [["ok@example.com"]]
