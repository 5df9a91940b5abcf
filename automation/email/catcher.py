"""The local SMTP catcher of the embedded default: accepts every message and keeps it
in a Maildir under var/, where the "Sent mail (local)" page reads it."""

from __future__ import annotations

import mailbox
import socket
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class MaildirHandler:
    def __init__(self, maildir: Path) -> None:
        maildir.parent.mkdir(parents=True, exist_ok=True)
        self.box = mailbox.Maildir(str(maildir), create=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode()
        rcpts = ", ".join(envelope.rcpt_tos)
        self.box.add(b"X-Nurture-Envelope-To: " + rcpts.encode() + b"\r\n" + data)
        return "250 Message accepted"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_catcher(maildir: Path, host: str = "127.0.0.1", port: int = 1025) -> Controller:
    """Start the catcher in a background thread; port 0 picks a free port
    (read it back from ``controller.port``)."""
    controller = Controller(MaildirHandler(maildir), hostname=host, port=port or free_port(host))
    controller.start()
    return controller


@dataclass(frozen=True)
class CaughtMail:
    key: str
    to: str
    sender: str
    subject: str
    date: datetime | None
    message: EmailMessage

    def part(self, subtype: str) -> str | None:
        body = self.message.get_body(preferencelist=(subtype,))
        return body.get_content() if body is not None else None


def _parse(key: str, raw: bytes) -> CaughtMail:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    try:
        date = parsedate_to_datetime(msg["Date"]) if msg["Date"] else None
    except (TypeError, ValueError):
        date = None
    return CaughtMail(
        key,
        str(msg.get("X-Nurture-Envelope-To") or msg.get("To", "")),
        str(msg.get("From", "")),
        str(msg.get("Subject", "")),
        date,
        msg,
    )


def list_caught(maildir: Path, limit: int = 200) -> list[CaughtMail]:
    """The newest caught messages first."""
    if not maildir.exists():
        return []
    box = mailbox.Maildir(str(maildir), create=False)
    files: list[Path] = []
    for sub in ("new", "cur"):
        folder = maildir / sub
        if folder.exists():
            files.extend(folder.iterdir())
    files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    out = []
    for path in files[:limit]:
        key = path.name.split(":", 1)[0]
        out.append(_parse(key, path.read_bytes()))
    del box
    return out


def get_caught(maildir: Path, key: str) -> CaughtMail | None:
    if not maildir.exists():
        return None
    box = mailbox.Maildir(str(maildir), create=False)
    try:
        return _parse(key, box.get_bytes(key))
    except KeyError:
        return None
