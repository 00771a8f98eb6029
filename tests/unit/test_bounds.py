"""Bounds at the door: every poison pill is rejected with a reason; real traffic is not."""

from __future__ import annotations

import pytest

from schemas.bounds import MAX_ITEMS, MAX_MONEY_MINOR, bounds_problem
from schemas.records import (
    CartChanged,
    CustomerChanged,
    FeedbackGiven,
    InputEvent,
    OrderChanged,
    OrderItem,
    PageViewed,
    ShipmentChanged,
)
from streams.ops.simulator import SimulationConfig, generate
from streams.runtime.ingest import semantic_problem

T = 1_780_000_000_000
BIG = 2**63 - 1  # Avro long's largest
INT32_MAX = 2**31 - 1  # Avro int's largest (quantities)


def order(total: int = 1_000, items: list[OrderItem] | None = None) -> OrderChanged:
    return OrderChanged("e", "c", T, "o", "PLACED", total, "EUR", items or [])


def cart(quantity: int | None = 1, price: int | None = 100) -> CartChanged:
    return CartChanged("e", "c", T, "k", "PRODUCT_ADDED", "p", "shoes", quantity, price, "EUR")


PILLS: list[tuple[str, InputEvent, str]] = [
    ("line overflows Int64", cart(4, 2**62), "unit_price_minor"),
    ("order total at Int64 max", order(BIG), "total_minor"),
    ("money just above the bound", order(MAX_MONEY_MINOR + 1), "total_minor"),
    ("negative money", cart(1, -1), "unit_price_minor"),
    ("quantity at the Avro int max", cart(INT32_MAX, 1), "quantity"),
    ("negative quantity", cart(-1, 1), "quantity"),
    ("item quantity", order(items=[OrderItem("p", INT32_MAX, 1)]), "items[0].quantity"),
    ("item price", order(items=[OrderItem("p", 1, BIG)]), "items[0].unit_price_minor"),
    (
        "items add up beyond Int64",
        order(items=[OrderItem("p", 10**6, MAX_MONEY_MINOR)] * 10),
        "add up",
    ),
    ("deep array", order(items=[OrderItem("p", 1, 1)] * (MAX_ITEMS + 1)), "entries"),
    ("time near Int64 max", PageViewed("e", "c", BIG - 1000, "s", "HOME", "u"), "occurred_at"),
    ("year 97036", FeedbackGiven("e", "c", 3_000_000_000_000_000, "NPS", 9), "occurred_at"),
    ("year 2201", PageViewed("e", "c", 7_300_000_000_000, "s", "HOME", "u"), "occurred_at"),
    ("huge id", PageViewed("e", "c", T, "s", "PRODUCT", "u", "p" * 100_000), "product_id"),
    ("huge url", PageViewed("e", "c", T, "s", "HOME", "u" * 100_000), "url"),
    ("huge event id", PageViewed("e" * 10_000, "c", T, "s", "HOME", "u"), "event_id"),
    ("huge comment", FeedbackGiven("e", "c", T, "REVIEW", 1, None, "p", "x" * 20_000), "comment"),
    (
        "huge tracking url",
        ShipmentChanged("e", "c", T, "o", "s", "SHIPPED", "DHL", "x", "u" * 20_000),
        "tracking_url",
    ),
    ("birthday far away", CustomerChanged("e", "c", T, "UPDATED", birthday=10**9), "birthday"),
]


@pytest.mark.parametrize(("name", "record", "field"), PILLS, ids=[p[0] for p in PILLS])
def test_each_poison_pill_is_rejected_naming_its_field(
    name: str, record: InputEvent, field: str
) -> None:
    problem = semantic_problem(record)
    assert problem is not None and field in problem, problem
    assert len(problem) < 300  # the reason quotes no huge value


def test_limits_themselves_are_accepted() -> None:
    coupon = OrderChanged("e", "c", T, "o", "PLACED", 1, "EUR", [], None, "X" * 3_000)
    assert bounds_problem(coupon) is None  # long text is fine, only absurd text is not
    assert bounds_problem(cart(10**6, MAX_MONEY_MINOR)) is None
    assert bounds_problem(order(MAX_MONEY_MINOR, [OrderItem("p", 1, 1)] * MAX_ITEMS)) is None


def test_simulated_traffic_passes_the_bounds() -> None:
    config = SimulationConfig(seed=3, customers=300, start_ms=T)
    events = [e.record for e in generate(config) if e.record is not None]
    assert len(events) > 3_000
    assert [r for r in events if semantic_problem(r) is not None] == []


def _reference(record: object, prefix: str = "") -> str | None:
    """The check field by field, without the per-type plan: what ``bounds_problem`` must say."""
    import dataclasses

    from schemas import bounds

    for item in dataclasses.fields(record):  # type: ignore[arg-type]
        value = getattr(record, item.name)
        if value is not None:
            problem = bounds._field_problem(prefix + item.name, item.name, value)
            if problem is not None:
                return problem
    return bounds._totals_problem(record, prefix)


def test_the_per_type_plan_says_what_the_field_by_field_check_says_at_every_edge() -> None:
    import dataclasses

    from schemas import bounds

    edges = {
        "occurred_at": [0, 1, bounds.MAX_TIME_MS - 1, bounds.MAX_TIME_MS, -5],
        "total_minor": [-1, 0, MAX_MONEY_MINOR, MAX_MONEY_MINOR + 1, True],
        "unit_price_minor": [-1, 0, MAX_MONEY_MINOR, MAX_MONEY_MINOR + 1],
        "quantity": [-1, 0, bounds.MAX_QUANTITY, bounds.MAX_QUANTITY + 1],
        "product_id": ["", "p" * bounds.MAX_ID_CHARS, "p" * (bounds.MAX_ID_CHARS + 1)],
        "url": ["u" * bounds.MAX_TEXT_CHARS, "u" * (bounds.MAX_TEXT_CHARS + 1)],
        "currency": ["E" * bounds.MAX_ID_CHARS, "E" * (bounds.MAX_ID_CHARS + 1)],
    }
    config = SimulationConfig(seed=3, customers=200, start_ms=T)
    base = [e.record for e in generate(config) if e.record is not None][:600]
    checked = 0
    for record in base:
        assert bounds_problem(record) == _reference(record)
        for name, values in edges.items():
            if name not in {f.name for f in dataclasses.fields(record)}:
                continue
            for value in values:
                changed = dataclasses.replace(record, **{name: value})
                assert bounds_problem(changed) == _reference(changed), (name, value)
                checked += 1
    assert checked > 1_000
