from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import re
import tracemalloc
import types
import typing
from collections import Counter, defaultdict
from zoneinfo import ZoneInfo

import pytest

from schemas import records
from schemas.records import (
    TOPIC_RECORDS,
    CartChanged,
    CustomerChanged,
    FeedbackGiven,
    MessageEngagement,
    OrderChanged,
    PageViewed,
    ShipmentChanged,
)
from streams.ops.simulator import (
    CATALOG,
    DAY,
    HOUR,
    PRODUCTS,
    Behaviour,
    SimEvent,
    SimStats,
    SimulationConfig,
    generate,
    run,
)
from streams.settings import INPUT_TOPICS

START = 1_717_200_000_000  # 2024-06-01 00:00 UTC


def config(**overrides: typing.Any) -> SimulationConfig:
    values: dict[str, typing.Any] = {"seed": 42, "customers": 200, "start_ms": START}
    values.update(overrides)
    return SimulationConfig(**values)


@pytest.fixture(scope="module")
def whole_lives() -> list[SimEvent]:
    """2000 customers from arrival to the end of their lives: the basis of the ratio tests."""
    return list(generate(config(customers=2000)))


@pytest.fixture(scope="module")
def by_customer(whole_lives: list[SimEvent]) -> dict[str, list[SimEvent]]:
    grouped: dict[str, list[SimEvent]] = defaultdict(list)
    for event in whole_lives:
        grouped[event.key].append(event)
    return grouped


def of(events: list[SimEvent], kind: type) -> list[typing.Any]:
    return [e.record for e in events if isinstance(e.record, kind)]


# --- determinism and order ---------------------------------------------------------------------


def test_same_seed_gives_identical_events_and_another_seed_differs() -> None:
    first = list(generate(config()))
    assert first == list(generate(config()))
    other = list(generate(config(seed=43)))
    assert [e.record for e in other[:100]] != [e.record for e in first[:100]]


def test_horizon_cuts_the_same_stream() -> None:
    full = list(generate(config(customers=100)))
    cut = list(generate(config(customers=100, horizon_ms=3 * DAY)))
    assert cut == full[: len(cut)]
    assert cut and all(e.at_ms <= START + 3 * DAY for e in cut)
    assert full[len(cut)].at_ms > START + 3 * DAY


def test_events_come_out_in_time_order(whole_lives: list[SimEvent]) -> None:
    times = [e.at_ms for e in whole_lives]
    assert times == sorted(times)
    assert times[0] >= START
    # Customers arrive over the 14-day window and live at most ~400 days after that.
    assert times[-1] < START + 14 * DAY + 460 * DAY
    assert all(e.at_ms == e.record.occurred_at for e in whole_lives if e.record)


def test_event_ids_are_unique_and_keys_are_the_customer(whole_lives: list[SimEvent]) -> None:
    ids = [e.record.event_id for e in whole_lives if e.record]
    assert len(ids) == len(set(ids))
    for event in whole_lives:
        assert event.record is not None
        assert event.key == event.record.customer_id
        assert re.fullmatch(r"c-\d{6}", event.key)
        assert event.record.event_id.startswith(event.key + "-")


