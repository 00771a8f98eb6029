"""Contract events in, rows of journey.events out; bad input to the dead-letter topic; crashes."""

from __future__ import annotations

import asyncio
import json
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from schemas.records import (
    DeadLetter,
    FeedbackGiven,
    OrderChanged,
    PageViewed,
)
from tests.integration.conftest import BOOTSTRAP, Env, consume_all, publish
from tests.integration.support import CODEC, as_messages, valid_events


def test_topics_create_is_idempotent_and_complete(env: Env) -> None:
    first = env.journey("topics", "create").stdout
    second = env.journey("topics", "create").stdout
    settings = env.settings()
    for topic in settings.all_topics():
        assert f"created  {topic}" in first
        assert f"exists  {topic}" in second
    assert "co-partitioned with 3 partitions" in second


def test_contract_events_arrive_as_rows(env: Env, start_worker) -> None:  # type: ignore[no-untyped-def]
    events = valid_events(25)
    env.journey("topics", "create")
    publish(env, as_messages(events))
    worker = start_worker()
    worker.wait_until(lambda s: s.get("events_rows", 0) >= len(events))
    assert worker.stop() == 0

    rows = env.sql(
        "SELECT event_id, event_type, customer_id, amount_minor, score FROM journey.events"
    )
    assert sorted(r["event_id"] for r in rows) == sorted(e.event_id for e in events)
    by_id = {r["event_id"]: r for r in rows}
    assert by_id["c-0003-e4"]["event_type"] == "order.placed"
    assert by_id["c-0003-e4"]["amount_minor"] == 9_990
    assert by_id["c-0003-e3"]["event_type"] == "cart.product_added"
    assert by_id["c-0003-e6"]["event_type"] == "shipment.delivered"
    assert by_id["c-0003-e7"]["score"] == 9
    types = {r["event_type"] for r in rows}
    assert types == {
        "customer.updated",
        "page_view",
        "cart.product_added",
        "order.placed",
        "shipment.shipped",
        "shipment.delivered",
        "feedback.nps",
        "engagement.opened",
    }


def test_malformed_values_are_dead_lettered_and_valid_traffic_flows(env: Env, start_worker) -> None:  # type: ignore[no-untyped-def]
    events = valid_events(10)
    good = as_messages(events)
    order = events[3]
    assert isinstance(order, OrderChanged)
    order_json = json.loads(CODEC.to_json(order))
    bad: list[tuple[str, bytes | None, bytes, str]] = [
        ("orders", b"c-9", b"not avro, not json", "bad_header"),
        ("orders", b"c-9", CODEC.encode(order)[:14], "bad_avro"),
        ("orders", b"c-9", b"\xc3\x01" + b"\x00" * 8 + b"\x02", "unknown_fingerprint"),
        ("orders", b"c-9", json.dumps({**order_json, "status": "SHIPPD"}).encode(), "validation"),
        (
            "orders",
            b"c-9",
            json.dumps({k: v for k, v in order_json.items() if k != "order_id"}).encode(),
            "validation",
        ),
        ("orders", b"c-9", json.dumps({**order_json, "total_minor": "12"}).encode(), "validation"),
        ("orders", b"\xff\xfe", CODEC.encode(order), "bad_key"),
        (
            "feedback",
            b"c-9",
            CODEC.encode(FeedbackGiven("fb-x", "c-9", 1, "NPS", 11)),
            "validation",
        ),
        ("page_views", b"c-9", CODEC.encode(order), "wrong_record"),
    ]
    # Keyed otherwise: re-keyed by customer_id, not dropped.
    rekeyed = [
        PageViewed("rk-1", "c-rk", events[0].occurred_at, "s", "HOME", "https://shop/"),
        PageViewed("rk-2", "c-rk", events[0].occurred_at, "s", "HOME", "https://shop/"),
    ]
    env.journey("topics", "create")
    messages = [*good[:40], *[(t, k, v) for t, k, v, _ in bad], *good[40:]]
    messages += [
        ("page_views", None, CODEC.encode(rekeyed[0])),
        ("page_views", b"other", CODEC.encode(rekeyed[1])),
    ]
    publish(env, messages)

    worker = start_worker()
    expected_rows = len(events) + len(rekeyed)
    worker.wait_until(
        lambda s: (
            s.get("events_rows", 0) >= expected_rows and s.get("deadletter_rows", 0) >= len(bad)
        )
    )
    assert worker.stop() == 0

    letters = [
        CODEC.decode(m.value, DeadLetter)
        for m in consume_all(env, env.settings().topic("deadletter"), len(bad))
    ]
    assert sorted(dl.reason_code for dl in letters) == sorted(code for *_, code in bad)
    for letter in letters:
        assert letter.reason and letter.topic.startswith(env.vars["JOURNEY_TOPIC_PREFIX"])
        assert letter.value is not None and letter.offset >= 0
    reasons = " | ".join(dl.reason for dl in letters)
    assert "SHIPPD" in reasons and "order_id" in reasons and "total_minor" in reasons

    stored = env.sql("SELECT event_id FROM journey.events")
    assert sorted(r["event_id"] for r in stored) == sorted(
        [e.event_id for e in events] + ["rk-1", "rk-2"]
    )
    dead = env.sql("SELECT reason_code, reason, topic FROM journey.deadletters")
    assert sorted(r["reason_code"] for r in dead) == sorted(code for *_, code in bad)


