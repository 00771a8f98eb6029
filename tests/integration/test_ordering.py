"""The same decisions whatever the arrival order (issue 11), against the real broker and chdb.

* Journeys that cross topics run twice: live (published to a running worker, each event at its
  time) and as a backlog (published while no worker runs, then one started). Both must give the
  same triggers and the same ClickHouse rows. The backlog is made hostile: filler events ahead
  of the journeys on some topics, so a consumer that hands over per-topic batches delivers a
  customer's later feedback before their earlier consent update.
* A shop whose web tier uses a librdkafka producer (CRC32 partitioner) and whose order service
  uses murmur2 splits customers across partitions: with two workers in one group the triggers
  must be those of an all-murmur2 shop.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from schemas.codec import Codec
from schemas.records import (
    CartChanged,
    CustomerChanged,
    FeedbackGiven,
    InputEvent,
    MessageEngagement,
    OrderChanged,
    OrderItem,
    ShipmentChanged,
)
from streams.journey.decisions import trigger_id
from streams.ops.publish import Publisher
from streams.runtime.ingest import key_partition
from tests.integration.conftest import (
    BOOTSTRAP,
    Env,
    Worker,
    consume_all,
    launch_worker,
    new_env,
    publish,
)
from tests.integration.support import FAST, TOPIC_OF, as_messages, now_ms, triggers_on_topic

CODEC = Codec.load()
ITEM = OrderItem("sku-1", 1, 2_000, "shoes")


def journey_settings() -> dict[str, str]:
    hour = datetime.now(UTC).hour
    return {
        **FAST,
        "JOURNEY_WIN_BACK_DELAY": "1h",
        "JOURNEY_MARKETING_CONSENT_DEFAULT": "false",  # consent must come from shop.customers
        "JOURNEY_SUNSET_AFTER": "1",
        # Quiet now in UTC+6 (c-zone's zone) for two hours, never in UTC (everyone else's).
        "JOURNEY_DEFAULT_TIME_ZONE": "UTC",
        "JOURNEY_QUIET_HOURS_START": str((hour + 6) % 24),
        "JOURNEY_QUIET_HOURS_END": str((hour + 8) % 24),
    }


# Cart then order. Their partitions under murmur2 and CRC32 (3 partitions) form the three pairs
# {1, 2}, {0, 2}, {0, 1}: however two workers share 3 partitions, some pair is split between them.
CART_CUSTOMERS = ("c-cart", "c-cart-2", "c-basket")


def journeys(t: int) -> list[InputEvent]:
    """Cross-topic journeys, in the order they happen (occurred_at)."""
    return [
        CustomerChanged("c1", "c-consent", t, "UPDATED", True),
        CustomerChanged("s1", "c-sunset", t, "UPDATED", True),
        CustomerChanged("z1", "c-zone", t, "UPDATED", True, "Etc/GMT-6"),
        CustomerChanged("o1", "c-order", t, "UPDATED", True),
        # Consent, so that a reminder split from its order (another worker) would go out.
        *(CustomerChanged(f"{c}-0", c, t, "UPDATED", True) for c in CART_CUSTOMERS),
        FeedbackGiven("c2", "c-consent", t + 200, "NPS", 10),  # consent then feedback
        FeedbackGiven("z2", "c-zone", t + 200, "NPS", 10),  # time zone then quiet hours
        FeedbackGiven("s2", "c-sunset", t + 200, "NPS", 10),
        MessageEngagement("s3", "c-sunset", t + 400, "OPENED", "EMAIL"),  # engagement, sunset
        CartChanged("s4", "c-sunset", t + 600, "k-s", "PRODUCT_ADDED", "sku-2", "bags", 1, 900, "EUR"),
        *(CartChanged(f"{c}-1", c, t + 600, f"k-{c}", "PRODUCT_ADDED", "sku-1", "shoes", 1, 2_000, "EUR") for c in CART_CUSTOMERS),
        *(OrderChanged(f"{c}-2", c, t + 800, f"o-{c}", "PLACED", 2_000, "EUR", [ITEM], f"k-{c}") for c in CART_CUSTOMERS),  # cart then order
        OrderChanged("o2", "c-order", t + 800, "o-o", "PLACED", 2_000, "EUR", [ITEM]),
        ShipmentChanged("o3", "c-order", t + 1_000, "o-o", "sh-o", "SHIPPED", "PostNL", "3S9"),
        ShipmentChanged("o4", "c-order", t + 1_200, "o-o", "sh-o", "DELIVERED"),
        OrderChanged("o5", "c-order", t + 1_400, "o-o", "REFUNDED", 2_000, "EUR", [ITEM]),  # then refund
    ]  # fmt: skip


def filler(t: int) -> list[InputEvent]:
    """Older events of other customers ahead of the journeys: the customers topic's batches are
    long, the feedback topic's short, the engagement topic's empty."""
    return [
        *(CustomerChanged(f"fc{i}", f"f-{i}", t - 5_000 + i, "UPDATED", None, None, "nl") for i in range(300)),
        *(FeedbackGiven(f"ff{i}", f"f-{i}", t - 4_000 + i, "REVIEW", 3) for i in range(30)),
    ]  # fmt: skip


# What must come out, whatever the arrival order (the model's rules; ids are deterministic).
EXPECTED = {
    (trigger_id("c-consent", "REFERRAL_INVITE", "c2", "c2"), "EMITTED", ""),
    (trigger_id("c-sunset", "REFERRAL_INVITE", "s2", "s2"), "EMITTED", ""),
    # The open lifted the sunset the referral started: the first reminder goes, the second not.
    (trigger_id("c-sunset", "ABANDONED_CART", "k-s#1", "s4"), "EMITTED", ""),
    (trigger_id("c-sunset", "ABANDONED_CART", "k-s#2", "s4"), "SUPPRESSED", "unengaged"),
    *(
        (trigger_id(c, "ORDER_CONFIRMATION", f"o-{c}", f"{c}-2"), "EMITTED", "")
        for c in CART_CUSTOMERS
    ),
    *(
        (trigger_id(c, "ABANDONED_CART", f"k-{c}#{n}", f"{c}-1"), "CANCELLED", "order_placed")
        for c in CART_CUSTOMERS
        for n in (1, 2)
    ),
    (trigger_id("c-order", "ORDER_CONFIRMATION", "o-o", "o2"), "EMITTED", ""),
    (trigger_id("c-order", "SHIPPING_CONFIRMATION", "sh-o", "o3"), "EMITTED", ""),
    *(
        (trigger_id("c-order", kind, "o-o", "o4"), "CANCELLED", "order_refunded")
        for kind in ("DELIVERY_CHECK_IN", "NPS_SURVEY", "REVIEW_REQUEST", "CROSS_SELL")
    ),
    # Refunded in full: no purchase left, so no lapse after it to win back.
    (trigger_id("c-order", "WIN_BACK", "o-o", "o2"), "CANCELLED", "new_order"),
}
EMITTED = {tid for tid, status, _ in EXPECTED if status == "EMITTED"}
# c-zone's referral waits for the morning in UTC+6: neither sent nor dropped.
DEFERRED = trigger_id("c-zone", "REFERRAL_INVITE", "z2", "z2")


def publish_in_time(env: Env, events: list[InputEvent]) -> None:
    """Publish each event at its occurred_at, as a live shop does."""

    async def go() -> None:
        publisher = Publisher(env.settings())
        await publisher.start()
        try:
            for (topic, key, value), event in zip(as_messages(events), events, strict=True):
                await asyncio.sleep(max(0.0, (event.occurred_at - now_ms()) / 1000))
                await publisher.send_raw(topic, key, value)
        finally:
            await publisher.close()

    asyncio.run(go())


def outcome(env: Env, worker: Worker, total_events: int) -> dict[str, Any]:
    """Once every expected decision is stored: the triggers sent and the rows in ClickHouse."""
    status = worker.wait_until(
        lambda s: (
            s.get("events_rows", 0) >= total_events and s.get("trigger_rows", 0) >= len(EXPECTED)
        ),
        timeout=120,
    )
    triggers = triggers_on_topic(env, len(EMITTED), settle=3)
    assert worker.stop() == 0
    return {
        "ordering": status["workers"][0]["ordering"],
        "sent": sorted((tr.trigger_id, tr.trigger_type, tr.customer_id) for tr in triggers),
        "triggers": env.sql(
            "SELECT trigger_id, trigger_type, customer_id, status, reason, stage, "
            "source_event_id FROM journey.triggers FINAL ORDER BY trigger_id"
        ),
        "events": env.sql(
            "SELECT event_id, event_type, page_type, customer_id, occurred_at, session_id, "
            "cart_id, order_id, shipment_id, carrier, product_id, category, amount_minor, "
            "currency, score FROM journey.events FINAL ORDER BY event_id"
        ),
        "customers": env.sql(
            "SELECT customer_id, stage, first_seen_at, first_order_at, last_order_at, "
            "orders_count, revenue_minor, last_nps, marketing_consent, time_zone "
            "FROM journey.customers FINAL ORDER BY customer_id"
        ),
    }


def assert_expected(result: dict[str, Any]) -> None:
    decided = {(r["trigger_id"], r["status"], r["reason"]) for r in result["triggers"]}
    assert decided == EXPECTED, (decided - EXPECTED, EXPECTED - decided)
    assert {tid for tid, _, _ in result["sent"]} == EMITTED
    assert DEFERRED not in {r["trigger_id"] for r in result["triggers"]}
    customers = {c["customer_id"]: c for c in result["customers"]}
    assert customers["c-order"]["orders_count"] == 0  # refunded: not a purchase
    assert customers["c-order"]["revenue_minor"] == 0
    assert all(customers[c]["orders_count"] == 1 for c in CART_CUSTOMERS)


def test_a_backlog_decides_exactly_as_live(env: Env, tmp_path: Path) -> None:
    settings = journey_settings()
    workers: list[Worker] = []
    try:
        # Live: the worker runs; the filler is old news, then each event comes at its time.
        env.journey("topics", "create")
        live_worker = launch_worker(env, **settings)
        workers.append(live_worker)
        live_worker.wait_until(lambda s: s.get("ready"))
        t = now_ms() + 3_000
        events, background = journeys(t), filler(t)
        total = len(events) + len(background)
        publish(env, as_messages(background))
        publish_in_time(env, events)
        live = outcome(env, live_worker, total)

        # Backlog: the same events (same times) published with no worker running.
        backlog_env = new_env(tmp_path / "backlog")
        backlog_env.tmp.mkdir(parents=True, exist_ok=True)
        backlog_env.journey("topics", "create")
        publish(backlog_env, as_messages(background + events))
        # A buffer small enough that the merge pauses fetching (30 input topic-partitions: a
        # share of 10 messages each), polls small enough that pauses take effect, and room for
        # the whole backlog, so nothing is released out of order (the cap is another test's).
        backlog_worker = launch_worker(
            backlog_env,
            **settings,
            JOURNEY_ORDERING_BUFFER=str(max(600, 2 * total)),
            JOURNEY_CONSUMER_MAX_POLL_RECORDS="20",
        )
        workers.append(backlog_worker)
        backlog = outcome(backlog_env, backlog_worker, total)
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.kill()

    # The consumer's fetching was paused and resumed (no partition left paused, nothing lost:
    # every event is stored, below) and order was never given up.
    assert backlog["ordering"]["pauses"] > 0, backlog["ordering"]
    assert backlog["ordering"]["paused"] == 0 and not backlog["ordering"]["gave_up"], backlog
    assert_expected(live)
    assert_expected(backlog)
    for part in ("sent", "triggers", "events", "customers"):
        assert backlog[part] == live[part], part


# --- a CRC32 (librdkafka default) producer next to a murmur2 one -------------------------------
MURMUR2_TOPICS = {"orders", "shipments"}  # the order service (Java); the web tier: librdkafka


def publish_mixed(env: Env, events: list[InputEvent], *, crc32: bool) -> list[tuple[str, int]]:
    """Orders and shipments through aiokafka (murmur2); everything else through confluent-kafka
    with librdkafka's default partitioner (``crc32``) or ``murmur2_random``. Each event at its
    time. Returns (customer_id, partition) of what the librdkafka producer wrote."""
    settings = env.settings()
    placed: list[tuple[str, int]] = []
    producer = Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "partitioner": "consistent_random" if crc32 else "murmur2_random",
            "linger.ms": 0,
        }
    )

    def delivered(err: Any, message: Any) -> None:
        assert err is None, err
        placed.append((message.key().decode(), message.partition()))

    async def go() -> None:
        publisher = Publisher(settings)
        await publisher.start()
        try:
            for event in events:
                await asyncio.sleep(max(0.0, (event.occurred_at - now_ms()) / 1000))
                short = TOPIC_OF[type(event)]
                key, value = event.customer_id.encode(), CODEC.encode(event)
                if short in MURMUR2_TOPICS:
                    await publisher.send_raw(short, key, value)
                else:
                    producer.produce(
                        settings.topic(short), key=key, value=value, on_delivery=delivered
                    )
                    assert producer.flush(30) == 0
        finally:
            await publisher.close()

    asyncio.run(go())
    return placed


def run_two_workers(env: Env, *, crc32: bool) -> dict[str, Any]:
    settings = journey_settings()
    env.journey("topics", "create")
    # Two journey workers in one group (and the loader), as `journey run --workers 2` starts them.
    pipeline = launch_worker(env, workers=2, **settings)
    try:
        # Both in the group, each with its share of the 3 partitions.
        def shared(s: dict[str, Any]) -> bool:
            owned = [set(w.get("partitions", [])) for w in s.get("workers", [])]
            return (
                len(owned) == 2
                and all(owned)
                and set().union(*owned) == {0, 1, 2}
                and not owned[0] & owned[1]
            )

        pipeline.wait_until(lambda s: s.get("ready") and shared(s), timeout=120)
        events = journeys(now_ms() + 1_000)
        placed = publish_mixed(env, events, crc32=crc32)
        triggers = triggers_on_topic(env, len(EMITTED), settle=6)
        while not pipeline.statuses.empty():  # the latest status line (they queue up)
            pipeline.last = pipeline.statuses.get()
    finally:
        if pipeline.process.poll() is None:
            pipeline.kill()
    return {
        "placed": placed,
        "repartitioned": [w.get("repartitioned", 0) for w in pipeline.last.get("workers", [])],
        "sent": sorted((tr.trigger_id, tr.trigger_type, tr.customer_id) for tr in triggers),
    }


def test_a_crc32_producer_with_two_workers_gives_the_triggers_of_a_murmur2_one(
    env: Env, tmp_path: Path
) -> None:
    murmur_env = new_env(tmp_path / "murmur2")
    murmur_env.tmp.mkdir(parents=True, exist_ok=True)
    # The two worlds (each its own topics, groups and ClickHouse) run side by side.
    with ThreadPoolExecutor(2) as pool:
        crc_run = pool.submit(run_two_workers, env, crc32=True)
        murmur_run = pool.submit(run_two_workers, murmur_env, crc32=False)
        crc, murmur = crc_run.result(), murmur_run.result()
    # The CRC32 producer put each cart change on another partition than its order, and the
    # pairs of partitions are all three there are.
    pairs = {
        frozenset((zlib.crc32(c.encode()) % 3, key_partition(c.encode(), 3)))
        for c in CART_CUSTOMERS
    }
    assert pairs == {frozenset(pair) for pair in ((0, 1), (0, 2), (1, 2))}
    assert all((c, zlib.crc32(c.encode()) % 3) in crc["placed"] for c in CART_CUSTOMERS)

    assert all(key_partition(c.encode(), 3) == p for c, p in murmur["placed"])

    assert {tid for tid, _, _ in crc["sent"]} == EMITTED
    assert crc["sent"] == murmur["sent"]
    assert sum(crc["repartitioned"]) > 0  # misrouted events were re-routed, not applied
    assert sum(murmur["repartitioned"]) == 0


def test_a_worker_holding_messages_for_order_still_stops_and_loses_nothing(env: Env) -> None:
    """A transactional producer's commit marker keeps its partition one offset short of the end
    forever, so the merge holds the next order of that partition number for the whole (here:
    long) ordering wait. SIGTERM must still stop the worker (Faust waits for every message it
    handed over to be acked), and the held order is handled by the next worker."""
    settings = {**journey_settings(), "JOURNEY_ORDERING_WAIT": "1h"}
    env.journey("topics", "create")
    worker = launch_worker(env, **settings)
    try:
        worker.wait_until(lambda s: s.get("ready"))
        t = now_ms()
        nps_answer = FeedbackGiven("tx1", "c-held", t, "NPS", 7)
        producer = Producer(
            {
                "bootstrap.servers": BOOTSTRAP,
                "partitioner": "murmur2_random",
                "transactional.id": f"{env.vars['JOURNEY_APP_ID']}-tx",
            }
        )
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.produce(
            env.settings().topic("feedback"), key=b"c-held", value=CODEC.encode(nps_answer)
        )
        producer.commit_transaction(30)
        worker.wait_until(lambda s: s.get("consumed", 0) >= 1, timeout=60)
        order = OrderChanged("tx2", "c-held", t + 1, "o-held", "PLACED", 100, "EUR", [ITEM])
        publish(env, as_messages([order]))
        time.sleep(5)  # the order is received and held: feedback/p looks one offset behind
        assert not consume_all(env, env.settings().topic("triggers"), 1, timeout=2)
        assert worker.stop() == 0
        assert worker.crashes() == []  # the agent's loop ended; it did not crash at the stop
    finally:
        if worker.process.poll() is None:
            worker.kill()
    # Nothing was lost: a worker with no wait handles the order that was held.
    second = launch_worker(env, **{**settings, "JOURNEY_ORDERING_WAIT": "0ms"})
    try:
        triggers = triggers_on_topic(env, 1, settle=2)
        assert [tr.trigger_id for tr in triggers] == [
            trigger_id("c-held", "ORDER_CONFIRMATION", "o-held", "tx2")
        ]
        assert second.stop() == 0
    finally:
        if second.process.poll() is None:
            second.kill()
