"""The records a journey worker publishes about what it knows, built from the model's values.

One definition each: the canonical event (``journey.events``), a decision (``journey.decisions``)
and the customer snapshot (``journey.customers``). Each is a row of values in its record's field
order, encoded with ``Codec.row_encoder`` (no record instance is built on the way). The loader
stores them in ClickHouse as they are (``sinks/clickhouse/rows.py``); any other consumer reads
the same records.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from schemas.records import (
    CartChanged,
    CustomerChanged,
    CustomerSnapshot,
    FeedbackGiven,
    InputEvent,
    JourneyEvent,
    MessageEngagement,
    OrderChanged,
    PageViewed,
    ShipmentChanged,
    Trigger,
)
from streams.journey.decisions import EMITTED, Drop, Segment
from streams.journey.state import JourneyState

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def saturate(value: int | None) -> int | None:
    """Aggregates (a customer's revenue over all orders) are bounded per input, not in sum: they
    stop at the Int64 range instead of failing downstream."""
    # Comparisons, not ``max(INT64_MIN, min(INT64_MAX, value))``: the builtins iterate their
    # arguments (several per fired timer and event).
    if value is None or INT64_MIN <= value <= INT64_MAX:
        return value
    return INT64_MAX if value > INT64_MAX else INT64_MIN


def event_type(record: InputEvent) -> str:
    """The analysts' name of an event: ``page_view``, ``order.placed``, ``feedback.nps``, ..."""
    match record:
        case PageViewed():
            return "page_view"
        case CartChanged(action=action):
            return "cart." + action.lower()
        case OrderChanged(status=status):
            return "order." + status.lower()
        case ShipmentChanged(status=status):
            return "shipment." + status.lower()
        case FeedbackGiven(kind=kind):
            return "feedback." + kind.lower()
        case MessageEngagement(action=action):
            return "engagement." + action.lower()
        case CustomerChanged(action=action):
            return "customer." + action.lower()
    raise TypeError(f"not an input record: {type(record).__name__}")


# journey.events' fields in ``JourneyEvent``'s order: a canonical event is encoded from such a row
# (``Codec.row_encoder``), not built as an instance first (its ``__init__`` and the encoder's
# reading of its fields were 3 % of the worker's CPU, one event each).
JOURNEY_EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(JourneyEvent))
_NONE12 = (None,) * 12  # every optional field of JourneyEvent, after input_offset


def canonical_event_row(
    record: InputEvent, ingested_at: int, topic: str, partition: int, offset: int
) -> tuple[Any, ...]:
    """One shape for every input (``journey.events``); where it was read from is kept. The
    values of ``JOURNEY_EVENT_FIELDS``: event_id .. input_offset, then page_type, session_id,
    cart_id, order_id, shipment_id, carrier, product_id, category, amount_minor, currency,
    score, trigger_id."""
    head = (
        record.event_id, event_type(record), record.customer_id, record.occurred_at,
        ingested_at, topic, partition, offset,
    )  # fmt: skip
    match record:
        case PageViewed():
            return (
                *head, record.page_type, record.session_id, None, None, None, None,
                record.product_id, record.category, None, None, None, None,
            )  # fmt: skip
        case CartChanged():
            price = record.unit_price_minor
            amount = None if price is None else saturate(price * (record.quantity or 1))
            return (
                *head, None, None, record.cart_id, None, None, None,
                record.product_id, record.category, amount, record.currency, None, None,
            )  # fmt: skip
        case OrderChanged():
            return (
                *head, None, None, record.cart_id, record.order_id, None, None,
                None, None, record.total_minor, record.currency, None, None,
            )  # fmt: skip
        case ShipmentChanged():
            return (
                *head, None, None, None, record.order_id, record.shipment_id, record.carrier,
                None, None, None, None, None, None,
            )  # fmt: skip
        case FeedbackGiven():
            return (
                *head, None, None, None, record.order_id, None, None,
                record.product_id, None, None, None, record.score, None,
            )  # fmt: skip
        case MessageEngagement():  # the message it is about
            return (*head, *_NONE12[:11], record.trigger_id)
    return (*head, *_NONE12)


