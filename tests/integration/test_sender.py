"""`journey sender` against the real broker and a real SMTP server (aiosmtpd, in this process):
one email per trigger, in the customer's language, engagement back on shop.engagement, and no
second email after a restart."""

from __future__ import annotations

import email
import signal
import subprocess
import time
from typing import Any

from aiosmtpd.controller import Controller

from schemas.codec import Codec
from schemas.records import CustomerChanged, MessageEngagement, Trigger
from streams.sender.local_smtp import free_port
from tests.integration.conftest import JOURNEY, Env, consume_all, publish

CODEC = Codec.load()
T0 = 1_764_150_000_000


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def trigger(n: int, trigger_type: str, **attributes: str) -> Trigger:
    return Trigger(
        trigger_id=f"trig-{n}",
        trigger_type=trigger_type,
        category="TRANSACTIONAL",
        customer_id=f"cust-{n}",
        due_at=T0,
        emitted_at=T0,
        source_event_id=f"ev-{n}",
        stage="PURCHASE",
        order_id=f"o-{n}",
        attributes=attributes,
    )


def run_sender(env: Env, port: int, inbox: Inbox, until: int) -> str:
    process = subprocess.Popen(
        [JOURNEY, "sender"],
        env=env.environ(JOURNEY_SENDER_SMTP_PORT=str(port), JOURNEY_SENDER_SMTP_STARTTLS="false"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=env.tmp,
    )
    deadline = time.monotonic() + 90
    while len(inbox.messages) < until and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(3)  # room for an unwanted extra email to show up
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    return output


def test_sender_sends_once_in_the_customers_language_and_reports(env: Env) -> None:
    env.journey("topics", "create")
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        shipped = trigger(
            1,
            "SHIPPING_CONFIRMATION",
            carrier="PostNL",
            tracking_code="3S1",
            tracking_url="https://track.example/3S1",
        )
        welcome = trigger(2, "ORDER_CONFIRMATION", first_order="true", total_minor="4995", currency="EUR", items="1")  # fmt: skip
        publish(
            env,
            [
                ("customers", b"cust-1", CODEC.encode(CustomerChanged("c1", "cust-1", T0, "UPDATED", locale="nl-NL"))),
                ("triggers", b"cust-1", CODEC.encode(shipped)),
                ("triggers", b"cust-2", CODEC.encode(welcome)),
                ("triggers", b"cust-1", CODEC.encode(shipped)),  # a redelivery
            ],
        )  # fmt: skip
        output = run_sender(env, port, inbox, until=2)
        assert len(inbox.messages) == 2, output
        by_to = {m["To"]: m for m in inbox.messages}
        dutch = by_to["cust-1@customers.example.com"]
        assert dutch["Subject"] == "Je bestelling o-1 is onderweg"
        assert "https://track.example/3S1" in dutch.get_payload()
        assert by_to["cust-2@customers.example.com"]["Subject"].startswith(
            "Welcome to Example Shop!"
        )
        assert "delivered 2" in output and "duplicate 1" in output

        reports = [
            CODEC.decode(m.value, MessageEngagement)
            for m in consume_all(env, env.settings().topic("engagement"), 2)
        ]
        assert sorted((r.trigger_id, r.action, r.channel) for r in reports) == [
            ("trig-1", "DELIVERED", "EMAIL"),
            ("trig-2", "DELIVERED", "EMAIL"),
        ]

        # A restart with its offsets reset (another group: it reads everything again) sends
        # nothing twice: the outbox remembers the trigger ids.
        publish(env, [("triggers", b"cust-3", CODEC.encode(trigger(3, "WIN_BACK", orders="1")))])
        again = run_sender(env.__class__({**env.vars, "JOURNEY_APP_ID": env.vars["JOURNEY_APP_ID"] + "-2"}, env.tmp), port, inbox, until=3)  # fmt: skip
        assert len(inbox.messages) == 3, again
        assert inbox.messages[-1]["To"] == "cust-3@customers.example.com"
        assert "duplicate 3" in again
    finally:
        controller.stop()
