"""Transports: how a finished message leaves. SMTP now; a provider API would be another
class with the same two methods.

SMTP outcomes are classified so the outbox never sends twice and never counts a message
sent that was not:

- 2xx after the data                                  → sent
- 4xx anywhere, 421, or the connection lost before the
  end of the data was written                         → deferred (retried later, slower)
- 5xx                                                 → failed (550/551/553 or 5.1.x on
                                                        the recipient: a hard bounce)
- the connection lost after the whole message was
  written but before the server answered              → unknown (it may have been
                                                        accepted: never resent by itself)
- an address needs SMTPUTF8 (a non-ASCII local part)
  and the relay does not offer it                     → deferred, held (nothing is tried)

A message whose envelope needs SMTPUTF8 goes with ``MAIL FROM:<…> SMTPUTF8`` (RFC 6531),
and ``BODY=8BITMIME`` when offered, since its headers hold UTF-8 addresses.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from automation.email.outbox.channel import NEEDS_SMTPUTF8, Delivery, DeliveryStatus

CRLF = b"\r\n"


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipient: str
    data: bytes  # the whole message, CRLF line endings, not yet dot-stuffed
    # The addresses (envelope or headers) with a non-ASCII local part: sent with SMTPUTF8.
    smtputf8_for: tuple[str, ...] = ()

    @property
    def utf8(self) -> bool:
        return bool(self.smtputf8_for)

    def mail_options(self, smtp: smtplib.SMTP) -> list[str]:
        if not self.utf8:
            return []
        return ["SMTPUTF8", *(["BODY=8BITMIME"] if smtp.has_extn("8bitmime") else [])]


K = TypeVar("K")


class Transport(Protocol):
    """What the sender needs from a way out (SMTP here; a provider's HTTP API later)."""

    def send(self, envelope: Envelope) -> Delivery: ...

    def send_many(self, items: Iterable[tuple[K, Envelope]]) -> Iterator[tuple[K, Delivery]]:
        """One (key, delivery) per item, in order; items pulled as they are sent."""
        ...

    def close(self) -> None: ...


class TransportUnavailable(Exception):
    """The relay cannot be reached or refuses us; nothing was sent."""


_QUEUED_AS = re.compile(r"(?:queued as\s+|\bid=)<?([A-Za-z0-9._@\-]+)", re.IGNORECASE)
_HARD_BOUNCE_CODES = {550, 551, 553}


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {' '.join(text.split())}"[:500]


def _temporary(code: int) -> bool:
    return 400 <= code < 500


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    tls: str = "none"  # none | starttls | ssl
    username: str = ""
    password: str = ""
    timeout: float = 30.0
    local_hostname: str | None = None
    max_messages_per_connection: int = 1000
    idle_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: Any) -> SmtpSettings:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            tls=settings.smtp_tls,
            username=settings.smtp_username,
            password=settings.smtp_password,
        )


