"""`journey tail triggers|decisions|deadletter`: follow what the pipeline decides, readably.

``triggers`` and ``deadletter`` follow their topics (decoded, any framing the codec reads);
``decisions`` follows the ClickHouse ``triggers`` table, which has every decision, the
suppressed, expired and cancelled ones too. Lines are human-readable, or JSON with ``--json``.
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
from schemas.records import DeadLetter, Trigger
from streams.query import run_query, to_json
from streams.schema_registry import resolver_for
from streams.settings import Settings

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
    """Follow journey.triggers or journey.deadletter; returns how many records were shown."""
    codec = Codec.load(max_value_bytes=settings.max_value_bytes)
    resolver = resolver_for(settings, codec)
    record_type: type = Trigger if what == "triggers" else DeadLetter
    describe: Callable[[Any], str] = describe_trigger if what == "triggers" else describe_letter
    consumer = AIOKafkaConsumer(
        settings.topic("triggers" if what == "triggers" else "deadletter"),
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


def tail_decisions(
    settings: Settings,
    emit: Emit,
    *,
    json_lines: bool,
    from_beginning: bool,
    limit: int | None,
    seconds: float | None,
    poll_s: float = 1.0,
) -> int:
    """Follow the decisions stored in ClickHouse (every status), newest last."""
    db = settings.clickhouse_database
    # Decisions are stamped with the journey clock (in a demo: far ahead of the wall clock), so
    # "from now" is from the newest decision stored.
    last_ms = 0
    if not from_beginning:
        (latest,) = run_query(
            settings, f"SELECT toUnixTimestamp64Milli(max(decided_at)) FROM {db}.triggers"
        ).rows[0]
        last_ms = int(latest or 0) + 1
    seen: set[str] = set()
    shown = 0
    deadline = time.monotonic() + seconds if seconds else None
    while (limit is None or shown < limit) and (deadline is None or time.monotonic() < deadline):
        result = run_query(
            settings,
            "SELECT trigger_id, trigger_type, status, reason, customer_id, due_at, decided_at, "
            f"toUnixTimestamp64Milli(decided_at) AS decided_ms FROM {db}.triggers FINAL "
            f"WHERE decided_at >= fromUnixTimestamp64Milli({last_ms}) "
            "ORDER BY decided_at, trigger_id LIMIT 1000",
        )
        for row in result.rows:
            decision = dict(zip(result.columns, row, strict=True))
            key = f"{decision['trigger_id']}/{decision['status']}"
            decided_ms = int(decision.pop("decided_ms"))
            if decided_ms > last_ms:  # the next poll starts here: only this instant's ids matter
                last_ms = decided_ms
                seen.clear()
            if key in seen:
                continue
            seen.add(key)
            emit(
                json.dumps(decision, default=to_json)
                if json_lines
                else f"{decision['decided_at']}  {decision['status']:<10} "
                f"{decision['trigger_type']:<22} {decision['customer_id']:<20} "
                f"{decision['reason'] or '-'}  [{decision['trigger_id']}]"
            )
            shown += 1
            if limit is not None and shown >= limit:
                return shown
        time.sleep(poll_s)
    return shown


def run_tail(settings: Settings, what: str, emit: Emit, **options: Any) -> int:
    if what == "decisions":
        return tail_decisions(settings, emit, **options)
    return asyncio.run(tail_topic(settings, what, emit, **options))
