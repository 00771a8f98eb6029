"""The records a journey worker publishes about what it knows, built from the model's values.

One definition each: the canonical event (``journey.events``), a decision (``journey.decisions``)
and the customer snapshot (``journey.customers``). The loader stores them in ClickHouse as they
are (``sinks/clickhouse/rows.py``); any other consumer reads the same records.
"""

from __future__ import annotations

from typing import Any

from schemas.records import (
    CartChanged,
    CustomerChanged,
    CustomerSnapshot,
    Decision,
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


def decision(entry: list[Any]) -> Decision:
    return Decision(**dict(zip(OUTBOX_FIELDS, entry, strict=True)))


def snapshot(state: JourneyState, segment: Segment, consent: bool, now: int) -> CustomerSnapshot:
    return CustomerSnapshot(
        customer_id=state.customer_id,
        stage=state.stage,
        segment=segment,
        first_seen_at=state.first_seen_at or now,
        first_order_at=state.first_order_at,
        last_order_at=state.last_order_at,
        orders_count=state.orders_count,
        revenue_minor=saturate(state.revenue_minor) or 0,
        last_nps=state.last_nps,
        marketing_consent=consent,
        time_zone=state.time_zone,
        updated_at=now,
        **_prediction_fields(state),
    )


def _prediction_fields(state: JourneyState) -> dict[str, Any]:
    if state.prediction is None:
        return {}
    _, alive, orders_90d, clv, next_order_at = state.prediction
    return {
        "probability_alive": alive,
        "predicted_clv_minor": int(clv),
        "expected_next_order_at": next_order_at,
        "expected_orders_90d": float(orders_90d),
    }
