"""Helpers shared by the integration tests: the contract's events as messages, reading a
topic and ClickHouse, the decisions two worlds must agree on, HTTP."""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.error
import urllib.request
from collections import defaultdict
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.codec import Codec
from schemas.records import (
    CartChanged,
    CustomerChanged,
    FeedbackGiven,
    InputEvent,
    MessageEngagement,
    OrderChanged,
    OrderItem,
    PageViewed,
    ShipmentChanged,
    Trigger,
)
from streams.journey.config import JourneyConfig
from streams.journey.decisions import Drop, Emit
from streams.journey.model import new_state, step
from tests.integration.conftest import (
    BOOTSTRAP,
    Env,
    consume_all,
)

CODEC = Codec.load()
# ``order_robust_decisions``: random merges of a customer's per-topic sequences replayed, and
# customers with an event this close to the simulation's start left out (test_crash_consistency).
INTERLEAVINGS = 12
EARLY_MS = 30 * 60_000


TOPIC_OF = {
    PageViewed: "page_views",
    CartChanged: "cart",
    OrderChanged: "orders",
    ShipmentChanged: "shipments",
    FeedbackGiven: "feedback",
    MessageEngagement: "engagement",
    CustomerChanged: "customers",
}


def journey_of(customer: str, start: int) -> list[InputEvent]:
    """One customer's events, one of each record type and more."""
    t = start
    return [
        CustomerChanged(
            f"{customer}-e1", customer, t, "UPDATED", True, "Europe/Amsterdam", "nl-NL"
        ),
        PageViewed(
            f"{customer}-e2", customer, t + 1, "s1", "PRODUCT", "https://shop/p/1", "p-1", "shoes"
        ),
        CartChanged(
            f"{customer}-e3",
            customer,
            t + 2,
            "cart-1",
            "PRODUCT_ADDED",
            "p-1",
            "shoes",
            2,
            4_995,
            "EUR",
        ),
        OrderChanged(
            f"{customer}-e4",
            customer,
            t + 3,
            f"o-{customer}",
            "PLACED",
            9_990,
            "EUR",
            [OrderItem("p-1", 2, 4_995, "shoes")],
            "cart-1",
        ),
        ShipmentChanged(
            f"{customer}-e5",
            customer,
            t + 4,
            f"o-{customer}",
            "sh-1",
            "SHIPPED",
            "PostNL",
            "3S123",
            "https://track.example/PostNL/3S123",
        ),
        ShipmentChanged(f"{customer}-e6", customer, t + 5, f"o-{customer}", "sh-1", "DELIVERED"),
        FeedbackGiven(f"{customer}-e7", customer, t + 6, "NPS", 9, f"o-{customer}"),
        MessageEngagement(f"{customer}-e8", customer, t + 7, "OPENED", "EMAIL"),
    ]


def valid_events(customers: int) -> list[InputEvent]:
    now = int(time.time() * 1000)
    return [e for i in range(customers) for e in journey_of(f"c-{i:04d}", now - 3_600_000)]


def as_messages(events: list[InputEvent]) -> list[tuple[str, bytes | None, bytes]]:
    return [(TOPIC_OF[type(e)], e.customer_id.encode(), CODEC.encode(e)) for e in events]


FAST = {
    "JOURNEY_ABANDONED_CART_FIRST_DELAY": "2s",
    "JOURNEY_ABANDONED_CART_SECOND_DELAY": "4s",
    "JOURNEY_BROWSE_ABANDONMENT_DELAY": "3s",
    "JOURNEY_DELIVERY_CHECK_IN_DELAY": "2s",
    "JOURNEY_NPS_SURVEY_DELAY": "3s",
    "JOURNEY_REVIEW_REQUEST_DELAY": "4s",
    "JOURNEY_CROSS_SELL_DELAY": "5s",
    "JOURNEY_WIN_BACK_DELAY": "6s",
    "JOURNEY_FREQUENCY_CAP": "0s",
    "JOURNEY_QUIET_HOURS_START": "0",
    "JOURNEY_QUIET_HOURS_END": "0",
    "JOURNEY_MARKETING_CONSENT_DEFAULT": "true",
}