class SmtpTransport:
    """One SMTP connection, opened on first use and kept for the next messages and batches
    (reopened after errors, after ``max_messages_per_connection`` or when idle too long)."""

    def __init__(self, config: SmtpSettings, ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self.ssl_context = ssl_context
        self._smtp: smtplib.SMTP | None = None
        self._sent_on_connection = 0
        self._last_used = 0.0

    # -- connection ------------------------------------------------------------------

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        context = self.ssl_context or ssl.create_default_context()
        try:
            smtp: smtplib.SMTP
            if c.tls == "ssl":
                smtp = smtplib.SMTP_SSL(
                    c.host,
                    c.port,
                    timeout=c.timeout,
                    context=context,
                    local_hostname=c.local_hostname,
                )
            else:
                smtp = smtplib.SMTP(
                    c.host, c.port, timeout=c.timeout, local_hostname=c.local_hostname
                )
            smtp.ehlo()
            if c.tls == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
            if c.username:
                smtp.login(c.username, c.password)
            if smtp.sock is not None:  # small commands go out at once, not after an ACK
                smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except smtplib.SMTPAuthenticationError as exc:
            raise TransportUnavailable(
                f"SMTP login refused: {_reply(exc.smtp_code, exc.smtp_error)}"
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise TransportUnavailable(
                f"SMTP server refused: {_reply(exc.smtp_code, exc.smtp_error)}"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TransportUnavailable(f"cannot reach SMTP {c.host}:{c.port}: {exc}") from None
        self._sent_on_connection = 0
        return smtp

    def _connection(self) -> smtplib.SMTP:
        now = time.monotonic()
        if self._smtp is not None and (
            self._sent_on_connection >= self.config.max_messages_per_connection
            or now - self._last_used > self.config.idle_seconds
        ):
            self.close()
        if self._smtp is None:
            self._smtp = self._connect()
        self._last_used = now
        return self._smtp

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    def _reset(self, smtp: smtplib.SMTP) -> None:
        if self._smtp is not smtp:
            return  # already dropped
        try:
            smtp.rset()
        except (OSError, smtplib.SMTPException):
            self._drop()

    # -- messages -----------------------------------------------------------------------

    def send(self, envelope: Envelope) -> Delivery:
        """One message: MAIL, RCPT, DATA (one round trip with PIPELINING), then the data."""
        for _key, delivery in self.send_many([(None, envelope)]):
            return delivery
        raise AssertionError("send_many yields one delivery per envelope")

    def send_many(self, items: Iterable[tuple[K, Envelope]]) -> Iterator[tuple[K, Delivery]]:
        """Deliver in order, one (key, delivery) per item. With PIPELINING (RFC 2920) a
        message's data goes out in the same write as the next message's MAIL, RCPT and
        DATA: one round trip per message. Items are pulled only as they are sent, so the
        caller may render lazily."""
        source = iter(items)
        pending: tuple[K, Envelope] | None = None  # DATA accepted, its content not yet sent
        # A message that needs SMTPUTF8 met while another's content is pending: it waits
        # for the next turn (when nothing is pending), so the deliveries stay in order.
        carried: tuple[K, Envelope] | None = None
        while True:
            upcoming, carried = (carried, None) if carried else (next(source, None), None)
            if upcoming is None and pending is None:
                return
            if pending is None:
                assert upcoming is not None
                try:
                    smtp = self._connection()
                except TransportUnavailable as exc:
                    # Nothing was tried: this and every later message wait for a retry.
                    yield from _all_deferred(upcoming, source, str(exc))
                    return
                if upcoming[1].utf8 and not smtp.has_extn("smtputf8"):
                    yield upcoming[0], _needs_smtputf8(upcoming[1])
                    continue
                if not smtp.has_extn("pipelining"):
                    yield upcoming[0], self._one_at_a_time(smtp, upcoming[1])
                    continue
            else:
                assert self._smtp is not None  # the connection that accepted DATA
                smtp = self._smtp
                if upcoming is not None and upcoming[1].utf8 and not smtp.has_extn("smtputf8"):
                    carried, upcoming = upcoming, None
            write = _content(pending[1]) if pending else b""
            if upcoming is not None:
                # Envelope addresses are checked (mime.wire_address): no quoting. UTF-8
                # only in the envelope of a message sent with SMTPUTF8.
                sender, recipient = upcoming[1].sender, upcoming[1].recipient
                options = "".join(f" {o}" for o in upcoming[1].mail_options(smtp))
                write += (
                    f"MAIL FROM:<{sender}>{options}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode()
                )
            try:
                smtp.send(write)
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                # The write failed, so the content's final dot did not get through.
                self._drop()
                for item in (pending, upcoming):
                    if item is not None:
                        yield item[0], _lost(exc)
                pending = None
                continue
            if pending is not None:
                yield pending[0], self._after_data(smtp)
                pending = None
                if self._smtp is not smtp:  # lost, or closed with a 421
                    if upcoming is not None:
                        yield upcoming[0], _lost("the connection closed")
                    continue
            if upcoming is None:
                continue
            try:
                replies = [smtp.getreply() for _ in range(3)]
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                self._drop()
                yield upcoming[0], _lost(exc)
                continue
            refused = self._envelope_refused(smtp, replies)
            if refused is None:
                pending = upcoming
            else:
                yield upcoming[0], refused

    def _one_at_a_time(self, smtp: smtplib.SMTP, envelope: Envelope) -> Delivery:
        """A server without PIPELINING: MAIL, RCPT, DATA, content, each awaited."""
        try:
            code, message = smtp.mail(envelope.sender, envelope.mail_options(smtp))
            if code != 250:
                return self._refused(smtp, code, message, recipient=False)
            code, message = smtp.rcpt(envelope.recipient)
            if code not in (250, 251):
                return self._refused(smtp, code, message, recipient=True)
            code, message = smtp.docmd("data")
            if code != 354:
                return self._refused(smtp, code, message, recipient=False)
            smtp.send(_content(envelope))
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            return _lost(exc)
        return self._after_data(smtp)

    def _after_data(self, smtp: smtplib.SMTP) -> Delivery:
        # The whole message went out: if the connection is lost now the server may have
        # accepted it, so the outcome is unknown, and an unknown is never retried by itself.
        try:
            code, message = smtp.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            return Delivery(DeliveryStatus.UNKNOWN, f"connection lost after the data: {exc}"[:500])
        self._sent_on_connection += 1
        reply = _reply(code, message)
        if code == 250:
            found = _QUEUED_AS.search(reply)
            return Delivery(DeliveryStatus.SENT, reply, code, found.group(1) if found else None)
        if code == 421 or code == -1:
            self._drop()
        return Delivery(
            DeliveryStatus.DEFERRED if _temporary(code) else DeliveryStatus.FAILED,
            reply,
            code,
            slow_down=_temporary(code),
        )

    def _envelope_refused(
        self, smtp: smtplib.SMTP, replies: list[tuple[int, bytes]]
    ) -> Delivery | None:
        """None when MAIL, RCPT and DATA were all accepted; else the refusal."""
        (mail_code, mail_message), (rcpt_code, rcpt_message), (data_code, data_message) = replies
        if mail_code == 250 and rcpt_code in (250, 251) and data_code == 354:
            return None
        if data_code == 354:
            # A server that takes DATA after refusing the envelope: abort by hanging up,
            # never by sending an empty message.
            self._drop()
        if mail_code != 250:
            return self._refused(smtp, mail_code, mail_message, recipient=False)
        if rcpt_code not in (250, 251):
            return self._refused(smtp, rcpt_code, rcpt_message, recipient=True)
        return self._refused(smtp, data_code, data_message, recipient=False)

    def _refused(
        self, smtp: smtplib.SMTP, code: int, message: bytes, *, recipient: bool
    ) -> Delivery:
        reply = _reply(code, message)
        if code == 421 or code == -1:
            self._drop()
            return Delivery(DeliveryStatus.DEFERRED, reply, code, slow_down=True)
        self._reset(smtp)
        if _temporary(code):
            return Delivery(DeliveryStatus.DEFERRED, reply, code, slow_down=True)
        hard = recipient and is_hard_bounce(code, reply)
        return Delivery(DeliveryStatus.FAILED, reply, code, hard_bounce=hard)


def is_hard_bounce(code: int | None, reply: str) -> bool:
    """A refusal of the recipient for good (550/551/553, or a 5.1.x enhanced status: no
    such mailbox or domain), as opposed to a refusal of this one message."""
    return code in _HARD_BOUNCE_CODES or bool(re.search(r"\b5\.1\.\d+\b", reply))


def _content(envelope: Envelope) -> bytes:
    """The message, dot-stuffed, with its terminating dot."""
    data = envelope.data
    if data[:1] == b".":
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(CRLF):
        data += CRLF
    return data + b".\r\n"


def _lost(exc: object) -> Delivery:
    # Lost before the end of the data went out: the server cannot have accepted it.
    return Delivery(DeliveryStatus.DEFERRED, f"connection lost: {exc}"[:500], slow_down=True)


def _needs_smtputf8(envelope: Envelope) -> Delivery:
    return Delivery(
        DeliveryStatus.DEFERRED,
        f"held: {', '.join(envelope.smtputf8_for)} has a non-ASCII local part, so the "
        "message needs SMTPUTF8, which the SMTP relay does not offer"[:500],
        reason=NEEDS_SMTPUTF8,
    )


def _all_deferred(
    first: tuple[K, Envelope], rest: Iterator[tuple[K, Envelope]], error: str
) -> Iterator[tuple[K, Delivery]]:
    for key, _envelope in (first, *rest):
        yield key, Delivery(DeliveryStatus.DEFERRED, error[:500], slow_down=True, unavailable=True)


_pool: dict[SmtpSettings, SmtpTransport] = {}


def pooled_transport(config: SmtpSettings) -> SmtpTransport:
    """The process's transport for these settings: its connection outlives a batch."""
    transport = _pool.get(config)
    if transport is None:
        transport = _pool[config] = SmtpTransport(config)
    return transport
