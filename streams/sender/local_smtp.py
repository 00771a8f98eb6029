"""A local SMTP server that keeps every mail in a Maildir (``make run``: no mail leaves the box)."""

from __future__ import annotations

import mailbox
from email import message_from_bytes
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class _Store:
    def __init__(self, maildir: Path) -> None:
        maildir.parent.mkdir(parents=True, exist_ok=True)
        self.box = mailbox.Maildir(str(maildir), create=True)
        self.received = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.box.add(message_from_bytes(envelope.original_content or envelope.content))
        self.received += 1
        return "250 Message accepted for delivery"


class LocalMailServer:
    """``start()`` serves on 127.0.0.1 (port 0: a free one, see ``port``); ``stop()``."""

    def __init__(self, maildir: Path, port: int = 0) -> None:
        self.maildir = maildir
        self.store = _Store(maildir)
        self.controller = Controller(self.store, hostname="127.0.0.1", port=port or free_port())

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