def now_ms() -> int:
    return int(time.time() * 1000)


def triggers_on_topic(env: Env, expected: int, settle: float = 4.0) -> list[Trigger]:
    """Everything on journey.triggers once `expected` arrived and nothing more came."""
    messages = consume_all(env, env.settings().topic("triggers"), expected, timeout=90)
    time.sleep(settle)
    messages = consume_all(env, env.settings().topic("triggers"), len(messages) + 1, timeout=3)
    triggers: list[Trigger] = [CODEC.decode(m.value, Trigger) for m in messages]
    for message, trigger in zip(messages, triggers, strict=True):
        assert message.key == trigger.customer_id.encode()
    return triggers


def read_topic(topic: str, partitions: int = 3) -> list[Any]:
    """Every record of ``topic`` (``partitions``: the test topics'), partition by partition in
    offset order."""

    async def go() -> list[Any]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:  # explicit: seek_to_beginning races with the reset of a new assignment
                consumer.seek(tp, 0)
            records: list[Any] = []
            for tp in tps:
                while await consumer.position(tp) < ends[tp]:
                    batch = await consumer.getmany(tp, timeout_ms=1000)
                    records.extend(batch.get(tp, []))
            return records
        finally:
            await consumer.stop()

    return asyncio.run(go())


def sql(env: Env, query: str, **extra: str) -> list[dict[str, Any]]:
    rows = json.loads(env.journey("sql", "--format", "json", query, **extra).stdout)
    assert isinstance(rows, list)
    return rows


def order_robust_decisions(
    events: list[tuple[str, InputEvent]], config: JourneyConfig, seed: int
) -> tuple[set[tuple[str, str, str]], set[str]]:
    """Decisions (trigger_id, status, reason) the model takes in every sampled interleaving of
    each customer's per-topic event sequences, and the emitted trigger ids among them."""
    by_customer: dict[str, dict[str, list[InputEvent]]] = defaultdict(lambda: defaultdict(list))
    for topic, event in events:
        by_customer[event.customer_id][topic].append(event)
    start = min(event.occurred_at for _, event in events)
    rng = random.Random(seed)
    robust: set[tuple[str, str, str]] = set()
    for per_topic in by_customer.values():
        mine = [e for seq in per_topic.values() for e in seq]
        if any(e.occurred_at < start + EARLY_MS for e in mine) or any(
            isinstance(e, CustomerChanged) and e.action == "ERASED" for e in mine
        ):
            continue
        common: set[tuple[str, str, str]] | None = None
        # The order the shop published (event time), each topic's events first, and uniform
        # random merges: a decision must come out of every one of them to be compared.
        orders = [sorted(mine, key=lambda e: e.occurred_at)]
        for first in per_topic:
            orders.append([*per_topic[first], *(e for t, s in per_topic.items() if t != first
                                                for e in s)])  # fmt: skip
        for _ in range(INTERLEAVINGS):
            queues = [list(seq) for seq in per_topic.values()]
            order: list[InputEvent] = []
            while queues:
                weights = [len(q) for q in queues]
                queue = rng.choices(queues, weights)[0]
                order.append(queue.pop(0))
                queues = [q for q in queues if q]
            orders.append(order)
        for order in orders:
            state, taken = new_state(order[0].customer_id), set()
            for event in order:
                state, decisions = step(state, event, start, config)
                for d in decisions:
                    if isinstance(d, Emit):
                        taken.add((d.trigger.trigger_id, "EMITTED", ""))
                    elif isinstance(d, Drop):
                        taken.add((d.trigger_id, d.status, d.reason))
            common = taken if common is None else common & taken
        robust |= common or set()
    return robust, {trigger_id for trigger_id, status, _ in robust if status == "EMITTED"}


def decisions_in(env: Env, **extra: str) -> set[tuple[str, str, str]]:
    rows = sql(env, "SELECT trigger_id, status, reason FROM journey.triggers FINAL", **extra)
    return {(r["trigger_id"], r["status"], r["reason"]) for r in rows}


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
