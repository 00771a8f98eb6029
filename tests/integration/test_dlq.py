"""Dead-letter tools against the real broker: list, show, and replay after the cause is fixed."""

from __future__ import annotations

import time
from typing import Any

from schemas.records import OrderChanged, OrderItem
from streams.journey.decisions import trigger_id
from tests.integration.conftest import Env, publish
from tests.integration.support import CODEC, triggers_on_topic


def test_dead_letters_are_explained_and_replayed_once_the_cause_is_fixed(
    env: Env, start_worker: Any
) -> None:
    now = int(time.time() * 1000)
    # A real order whose coupon field makes it larger than the first worker accepts.
    order = OrderChanged(
        "big-1", "c-big", now, "o-big", "PLACED", 1_000, "EUR",
        [OrderItem("sku-1", 1, 1_000)], None, "X" * 3_000,
    )  # fmt: skip
    env.journey("topics", "create")
    publish(env, [("orders", b"c-big", CODEC.encode(order)), ("orders", b"c-bad", b"nonsense")])

    first = start_worker(JOURNEY_MAX_VALUE_BYTES="2048")
    first.wait_until(lambda s: s.get("deadletter_rows", 0) >= 2)
    assert first.stop() == 0

    listing = env.journey("dlq", "list").stdout
    assert "too_large" in listing and "bad_header" in listing
    assert "2 dead letter(s)" in listing
    letter_id = next(line.split()[0] for line in listing.splitlines() if "too_large" in line)
    shown = env.journey("dlq", "show", letter_id).stdout
    assert "JOURNEY_MAX_VALUE_BYTES" in shown and "orders" in shown and "c-big" in shown
    assert env.journey("dlq", "show", "nope/0/0", check=False).returncode != 0
    assert "say what to replay" in env.journey("dlq", "replay", check=False).stderr

    # The fix: a worker with the default (1 MiB) limit. Then replay just the oversized one.
    second = start_worker()
    second.wait_until(lambda s: s.get("ready"))
    replayed = env.journey("dlq", "replay", "--reason", "too_large").stdout
    assert "replayed 1 dead letter(s)" in replayed
    second.wait_until(lambda s: s.get("events_rows", 0) >= 1)
    # Processed exactly as a fresh event: its row, and its order confirmation.
    triggers = triggers_on_topic(env, 1, settle=2)
    assert [t.trigger_id for t in triggers] == [
        trigger_id("c-big", "ORDER_CONFIRMATION", "o-big", "big-1")
    ]
    assert second.stop() == 0
    rows = env.sql("SELECT event_id, event_type, amount_minor FROM journey.events FINAL")
    assert rows == [{"event_id": "big-1", "event_type": "order.placed", "amount_minor": 1_000}]