def test_customers_start_in_arrival_window(by_customer: dict[str, list[SimEvent]]) -> None:
    assert len(by_customer) == 2000
    firsts = sorted(events[0].at_ms for events in by_customer.values())
    assert firsts[0] >= START and firsts[-1] <= START + 14 * DAY
    # Spread over the window, not bunched at one end.
    assert firsts[len(firsts) // 2] - START == pytest.approx(7 * DAY, rel=0.15)


# --- causality per customer -----------------------------------------------------------------


def test_per_customer_causality(by_customer: dict[str, list[SimEvent]]) -> None:
    shipment_order = {"SHIPPED": 0, "OUT_FOR_DELIVERY": 1, "DELIVERY_FAILED": 2, "DELIVERED": 3}
    for events in by_customer.values():
        last_cart_event: dict[str, int] = {}
        placed: dict[str, int] = {}
        delivered: dict[str, int] = {}
        returned: dict[str, int] = {}
        cancelled: set[str] = set()
        ordered_carts: set[str | None] = set()
        shipment_step: dict[str, int] = {}
        erased = False
        for event in events:
            record = event.record
            assert not erased, f"{event.kind} after ERASED for {event.key}"
            if isinstance(record, CartChanged):
                assert record.cart_id not in ordered_carts, "cart changed after its order"
                last_cart_event[record.cart_id] = record.occurred_at
            elif isinstance(record, OrderChanged):
                if record.status == "PLACED":
                    assert record.cart_id in last_cart_event, "order without its cart"
                    assert last_cart_event[record.cart_id] <= record.occurred_at
                    placed[record.order_id] = record.occurred_at
                    ordered_carts.add(record.cart_id)
                elif record.status == "CANCELLED":
                    assert record.order_id in placed
                    assert record.order_id not in shipment_step, "cancelled after shipping"
                    cancelled.add(record.order_id)
                else:
                    assert record.order_id in returned, "refund without a return"
            elif isinstance(record, ShipmentChanged):
                assert record.order_id in placed and record.order_id not in cancelled
                if record.status == "RETURNED":
                    assert record.order_id in delivered
                    returned[record.order_id] = record.occurred_at
                    continue
                step = shipment_order[record.status]
                previous = shipment_step.get(record.order_id, -1)
                if record.status == "OUT_FOR_DELIVERY" and previous == 2:
                    pass  # the retry after a failed delivery
                elif record.status == "SHIPPED":
                    assert previous == -1
                else:
                    assert previous >= 0 and step > previous, (previous, record.status)
                shipment_step[record.order_id] = step
                if record.status == "DELIVERED":
                    delivered[record.order_id] = record.occurred_at
            elif isinstance(record, FeedbackGiven):
                assert record.order_id in delivered
                assert record.occurred_at >= delivered[record.order_id] + 3 * DAY
            elif isinstance(record, CustomerChanged) and record.action == "ERASED":
                erased = True


def test_erased_customers_stop(by_customer: dict[str, list[SimEvent]]) -> None:
    erased = [
        events
        for events in by_customer.values()
        if any(e.kind == "customer.erased" for e in events)
    ]
    assert 2 <= len(erased) <= 30  # ~0.5% of 2000
    for events in erased:
        assert events[-1].kind == "customer.erased"
        assert sum(e.kind == "customer.erased" for e in events) == 1


# --- realism ----------------------------------------------------------------------------------


def test_cart_abandonment_and_recovery(whole_lives: list[SimEvent]) -> None:
    carts: dict[str, list[int]] = defaultdict(list)
    for cart in of(whole_lives, CartChanged):
        if cart.action != "CHECKOUT_STARTED":
            carts[cart.cart_id].append(cart.occurred_at)
    ordered = {
        o.cart_id: o.occurred_at for o in of(whole_lives, OrderChanged) if o.status == "PLACED"
    }
    abandoned = sum(cart not in ordered for cart in carts)
    assert 0.6 <= abandoned / len(carts) <= 0.8
    # Carts that came back: ordered an hour or more after the last product went in or out.
    came_back = sum(ordered[c] - max(carts[c]) >= HOUR for c in ordered)
    assert 0.05 <= came_back / (abandoned + came_back) <= 0.15


def test_repeat_purchases(by_customer: dict[str, list[SimEvent]]) -> None:
    orders = {
        customer: [e.at_ms for e in events if e.kind == "order.placed"]
        for customer, events in by_customer.items()
    }
    buyers = [times for times in orders.values() if times]
    repeat = [times for times in buyers if len(times) > 1 and times[1] - times[0] <= 365 * DAY]
    third = [times for times in buyers if len(times) > 2]
    assert 0.2 <= len(buyers) / len(orders) <= 0.5
    assert len(repeat) / len(buyers) == pytest.approx(0.32, abs=0.05)
    assert 0.3 <= len(third) / len(repeat) <= 0.65
    gaps = [times[1] - times[0] for times in repeat]
    assert min(gaps) >= 19 * DAY


def test_order_lifecycle_ratios(whole_lives: list[SimEvent]) -> None:
    kinds = Counter(e.kind for e in whole_lives)
    placed = kinds["order.placed"]
    delivered_orders = kinds["shipment.delivered"]
    assert kinds["order.cancelled"] / placed == pytest.approx(0.04, abs=0.025)
    assert kinds["order.refunded"] / delivered_orders == pytest.approx(0.06, abs=0.03)
    assert kinds["order.refunded"] == kinds["shipment.returned"]
    assert kinds["shipment.delivery_failed"] / delivered_orders == pytest.approx(0.03, abs=0.02)
    assert kinds["feedback.nps"] / delivered_orders == pytest.approx(0.25, abs=0.05)
    assert kinds["feedback.review"] / delivered_orders == pytest.approx(0.15, abs=0.05)
    nps = [f.score for f in of(whole_lives, FeedbackGiven) if f.kind == "NPS"]
    assert sum(s >= 9 for s in nps) / len(nps) == pytest.approx(0.55, abs=0.1)
    assert sum(s <= 6 for s in nps) / len(nps) == pytest.approx(0.15, abs=0.08)
    mails = kinds["engagement.delivered"]
    assert kinds["engagement.opened"] / mails == pytest.approx(0.40, abs=0.06)
    assert kinds["engagement.clicked"] / mails == pytest.approx(0.10, abs=0.05)
    assert kinds["engagement.bounced"] / mails < 0.03


def test_shipping_times_depend_on_the_carrier(whole_lives: list[SimEvent]) -> None:
    placed = {
        o.order_id: o.occurred_at for o in of(whole_lives, OrderChanged) if o.status == "PLACED"
    }
    shipped: dict[str, tuple[str, int]] = {}
    transit: dict[str, list[int]] = defaultdict(list)
    for s in of(whole_lives, ShipmentChanged):
        assert s.carrier in {"PostNL", "DHL", "DPD", "UPS"}
        assert s.tracking_url == f"https://track.example/{s.carrier.lower()}/{s.tracking_code}"
        if s.status == "SHIPPED":
            assert 4 * HOUR <= s.occurred_at - placed[s.order_id] <= 48 * HOUR
            shipped[s.order_id] = (s.carrier, s.occurred_at)
        elif s.status == "DELIVERED":
            carrier, at = shipped[s.order_id]
            transit[carrier].append(s.occurred_at - at)
    average = {carrier: sum(times) / len(times) for carrier, times in transit.items()}
    assert set(average) == {"PostNL", "DHL", "DPD", "UPS"}
    assert max(average, key=lambda carrier: average[carrier]) == "DPD"
    assert all(DAY * 0.3 < t < 6 * DAY for times in transit.values() for t in times)


def test_profiles(by_customer: dict[str, list[SimEvent]]) -> None:
    known_at_first = sum(events[0].kind == "customer.updated" for events in by_customer.values())
    assert known_at_first / len(by_customer) == pytest.approx(0.60, abs=0.05)
    profiles = [
        e.record
        for events in by_customer.values()
        for e in events
        if isinstance(e.record, CustomerChanged) and e.record.action == "UPDATED"
    ]
    zones = Counter(p.time_zone for p in profiles)
    assert zones.most_common(1)[0][0] == "Europe/Amsterdam"
    for profile in profiles:
        assert profile.time_zone is not None
        ZoneInfo(profile.time_zone)
        assert profile.locale in {"nl-NL", "nl-BE", "en-GB", "en-US"}
        assert isinstance(profile.marketing_consent, bool)
    assert any(p.birthday is not None for p in profiles)


def test_catalog() -> None:
    assert len(CATALOG) == 10
    assert len(PRODUCTS) == 200 == len({p.product_id for p in PRODUCTS})
    assert all(p.price_minor > 0 for p in PRODUCTS)


# --- well-formed records --------------------------------------------------------------------


def contract_enums() -> dict[tuple[str, str], set[str]]:
    """The enum symbols listed in the comments of schemas/records.py, per (class, field)."""
    enums: dict[tuple[str, str], set[str]] = {}
    current = ""
    for line in inspect.getsource(records).splitlines():
        if match := re.match(r"class (\w+)", line):
            current = match.group(1)
        elif match := re.match(r"\s+(\w+): str\s+#\s*([A-Z_]+(?:,\s*[A-Z_]+)+)\s*$", line):
            enums[(current, match.group(1))] = {s.strip() for s in match.group(2).split(",")}
    return enums


def conforms(value: object, hint: typing.Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return any(conforms(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        assert isinstance(value, list)
        return all(conforms(item, typing.get_args(hint)[0]) for item in value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return isinstance(value, hint) and well_typed(value)
    return isinstance(value, hint)


_HINTS: dict[type, dict[str, typing.Any]] = {}


def well_typed(record: object) -> bool:
    cls = type(record)
    hints = _HINTS.get(cls) or _HINTS.setdefault(cls, typing.get_type_hints(cls))
    return all(
        conforms(getattr(record, f.name), hints[f.name])
        for f in dataclasses.fields(record)  # type: ignore[arg-type]
    )


def test_records_are_well_formed(whole_lives: list[SimEvent]) -> None:
    enums = contract_enums()
    expected = {
        ("PageViewed", "page_type"),
        ("CartChanged", "action"),
        ("OrderChanged", "status"),
        ("ShipmentChanged", "status"),
        ("FeedbackGiven", "kind"),
        ("MessageEngagement", "action"),
        ("MessageEngagement", "channel"),
        ("CustomerChanged", "action"),
    }
    assert expected <= set(enums)
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    products = {p.product_id: p for p in PRODUCTS}
    assert {e.topic for e in whole_lives} == set(INPUT_TOPICS)
    for event in whole_lives:
        record = event.record
        assert record is not None and event.raw is None
        assert type(record) is TOPIC_RECORDS[event.topic]
        assert well_typed(record), record
        name = type(record).__name__
        for (cls, attribute), allowed in enums.items():
            if cls == name:
                value = getattr(record, attribute)
                assert value in allowed, (name, attribute, value)
                seen[(cls, attribute)].add(value)
        if isinstance(record, OrderChanged):
            assert record.items and record.currency == "EUR"
            assert record.total_minor == sum(i.quantity * i.unit_price_minor for i in record.items)
            for item in record.items:
                assert item.unit_price_minor == products[item.product_id].price_minor
                assert item.category == products[item.product_id].category
        elif isinstance(record, CartChanged):
            if record.action == "CHECKOUT_STARTED":
                assert record.product_id is None
            else:
                assert record.product_id in products and record.currency == "EUR"
                assert record.quantity is not None and record.quantity >= 1
        elif isinstance(record, PageViewed):
            assert record.url.startswith("https://shop.example/")
            assert (record.product_id is not None) == (record.page_type == "PRODUCT")
        elif isinstance(record, FeedbackGiven):
            assert 0 <= record.score <= (10 if record.kind == "NPS" else 5)
            if record.kind == "REVIEW":
                assert record.score >= 1 and record.product_id in products
        elif isinstance(record, MessageEngagement):
            assert record.trigger_id is None
    # Every symbol the pipeline has to handle shows up, bar the rare engagement ones.
    rare = {"COMPLAINED", "RESUBSCRIBED", "SMS", "PUSH"}
    for key in expected:
        assert seen[key] >= enums[key] - rare, key
    assert "EMAIL" in seen[("MessageEngagement", "channel")]


def test_orders_match_their_cart(whole_lives: list[SimEvent]) -> None:
    lines: dict[str, dict[str, int]] = defaultdict(dict)
    for cart in of(whole_lives, CartChanged):
        if cart.action == "PRODUCT_ADDED":
            lines[cart.cart_id][cart.product_id] = cart.quantity
        elif cart.action == "PRODUCT_REMOVED":
            del lines[cart.cart_id][cart.product_id]
    for order in of(whole_lives, OrderChanged):
        if order.status == "PLACED":
            assert {i.product_id: i.quantity for i in order.items} == lines[order.cart_id]


# --- malformed payloads -----------------------------------------------------------------------


def test_bad_event_rate_adds_raw_payloads_without_changing_the_rest() -> None:
    clean = list(generate(config(customers=100)))
    assert all(e.raw is None for e in clean)
    noisy = list(generate(config(customers=100, bad_event_rate=0.05)))
    bad = [e for e in noisy if e.record is None]
    assert [e for e in noisy if e.record is not None] == clean
    assert len(bad) / len(clean) == pytest.approx(0.05, abs=0.015)
    kinds = Counter[str]()
    for event in bad:
        assert event.kind == "bad" and isinstance(event.raw, bytes)
        assert event.topic in INPUT_TOPICS and re.fullmatch(r"c-\d{6}", event.key)
        if event.raw == b"not avro":
            kinds["text"] += 1
        elif event.raw.startswith(b"\xc3\x01"):
            assert len(event.raw) < 10  # the 8-byte fingerprint is cut short
            kinds["truncated"] += 1
        else:
            body = json.loads(event.raw)
            record_type = TOPIC_RECORDS[event.topic]
            names = {f.name for f in dataclasses.fields(record_type)}
            if "TELEPORTED" in body.values():
                kinds["enum"] += 1
            else:
                assert set(body) < names
                kinds["missing"] += 1
    assert set(kinds) == {"text", "truncated", "enum", "missing"}


# --- config ------------------------------------------------------------------------------------


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        config(bad_event_rate=1.5)
    with pytest.raises(ValueError):
        config(customers=-1)
    with pytest.raises(ValueError):
        Behaviour(cart_abandoned=1.2)
    assert list(generate(config(customers=0))) == []


def test_behaviour_is_a_parameter() -> None:
    eager = Behaviour(cart_abandoned=0.3, abandoned_cart_recovered=0.0)
    events = list(generate(config(customers=300, behaviour=eager)))
    carts = {c.cart_id for c in of(events, CartChanged)}
    ordered = {o.cart_id for o in of(events, OrderChanged) if o.status == "PLACED"}
    assert (len(carts) - len(ordered)) / len(carts) == pytest.approx(0.3, abs=0.08)


# --- memory ------------------------------------------------------------------------------------


def test_generation_is_lazy_for_many_customers() -> None:
    tracemalloc.start()
    try:
        taken = list(itertools.islice(generate(config(customers=100_000)), 10_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(taken) == 10_000
    # Whole lives of 100k customers are ~2.3M events; the first 10k need only the first few
    # hundred customers, so memory stays at a few MB.
    assert len({e.key for e in taken}) < 2_000
    assert peak < 30_000_000


# --- the paced driver -------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps += 1
        self.now += seconds


async def test_run_follows_simulated_time_at_speed() -> None:
    clock = FakeClock()
    sent: list[tuple[float, SimEvent]] = []

    async def send(event: SimEvent) -> None:
        sent.append((clock.now, event))

    speed = 3600.0  # a simulated hour per wall second
    cfg = config(customers=30, horizon_ms=2 * DAY)
    stats = await run(cfg, send, rate=0, speed=speed, clock=clock, sleep=clock.sleep)
    assert [e for _, e in sent] == list(generate(cfg))
    for wall, event in sent:
        assert wall == pytest.approx(1000.0 + (event.at_ms - START) / 1000 / speed, abs=1e-6)
    assert stats.events == len(sent)
    assert stats.wall_seconds == pytest.approx(clock.now - 1000.0)
    assert stats.sim_reached_ms == sent[-1][1].at_ms


async def test_run_never_exceeds_the_rate_and_honours_max_events() -> None:
    clock = FakeClock()
    walls: list[float] = []

    async def send(event: SimEvent) -> None:
        walls.append(clock.now)

    # Far behind schedule (huge speed): the rate is the only limit.
    stats = await run(
        config(), send, rate=10, speed=1e9, max_events=50, clock=clock, sleep=clock.sleep
    )
    assert stats.events == len(walls) == 50
    gaps = [b - a for a, b in itertools.pairwise(walls)]
    assert min(gaps) == pytest.approx(0.1)
    assert walls[-1] - walls[0] == pytest.approx(4.9)


async def test_run_allows_short_bursts_but_keeps_the_average_rate() -> None:
    clock = FakeClock()
    walls: list[float] = []

    async def send(event: SimEvent) -> None:
        walls.append(clock.now)

    cfg = config(customers=1000)
    await run(cfg, send, rate=1000, speed=0, max_events=5000, clock=clock, sleep=clock.sleep)
    assert len(walls) == 5000
    elapsed = walls[-1] - walls[0]
    assert 4.9 <= elapsed <= 5.0
    # No window of 0.1 s holds more than 100 events plus the 50-event burst.
    for i in range(0, 5000 - 151, 97):
        assert walls[i + 150] - walls[i] > 0.1


async def test_run_unlimited_and_progress() -> None:
    clock = FakeClock()
    count = 0
    progress: list[int] = []

    async def send(event: SimEvent) -> None:
        nonlocal count
        count += 1
        clock.now += 0.001  # sending takes a millisecond of wall time

    stats = await run(
        config(customers=50),
        send,
        rate=0,
        speed=0,
        on_progress=lambda s: progress.append(s.events),
        clock=clock,
        sleep=clock.sleep,
    )
    assert count == stats.events == len(list(generate(config(customers=50))))
    assert progress and progress == sorted(progress)
    assert stats.customers_started == 50


async def test_stats_summary() -> None:
    clock = FakeClock()

    async def send(event: SimEvent) -> None:
        clock.now += 0.0001

    stats = await run(
        config(bad_event_rate=0.01), send, rate=0, speed=0, clock=clock, sleep=clock.sleep
    )
    assert stats.carts_created == stats.carts_converted + stats.carts_abandoned
    assert stats.orders == stats.by_kind["order.placed"] >= stats.carts_converted
    assert stats.bad == stats.by_kind["bad"] > 0
    text = stats.summary()
    for topic, count in stats.by_topic.items():
        assert re.search(rf"^{topic}\s+{count:,}$", text, re.MULTILINE), topic
    assert "order.placed" in text and "customers   200 started" in text


def test_stats_observe_counts_carts_once() -> None:
    stats = SimStats(start_ms=START)
    for event in generate(config(customers=20)):
        stats.observe(event)
    carts = {c.cart_id for c in of(list(generate(config(customers=20))), CartChanged)}
    assert stats.carts_created == len(carts)


def test_each_simulation_option_has_one_default() -> None:
    """`journey run`/`simulate`, the runner and SimulationConfig agree (they once said 2000,
    2000 and 1000 customers)."""
    from streams.ops.cli import simulate
    from streams.ops.runner import SimulationOptions

    cli = {p.name: p.default for p in simulate.params}
    options = SimulationOptions()
    library = SimulationConfig(start_ms=START)
    assert cli["seed"] == options.seed == library.seed
    assert cli["customers"] == options.customers == library.customers == 2000
    assert (cli["rate"], cli["speed"]) == (options.rate, options.speed)
    assert cli["bad_rate"] == options.bad_event_rate
