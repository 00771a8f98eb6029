"""A local SMTP server that keeps every mail in a Maildir (``make run``: no mail leaves the box).

With ``recipients`` (demo only, see :mod:`streams.sender.recipients`), each stored mail is also
handed to the simulated recipients, who open, click, unsubscribe or complain."""

from __future__ import annotations

import logging
import mailbox
from email import message_from_bytes
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from streams.sender.recipients import Received, SimulatedRecipients

log = logging.getLogger(__name__)


class _Store:
    def __init__(self, maildir: Path, recipients: SimulatedRecipients | None) -> None:
        maildir.parent.mkdir(parents=True, exist_ok=True)
        self.box = mailbox.Maildir(str(maildir), create=True)
        self.received = 0
        self.recipients = recipients

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content or envelope.content)
        self.box.add(message)
        self.received += 1
        if self.recipients is not None:
            trigger_id = message.get("X-Journey-Trigger-Id")
            customer_id = message.get("X-Journey-Customer-Id")
            trigger_type = message.get("X-Journey-Trigger-Type")
            if trigger_id and customer_id and trigger_type:
                arrived = self.recipients.clock.now_ms()  # journey time, like the sender's
                self.recipients.receive(
                    Received(str(trigger_id), str(trigger_type), str(customer_id), arrived)
                )
            else:  # a mail sent by hand: stored, but nobody reacts to it
                log.info("stored a mail without X-Journey-* headers: no simulated recipient")
        return "250 Message accepted for delivery"


class LocalMailServer:
    """``start()`` serves on 127.0.0.1 (port 0: a free one, see ``port``); ``stop()``."""

    def __init__(
        self,
        maildir: Path,
        port: int = 0,
        *,
        recipients: SimulatedRecipients | None = None,
    ) -> None:
        self.maildir = maildir
        self.store = _Store(maildir, recipients)
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
