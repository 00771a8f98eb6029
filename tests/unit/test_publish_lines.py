"""`journey publish`: JSON lines -> validated contract records, stamped with the journey clock."""

from __future__ import annotations

import json

import pytest

from schemas.codec import Codec
from schemas.records import CartChanged, OrderChanged
from streams.clock import Clock
from streams.ops.publish import PublishError, records_from_lines

CODEC = Codec.load()
ORDER = {
    "event_id": "e-1",
    "customer_id": "c-1",
    "occurred_at": "2026-11-26T10:00:00Z",
    "order_id": "o-1",
    "status": "PLACED",
    "total_minor": 100,
    "currency": "EUR",
}


def test_lines_become_records_keyed_by_customer() -> None:
    cart = {"topic": "shop.cart", "customer_id": "c-2", "cart_id": "k", "action": "PRODUCT_ADDED"}
    out = list(
        records_from_lines(
            [json.dumps(ORDER), "", json.dumps(cart)], CODEC, "orders", lambda: 5, stamp=False
        )
    )
    assert [(topic, key) for topic, key, _ in out] == [("orders", "c-1"), ("cart", "c-2")]
    order = CODEC.decode(out[0][2], OrderChanged)
    assert order.occurred_at == 1_795_687_200_000  # the line's own time, kept
    added = CODEC.decode(out[1][2], CartChanged)
    assert added.occurred_at == 5  # missing: now on the journey clock
    assert added.event_id.startswith("publish-")


def test_stamping_uses_the_demo_clock() -> None:
    demo = Clock(20_000, epoch_ms=1_000_000_000_000, wall_ms=lambda: 1_000_000_001_000)
    ((_, _, value),) = records_from_lines(
        [json.dumps(ORDER)], CODEC, "orders", demo.now_ms, stamp=True
    )
    assert CODEC.decode(value, OrderChanged).occurred_at == 1_000_000_000_000 + 1_000 * 20_000


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{nope", "line 1: not JSON"),
        ("[1]", "line 1: a JSON object is expected"),
        ('{"topic": "returns"}', "unknown topic 'returns'"),
        (json.dumps({**ORDER, "status": "LOST"}), "line 1: OrderChanged v1"),
    ],
)
def test_bad_lines_are_named(line: str, message: str) -> None:
    with pytest.raises(PublishError, match=message):
        list(
            records_from_lines(
                [line], CODEC, "orders" if "order_id" in line else None, lambda: 0, stamp=False
            )
        )
