"""A customer's journey: what the model remembers between events, and its compact encoding.

Everything is plain data (times in epoch milliseconds) so that the state can be stored in a
changelogged Faust table and moved with its partition. The encoding is a positional JSON array
(orjson): small, fast, and versioned by its first element.

The state also carries its **outbox**: the trigger decisions the customer's messages caused
that are not yet known to be stored in ClickHouse and acknowledged by the broker. The model
never reads it; the engine appends to it, re-sends it after a crash and trims it once durable
(see ``streams/runtime/engine.py``), so a state in the changelog is never ahead of what it caused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.journey.decisions import Reason, Stage

STATE_VERSION = 3
# Version 1 had no outbox (its two trailing fields); version 3 dropped three fields nothing read
# (the last product view, the state's updated_at, a cart's last change event): their slots stay,
# null, so positions never move. Every version still decodes.
_READABLE_VERSIONS = (1, 2, 3)
# The outbox's slot in the encoded row (versions 2 and 3): the engine trims it in place.
OUTBOX_AT = 26


@dataclass(slots=True)
class Order:
    order_id: str
    placed_at: int | None = None
    total_minor: int = 0
    currency: str = ""
    categories: list[str] = field(default_factory=list)
    cart_id: str | None = None
    cancelled: bool = False
    refunded_minor: int = 0
    refunded: bool = False  # fully refunded: no longer a purchase
    returned: bool = False
    delivered_at: int | None = None
    reviewed: bool = False
    confirmed: bool = False
    post_delivery_scheduled: bool = False
    shipments_notified: list[str] = field(default_factory=list)
    # Event ids of the refunds applied: a refund delivered again is not subtracted twice.
    refund_ids: list[str] = field(default_factory=list)

    @property
    def counts(self) -> bool:
        """A purchase: placed, not cancelled, not fully refunded."""
        return self.placed_at is not None and not self.cancelled and not self.refunded


@dataclass(slots=True)
class Cart:
    cart_id: str
    lines: dict[str, int] = field(default_factory=dict)  # product_id -> quantity
    categories: dict[str, str] = field(default_factory=dict)  # product_id -> category
    value_minor: int = 0
    currency: str = ""
    last_change_at: int = 0
    reminders_emitted: int = 0
    ordered: bool = False


@dataclass(slots=True)
class Timer:
    """A trigger waiting for its time. ``fire_at`` moves when a rule defers it."""

    trigger_id: str
    trigger_type: str
    due_at: int  # when it was meant to go out
    fire_at: int  # when it is evaluated next (due_at, or the deferred time)
    source_event_id: str
    order_id: str | None = None
    cart_id: str | None = None
    shipment_id: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class JourneyState:
    customer_id: str
    stage: Stage = Stage.AWARENESS
    erased: bool = False
    first_seen_at: int | None = None
    consent: bool | None = None  # None: never said; the setting decides
    blocked: Reason | None = None  # BOUNCED or COMPLAINED: marketing stops
    time_zone: str | None = None
    orders: dict[str, Order] = field(default_factory=dict)
    carts: dict[str, Cart] = field(default_factory=dict)
    first_order_at: int | None = None
    last_order_at: int | None = None  # of orders that count
    last_order_id: str | None = None
    orders_count: int = 0
    revenue_minor: int = 0
    last_nps: int | None = None
    last_cart_add_at: int | None = None
    last_marketing_at: int | None = None
    unengaged: int = 0  # marketing triggers emitted since the last open, click or order
    last_emitted: dict[str, int] = field(default_factory=dict)  # trigger type -> time
    win_back_order: str | None = None  # the lapse (after this order) that has its win-back
    seen: list[str] = field(default_factory=list)  # recent event_ids, oldest first
    # Feedback answers applied, kept apart from ``seen`` (which page views flush within hours):
    # an answer delivered again long after changes no stage and decides no trigger again.
    feedback_seen: list[str] = field(default_factory=list)
    timers: dict[str, Timer] = field(default_factory=dict)  # key -> timer
    # Outputs not yet durable: [sequence, triggers-table row without lineage, Trigger fields or
    # None]. ``outbox_seq`` numbers them, so the engine can tell which ones a flush stored.
    outbox: list[list[Any]] = field(default_factory=list)
    outbox_seq: int = 0
    # The newest lifetime-value prediction (journey.predictions): [fitted_at, probability_alive,
    # expected_orders_90d, predicted_clv_minor, expected_next_order_at or None], or None.
    prediction: list[Any] | None = None

    def next_fire_at(self) -> int | None:
        # A loop, not ``min(...)`` over a generator: three calls per fired timer.
        first = None
        for timer in self.timers.values():
            if first is None or timer.fire_at < first:
                first = timer.fire_at
        return first


# --- encoding -------------------------------------------------------------------------------
def _order_row(o: Order) -> list[Any]:
    return [
        o.order_id, o.placed_at, o.total_minor, o.currency, o.categories, o.cart_id,
        o.cancelled, o.refunded_minor, o.refunded, o.returned, o.delivered_at, o.reviewed,
        o.confirmed, o.post_delivery_scheduled, o.shipments_notified, o.refund_ids,
    ]  # fmt: skip


def _cart_row(c: Cart) -> list[Any]:
    return [
        c.cart_id, c.lines, c.categories, c.value_minor, c.currency, c.last_change_at,
        c.reminders_emitted, c.ordered,
    ]  # fmt: skip


def _timer_row(t: Timer) -> list[Any]:
    return [
        t.trigger_id, t.trigger_type, t.due_at, t.fire_at, t.source_event_id, t.order_id,
        t.cart_id, t.shipment_id, t.attributes,
    ]  # fmt: skip


def _head(s: JourneyState) -> list[Any]:
    """The encoded row before the outbox (``OUTBOX_AT`` slots)."""
    return [
            STATE_VERSION, s.customer_id, s.stage, s.erased, s.first_seen_at, s.consent,
            s.blocked, s.time_zone, [_order_row(o) for o in s.orders.values()],
            [_cart_row(c) for c in s.carts.values()], s.first_order_at, s.last_order_at,
            s.last_order_id, s.orders_count, s.revenue_minor, s.last_nps,
            None, s.last_cart_add_at, s.last_marketing_at, s.unengaged,
            s.last_emitted, s.win_back_order, s.seen, [_timer_row(t) for t in s.timers.values()],
            None, [*s.timers],
    ]  # fmt: skip


def _tail(s: JourneyState) -> list[Any]:
    """The encoded row after the outbox."""
    return [s.outbox_seq, s.feedback_seen, s.prediction]


def encode_state(state: JourneyState) -> bytes:
    return orjson.dumps([*_head(state), state.outbox, *_tail(state)])


def encode_state_outbox(state: JourneyState) -> tuple[bytes, int, int]:
    """``encode_state(state)`` (the same bytes) and where its outbox's JSON starts and ends in
    them: the engine drops an outbox that became durable from the bytes, without decoding them
    (``b"[]"`` in its place gives the bytes of the same state with an empty outbox)."""
    outbox = orjson.dumps(state.outbox)
    tail = _tail(state)
    data = orjson.dumps([*_head(state), orjson.Fragment(outbox), *tail])
    end = len(data) - len(orjson.dumps(tail))  # the tail's "[" stands for the "," before it
    return data, end - len(outbox), end


_STAGES = {stage.value: stage for stage in Stage}  # faster than Stage(value)
_REASONS = {reason.value: reason for reason in Reason}


def decode_state(data: bytes) -> JourneyState:
    row = orjson.loads(data)
    version = row[0]
    if version not in _READABLE_VERSIONS:
        raise ValueError(f"journey state version {version} is not one of {_READABLE_VERSIONS}")
    (
        _, customer_id, stage, erased, first_seen_at, consent, blocked, time_zone, orders,
        carts, first_order_at, last_order_at, last_order_id, orders_count, revenue_minor,
        last_nps, _, last_cart_add_at, last_marketing_at, unengaged,
        last_emitted, win_back_order, seen, timers, _, timer_keys, *rest,
    ) = row  # fmt: skip
    # Version 1 ends here; the outbox (at OUTBOX_AT) and then the fields appended after it.
    outbox, outbox_seq, *rest = rest if version >= 2 else ([], 0)
    feedback_seen = rest[0] if rest else []
    prediction = rest[1] if len(rest) > 1 else None
    if version < 3:  # before version 3 a cart row held its last change event (slot 6)
        carts = [[*c[:6], *c[7:]] for c in carts]
    # Positional, in JourneyState's field order (keywords cost a third of the decoding; the
    # round-trip tests catch a field moved in one place only).
    return JourneyState(
        customer_id, _STAGES[stage], erased, first_seen_at, consent,
        None if blocked is None else _REASONS[blocked], time_zone,
        {o[0]: Order(*o) for o in orders}, {c[0]: Cart(*c) for c in carts},
        first_order_at, last_order_at, last_order_id, orders_count, revenue_minor, last_nps,
        last_cart_add_at, last_marketing_at, unengaged, last_emitted, win_back_order, seen,
        feedback_seen, {key: Timer(*t) for key, t in zip(timer_keys, timers, strict=True)},
        outbox, outbox_seq, prediction,
    )  # fmt: skip
