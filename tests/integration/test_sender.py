"""`journey sender` against the real broker and a real SMTP server (aiosmtpd, in this process):
one email per trigger, in the customer's language, engagement back on shop.engagement, and no
second email after a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import signal
import subprocess
import time
from typing import Any

from aiosmtpd.controller import Controller

from schemas.codec import Codec
from schemas.records import CustomerChanged, MessageEngagement, Trigger
from streams.clock import Clock
from streams.ops.publish import Publisher
from streams.runtime.ingest import key_partition
from streams.sender.local_smtp import LocalMailServer, free_port
from streams.sender.recipients import SimulatedRecipients, outcome
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


def run_sender(env: Env, port: int, inbox: Inbox | LocalMailServer, until: int) -> str:
    def received() -> int:
        return inbox.store.received if isinstance(inbox, LocalMailServer) else len(inbox.messages)

    process = subprocess.Popen(
        [JOURNEY, "sender"],
        env=env.environ(JOURNEY_SENDER_SMTP_PORT=str(port), JOURNEY_SENDER_SMTP_STARTTLS="false"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=env.tmp,
    )
    deadline = time.monotonic() + 90
    while received() < until and time.monotonic() < deadline and process.poll() is None:
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


def test_demo_recipients_report_opens_and_clicks_of_the_mails_the_local_server_received(
    env: Env,
) -> None:
    """`make run`'s inbox: the sender's mails get opened and clicked, reported per trigger id."""
    env.journey("topics", "create")
    settings = env.settings()
    triggers = [
        dataclasses.replace(trigger(n, "WIN_BACK", orders="1"), category="MARKETING")
        for n in range(40)
    ] + [trigger(n, "ORDER_CONFIRMATION", first_order="false", total_minor="100", currency="EUR", items="1") for n in range(40, 60)]  # fmt: skip
    publish(env, [("triggers", t.customer_id.encode(), CODEC.encode(t)) for t in triggers])
    expected = {
        (t.trigger_id, r.action) for t in triggers for r in outcome(t.trigger_id, t.category)
    }
    assert {"OPENED", "CLICKED"} <= {action for _, action in expected}  # the data can tell

    clock = Clock(speed=1_000_000)  # a week of journey time in well under a second
    recipients = SimulatedRecipients(Publisher(settings), clock)
    server = LocalMailServer(env.tmp / "mail", recipients=recipients)
    server.start()
    try:
        output = run_sender(env, server.port, server, until=len(triggers))
    finally:
        server.stop()
    assert server.store.received == len(triggers), output

    async def react() -> None:
        await recipients.publisher.start()
        stop = asyncio.Event()
        task = asyncio.create_task(recipients.run(stop, poll_s=0.05))
        deadline = time.monotonic() + 60
        while sum(recipients.counts.values()) < len(expected) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        await task
        await recipients.publisher.close()

    asyncio.run(react())
    # The sender's DELIVERED reports and the recipients' reactions, all with trigger ids.
    records = consume_all(env, settings.topic("engagement"), len(triggers) + len(expected))
    reports = [CODEC.decode(m.value, MessageEngagement) for m in records]
    reactions = [r for r in reports if r.action != "DELIVERED"]
    assert {(r.trigger_id, r.action) for r in reactions} == expected
    assert len(reactions) == len(expected)
    by_id = {t.trigger_id: t for t in triggers}
    for record, report in zip(records, reports, strict=True):
        assert report.trigger_id in by_id and report.channel == "EMAIL"
        assert report.customer_id == by_id[report.trigger_id].customer_id
        assert record.key == report.customer_id.encode()
        assert record.partition == key_partition(record.key, settings.partitions)
        if report.action != "DELIVERED":
            assert report.event_id == f"{report.trigger_id}:{report.action.lower()}"
