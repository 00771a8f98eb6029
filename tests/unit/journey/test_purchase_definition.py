"""The contract's one definition of a purchase, as the customer snapshot keeps it: an order
PLACED and not cancelled or fully refunded, whatever its amount. The views (`orders`, `buyers`)
use the same definition; tests/integration/test_views.py checks that they agree."""

from __future__ import annotations

import pytest

from schemas.records import InputEvent
from tests.unit.journey.support import BASE as B
from tests.unit.journey.support import DAY, HOUR, Sim, cancelled, placed, refunded

CASES = [
    # name, events, orders_count, revenue_minor, first_order_at
    ("free_order", (placed(B, total=0),), 1, 0, B),
    ("free_order_refunded", (placed(B, total=0), refunded(B + DAY, amount=0)), 0, 0, None),
    ("free_order_refund_first", (refunded(B + DAY, amount=0), placed(B, total=0)), 0, 0, None),
    ("zero_refund", (placed(B), refunded(B + DAY, amount=0)), 1, 5_000, B),
    ("zero_refund_first", (refunded(B + DAY, amount=0), placed(B)), 1, 5_000, B),
    ("free_then_paid", (placed(B, total=0), placed(B + DAY, "o2")), 2, 5_000, B),
    ("first_cancelled_later",
     (placed(B), placed(B + DAY, "o2"), cancelled(B + 2 * DAY)), 1, 5_000, B + DAY),
    ("first_refunded_later",
     (placed(B), placed(B + DAY, "o2"), refunded(B + 2 * DAY)), 1, 5_000, B + DAY),
    ("only_order_cancelled", (placed(B), cancelled(B + HOUR)), 0, 0, None),
    ("earlier_order_arrives_late", (placed(B + DAY, "o2"), placed(B)), 2, 10_000, B),
]  # fmt: skip


@pytest.mark.parametrize(("name", "events", "orders", "revenue", "first"), CASES)
def test_purchase_definition(
    name: str, events: tuple[InputEvent, ...], orders: int, revenue: int, first: int | None
) -> None:
    state = Sim().play(events).state
    assert (state.orders_count, state.revenue_minor, state.first_order_at) == (
        orders,
        revenue,
        first,
    )


def test_a_forgotten_first_order_keeps_its_time() -> None:
    """Beyond max_orders_kept the oldest orders are forgotten; the first purchase stays."""
    sim = Sim()
    sim.play(tuple(placed(B + n * DAY, f"o{n}") for n in range(25)))
    assert sim.state.first_order_at == B
    assert sim.state.orders_count == 25