def test_crash_between_insert_and_commit_leaves_one_row_per_event(env: Env, start_worker) -> None:  # type: ignore[no-untyped-def]
    events = valid_events(40)
    env.journey("topics", "create")
    publish(env, as_messages(events))

    # No offset is committed during the first run, by the worker or the loader: everything will
    # be redelivered to both.
    first = start_worker(JOURNEY_COMMIT_INTERVAL="1h", JOURNEY_COMMIT_EVERY="100000000")
    first.wait_until(lambda s: s.get("events_rows", 0) >= len(events))
    first.kill()

    second = start_worker()
    # The loader recognised its redelivered messages, and the events the worker published again
    # (new offsets, same event ids), as stored (unique keys): twice the events at least.
    second.wait_until(lambda s: s.get("duplicate_rows", 0) >= 2 * len(events))
    assert second.stop() == 0

    (row,) = env.sql("SELECT count() AS n, uniqExact(event_id) AS ids FROM journey.events")
    assert row == {"n": len(events), "ids": len(events)}


def test_crash_before_insert_loses_nothing(env: Env, start_worker) -> None:  # type: ignore[no-untyped-def]
    events = valid_events(40)
    env.journey("topics", "create")
    publish(env, as_messages(events))

    # The loader never flushes during the first run: nothing is stored, nothing may be committed.
    first = start_worker(JOURNEY_SINK_FLUSH_INTERVAL="1h", JOURNEY_SINK_BATCH_ROWS="100000000")
    status = first.wait_until(
        lambda s: s.get("consumed", 0) >= len(events) and s.get("loaded", 0) >= len(events)
    )
    assert status.get("events_rows") == 0
    time.sleep(3)  # a commit interval passes: only acked (stored) offsets may be committed
    first.kill()

    second = start_worker()
    second.wait_until(lambda s: s.get("events_rows", 0) >= len(events))
    assert second.stop() == 0
    (row,) = env.sql("SELECT count() AS n, uniqExact(event_id) AS ids FROM journey.events")
    assert row == {"n": len(events), "ids": len(events)}


def test_worker_refuses_inputs_that_are_not_copartitioned(env: Env) -> None:
    settings = env.settings()

    async def make_orders_topic_different() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(settings.topic("orders"), 5, 1)])
        finally:
            await admin.close()

    asyncio.run(make_orders_topic_different())
    done = env.journey("worker", check=False)
    assert done.returncode == 2
    assert "not co-partitioned" in done.stderr
    assert f"{settings.topic('orders')}=5" in done.stderr
