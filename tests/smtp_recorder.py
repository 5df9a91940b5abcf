"""A real SMTP server (aiosmtpd) in its own process that appends one line per accepted
message to a file: ``<Message-ID local part>\\t<recipient>``. Lines are written with one
``write`` on an O_APPEND descriptor before the 250 reply, so the file is exactly what the
server acknowledged, whatever happens to the processes sending to it.

    python tests/smtp_recorder.py --port 18425 --out deliveries.tsv
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import threading
from typing import Any

from aiosmtpd.controller import Controller

MESSAGE_ID = re.compile(rb"^Message-ID: <([^@>\s]+)@", re.MULTILINE | re.IGNORECASE)


class Recorder:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        found = MESSAGE_ID.search(envelope.original_content or b"")
        token = found.group(1).decode() if found else "-"
        lines = "".join(f"{token}\t{rcpt}\n" for rcpt in envelope.rcpt_tos)
        os.write(self.fd, lines.encode())
        return "250 OK"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    controller = Controller(Recorder(args.out), hostname="127.0.0.1", port=args.port)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
