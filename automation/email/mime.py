"""MIME assembly without ``email.message.EmailMessage``.

Building each message with EmailMessage costs about 2 ms, which alone would cap sending
near 600 messages a second. The shape of our messages never varies (headers, then a
multipart/alternative of a text and an HTML part), so it is written directly, with headers
RFC 2047-encoded when they are not ASCII.

Both parts are quoted-printable, encoded chunk by chunk as the render yields them: every
chunk ends on a (soft or hard) line break, so encoded chunks simply concatenate, and the
encoding of a template's static chunks is computed once (``render.Codec``). Encoding
whole 30 KB parts per recipient with ``binascii.b2a_qp`` would cost ~0.8 ms.

tests/test_mime.py proves the bytes parse back with Python's email parser to the same
headers and parts an EmailMessage carries.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from functools import lru_cache

from automation.addresses import ascii_domain, needs_smtputf8

CRLF = b"\r\n"
_ATEXT_PHRASE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]*$")
_MAX_WORD_BYTES = 39  # 52 base64 characters: a word and its header name fit in 78


class AddressError(ValueError):
    """An address that cannot go into a header or an SMTP envelope."""


@dataclass(frozen=True)
class Mail:
    from_name: str
    from_email: str
    to_name: str
    to_email: str
    subject: str
    html_qp: bytes  # quoted-printable (qp_encode, or pieces of it concatenated)
    text_qp: bytes
    message_id: str
    date: datetime
    reply_to: str | None = None
    list_unsubscribe: tuple[str, str] | None = None  # (https URL, mailto URL)
    feedback_id: str | None = None
    list_id: str | None = None  # a List-Id header value (list_id_header)
    extra_headers: Sequence[tuple[str, str]] = ()
    # Sent with SMTPUTF8 (RFC 6531/6532): addresses with a non-ASCII local part go into
    # the headers as UTF-8. Everything else stays 7-bit (names and subject as RFC 2047).
    utf8: bool = False


def wire_address(address: str, *, utf8: bool = False) -> str:
    """The address as it goes on the wire: the domain encoded with IDNA where it is not
    ASCII; a non-ASCII local part only in a message sent with SMTPUTF8 (``utf8``)."""
    if any(c in address for c in '\r\n<>"\\, \t') or address.count("@") != 1:
        raise AddressError(f"malformed address {address!r}")
    local, domain = address.split("@")
    if not local or not domain or "." not in domain.strip("."):
        raise AddressError(f"malformed address {address!r}")
    if not utf8 and needs_smtputf8(address):
        raise AddressError(f"{address!r} has a non-ASCII local part: it needs SMTPUTF8")
    try:
        domain = ascii_domain(domain)
    except ValueError:
        raise AddressError(f"{address!r} has an invalid domain") from None
    return f"{local}@{domain}"


def encoded_words(value: str) -> str:
    """RFC 2047 base64 encoded words, folded, never splitting a character."""
    data = value.encode("utf-8")
    if len(data) <= _MAX_WORD_BYTES:
        return _word(data)
    words: list[str] = []
    chunk = bytearray()
    for char in value:
        data = char.encode("utf-8")
        if len(chunk) + len(data) > _MAX_WORD_BYTES:
            words.append(_word(chunk))
            chunk = bytearray()
        chunk += data
    if chunk or not words:
        words.append(_word(chunk))
    return "\r\n ".join(words)


def _word(data: bytes | bytearray) -> str:
    return "=?utf-8?b?" + base64.b64encode(bytes(data)).decode("ascii") + "?="


def header_text(value: str) -> str:
    """An unstructured header value (Subject): ASCII as is when short, else encoded."""
    value = " ".join(value.split())
    words = value.split(" ")
    if value.isascii() and "=?" not in value and max(map(len, words)) <= 66:
        return _fold(value)
    return encoded_words(value)


def _fold(value: str, width: int = 76) -> str:
    if len(value) <= width:
        return value
    lines, line = [], ""
    for word in value.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\r\n ".join(lines)


@lru_cache(maxsize=64)
def _sender_header(name: str, address: str, utf8: bool) -> str:
    return address_header(name, address, utf8=utf8)


def address_header(name: str, address: str, *, utf8: bool = False) -> str:
    address = wire_address(address, utf8=utf8)
    name = " ".join(name.split())
    return f"{_phrase(name)} <{address}>" if name else address


def _phrase(name: str) -> str:
    """A display name as a header phrase: as is, quoted, or RFC 2047 encoded."""
    if name.isascii() and "=?" not in name:
        if _ATEXT_PHRASE.match(name):
            return name
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}"'
    return encoded_words(name)


_LABEL = re.compile(r"[^A-Za-z0-9-]+")


def list_id_header(description: str, label: str, domain: str) -> str:
    """RFC 2919: ``description <label.domain>``, the label made of letters, digits and
    hyphens (dots separate its parts), the domain as punycode."""
    parts = [_LABEL.sub("-", part).strip("-") for part in label.split(".")]
    try:
        host = domain.encode("idna").decode("ascii")
    except UnicodeError:
        host = "invalid"
    list_id = ".".join([p for p in parts if p] + [host.lower()])
    description = " ".join(description.split())[:100]
    return f"{_phrase(description)} <{list_id}>" if description else f"<{list_id}>"


def qp_url(url: str) -> bytes:
    """qp_encode for our own URLs (printable ASCII, no "="): only the soft line breaks."""
    data = url.encode("ascii")
    if len(data) <= 75:
        return data + b"=\r\n"
    return b"=\r\n".join([data[i : i + 75] for i in range(0, len(data), 75)]) + b"=\r\n"


def qp_encode(text: str) -> bytes:
    """Quoted-printable with CRLF line ends, ending on a line break (a soft one if the
    text does not end with a newline), so that encoded pieces concatenate."""
    if not text:
        return b""
    text = str(text)  # a Markup's methods would escape their arguments
    if text.isascii() and text.isprintable() and "=" not in text:
        # The common case (URLs, names): nothing to escape, only soft line breaks.
        data = text.encode("ascii")
        if len(data) <= 75:
            return data + b"=\r\n"
        return b"=\r\n".join([data[i : i + 75] for i in range(0, len(data), 75)]) + b"=\r\n"
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    if not encoded.endswith(b"\n"):
        encoded += b"=\n"
    return encoded.replace(b"\n", b"\r\n")


_last_date: tuple[datetime, str] | None = None


def _date(value: datetime) -> str:
    global _last_date
    if _last_date is None or _last_date[0] != value.replace(microsecond=0):
        _last_date = (value.replace(microsecond=0), format_datetime(value))
    return _last_date[1]


def build_mime(mail: Mail) -> bytes:
    """The complete message, CRLF line endings, 7-bit clean (but for the UTF-8 addresses
    of a message sent with SMTPUTF8)."""
    boundary = "=_nurture_alt"  # "=_" can never occur in quoted-printable output
    headers = [
        ("From", _sender_header(mail.from_name, mail.from_email, mail.utf8)),
        ("To", address_header(mail.to_name, mail.to_email, utf8=mail.utf8)),
        ("Subject", header_text(mail.subject)),
        ("Date", _date(mail.date)),
        ("Message-ID", mail.message_id),
        ("MIME-Version", "1.0"),
    ]
    if mail.reply_to:
        headers.append(("Reply-To", wire_address(mail.reply_to, utf8=mail.utf8)))
    if mail.list_unsubscribe:
        https, mailto = mail.list_unsubscribe
        headers.append(("List-Unsubscribe", f"<{https}>,\r\n <{mailto}>"))
        headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    if mail.list_id:
        headers.append(("List-Id", mail.list_id))
    if mail.feedback_id:
        headers.append(("Feedback-ID", mail.feedback_id))
    headers.extend(mail.extra_headers)
    headers.append(("Content-Type", f'multipart/alternative;\r\n boundary="{boundary}"'))
    head = "".join(f"{name}: {value}\r\n" for name, value in headers).encode(
        "utf-8" if mail.utf8 else "ascii"
    )
    part_head = (
        '\r\nContent-Type: text/{}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    delimiter = f"--{boundary}".encode("ascii")
    return b"".join(
        (
            head,
            CRLF,
            delimiter,
            part_head.format("plain").encode("ascii"),
            mail.text_qp,
            CRLF,
            delimiter,
            part_head.format("html").encode("ascii"),
            mail.html_qp,
            CRLF,
            delimiter,
            b"--",
            CRLF,
        )
    )
