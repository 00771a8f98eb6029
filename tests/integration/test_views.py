"""The analysts' views against the same numbers computed independently in Python.

Simulated shop traffic (five months of history, whose trigger timers are long past due and
expire, and the last day, whose marketing triggers go out) plus a scripted block near 'now'
(abandoned carts whose reminders are sent, then orders that do or do not recover them, inside,
at and just past the attribution window; buyers whose post-delivery messages are sent, then a
second order). Delivered as a shop really delivers: some events twice, a slice replayed later,
out of order (DELIVERED before SHIPPED, CANCELLED and REFUNDED before PLACED). One worker runs
until everything is consumed and the decisions have settled; then every view must equal
``expected_views`` over the generated events deduplicated by event_id, and for the views built
on trigger decisions, over the decisions in ``journey.triggers FINAL``.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import Counter
from itertools import zip_longest
from typing import Any

from schemas.records import (
    CartChanged,
    CustomerSnapshot,
    FeedbackGiven,
    InputEvent,
    MessageEngagement,
    OrderChanged,
    OrderItem,
    PageViewed,
    ShipmentChanged,
)
from streams.ops.simulator import DAY, HOUR, MINUTE, Behaviour, SimulationConfig, generate
from streams.settings import parse_duration_ms
from tests.integration import expected_views as expect
from tests.integration.conftest import Env, Worker, publish
from tests.integration.support import CODEC, as_messages, read_topic

WINDOW = "5d"
WINDOW_MS = parse_duration_ms(WINDOW)
SETTINGS = {
    "JOURNEY_ABANDONED_CART_FIRST_DELAY": "2s",
    "JOURNEY_ABANDONED_CART_SECOND_DELAY": "5s",
    "JOURNEY_BROWSE_ABANDONMENT_DELAY": "3s",
    "JOURNEY_DELIVERY_CHECK_IN_DELAY": "2s",
    "JOURNEY_NPS_SURVEY_DELAY": "3s",
    "JOURNEY_REVIEW_REQUEST_DELAY": "4s",
    "JOURNEY_CROSS_SELL_DELAY": "5s",
    # A 1 s cap instead of none: a customer's marketing messages then never go out in the same
    # millisecond, so "the latest trigger before an order" (last touch) is never a tie.
    "JOURNEY_FREQUENCY_CAP": "1s",
    "JOURNEY_QUIET_HOURS_START": "0",
    "JOURNEY_QUIET_HOURS_END": "0",
    "JOURNEY_MARKETING_CONSENT_DEFAULT": "true",
    "JOURNEY_ATTRIBUTION_WINDOW": WINDOW,
    # The loader's scheduled lifetime-value fit, often (off in the other tests).
    "JOURNEY_PREDICTION_INTERVAL": "2s",
}
RECOVERING = ("v-a1", "v-a2", "v-a3", "v-a4", "v-a5", "v-a6", "v-a7", "v-a8", "v-a9")
BUYERS = ("v-b1", "v-b2", "v-b3")


def now_ms() -> int:
    return int(time.time() * 1000)


def simulated(now: int) -> list[InputEvent]:
    """History that ends 3 h ago, and customers of the last 20 hours (no erasures: an erased
    customer's rows are deleted by design, and no malformed payloads)."""
    people = Behaviour(erased=0.0)
    history = SimulationConfig(
        seed=11,
        customers=300,
        start_ms=now - 150 * DAY,
        arrival_window_ms=60 * DAY,
        horizon_ms=150 * DAY - 3 * HOUR,
        run_id="h",
        behaviour=people,
    )
    recent = SimulationConfig(
        seed=12,
        customers=100,
        start_ms=now - 20 * HOUR,
        arrival_window_ms=16 * HOUR,
        horizon_ms=20 * HOUR - 10 * MINUTE,
        run_id="r",
        behaviour=people,
    )
    records = [e.record for config in (history, recent) for e in generate(config)]
    assert all(r is not None for r in records)
    return [r for r in records if r is not None]


def out_of_order(events: list[InputEvent], rng: random.Random) -> list[InputEvent]:
    """Each event late by up to two days; a third of the cancellations and refunds before
    their order, a third of the deliveries before their SHIPPED."""
    key = {e.event_id: e.occurred_at + rng.randint(0, 2 * DAY) for e in events}
    first: dict[str, int] = {}  # order or shipment id -> when its PLACED / SHIPPED is sent
    for e in events:
        if isinstance(e, OrderChanged) and e.status == "PLACED":
            first[e.order_id] = key[e.event_id]
        elif isinstance(e, ShipmentChanged) and e.status == "SHIPPED":
            first[e.shipment_id] = key[e.event_id]
    for e in events:
        if isinstance(e, OrderChanged) and e.status in ("CANCELLED", "REFUNDED"):
            subject = e.order_id
        elif isinstance(e, ShipmentChanged) and e.status == "DELIVERED":
            subject = e.shipment_id
        else:
            continue
        if subject in first and rng.random() < 1 / 3:
            key[e.event_id] = first[subject] - 1
    return sorted(events, key=lambda e: key[e.event_id])


def with_duplicates(events: list[InputEvent], rng: random.Random, share: float) -> list[InputEvent]:
    """Some events sent twice, the second copy up to a few hundred messages later."""
    out = list(events)
    for event in events:
        if rng.random() < share:
            out.insert(min(len(out), out.index(event) + rng.randint(1, 300)), event)
    return out


def scenario_before(t0: int) -> list[InputEvent]:
    """Carts left at t0 (their reminders are sent within seconds), buyers whose order was
    delivered 20 minutes ago (post-delivery messages within seconds; DELIVERED sent first), and
    NPS answers."""
    events: list[InputEvent] = []
    for n, c in enumerate(RECOVERING):
        events += [
            PageViewed(f"{c}-1", c, t0, f"s-{c}", "PRODUCT", "https://shop/p/1", "sku-01001", "shoes"),
            CartChanged(f"{c}-2", c, t0 + 1, f"k-{c}", "PRODUCT_ADDED", "sku-01001", "shoes", 1, 5_000 + 100 * n, "EUR"),
        ]  # fmt: skip
        if n % 2:
            events.append(CartChanged(f"{c}-3", c, t0 + 2, f"k-{c}", "CHECKOUT_STARTED"))
    for n, c in enumerate(BUYERS):
        order, shipment = f"o-{c}-1", f"sh-{c}"
        item = OrderItem("sku-02001", 1, 7_000 + 100 * n, "jackets")
        events += [
            PageViewed(f"{c}-1", c, t0 - 3 * HOUR, f"s-{c}", "PRODUCT", "https://shop/p/2", "sku-02001", "jackets"),
            OrderChanged(f"{c}-2", c, t0 - 3 * HOUR + MINUTE, order, "PLACED", item.unit_price_minor, "EUR", [item]),
            ShipmentChanged(f"{c}-4", c, t0 - 20 * MINUTE, order, shipment, "DELIVERED"),
            ShipmentChanged(f"{c}-3", c, t0 - 2 * HOUR, order, shipment, "SHIPPED", "DHL", "JVGL1", "https://t/1"),
            FeedbackGiven(f"{c}-5", c, t0 - 10 * MINUTE, "NPS", (10, 3, 7)[n], order),
        ]  # fmt: skip
    # With the buyers' answers: 3 promoters, 2 passives, 2 detractors of 7 on one day (14.3).
    for n, score in enumerate((9, 9, 8, 0)):
        events.append(FeedbackGiven(f"v-n{n}-1", f"v-n{n}", t0 - 5 * MINUTE, "NPS", score))
    return events + purchase_edges(t0)


def purchase_edges(t0: int) -> list[InputEvent]:
    """What one definition of a purchase must agree on. f1: a free order (a purchase, revenue 0).
    f2: a free order refunded, the refund sent first (not a purchase). f3: a first order 40 days
    ago cancelled after a second order arrived (the customer's first purchase is the second).
    f4: a refund of 0 sent before its order (a purchase, full revenue). f5: a free order, then a
    paid one (a repeat customer)."""
    item = OrderItem("sku-04001", 1, 3_000, "hats")

    def order(c: str, n: int, at: int, status: str, total: int) -> OrderChanged:
        return OrderChanged(
            f"{c}-{n}{status[0]}", c, at, f"o-{c}-{n}", status, total, "EUR", [item],
            coupon="FREE100" if total == 0 else None,
        )  # fmt: skip

    return [
        order("v-f1", 1, t0 - 2 * HOUR, "PLACED", 0),
        order("v-f2", 1, t0 - HOUR, "REFUNDED", 0),
        order("v-f2", 1, t0 - 2 * HOUR, "PLACED", 0),
        order("v-f3", 1, t0 - 40 * DAY, "PLACED", 3_000),
        order("v-f3", 2, t0 - 2 * HOUR, "PLACED", 3_000),
        order("v-f3", 1, t0 - 40 * DAY + HOUR, "CANCELLED", 3_000),
        order("v-f4", 1, t0 - HOUR, "REFUNDED", 0),
        order("v-f4", 1, t0 - 2 * HOUR, "PLACED", 3_000),
        order("v-f5", 1, t0 - 30 * DAY, "PLACED", 0),
        order("v-f5", 2, t0 - 2 * HOUR, "PLACED", 3_000),
    ]


def engagement(t1: int, scripted: list[expect.Decision]) -> list[InputEvent]:
    """What the sender reports about some of the scripted messages: a reminder delivered,
    opened (that event sent twice) and clicked twice; another delivered, opened and then
    unsubscribed from, the next one bounced; a cross-sell marked as spam; a confirmation opened.
    Not counted: an engagement naming an unknown trigger, or another customer's trigger."""
    emitted = sorted((d for d in scripted if d.status == "EMITTED"), key=lambda d: d.decided_at)

    def message(customer: str, trigger_type: str, n: int = 0) -> str:
        return [d for d in emitted if d.customer_id == customer and d.trigger_type == trigger_type][
            n
        ].trigger_id

    a1, a8_first, a8_second = (
        message("v-a1", "ABANDONED_CART"),
        message("v-a8", "ABANDONED_CART"),
        message("v-a8", "ABANDONED_CART", 1),
    )
    reports = [
        ("v-a1", a1, "DELIVERED"), ("v-a1", a1, "OPENED"), ("v-a1", a1, "CLICKED"),
        ("v-a1", a1, "CLICKED"), ("v-a8", a8_first, "DELIVERED"), ("v-a8", a8_first, "OPENED"),
        ("v-a8", a8_first, "UNSUBSCRIBED"), ("v-a8", a8_second, "BOUNCED"),
        ("v-b3", message("v-b3", "CROSS_SELL"), "DELIVERED"),
        ("v-b3", message("v-b3", "CROSS_SELL"), "COMPLAINED"),
        ("v-b1", message("v-b1", "ORDER_CONFIRMATION"), "DELIVERED"),
        ("v-b1", message("v-b1", "ORDER_CONFIRMATION"), "OPENED"),
        ("v-a2", "t-unknown", "OPENED"), ("v-a2", a1, "CLICKED"),
    ]  # fmt: skip
    events: list[InputEvent] = [
        MessageEngagement(f"{c}-m{n}", c, t1 - 1_000 + n, action, "EMAIL", trigger)
        for n, (c, trigger, action) in enumerate(reports)
    ]
    return [*events, events[1]]


def scenario_after(t1: int, sent: dict[str, list[int]]) -> list[InputEvent]:
    """Orders after the reminders were sent (``sent``: cart -> when its reminders went out).

    a1 recovers its cart; a2 too, less a partial refund (sent before its order); a3 cancels
    (the cancellation sent first); a4 is refunded in two parts that add up to its total;
    a5 orders 5 days after the second reminder less 200 ms, which is more than 5 days after the
    first; a6 exactly 5 days after the second; a7 1 ms later than that; a8 never orders; a9
    orders twice from the same cart. b1 and b2 order again, b3 does not."""

    def order(
        c: str, at: int, suffix: str = "", status: str = "PLACED", total: int = 0
    ) -> OrderChanged:
        item = OrderItem("sku-01001", 1, 5_000 + 100 * RECOVERING.index(c), "shoes")
        return OrderChanged(
            f"{c}-o{suffix}{status[0]}{at}", c, at, f"o-{c}{suffix}", status,
            total or item.unit_price_minor, "EUR", [item], f"k-{c}",
        )  # fmt: skip

    last = {c: max(sent[f"k-{c}"]) for c in RECOVERING}
    a1 = order("v-a1", t1)
    a4 = order("v-a4", t1)
    events: list[InputEvent] = [
        a1,
        order("v-a2", t1 + HOUR, status="REFUNDED", total=2_000),
        order("v-a2", t1),
        order("v-a3", t1 + 10 * MINUTE, status="CANCELLED"),
        order("v-a3", t1),
        a4,
        order("v-a4", t1 + HOUR, status="REFUNDED", total=a4.total_minor - 1_000),
        order("v-a4", t1 + 2 * HOUR, status="REFUNDED", total=1_000),
        order("v-a5", last["v-a5"] + WINDOW_MS - 200),
        order("v-a6", last["v-a6"] + WINDOW_MS),
        order("v-a7", last["v-a7"] + WINDOW_MS + 1),
        order("v-a9", t1, suffix="-1"),
        order("v-a9", t1 + 30 * MINUTE, suffix="-2"),
    ]
    for n, (c, at) in enumerate((("v-b1", t1), ("v-b2", t1 + DAY))):
        item = OrderItem("sku-03001", 2, 2_500 + n, "shirts")
        events.append(
            OrderChanged(f"{c}-6", c, at, f"o-{c}-2", "PLACED", 5_000 + 2 * n, "EUR", [item])
        )
    return [*events, a1, *events[6:8]]  # and a few of them twice


def as_of(orders: dict[str, expect.Order], now: int) -> dict[str, expect.Buyer]:
    """The buyers and their purchases placed by `now`."""
    return expect.buyers(
        {k: o for k, o in orders.items() if o.placed_at is not None and o.placed_at <= now}
    )


def decisions(env: Env, where: str = "1") -> list[expect.Decision]:
    rows = env.sql(
        "SELECT trigger_id, trigger_type, category, customer_id, status, "
        "toUnixTimestamp64Milli(due_at) AS due_at, toUnixTimestamp64Milli(decided_at) AS decided_at, "
        f"cart_id FROM journey.triggers FINAL WHERE {where}"
    )
    return [expect.Decision(**row) for row in rows]


def reminders_sent(env: Env, timeout: float = 90) -> list[expect.Decision]:
    """Once both reminders of every scripted cart and the last post-delivery message of every
    scripted buyer are decided, the scripted decisions."""
    deadline = time.monotonic() + timeout
    while True:
        rows = decisions(env, "startsWith(customer_id, 'v-')")
        reminders = Counter(
            d.customer_id
            for d in rows
            if d.trigger_type == "ABANDONED_CART" and d.status == "EMITTED"
        )
        cross_sells = {d.customer_id for d in rows if d.trigger_type == "CROSS_SELL"}
        if all(reminders[c] == 2 for c in RECOVERING) and cross_sells == set(BUYERS):
            return rows
        assert time.monotonic() < deadline, (
            f"scripted triggers not decided: {sorted(reminders.items())}"
        )
        time.sleep(1)


def shop_events(status: dict[str, Any]) -> int:
    """Messages consumed from the shop's topics (not the loader's predictions)."""
    return sum(n for topic, n in status.get("per_topic", {}).items() if ".shop." in topic)


def settle(worker: Worker, consumed: int, stored: int, quiet: float = 2.5) -> None:
    """Everything consumed and stored, and no decision added for `quiet` seconds."""
    worker.wait_until(lambda s: shop_events(s) >= consumed and s.get("events_rows", 0) >= stored)
    last, since = worker.last.get("trigger_rows"), time.monotonic()
    while time.monotonic() - since < quiet:
        status = worker.wait_until(lambda s: "trigger_rows" in s, timeout=30)
        if status["trigger_rows"] != last:
            last, since = status["trigger_rows"], time.monotonic()
    assert shop_events(worker.last) == consumed
    assert worker.last["events_rows"] == stored


def assert_rows(
    view: str, got: list[dict[str, Any]], want: list[dict[str, Any]], **tolerance: float
) -> None:
    """Equal row by row: integers and keys exactly, rounded figures within `tolerance`."""

    def same(column: str, a: Any, b: Any) -> bool:
        if isinstance(a, float) and math.isnan(a):
            a = None  # an empty median
        if column in tolerance and a is not None and b is not None:
            return abs(a - b) <= tolerance[column]
        return bool(a == b)

    bad = [
        (g, w) for g, w in zip_longest(got, want)
        if g is None or w is None or g.keys() != w.keys() or not all(same(k, g[k], w[k]) for k in w)
    ]  # fmt: skip
    shown = "\n".join(f"  view:     {g}\n  expected: {w}" for g, w in bad[:6])
    assert not bad, f"{view}: {len(bad)} of {max(len(got), len(want))} rows differ\n{shown}"


def report_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """The tables `journey report` printed, by title: each row's cells as printed (a cell lies
    under its column's dashes; an empty one, such as the stage a customer entered from, is "")."""
    tables = {}
    for block in text.split("\n\n"):
        lines = block.strip("\n").splitlines()
        if len(lines) >= 3 and set(lines[2]) <= {"-", " "}:
            spans = [m.span() for m in re.finditer("-+", lines[2])]
            columns = [lines[1][a:b].strip() for a, b in spans]
            tables[lines[0]] = [
                dict(zip(columns, (row[a:b].strip() for a, b in spans), strict=True))
                for row in lines[3:]
            ]
    return tables


def printed(cell: str) -> float | None:
    """A number as the report prints it ("1,234", "0.6667", "12,345.6", "-" for none)."""
    return None if cell == "-" else float(cell.replace(",", ""))


def test_views_equal_an_independent_computation(env: Env, start_worker: Any) -> None:
    rng = random.Random(20261122)
    t0 = now_ms()
    history = out_of_order(simulated(t0), rng)
    first = [*with_duplicates(history, rng, 0.05), *scenario_before(t0)]
    env.journey("topics", "create")
    publish(env, as_messages(first))
    worker = start_worker(**SETTINGS)
    # Ready too: `journey sql` asks the loader, which owns ClickHouse, and its server may still
    # be starting when the worker has consumed everything (connection refused, seen once).
    worker.wait_until(lambda s: s.get("consumed", 0) >= len(first) and s.get("ready"), timeout=90)

    scripted = reminders_sent(env)
    sent: dict[str, list[int]] = {}
    for d in scripted:
        if d.trigger_type == "ABANDONED_CART" and d.status == "EMITTED" and d.cart_id:
            sent.setdefault(d.cart_id, []).append(d.decided_at)
    t1 = now_ms()  # after every decision so far
    assert t1 > max(d.decided_at for d in scripted)
    replay = history[len(history) // 3 : len(history) // 3 + 500]
    second = [*scenario_after(t1, sent), *engagement(t1, scripted), *replay]
    publish(env, as_messages(second))

    events = expect.unique([*first, *second])
    settle(worker, consumed=len(first) + len(second), stored=len(events))
    # Predictions are as of now: a5-a7 order in the future (the end of the attribution window).
    buyers_now = len(as_of(expect.orders(events), now_ms()))
    deadline = time.monotonic() + 60
    while True:  # the scheduled fit in the loader, over every buyer
        (fitted,) = env.sql(
            "SELECT count() AS n FROM journey.customer_predictions FINAL "
            "WHERE fitted_at = (SELECT max(fitted_at) FROM journey.prediction_fits)"
        )
        if fitted["n"] == buyers_now:
            break
        assert time.monotonic() < deadline, f"scheduled predictions: {fitted} of {buyers_now}"
        time.sleep(1)
    # ... and handed to the journey workers (journey.predictions): the snapshots carry them.
    snapshots_topic = env.settings().topic("snapshots")
    deadline = time.monotonic() + 90
    partitions = env.settings().partitions
    while True:
        carried = {
            snapshot.customer_id
            for message in read_topic(snapshots_topic, partitions)  # up to its end offsets
            if message.value
            for snapshot in (CODEC.decode(message.value, CustomerSnapshot),)
            if snapshot.probability_alive is not None
        }
        if len(carried) >= buyers_now:
            break
        assert time.monotonic() < deadline, f"snapshots with a prediction: {len(carried)}"
        time.sleep(1)
    assert worker.stop() == 0
    published = [
        CODEC.decode(message.value, CustomerSnapshot)
        for message in read_topic(snapshots_topic, partitions)
        if message.value
    ]

    # --- the inputs of the independent computation ------------------------------------------
    orders = expect.orders(events)
    triggers = decisions(env)
    assert {"EMITTED", "EXPIRED", "CANCELLED"} <= {d.status for d in triggers}
    stages = {
        r["customer_id"]: r["stage"]
        for r in env.sql("SELECT customer_id, stage FROM journey.customers FINAL")
    }
    assert set(stages) == {e.customer_id for e in events}

    # The scripted outcomes follow the contract's definitions (this checks expected_views too).
    recovered = expect.recovered_carts(orders, triggers, WINDOW_MS)
    assert sorted(recovered) == ["k-v-a1", "k-v-a2", "k-v-a5", "k-v-a6", "k-v-a9"]
    assert len(recovered["k-v-a9"]) == 2
    assert orders["o-v-a2"].revenue_minor == 5_100 - 2_000
    assert not orders["o-v-a3"].counts and not orders["o-v-a4"].counts
    attributed = expect.attributions(orders, triggers, WINDOW_MS)
    last_reminder = {c: max(sent[f"k-{c}"]) for c in RECOVERING}
    for c in ("v-a1", "v-a2", "v-a5", "v-a6"):
        assert attributed[f"o-{c}"].trigger_type == "ABANDONED_CART"
        assert attributed[f"o-{c}"].decided_at == last_reminder[c]
    assert "o-v-a7" not in attributed and "o-v-b1-1" not in attributed
    assert {"o-v-b1-2", "o-v-b2-2"} <= set(attributed)

    # --- every view ----------------------------------------------------------------------
    def view(name: str, order_by: str) -> list[dict[str, Any]]:
        return env.sql(f"SELECT * FROM journey.{name} ORDER BY {order_by}")

    funnel = [r for r in view("funnel_daily", "day") if any(r[s] for s in expect.FUNNEL_STEPS)]
    assert_rows("funnel_daily", funnel, expect.funnel_daily(events, orders))
    assert_rows(
        "cart_recovery_daily",
        view("cart_recovery_daily", "day"),
        expect.cart_recovery_daily(orders, triggers, WINDOW_MS),
    )
    assert_rows(
        "repeat_purchase_cohorts",
        view("repeat_purchase_cohorts", "cohort_month"),
        expect.repeat_purchase_cohorts(orders),
        repeat_rate=1e-4 + 1e-9,
        median_days_to_second_order=0.1 + 1e-9,
    )
    assert_rows("nps_daily", view("nps_daily", "day"), expect.nps_daily(events), nps=0.1 + 1e-9)
    assert_rows(
        "trigger_attribution",
        view("trigger_attribution", "trigger_type"),
        expect.trigger_attribution(orders, triggers, WINDOW_MS),
        conversion_rate=1e-4 + 1e-9,
    )
    assert_rows(
        "delivery_daily",
        view("delivery_daily", "day"),
        expect.delivery_daily(events),
        median_hours_to_deliver=0.1 + 1e-9,
    )
    assert_rows(
        "stage_counts",
        env.sql("SELECT * FROM journey.stage_counts"),  # in funnel order, as the view sorts
        expect.stage_counts(stages),
    )

    # --- one definition of a purchase: `customers` (the journey model) and every view agree ----
    want_buyers = expect.buyers(orders)
    assert want_buyers["v-f1"] == expect.Buyer(1, 0, orders["o-v-f1-1"].placed_at or 0,
                                               orders["o-v-f1-1"].placed_at or 0)  # fmt: skip
    assert "v-f2" not in want_buyers and want_buyers["v-f4"].revenue_minor == 3_000
    assert want_buyers["v-f3"].first_order_at == orders["o-v-f3-2"].placed_at
    assert want_buyers["v-f5"].orders == 2
    snapshot = {
        r["customer_id"]: expect.Buyer(
            r["orders_count"], r["revenue_minor"], r["first_order_at"], r["last_order_at"]
        )
        for r in env.sql(
            "SELECT customer_id, orders_count, revenue_minor, "
            "toUnixTimestamp64Milli(first_order_at) AS first_order_at, "
            "toUnixTimestamp64Milli(last_order_at) AS last_order_at "
            "FROM journey.customers FINAL WHERE orders_count > 0"
        )
    }
    in_view = {
        r["customer_id"]: expect.Buyer(
            r["orders"], r["revenue_minor"], r["first_order_at"], r["last_order_at"]
        )
        for r in env.sql(
            "SELECT customer_id, orders, revenue_minor, "
            "toUnixTimestamp64Milli(first_order_at) AS first_order_at, "
            "toUnixTimestamp64Milli(last_order_at) AS last_order_at FROM journey.buyers"
        )
    }
    for name, got_buyers in (("customers", snapshot), ("buyers", in_view)):
        wrong = {
            c: (got_buyers.get(c), want_buyers.get(c))
            for c in set(got_buyers) | set(want_buyers)
            if got_buyers.get(c) != want_buyers.get(c)
        }
        assert not wrong, f"{name}: {len(wrong)} customers differ, e.g. {list(wrong.items())[:5]}"
    n_buyers, revenue = len(want_buyers), sum(b.revenue_minor for b in want_buyers.values())
    n_repeat = sum(1 for b in want_buyers.values() if b.orders >= 2)
    cohort_rows = view("repeat_purchase_cohorts", "cohort_month")
    assert sum(r["customers"] for r in cohort_rows) == n_buyers
    assert sum(r["repeat_customers"] for r in cohort_rows) == n_repeat
    totals = env.sql("SELECT * FROM journey.funnel_totals")[0]
    want_totals = expect.funnel_totals(events, orders)
    assert {s: totals[s] for s in expect.FUNNEL_STEPS} == want_totals
    assert totals["purchasers"] == n_buyers
    (whole,) = env.sql(
        "SELECT count() AS orders, sum(revenue_minor) AS revenue, uniqExact(customer_id) AS buyers,"
        " sumIf(revenue_minor, attributed) AS attributed FROM journey.order_attribution"
    )
    assert whole == {
        "orders": sum(b.orders for b in want_buyers.values()), "revenue": revenue,
        "buyers": n_buyers,
        "attributed": sum(orders[o].revenue_minor for o in attributed),
    }  # fmt: skip
    assert sum(r["attributed_revenue_minor"] for r in view("trigger_attribution", "trigger_type")) \
        == whole["attributed"]  # fmt: skip

    # --- lifetime value, engagement, stage transitions ---------------------------------------
    value = expect.customer_value_cohorts(orders)
    assert_rows(
        "customer_value_cohorts",
        view("customer_value_cohorts", "cohort_month, months_since_first"),
        value,
        retention_rate=1e-4 + 1e-9,
        cumulative_revenue_per_customer_minor=0.1 + 1e-9,
    )
    assert sum(r["revenue_minor"] for r in value) == revenue
    assert sum(r["cohort_customers"] for r in value if r["months_since_first"] == 0) == n_buyers
    assert any(r["months_since_first"] > 0 for r in value)
    rates = {c: 1e-4 + 1e-9 for c in ("delivery_rate", "open_rate", "click_rate", "bounce_rate",
                                       "complaint_rate", "unsubscribe_rate", "conversion_rate")}  # fmt: skip
    want_engagement = expect.trigger_engagement(events, orders, triggers, WINDOW_MS)
    assert_rows(
        "trigger_engagement", view("trigger_engagement", "trigger_type"), want_engagement, **rates
    )
    by_type = {r["trigger_type"]: r for r in want_engagement}
    assert by_type["ABANDONED_CART"]["clicked"] == 1 and by_type["ABANDONED_CART"]["opened"] == 2
    assert by_type["ABANDONED_CART"]["unsubscribed"] == by_type["ABANDONED_CART"]["bounced"] == 1
    assert by_type["CROSS_SELL"]["complained"] == 1
    assert by_type["ORDER_CONFIRMATION"]["opened"] == 1
    assert_rows(
        "engagement_daily",
        view("engagement_daily", "day, trigger_type"),
        expect.engagement_daily(events, orders, triggers, WINDOW_MS),
        **rates,
    )
    # The loader stores the newest snapshot per customer of each batch it writes (and may stop
    # before the last ones): the transitions are those between the published snapshots it
    # stored, with the stages as published.
    stored = {
        (r["customer_id"], r["at"])
        for r in env.sql(
            "SELECT customer_id, toUnixTimestamp64Milli(at) AS at FROM journey.customer_stages FINAL"
        )
    }
    assert stored <= {(s.customer_id, s.updated_at) for s in published}
    assert {c for c, _ in stored} == set(stages)
    transitions = view("stage_transitions_daily", "day, from_stage, to_stage")
    assert_rows(
        "stage_transitions_daily",
        transitions,
        expect.stage_transitions_daily(
            (s.customer_id, s.updated_at, s.stage)
            for s in published
            if (s.customer_id, s.updated_at) in stored
        ),
    )
    assert expect.stage_balance(transitions) == {
        r["stage"]: r["customers"] for r in expect.stage_counts(stages)
    }
    assert any(r["from_stage"] == "CONSIDERATION" and r["to_stage"] == "PURCHASE"
               for r in transitions)  # fmt: skip

    # --- predicted lifetime value: `journey predict` refits and writes every buyer ------------
    out = env.journey("predict").stdout
    assert "BG/NBD (days): r=" in out and "Gamma-Gamma" in out
    known = as_of(orders, now_ms())
    assert f"wrote predictions for {len(known):,} customers" in out
    fits = env.sql(
        "SELECT model, parameters, customers FROM journey.prediction_fits "
        "WHERE fitted_at = (SELECT max(fitted_at) FROM journey.prediction_fits) ORDER BY model"
    )
    assert [f["model"] for f in fits] == ["bg_nbd", "gamma_gamma"]
    assert set(fits[0]["parameters"]) == {"r", "alpha", "a", "b"}
    assert all(v > 0 for f in fits for v in f["parameters"].values())
    predicted = env.sql(
        "SELECT customer_id, orders, probability_alive AS alive, expected_orders_90d AS n90, "
        "predicted_clv_minor AS clv, expected_order_value_minor AS aov FROM "
        "journey.customer_predictions FINAL WHERE fitted_at = (SELECT max(fitted_at) FROM "
        "journey.prediction_fits)"
    )
    assert {r["customer_id"]: r["orders"] for r in predicted} == {
        c: b.orders for c, b in known.items()
    }
    assert len(known) >= n_buyers - 3
    assert all(0 <= r["alive"] <= 1 and r["n90"] >= 0 and r["aov"] > 0 for r in predicted)
    report = report_tables(env.journey("report").stdout)
    for title in ("Engagement per trigger type", "Lifetime value: historic and predicted",
                  "Retention and cumulative revenue per customer by cohort, first 12 months",
                  "Stage transitions, last 7 days"):  # fmt: skip
        assert report.get(title), title
    # The report's figures are the independent computation's, as printed.
    counts = ("emitted", "delivered", "opened", "clicked", "bounced", "complained",
              "unsubscribed", "conversions", "attributed_revenue_minor")  # fmt: skip
    engaged = {r["trigger_type"]: r for r in report["Engagement per trigger type"]}
    assert list(engaged) == [r["trigger_type"] for r in want_engagement]
    for want in want_engagement:
        got = engaged[want["trigger_type"]]
        assert {c: printed(got[c]) for c in counts} == {c: want[c] for c in counts}, got
        for rate in ("open_rate", "click_rate", "unsubscribe_rate", "conversion_rate"):
            shown = printed(got[rate])
            if want[rate] is None or shown is None:
                assert shown == want[rate], (got, rate)
            else:
                assert abs(shown - want[rate]) <= 1e-4 + 1e-9, (got, rate)
    assert (engaged["ABANDONED_CART"]["opened"], engaged["ABANDONED_CART"]["clicked"]) == ("2", "1")
    retention = {
        (r["cohort_month"], int(r["month"])): r
        for r in report["Retention and cumulative revenue per customer by cohort, first 12 months"]
    }
    want_retention = {
        (r["cohort_month"], r["months_since_first"]): r
        for r in value
        if r["months_since_first"] < 12
    }
    assert retention.keys() == want_retention.keys()
    for cell, got in retention.items():
        want = want_retention[cell]
        figures = [printed(got[c]) for c in ("customers", "active", "revenue_minor")]
        assert figures == [
            want[c] for c in ("cohort_customers", "active_customers", "revenue_minor")
        ], cell
        ltv = printed(got["ltv_minor"])
        assert ltv is not None
        assert abs(ltv - want["cumulative_revenue_per_customer_minor"]) <= 0.1 + 1e-9, cell
    (lifetime,) = report["Lifetime value: historic and predicted"]
    assert printed(lifetime["buyers"]) == n_buyers
    historic = printed(lifetime["historic_ltv_minor"])
    assert historic is not None and abs(historic - revenue / n_buyers) <= 0.5 + 1e-9
    assert printed(lifetime["predicted"]) == len(known)

    # Not trivially equal: every view has something to show.
    cohorts = expect.repeat_purchase_cohorts(orders)
    assert sum(r["repeat_customers"] for r in cohorts) >= 5
    assert any(r["median_days_to_second_order"] for r in cohorts)
    assert any(
        r["detractors"] and r["promoters"] and r["passives"] for r in expect.nps_daily(events)
    )
    assert any(r["failed"] for r in expect.delivery_daily(events))
    assert sum(r["converted"] for r in expect.trigger_attribution(orders, triggers, WINDOW_MS)) >= 6
