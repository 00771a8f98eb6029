"""Scripted journeys through a real worker: exactly the expected triggers come out.

Delays are shortened to seconds (they are settings), quiet hours and the frequency cap are
switched off so that timing is predictable, and expected trigger ids are computed from the
contract's inputs with ``trigger_id`` (deterministic), not by running the model.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from datetime import time as dt_time
from typing import Any
from zoneinfo import ZoneInfo

from schemas.codec import Codec
from schemas.records import (
    CartChanged,
    CustomerChanged,
    FeedbackGiven,
    OrderChanged,
    OrderItem,
    PageViewed,
    ShipmentChanged,
)
from streams.journey.decisions import trigger_id
from tests.integration.conftest import Env, consume_all, publish
from tests.integration.support import FAST, as_messages, now_ms, triggers_on_topic

CODEC = Codec.load()


def noon_zone(at: int) -> ZoneInfo:
    """A zone where it is 12:xx now: the birthday (09:00) of its customers has come today."""
    offset = (12 - datetime.fromtimestamp(at / 1000, UTC).hour + 12) % 24 - 12  # -12..11 h
    return ZoneInfo(f"Etc/GMT{-offset:+d}")  # POSIX sign: Etc/GMT-2 is UTC+2


def test_scripted_journeys_give_exactly_the_expected_triggers(env: Env, start_worker: Any) -> None:
    t = now_ms()
    buyer, browser, returner, fan = "c-buyer", "c-browser", "c-returner", "c-fan"
    # A customer who tells their birthday on the day itself: it goes out at once.
    celebrant, zone = "c-celebrant", noon_zone(t)
    today = datetime.fromtimestamp(t / 1000, zone).date()
    born = today.replace(year=1992)  # a leap year: today may be 29 February
    nine = int(datetime.combine(today, dt_time(9), zone).timestamp() * 1000)
    order_item = OrderItem("sku-1", 2, 1_500, "shoes")
    events = [
        # A buyer: order, shipment, delivery -> confirmation, shipping, then the post-delivery
        # series and the win-back of the lapse after this order.
        OrderChanged("b1", buyer, t, "o-1", "PLACED", 3_000, "EUR", [order_item], "k-b"),
        ShipmentChanged("b2", buyer, t + 1, "o-1", "sh-1", "SHIPPED", "PostNL", "3S1", "https://t/3S1"),
        ShipmentChanged("b3", buyer, t + 2, "o-1", "sh-1", "DELIVERED"),
        # A browser who adds to a cart and leaves: two reminders; the browse reminder is cancelled.
        PageViewed("w1", browser, t, "s", "PRODUCT", "https://shop/p/9", "sku-9", "bags"),
        CartChanged("w2", browser, t + 1, "k-w", "PRODUCT_ADDED", "sku-9", "bags", 1, 4_000, "EUR"),
        # Someone who orders before the reminder is due: no reminder at all.
        CartChanged("r1", returner, t, "k-r", "PRODUCT_ADDED", "sku-2", "hats", 1, 900, "EUR"),
        OrderChanged("r2", returner, t + 500, "o-r", "PLACED", 900, "EUR", [OrderItem("sku-2", 1, 900)], "k-r"),
        # A fan: NPS 10 -> referral; a 1-star review -> detractor follow-up.
        CustomerChanged("f0", fan, t, "UPDATED", True, "Europe/Amsterdam"),
        FeedbackGiven("f1", fan, t + 1, "NPS", 10),
        FeedbackGiven("f2", fan, t + 2, "REVIEW", 1, None, "sku-3", "broke at once"),
        CustomerChanged("h1", celebrant, t, "UPDATED", True, zone.key, None, (born - date(1970, 1, 1)).days),
    ]  # fmt: skip
    expected = {
        trigger_id(buyer, "ORDER_CONFIRMATION", "o-1", "b1"): ("ORDER_CONFIRMATION", {"first_order": "true", "currency": "EUR"}),
        trigger_id(buyer, "SHIPPING_CONFIRMATION", "sh-1", "b2"): ("SHIPPING_CONFIRMATION", {"carrier": "PostNL", "tracking_code": "3S1", "tracking_url": "https://t/3S1"}),
        trigger_id(buyer, "DELIVERY_CHECK_IN", "o-1", "b3"): ("DELIVERY_CHECK_IN", {}),
        trigger_id(buyer, "NPS_SURVEY", "o-1", "b3"): ("NPS_SURVEY", {}),
        trigger_id(buyer, "REVIEW_REQUEST", "o-1", "b3"): ("REVIEW_REQUEST", {}),
        trigger_id(buyer, "CROSS_SELL", "o-1", "b3"): ("CROSS_SELL", {"categories": "shoes"}),
        trigger_id(buyer, "WIN_BACK", "o-1", "b1"): ("WIN_BACK", {}),
        trigger_id(browser, "ABANDONED_CART", "k-w#1", "w2"): ("ABANDONED_CART", {"reminder": "1", "cart_lines": "sku-9x1"}),
        trigger_id(browser, "ABANDONED_CART", "k-w#2", "w2"): ("ABANDONED_CART", {"reminder": "2"}),
        trigger_id(returner, "ORDER_CONFIRMATION", "o-r", "r2"): ("ORDER_CONFIRMATION", {"first_order": "true"}),
        trigger_id(returner, "WIN_BACK", "o-r", "r2"): ("WIN_BACK", {}),
        trigger_id(fan, "REFERRAL_INVITE", "f1", "f1"): ("REFERRAL_INVITE", {"score": "10"}),
        trigger_id(fan, "DETRACTOR_FOLLOW_UP", "f2", "f2"): ("DETRACTOR_FOLLOW_UP", {"kind": "REVIEW", "score": "1"}),
        trigger_id(celebrant, "BIRTHDAY", str(today.year), "h1"): ("BIRTHDAY", {"birthday": born.isoformat(), "age": str(today.year - 1992)}),
    }  # fmt: skip
    env.journey("topics", "create")
    publish(env, as_messages(events))
    worker = start_worker(**FAST)

    triggers = triggers_on_topic(env, len(expected))
    got = {tr.trigger_id: tr for tr in triggers}
    assert len(got) == len(triggers), "a trigger id was emitted twice"
    assert set(got) == set(expected), {tr.trigger_type for tr in triggers}
    for tid, (trigger_type, attributes) in expected.items():
        trigger = got[tid]
        assert trigger.trigger_type == trigger_type
        assert attributes.items() <= trigger.attributes.items(), (trigger_type, trigger.attributes)
        assert trigger.emitted_at >= trigger.due_at - 1_000
    assert got[trigger_id(buyer, "WIN_BACK", "o-1", "b1")].due_at == t + 6_000
    assert got[trigger_id(celebrant, "BIRTHDAY", str(today.year), "h1")].due_at == nine
    # The browse reminder cancelled by the cart add is recorded too. (The returner's order may be
    # consumed before their cart change, which then is history: no reminder is even scheduled.)
    worker.wait_until(lambda s: s.get("trigger_rows", 0) >= len(expected) + 1)
    assert worker.stop() == 0

    rows = env.sql(
        "SELECT trigger_id, trigger_type, status, reason FROM journey.triggers FINAL "
        "ORDER BY trigger_type"
    )
    emitted = {r["trigger_id"] for r in rows if r["status"] == "EMITTED"}
    assert emitted == set(expected)
    dropped = {
        (r["trigger_type"], r["status"], r["reason"]) for r in rows if r["status"] != "EMITTED"
    }
    assert ("BROWSE_ABANDONMENT", "CANCELLED", "cart_add") in dropped  # the browser's view
    customers = env.sql(
        "SELECT customer_id, stage, segment, orders_count FROM journey.customers FINAL"
    )
    by_id = {c["customer_id"]: c for c in customers}
    assert by_id[fan]["stage"] == "SERVICE"  # promoter, then a 1-star review
    assert by_id[buyer]["orders_count"] == 1
    assert by_id[browser]["segment"] == "PROSPECT"


def test_pending_timer_survives_a_crash_and_a_move_and_fires_once(
    env: Env, start_worker: Any
) -> None:
    t = now_ms()
    cart = CartChanged("x1", "c-timer", t, "k-x", "PRODUCT_ADDED", "sku-1", "socks", 3, 500, "EUR")
    settings = {
        **FAST,
        "JOURNEY_ABANDONED_CART_FIRST_DELAY": "20s",
        "JOURNEY_ABANDONED_CART_SECOND_DELAY": "1h",
    }
    env.journey("topics", "create")
    publish(env, as_messages([cart]))

    first = start_worker(**settings)
    first.wait_until(lambda s: s.get("pending_timers", 0) >= 1 and s.get("events_rows", 0) >= 1)
    assert not consume_all(env, env.settings().topic("triggers"), 1, timeout=1)
    time.sleep(
        3
    )  # a commit: the cart change will not be redelivered, the timer must come from state
    first.kill()

    # Another worker, with none of the first one's local files: the state (and its timer) can
    # only come from the changelog, as when a partition moves to another machine.
    second = start_worker(**settings, JOURNEY_DATA_DIR=str(env.tmp / "elsewhere"))
    second.wait_until(lambda s: s.get("pending_timers", 0) >= 1, timeout=60)
    triggers = triggers_on_topic(env, 1, settle=5)
    assert [(tr.trigger_type, tr.attributes["reminder"]) for tr in triggers] == [
        ("ABANDONED_CART", "1")
    ]
    assert triggers[0].trigger_id == trigger_id("c-timer", "ABANDONED_CART", "k-x#1", "x1")
    assert second.stop() == 0


def test_erasure_deletes_rows_and_silences_the_customer(env: Env, start_worker: Any) -> None:
    gone, kept = "c-gone", "c-kept"
    reminder_delay_s = 15
    env.journey("topics", "create")
    slow = {
        **FAST,
        "JOURNEY_ABANDONED_CART_FIRST_DELAY": f"{reminder_delay_s}s",
        "JOURNEY_WIN_BACK_DELAY": "1h",
    }
    worker = start_worker(**slow)
    worker.wait_until(lambda s: s.get("ready"))
    t = now_ms()
    before = [
        OrderChanged("g1", gone, t, "o-g", "PLACED", 1_000, "EUR", [OrderItem("sku-1", 1, 1_000)]),
        OrderChanged("k1", kept, t, "o-k", "PLACED", 2_000, "EUR", [OrderItem("sku-2", 1, 2_000)]),
        CartChanged("g2", gone, t + 1, "k-g", "PRODUCT_ADDED", "sku-3", "hats", 1, 500, "EUR"),
    ]
    publish(env, as_messages(before))
    worker.wait_until(lambda s: s.get("emitted", 0) >= 2 and s.get("events_rows", 0) >= 3)
    publish(env, as_messages([CustomerChanged("g3", gone, now_ms(), "ERASED")]))
    worker.wait_until(lambda s: s.get("consumed", 0) >= 4, timeout=30)
    # After the erasure: nothing is kept or sent for them, not even for a new order.
    publish(
        env,
        as_messages(
            [
                OrderChanged(
                    "g4", gone, now_ms(), "o-g2", "PLACED", 700, "EUR", [OrderItem("sku-1", 1, 700)]
                )
            ]
        ),
    )
    worker.wait_until(lambda s: s.get("consumed", 0) >= 5, timeout=30)
    # Past the time the cart reminder would have gone out, and a few flushes.
    time.sleep(max(0.0, (t + reminder_delay_s * 1000 + 2_000 - now_ms()) / 1000))
    assert worker.stop() == 0

    triggers = triggers_on_topic(env, 2, settle=1)
    sent_to = sorted(tr.customer_id for tr in triggers)
    assert sent_to == [gone, kept]  # the confirmations before the erasure; no reminder, no second
    for table in ("events", "triggers", "customers", "customer_stages"):
        rows = env.sql(f"SELECT customer_id FROM journey.{table} FINAL")
        assert {r["customer_id"] for r in rows} == {kept}, table
