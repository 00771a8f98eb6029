"""Rows of the ClickHouse tables, built from the records of the fact topics (``schemas/``).

Column lists match the migrations; ``tests/integration`` inserts through them, so a mismatch
fails there.
"""

from __future__ import annotations

from typing import Any

from schemas.records import CustomerSnapshot, DeadLetter, Decision, JourneyEvent

# The last three columns of every table: the message a row was loaded from (topic, partition,
# offset of the fact topic): its lineage, for analysts and for deleting what a fact wrote.
Lineage = tuple[str, int, int]


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


def event_row(event: JourneyEvent, lineage: Lineage) -> tuple[Any, ...]:
    return (
        event.event_id, event.event_type, event.page_type, event.customer_id, event.occurred_at,
        event.session_id, event.cart_id, event.order_id, event.shipment_id, event.carrier,
        event.product_id, event.category, event.amount_minor, event.currency, event.score,
        event.trigger_id, event.ingested_at, *lineage,
    )  # fmt: skip


def deadletter_row(letter: DeadLetter, lineage: Lineage) -> tuple[Any, ...]:
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
        *lineage,
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


def trigger_row(decision: Decision, lineage: Lineage) -> tuple[Any, ...]:
    return (
        decision.trigger_id, decision.trigger_type, decision.category, decision.customer_id,
        decision.status, decision.reason, decision.due_at, decision.decided_at,
        decision.order_id, decision.cart_id, decision.shipment_id, decision.stage,
        decision.source_event_id, decision.attributes, *lineage,
    )  # fmt: skip


def customer_row(customer: CustomerSnapshot, lineage: Lineage) -> tuple[Any, ...]:
    return (
        customer.customer_id, customer.stage, customer.segment, customer.first_seen_at,
        customer.first_order_at, customer.last_order_at, customer.orders_count,
        customer.revenue_minor, customer.last_nps, customer.marketing_consent,
        customer.time_zone, customer.updated_at, *lineage,
    )  # fmt: skip
