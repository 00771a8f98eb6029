"""Rows of the ClickHouse tables, built from the contract records.

Column lists match the migrations; ``tests/integration`` inserts through them, so a mismatch
fails there.
"""

from __future__ import annotations

from typing import Any

from schemas.records import (
    CartChanged,
    CustomerChanged,
    DeadLetter,
    FeedbackGiven,
    InputEvent,
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
    """Aggregates (a customer's revenue over all orders) are bounded per input, not in sum: an
    Int64 column holds the largest value instead of failing the insert."""
    return None if value is None else max(INT64_MIN, min(INT64_MAX, value))


EVENTS_TABLE = "events"
EVENTS_COLUMNS = (
    "event_id",
    "event_type",
    "page_type",
    "customer_id",
    "occurred_at",
    "session_id",
    "cart_id",
    "order_id",
    "shipment_id",
    "carrier",
    "product_id",
    "category",
    "amount_minor",
    "currency",
    "score",
    "trigger_id",
    "ingested_at",
    "source_topic",
    "source_partition",
    "source_offset",
)

DEADLETTERS_TABLE = "deadletters"
DEADLETTERS_COLUMNS = (
    "dead_letter_id",
    "topic",
    "partition",
    "offset",
    "reason_code",
    "reason",
    "record_type",
    "key",
    "value_size",
    "value_head",
    "failed_at",
    "source_topic",
    "source_partition",
    "source_offset",
)


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


def event_row(
    record: InputEvent, ingested_at: int, topic: str, partition: int, offset: int
) -> tuple[Any, ...]:
    session_id = cart_id = order_id = shipment_id = product_id = category = None
    page_type = carrier = None
    amount: int | None = None
    currency: str | None = None
    score: int | None = None
    trigger_id: str | None = None  # the message an engagement is about
    match record:
        case PageViewed():
            session_id, product_id, category = record.session_id, record.product_id, record.category
            page_type = record.page_type
        case CartChanged():
            cart_id, product_id, category = record.cart_id, record.product_id, record.category
            if record.unit_price_minor is not None:
                amount = saturate(record.unit_price_minor * (record.quantity or 1))
            currency = record.currency
        case OrderChanged():
            cart_id, order_id = record.cart_id, record.order_id
            amount, currency = record.total_minor, record.currency
        case ShipmentChanged():
            order_id, shipment_id = record.order_id, record.shipment_id
            carrier = record.carrier
        case FeedbackGiven():
            order_id, product_id, score = record.order_id, record.product_id, record.score
        case MessageEngagement():
            trigger_id = record.trigger_id
        case CustomerChanged():
            pass
    return (
        record.event_id,
        event_type(record),
        page_type,
        record.customer_id,
        record.occurred_at,
        session_id,
        cart_id,
        order_id,
        shipment_id,
        carrier,
        product_id,
        category,
        amount,
        currency,
        score,
        trigger_id,
        ingested_at,
        topic,
        partition,
        offset,
    )


def deadletter_row(letter: DeadLetter, partition: int, offset: int, topic: str) -> tuple[Any, ...]:
    """``topic``/``partition``/``offset`` are where the sink read it from (the source message)."""
    value = letter.value or b""
    return (
        letter.dead_letter_id,
        letter.topic,
        letter.partition,
        letter.offset,
        letter.reason_code,
        letter.reason,
        letter.record_type,
        letter.key.decode("utf-8", "backslashreplace") if letter.key is not None else None,
        len(value),
        value[:256].decode("utf-8", "backslashreplace"),
        letter.failed_at,
        topic,
        partition,
        offset,
    )


TRIGGERS_TABLE = "triggers"
TRIGGERS_COLUMNS = (
    "trigger_id",
    "trigger_type",
    "category",
    "customer_id",
    "status",
    "reason",
    "due_at",
    "decided_at",
    "order_id",
    "cart_id",
    "shipment_id",
    "stage",
    "source_event_id",
    "attributes",
    "source_topic",
    "source_partition",
    "source_offset",
)

CUSTOMERS_TABLE = "customers"
CUSTOMERS_COLUMNS = (
    "customer_id",
    "stage",
    "segment",
    "first_seen_at",
    "first_order_at",
    "last_order_at",
    "orders_count",
    "revenue_minor",
    "last_nps",
    "marketing_consent",
    "time_zone",
    "updated_at",
    "source_topic",
    "source_partition",
    "source_offset",
)


# The triggers-table row of a decision, without its lineage (the last three columns): a decision
# waits in the customer's outbox until it is stored, and is attributed to the message that
# stores it (the one that took it, or after a crash the one that re-sends it).
def emitted_row(trigger: Trigger) -> tuple[Any, ...]:
    return (
        trigger.trigger_id,
        trigger.trigger_type,
        trigger.category,
        trigger.customer_id,
        Status.EMITTED,
        "",
        trigger.due_at,
        trigger.emitted_at,
        trigger.order_id,
        trigger.cart_id,
        trigger.shipment_id,
        trigger.stage,
        trigger.source_event_id,
        trigger.attributes,
    )


def dropped_row(drop: Drop, stage: str) -> tuple[Any, ...]:
    return (
        drop.trigger_id,
        drop.trigger_type,
        drop.category,
        drop.customer_id,
        drop.status,
        drop.reason,
        drop.due_at,
        drop.decided_at,
        drop.order_id,
        drop.cart_id,
        None,
        stage,
        "",
        {},
    )


def customer_row(
    state: JourneyState,
    segment: Segment,
    consent: bool,
    now: int,
    topic: str,
    partition: int,
    offset: int,
) -> tuple[Any, ...]:
    return (
        state.customer_id,
        state.stage,
        segment,
        state.first_seen_at or now,
        state.first_order_at,
        state.last_order_at,
        state.orders_count,
        saturate(state.revenue_minor),
        state.last_nps,
        consent,
        state.time_zone,
        now,
        topic,
        partition,
        offset,
    )