# A decision as the customer's outbox keeps it (a list in the state): these fields, this order.
OUTBOX_FIELDS = (
    "trigger_id", "trigger_type", "category", "customer_id", "status", "reason", "due_at",
    "decided_at", "order_id", "cart_id", "shipment_id", "stage", "source_event_id", "attributes",
)  # fmt: skip


def emitted(trigger: Trigger) -> list[Any]:
    """The outbox entry of an emitted trigger's decision (``OUTBOX_FIELDS``)."""
    return [
        trigger.trigger_id, trigger.trigger_type, trigger.category, trigger.customer_id,
        EMITTED, "", trigger.due_at, trigger.emitted_at, trigger.order_id,
        trigger.cart_id, trigger.shipment_id, trigger.stage, trigger.source_event_id,
        dict(trigger.attributes),
    ]  # fmt: skip


def dropped(drop: Drop, stage: str) -> list[Any]:
    """The outbox entry of a decision not to send (``OUTBOX_FIELDS``)."""
    return [
        drop.trigger_id, drop.trigger_type, drop.category, drop.customer_id, drop.status,
        drop.reason, drop.due_at, drop.decided_at, drop.order_id, drop.cart_id, None, stage, "",
        {},
    ]  # fmt: skip


class SnapshotShows(NamedTuple):
    """What a customer's snapshot shows, ``updated_at`` aside (``snapshot`` is built from it):
    two equal ones give the same snapshot, at a fraction of the cost of building two."""

    customer_id: str
    stage: str
    segment: str
    first_seen_at: int
    first_order_at: int | None
    last_order_at: int | None
    orders_count: int
    revenue_minor: int
    last_nps: int | None
    marketing_consent: bool
    time_zone: str | None
    # (probability_alive, predicted_clv_minor, expected_next_order_at, expected_orders_90d)
    prediction: tuple[float, int, int | None, float] | None


def snapshot_shows(state: JourneyState, segment: Segment, consent: bool, now: int) -> SnapshotShows:
    prediction = None
    if state.prediction is not None:
        _, alive, orders_90d, clv, next_order_at = state.prediction
        prediction = (alive, int(clv), next_order_at, float(orders_90d))
    # ``SnapshotShows(...)`` without its ``__new__``, a lambda that runs interpreted (two a fired
    # timer): the tuple of its fields, in their order, made a SnapshotShows.
    return _new_tuple(SnapshotShows, (
        state.customer_id, state.stage, segment, state.first_seen_at or now, state.first_order_at,
        state.last_order_at, state.orders_count, saturate(state.revenue_minor) or 0,
        state.last_nps, consent, state.time_zone, prediction,
    ))  # fmt: skip


_new_tuple = tuple.__new__


# journey.customers' fields in ``CustomerSnapshot``'s order: a snapshot is encoded from such a row
# (``Codec.row_encoder``), not built as a record first.
SNAPSHOT_FIELDS = tuple(f.name for f in dataclasses.fields(CustomerSnapshot))


def snapshot_row(shows: SnapshotShows, now: int) -> tuple[Any, ...]:
    """The values of ``SNAPSHOT_FIELDS``: customer_id, stage, segment, first_seen_at,
    orders_count, revenue_minor, marketing_consent, updated_at, first_order_at, last_order_at,
    last_nps, time_zone, then the prediction's probability_alive, predicted_clv_minor,
    expected_next_order_at, expected_orders_90d."""
    prediction = (None, None, None, None) if shows.prediction is None else shows.prediction
    return (
        shows.customer_id, shows.stage, shows.segment, shows.first_seen_at, shows.orders_count,
        shows.revenue_minor, shows.marketing_consent, now, shows.first_order_at,
        shows.last_order_at, shows.last_nps, shows.time_zone, *prediction,
    )  # fmt: skip
