"""The demo's simulated recipients: deterministic per trigger id, realistic rates, published on
the journey clock with the trigger id (Kafka is tests/integration/test_sender.py's)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import pytest

from schemas.records import MessageEngagement
from streams.clock import Clock
from streams.journey.decisions import Category
from streams.ops.publish import Publisher
from streams.sender.local_smtp import LocalMailServer
from streams.sender.recipients import DAY, MINUTE, RATES, Received, SimulatedRecipients, outcome
from streams.sender.render import Email
from streams.sender.smtp import SmtpTransport

N = 40_000


def tally(category: Category) -> Counter[str]:
    counts: Counter[str] = Counter()
    for n in range(N):
        counts.update(r.action for r in outcome(f"trigger-{category}-{n}", category))
    return counts


@pytest.mark.parametrize("category", list(Category))
def test_rates_are_the_configured_ones_within_sampling_error(category: Category) -> None:
    rates, counts = RATES[category], tally(category)

    def close(action: str, p: float) -> None:
        # 4.5 standard errors (+ one count): fails for a wrong rate, not by chance.
        tolerance = 4.5 * (p * (1 - p) / N) ** 0.5 + 1 / N
        assert abs(counts[action] / N - p) <= tolerance, (action, counts[action] / N, p)

    # Complaining (unread, as spam) excludes opening: opened = (1 - complained) * opened rate.
    close("OPENED", (1 - rates.complained) * rates.opened)
    close("CLICKED", (1 - rates.complained) * rates.opened * rates.clicked)
    close("UNSUBSCRIBED", (1 - rates.complained) * rates.unsubscribed)
    close("COMPLAINED", rates.complained)


def test_marketing_is_read_less_than_transactional_and_only_marketing_is_unsubscribed() -> None:
    marketing, transactional = tally(Category.MARKETING), tally(Category.TRANSACTIONAL)
    assert 0.40 < marketing["OPENED"] / N < 0.50 < 0.65 < transactional["OPENED"] / N < 0.75
    assert marketing["UNSUBSCRIBED"] > 0 and transactional["UNSUBSCRIBED"] == 0
    assert marketing["COMPLAINED"] > 0


def test_the_same_trigger_id_always_reacts_alike_and_in_a_sensible_order() -> None:
    ids = [f"t{n}" for n in range(2_000)]
    first = [outcome(i, Category.MARKETING) for i in ids]
    assert first == [outcome(i, "MARKETING") for i in ids]  # same id, same answer
    assert len({tuple(o) for o in first}) > 100  # and different ids differ
    for reactions in first:
        actions = [r.action for r in reactions]
        at = {r.action: r.after_ms for r in reactions}
        if "CLICKED" in at or "UNSUBSCRIBED" in at:
            assert actions[0] == "OPENED"
            assert all(at[a] > at["OPENED"] for a in actions[1:])
        if "COMPLAINED" in at:
            assert actions == ["COMPLAINED"]
        assert all(MINUTE <= r.after_ms <= 8 * DAY for r in reactions)


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, MessageEngagement]] = []
        self.flushes = 0

    async def send_record(self, short_topic: str, key: str, record: Any) -> None:
        self.sent.append((short_topic, key, record))

    async def flush(self) -> None:
        self.flushes += 1


class ManualClock(Clock):
    def __init__(self, now: int) -> None:
        super().__init__(wall_ms=lambda: now)
        self.now = now

    def now_ms(self) -> int:
        return self.now


def first_id_that(predicate: Any, category: Category = Category.MARKETING) -> str:
    return next(i for i in (f"trig-{n}" for n in range(10_000)) if predicate(outcome(i, category)))


async def test_reactions_are_published_when_due_on_the_journey_clock() -> None:
    clicked = first_id_that(lambda o: [r.action for r in o] == ["OPENED", "CLICKED"])
    ignored = first_id_that(lambda o: o == [])
    publisher, clock = FakePublisher(), ManualClock(1_000_000)
    recipients = SimulatedRecipients(cast(Publisher, publisher), clock)
    recipients.receive(Received(clicked, "WIN_BACK", "cust-1", 1_000_000))
    recipients.receive(Received(ignored, "WIN_BACK", "cust-2", 1_000_000))
    recipients.receive(Received("x", "NO_SUCH_TYPE", "cust-3", 1_000_000))  # logged, skipped
    stop = asyncio.Event()
    task = asyncio.create_task(recipients.run(stop, poll_s=0.01))
    await asyncio.sleep(0.1)
    assert publisher.sent == [] and recipients.pending == 2  # nothing due yet

    opened_at, clicked_at = (1_000_000 + r.after_ms for r in outcome(clicked, "MARKETING"))
    clock.now = opened_at
    await asyncio.sleep(0.1)
    clock.now = clicked_at + DAY
    await asyncio.sleep(0.1)
    stop.set()
    await task
    assert [(t, k, r.event_id, r.action, r.trigger_id, r.channel, r.occurred_at) for t, k, r in publisher.sent] == [
        ("engagement", "cust-1", f"{clicked}:opened", "OPENED", clicked, "EMAIL", opened_at),
        ("engagement", "cust-1", f"{clicked}:clicked", "CLICKED", clicked, "EMAIL", clicked_at),
    ]  # fmt: skip
    assert publisher.flushes == 2 and recipients.pending == 0
    assert recipients.counts == Counter(opened=1, clicked=1)


def test_the_local_server_hands_every_sent_mail_to_the_recipients(tmp_path: Path) -> None:
    publisher, clock = FakePublisher(), ManualClock(5_000)
    recipients = SimulatedRecipients(cast(Publisher, publisher), clock)
    server = LocalMailServer(tmp_path / "mail", recipients=recipients)
    server.start()
    try:
        transport = SmtpTransport(
            "127.0.0.1", server.port, sender_address="shop@example.com", starttls=False
        )
        email = Email("trig-9", "ORDER_CONFIRMATION", "cust-9", "c9@example.com", "en", "Hi", "x")
        assert transport.send(email) == ("DELIVERED", "accepted")
        deadline = time.monotonic() + 10
        while recipients.pending == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert recipients._inbox.get_nowait() == Received(
            "trig-9", "ORDER_CONFIRMATION", "cust-9", 5_000
        )
        assert server.store.received == 1 and len(server.store.box) == 1
    finally:
        server.stop()


def test_without_recipients_the_local_server_only_stores(tmp_path: Path) -> None:
    server = LocalMailServer(tmp_path / "mail")
    server.start()
    try:
        transport = SmtpTransport(
            "127.0.0.1", server.port, sender_address="shop@example.com", starttls=False
        )
        transport.send(Email("t", "WIN_BACK", "c", "c@example.com", "en", "Hi", "x"))
        assert server.store.received == 1 and server.store.recipients is None
    finally:
        server.stop()
