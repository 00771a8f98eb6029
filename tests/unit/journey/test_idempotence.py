"""Idempotence that does not depend on the recent-event-id memory (issue 11, item 3).

An order, shipment or feedback event delivered again long after (the per-customer memory of
recent event ids has moved on, here: 200 page views later) changes no count, no revenue, no
stage and decides no trigger a second time. How each kind is made idempotent:

* ``OrderChanged``: PLACED once per ``order_id`` (a known order placed again changes nothing);
  CANCELLED is a flag; REFUNDED by the refund's ``event_id``, kept with its order.
* ``ShipmentChanged``: SHIPPED once per ``shipment_id``; DELIVERED schedules the post-delivery
  series once per order (a later copy only moves the delivery time earlier); RETURNED a flag.
* ``FeedbackGiven``: its own memory of answer ids per customer (``feedback_seen``, 32 answers),
  apart from the recent ids that page views flush.
"""

from __future__ import annotations

import msgspec
import orjson
import pytest

from streams.journey.state import decode_state, encode_state
from streams.journey.triggers import TriggerType as T
from tests.unit.journey.support import (
    DAY,
    HOUR,
    MINUTE,
    Sim,
    cancelled,
    cart_add,
    delivered,
    json_v3_row,
    nps,
    placed,
    refunded,
    review,
    shipped,
    view,
)

B = 1_717_488_000_000


def rows(names: str, *values: tuple[object, ...]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize(names, values, ids=[str(v[0]) for v in values])


def flush_recent_ids(sim: Sim, at: int) -> None:
    for i in range(200):
        sim.send(view(at + i * MINUTE, f"p{i}", page_type="HOME", event_id=f"flush-{at}-{i}"))
    assert len(sim.state.seen) == sim.config.seen_event_ids_per_customer


def outcome(sim: Sim) -> tuple[object, ...]:
    s = sim.state
    return (
        s.orders_count,
        s.revenue_minor,
        s.stage,
        s.last_nps,
        s.unengaged,
        len(sim.emitted()),
        len(sim.dropped()),
    )


@rows(
    "name, history, again",
    ("placed", (placed(B, event_id="p"), shipped(B + HOUR)), placed(B, event_id="p")),
    ("placed_with_another_id", (placed(B, event_id="p"), shipped(B + HOUR)), placed(B, event_id="p2")),
    ("cancelled", (placed(B), cancelled(B + HOUR, event_id="c")), cancelled(B + HOUR, event_id="c")),
    ("refunded_in_part", (placed(B), refunded(B + HOUR, amount=1_000, event_id="r")), refunded(B + HOUR, amount=1_000, event_id="r")),
    ("refunded_in_full", (placed(B), refunded(B + HOUR, event_id="r")), refunded(B + HOUR, event_id="r")),
    ("shipped", (placed(B), shipped(B + HOUR, event_id="s")), shipped(B + HOUR, event_id="s")),
    ("delivered", (placed(B), shipped(B + HOUR), delivered(B + DAY, event_id="d")), delivered(B + DAY, event_id="d")),
    ("nps_promoter", (placed(B), nps(B + DAY, 10, event_id="n")), nps(B + DAY, 10, event_id="n")),
    ("review_detractor", (placed(B), review(B + DAY, 1, event_id="v")), review(B + DAY, 1, event_id="v")),
)  # fmt: skip
def test_delivered_again_long_after_changes_nothing(
    name: str, history: tuple, again: object
) -> None:
    sim = Sim().play(history)
    later = B + 2 * DAY
    flush_recent_ids(sim, later)
    # Something else happens in between, so that a replay would show (the stage moves on).
    sim.send(cart_add(later + 300 * MINUTE, "p-new", cart="k-new", event_id="between"))
    before = outcome(sim)
    sim.send(again, now=later + 301 * MINUTE)  # type: ignore[arg-type]
    assert outcome(sim) == before


def test_two_different_refunds_both_count() -> None:
    sim = Sim().play(
        (placed(B, total=5_000), refunded(B + HOUR, amount=1_000, event_id="r1"),
         refunded(B + 2 * HOUR, amount=1_000, event_id="r2"))
    )  # fmt: skip
    assert (sim.state.orders_count, sim.state.revenue_minor) == (1, 3_000)


def test_the_new_memories_survive_the_state_encoding() -> None:
    sim = Sim().play(
        (placed(B), refunded(B + HOUR, amount=100, event_id="r"), nps(B + DAY, 9, event_id="n"))
    )
    state = decode_state(encode_state(sim.state))
    assert state.orders["o1"].refund_ids == ["r"]
    assert state.feedback_seen == ["n"]
    assert len(sim.emitted(T.REFERRAL_INVITE)) == 1


def test_a_state_stored_before_these_memories_still_decodes() -> None:
    sim = Sim().play((placed(B), nps(B + DAY, 9, event_id="n")))
    row = json_v3_row(sim.state)
    del row[28:]  # feedback_seen (and what came after it)
    for order in row[8]:
        order.pop()  # refund_ids
    state = decode_state(orjson.dumps(row))
    assert state.feedback_seen == [] and state.orders["o1"].refund_ids == []
    assert state.orders_count == 1


def test_a_field_added_at_the_end_of_a_part_decodes_as_its_default() -> None:
    """How a later release adds a field to an order, cart or timer: at the end, with a default.
    A state stored without it decodes with the default (MessagePack, this version)."""
    sim = Sim().play((placed(B), refunded(B + HOUR, amount=100, event_id="r")))
    version, fields = msgspec.msgpack.decode(encode_state(sim.state))
    for order in fields[7].values():  # the orders
        order.pop()  # refund_ids
    state = decode_state(msgspec.msgpack.encode([version, fields]))
    assert state.orders["o1"].refund_ids == [] and state.orders["o1"].refunded_minor == 100
