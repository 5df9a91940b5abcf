"""The hand-assembled MIME parses back, with Python's email parser, to exactly what an
EmailMessage built from the same content parses back to."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from automation.email.mime import (
    AddressError,
    Mail,
    address_header,
    build_mime,
    qp_encode,
    qp_url,
    wire_address,
)

WHEN = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def reference(mail: Mail, html: str, text: str) -> EmailMessage:
    """The slow, obviously right way."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = f"{mail.from_name} <{mail.from_email}>"
    msg["To"] = f"{mail.to_name} <{wire_address(mail.to_email)}>"
    msg["Subject"] = mail.subject
    msg["Date"] = format_datetime(mail.date)
    msg["Message-ID"] = mail.message_id
    if mail.list_unsubscribe:
        msg["List-Unsubscribe"] = ", ".join(f"<{u}>" for u in mail.list_unsubscribe)
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(text, cte="quoted-printable")
    msg.add_alternative(html, subtype="html", cte="quoted-printable")
    return msg


def parse(data: bytes) -> EmailMessage:
    parsed = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(parsed, EmailMessage)
    return parsed


def assert_same(ours: EmailMessage, theirs: EmailMessage) -> None:
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe-Post"):
        assert str(ours.get(name)) == str(theirs.get(name)), name
    assert ours.get("List-Unsubscribe", "").replace(" ", "") == theirs.get(
        "List-Unsubscribe", ""
    ).replace(" ", "")
    assert ours.get_content_type() == theirs.get_content_type() == "multipart/alternative"
    for subtype in ("plain", "html"):
        a, b = ours.get_body((subtype,)), theirs.get_body((subtype,))
        assert a.get_content_type() == b.get_content_type()
        assert a.get_content_charset() == b.get_content_charset() == "utf-8"
        # EmailMessage always ends a part with a newline; that is its only difference.
        assert a.get_content().rstrip("\r\n") == b.get_content().rstrip("\r\n")


def mail(
    subject: str,
    html: str,
    text: str,
    from_name: str = "Nurture Öutdoor",
    to_name: str = "Zoë Dubois",
) -> Mail:
    return Mail(
        from_name=from_name,
        from_email="hello@shop.example",
        to_name=to_name,
        to_email="zoe@example.com",
        subject=subject,
        html_qp=qp_encode(html),
        text_qp=qp_encode(text),
        message_id="<abc123@shop.example>",
        date=WHEN,
        list_unsubscribe=("https://m.example/u/tok", "mailto:unsubscribe@shop.example?subject=x"),
        feedback_id="c1:2:m:nurture",
    )


def test_a_typical_message_parses_back_like_emailmessage_builds_it():
    html = "<p>Héllo Zoë — 100% <b>ünïcödé</b> ✓ a=b</p>\n<p>" + "long line " * 40 + "</p>\n"
    text = "Héllo Zoë\n\nLine with trailing space \n.starts with a dot\n"
    m = mail("Bienvenue, Zoë — ça va? 🎉", html, text)
    assert_same(parse(build_mime(m)), parse(reference(m, html, text).as_bytes()))


def test_lines_are_crlf_and_at_most_78_characters():
    m = mail("x" * 200, "<p>" + "é" * 3000 + "</p>", "a" * 5000)
    data = build_mime(m)
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 78
    assert data.isascii()


def test_chunks_encoded_apart_concatenate_into_the_same_content():
    chunks = [
        "<p>Hello ",
        "Zoë",
        '</p>\n<a href="',
        "https://x.example/t/c/" + "y" * 60,
        '">',
        "é" * 100,
        "\n",
    ]
    m = Mail(
        "A",
        "a@b.example",
        "",
        "c@d.example",
        "s",
        b"".join(map(qp_encode, chunks[:3]))
        + qp_url(chunks[3])
        + b"".join(map(qp_encode, chunks[4:])),
        qp_encode("t"),
        "<m@b.example>",
        WHEN,
    )
    html = parse(build_mime(m)).get_body(("html",)).get_content()
    assert html.replace("\r\n", "\n") == "".join(chunks)


@settings(max_examples=60, deadline=None)
@given(
    subject=st.text(min_size=1, max_size=120).filter(lambda s: s.strip()),
    text=st.text(max_size=300),
    name=st.text(max_size=40),
)
def test_any_unicode_subject_name_and_body_survive(subject, text, name):
    text = text.replace("\r", "")
    name = " ".join(name.split())
    m = mail(subject, "<p>" + text + "</p>", text, from_name=name, to_name=name)
    ours = parse(build_mime(m))
    assert str(ours["Subject"]) == " ".join(subject.split())
    assert ours.get_body(("plain",)).get_content().replace("\r\n", "\n") == text
    # The display name, decoded by the RFC 2047 decoder. (The newer header parser puts a
    # space between the encoded words of a long name, against RFC 2047 §6.2, and does so
    # for an EmailMessage-built header too.)
    raw = build_mime(m).split(b"\r\n\r\n", 1)[0].decode("ascii")
    folded = re.search(r"^From: (.*?)(?=\r\n\S)", raw, re.MULTILINE | re.DOTALL).group(1)
    if not name:
        assert folded == "hello@shop.example"
        return
    phrase = folded.replace("\r\n", "").rsplit(" <", 1)[0]
    if phrase.startswith('"'):
        phrase = phrase[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    expected = str(make_header(decode_header(phrase))) if phrase != name else name
    assert expected == name


@pytest.mark.parametrize(
    "name", ["Smith, John", 'Say "hi"', "back\\slash", "a" * 150, "Ünïcödé, Inc."]
)
def test_display_names_with_specials_are_quoted_or_encoded(name):
    m = mail("s", "<p/>", "t", from_name=name)
    assert parse(build_mime(m))["From"].addresses[0].display_name == name


@pytest.mark.parametrize(
    "address",
    [
        "no-at-sign",
        "two@@example.com",
        "a b@example.com",
        "a@b",
        "x@example.com\r\nBcc: y@z",
        "ü@example.com",
    ],
)
def test_malformed_addresses_are_refused(address):
    with pytest.raises(AddressError):
        address_header("", address)


def test_an_international_domain_goes_out_as_punycode():
    assert wire_address("ana@bücher.example") == "ana@xn--bcher-kva.example"
