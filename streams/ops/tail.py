"""`journey tail triggers|decisions|deadletter`: follow what the workers decide, readably.

Each follows its topic (decoded, any framing the codec reads): ``journey.triggers`` (the
messages to send), ``journey.decisions`` (every decision, the suppressed, expired and cancelled
ones too) and ``journey.deadletter``. Lines are human-readable, or JSON with ``--json``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer

from schemas.codec import Codec, DecodeError
from schemas.records import DeadLetter, Decision, Trigger
from streams.schema_registry import resolver_for
from streams.settings import Settings
from streams.web.query import to_json

Emit = Callable[[str], None]


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def describe_trigger(trigger: Trigger) -> str:
    about = trigger.order_id or trigger.cart_id or trigger.shipment_id or ""
    attributes = " ".join(f"{k}={v}" for k, v in sorted(trigger.attributes.items()))
    return (
        f"{_when(trigger.due_at)}  {trigger.trigger_type:<22} {trigger.customer_id:<20} "
        f"{about:<22} {attributes}  [{trigger.trigger_id}]"
    )


def describe_letter(letter: DeadLetter) -> str:
    return (
        f"{_when(letter.failed_at)}  {letter.reason_code:<20} {letter.topic}/{letter.partition}/"
        f"{letter.offset}  {letter.reason}"
    )


def describe_decision(decision: Decision) -> str:
    return (
        f"{_when(decision.decided_at)}  {decision.status:<10} {decision.trigger_type:<22} "
        f"{decision.customer_id:<20} {decision.reason or '-'}  [{decision.trigger_id}]"
    )


# What can be followed: topic (short name), its record, and how a line reads.
TAILS: dict[str, tuple[str, type, Callable[[Any], str]]] = {
    "triggers": ("triggers", Trigger, describe_trigger),
    "decisions": ("decisions", Decision, describe_decision),
    "deadletter": ("deadletter", DeadLetter, describe_letter),
}


def as_json(record: Any) -> str:
    fields = {name: getattr(record, name) for name in record.__dataclass_fields__}
    for name in ("key", "value"):
        if isinstance(fields.get(name), bytes):
            fields[name] = fields[name].decode("utf-8", "replace")
    return json.dumps(fields, default=to_json)


async def tail_topic(
    settings: Settings,
    what: str,
    emit: Emit,
    *,
    json_lines: bool,
    from_beginning: bool,
    limit: int | None,
    seconds: float | None,
) -> int:
    """Follow one of ``TAILS``; returns how many records were shown."""
    codec = Codec.load(max_value_bytes=settings.max_value_bytes)
    resolver = resolver_for(settings, codec)
    topic, record_type, describe = TAILS[what]
    consumer = AIOKafkaConsumer(
        settings.topic(topic),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        **settings.kafka_client_options(),
    )
    await consumer.start()
    shown = 0
    deadline = time.monotonic() + seconds if seconds else None
    try:
        while (limit is None or shown < limit) and (
            deadline is None or time.monotonic() < deadline
        ):
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                for message in messages:
                    if resolver is not None and message.value:
                        await resolver.ensure(message.value)
                    try:
                        record = codec.decode(message.value, record_type)
                    except DecodeError as exc:
                        emit(f"(offset {message.offset}: undecodable: {exc})")
                        continue
                    emit(as_json(record) if json_lines else describe(record))
                    shown += 1
    finally:
        await consumer.stop()
        if resolver is not None:
            await resolver.close()
    return shown


def run_tail(settings: Settings, what: str, emit: Emit, **options: Any) -> int:
    return asyncio.run(tail_topic(settings, what, emit, **options))
