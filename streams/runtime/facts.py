"""The records a journey worker publishes about what it knows, built from the model's values.

One definition each: the canonical event (``journey.events``), a decision (``journey.decisions``)
and the customer snapshot (``journey.customers``). The loader stores them in ClickHouse as they
are (``sinks/clickhouse/rows.py``); any other consumer reads the same records.
"""

from __future__ import annotations

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
from streams.journey.decisions import Drop, Segment, Status
from streams.journey.state import JourneyState

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def saturate(value: int | None) -> int | None:
    """Aggregates (a customer's revenue over all orders) are bounded per input, not in sum: they
    stop at the Int64 range instead of failing downstream."""
    return None if value is None else max(INT64_MIN, min(INT64_MAX, value))


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


def canonical_event(
    record: InputEvent, ingested_at: int, topic: str, partition: int, offset: int
) -> JourneyEvent:
    """One shape for every input (``journey.events``); where it was read from is kept."""
    fields: dict[str, Any] = {}
    match record:
        case PageViewed():
            fields = {"session_id": record.session_id, "product_id": record.product_id,
                      "category": record.category, "page_type": record.page_type}  # fmt: skip
        case CartChanged():
            fields = {"cart_id": record.cart_id, "product_id": record.product_id,
                      "category": record.category, "currency": record.currency}  # fmt: skip
            if record.unit_price_minor is not None:
                fields["amount_minor"] = saturate(record.unit_price_minor * (record.quantity or 1))
        case OrderChanged():
            fields = {"cart_id": record.cart_id, "order_id": record.order_id,
                      "amount_minor": record.total_minor, "currency": record.currency}  # fmt: skip
        case ShipmentChanged():
            fields = {"order_id": record.order_id, "shipment_id": record.shipment_id,
                      "carrier": record.carrier}  # fmt: skip
        case FeedbackGiven():
            fields = {"order_id": record.order_id, "product_id": record.product_id,
                      "score": record.score}  # fmt: skip
        case MessageEngagement():
            fields = {"trigger_id": record.trigger_id}  # the message it is about
    return JourneyEvent(
        event_id=record.event_id,
        event_type=event_type(record),
        customer_id=record.customer_id,
        occurred_at=record.occurred_at,
        ingested_at=ingested_at,
        input_topic=topic,
        input_partition=partition,
        input_offset=offset,
        **fields,
    )


# A decision as the customer's outbox keeps it (a list in the state): these fields, this order.
OUTBOX_FIELDS = (
    "trigger_id", "trigger_type", "category", "customer_id", "status", "reason", "due_at",
    "decided_at", "order_id", "cart_id", "shipment_id", "stage", "source_event_id", "attributes",
)  # fmt: skip


def emitted(trigger: Trigger) -> list[Any]:
    """The outbox entry of an emitted trigger's decision (``OUTBOX_FIELDS``)."""
    return [
        trigger.trigger_id, trigger.trigger_type, trigger.category, trigger.customer_id,
        Status.EMITTED, "", trigger.due_at, trigger.emitted_at, trigger.order_id,
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
    return SnapshotShows(
        state.customer_id, state.stage, segment, state.first_seen_at or now, state.first_order_at,
        state.last_order_at, state.orders_count, saturate(state.revenue_minor) or 0,
        state.last_nps, consent, state.time_zone, prediction,
    )  # fmt: skip


def snapshot(shows: SnapshotShows, now: int) -> CustomerSnapshot:
    prediction: dict[str, Any] = {}
    if shows.prediction is not None:
        alive, clv, next_order_at, orders_90d = shows.prediction
        prediction = {
            "probability_alive": alive,
            "predicted_clv_minor": clv,
            "expected_next_order_at": next_order_at,
            "expected_orders_90d": orders_90d,
        }
    return CustomerSnapshot(
        customer_id=shows.customer_id,
        stage=shows.stage,
        segment=shows.segment,
        first_seen_at=shows.first_seen_at,
        first_order_at=shows.first_order_at,
        last_order_at=shows.last_order_at,
        orders_count=shows.orders_count,
        revenue_minor=shows.revenue_minor,
        last_nps=shows.last_nps,
        marketing_consent=shows.marketing_consent,
        time_zone=shows.time_zone,
        updated_at=now,
        **prediction,
    )
