"""Reading a relay's log for what became of our messages, by their Message-ID.

Postfix logs the Message-ID when ``cleanup`` takes a message into its queue, then each
delivery attempt by queue id (``status=sent|deferred|bounced|expired``). Exim logs the
arrival (``<=`` … ``id=<Message-ID>``), then deliveries (``=>``, ``->``), deferrals
(``==``) and failures (``**``) by its own message id. A message the relay queued was
accepted from us: it is `sent` unless a later line says the relay gave up on it (bounced
or expired: `failed`, a hard bounce when the reply says the address does not exist).

Only the Message-IDs asked for are kept, so a log of millions of lines costs little
memory; lines are read as bytes and cut to ``MAX_LINE`` characters, so nothing in a log
can make a pattern run long."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from automation.email.transport import is_hard_bounce

MAX_LINE = 8192


class LogFormat(enum.StrEnum):
    POSTFIX = "postfix"
    EXIM = "exim"


class Fate(enum.StrEnum):
    ACCEPTED = "accepted"  # queued by the relay (delivered, or still being tried)
    FAILED = "failed"  # the relay gave up on it
    BOUNCED = "bounced"  # … because the address does not exist


@dataclass(frozen=True)
class RelayOutcome:
    fate: Fate
    line: int  # the log line that decided it (1-based)
    text: str  # what the relay said there


def bare(message_id: str) -> str:
    """A Message-ID without its angle brackets."""
    return message_id.strip().removeprefix("<").removesuffix(">")


def _lines(data: Iterable[bytes]) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(data, 1):
        yield number, raw[:MAX_LINE].decode("utf-8", "replace").rstrip("\r\n")


_PF = r"postfix(?:-[\w.-]+)?(?:/[\w.-]+)*"
_PF_QUEUED = re.compile(rf"{_PF}/cleanup\[\d+\]: ([0-9A-Za-z]+): message-id=<?([^<>\s]+)>?")
_PF_DELIVERY = re.compile(
    rf"{_PF}/[\w.-]+\[\d+\]: ([0-9A-Za-z]+): to=<[^<>]*>,(?: orig_to=<[^<>]*>,)?[^<>]*?"
    r"\bdsn=(\d\.\d{1,3}\.\d{1,3}), status=(sent|deferred|bounced|expired|undeliverable)"
    r"(?: \((.*)\))?"
)
_PF_EXPIRED = re.compile(rf"{_PF}/qmgr\[\d+\]: ([0-9A-Za-z]+): from=<[^<>]*>, status=expired")
_REPLY_CODE = re.compile(r"\b([245]\d\d)[ -]")


def _failure(text: str, line: int, dsn: str = "") -> RelayOutcome:
    found = _REPLY_CODE.search(text)
    code = int(found.group(1)) if found else None
    hard = is_hard_bounce(code, f"{dsn} {text}")
    return RelayOutcome(Fate.BOUNCED if hard else Fate.FAILED, line, text[:500])


def read_postfix(data: Iterable[bytes], wanted: set[str]) -> dict[str, RelayOutcome]:
    """Bare Message-ID → what the relay did with it, for the ones in ``wanted``."""
    queue_ids: dict[str, str] = {}  # Postfix queue id → Message-ID
    found: dict[str, RelayOutcome] = {}
    for number, line in _lines(data):
        if (m := _PF_QUEUED.search(line)) is not None:
            if m.group(2) in wanted:
                queue_ids[m.group(1)] = m.group(2)
                found.setdefault(m.group(2), RelayOutcome(Fate.ACCEPTED, number, "queued"))
        elif (m := _PF_DELIVERY.search(line)) is not None:
            message_id = queue_ids.get(m.group(1))
            if message_id is None:
                continue
            dsn, status, text = m.group(2), m.group(3), m.group(4) or ""
            if status in ("sent", "deferred"):
                if found[message_id].fate is Fate.ACCEPTED:
                    found[message_id] = RelayOutcome(Fate.ACCEPTED, number, text[:500])
            else:
                found[message_id] = _failure(text or status, number, dsn)
        elif (m := _PF_EXPIRED.search(line)) is not None:
            message_id = queue_ids.get(m.group(1))
            if message_id is not None and found[message_id].fate is Fate.ACCEPTED:
                found[message_id] = RelayOutcome(Fate.FAILED, number, "expired in the queue")
    return found


_EXIM = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?(?: [+-]\d{4})?(?: \[\d+\])? "
    r"([0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}) (<=|=>|->|>>|\*>|\*\*|==) (.*)$"
)
_EXIM_ID = re.compile(r"(?:^| )id=<?([^<>\s]+)>?(?: |$)")


def read_exim(data: Iterable[bytes], wanted: set[str]) -> dict[str, RelayOutcome]:
    """Bare Message-ID → what the relay did with it, for the ones in ``wanted``."""
    exim_ids: dict[str, str] = {}  # Exim's message id → Message-ID
    found: dict[str, RelayOutcome] = {}
    for number, line in _lines(data):
        m = _EXIM.match(line)
        if m is None:
            continue
        exim_id, flag, rest = m.groups()
        if flag == "<=":
            id_ = _EXIM_ID.search(rest)
            if id_ is not None and id_.group(1) in wanted:
                exim_ids[exim_id] = id_.group(1)
                found.setdefault(id_.group(1), RelayOutcome(Fate.ACCEPTED, number, "received"))
            continue
        message_id = exim_ids.get(exim_id)
        if message_id is None:
            continue
        if flag == "**":
            # "** rcpt R=… T=…: SMTP error from remote mail server after RCPT TO:<…>: 550 …"
            found[message_id] = _failure(rest, number)
        elif flag in ("=>", "->") and found[message_id].fate is Fate.ACCEPTED:
            found[message_id] = RelayOutcome(Fate.ACCEPTED, number, rest[:500])
    return found


READERS = {LogFormat.POSTFIX: read_postfix, LogFormat.EXIM: read_exim}
