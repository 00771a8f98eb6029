"""Publishing contract records to Kafka as a shop's producer would (simulator, imports, replays)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from schemas.codec import Codec, EncodeError
from schemas.records import TOPIC_RECORDS
from streams.ops.topics import unreachable
from streams.settings import Settings


class Publisher:
    """Keyed, batched, acknowledged sends; ``close()`` waits until the broker has everything."""

    def __init__(self, settings: Settings, codec: Codec | None = None) -> None:
        self.settings = settings
        self.codec = codec or Codec.load(max_value_bytes=settings.max_value_bytes)
        self.sent: Counter[str] = Counter()
        self._producer: AIOKafkaProducer | None = None
        self._inflight: set[asyncio.Future[Any]] = set()
        self._failure: BaseException | None = None

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=f"{self.settings.app_id}-publisher",
            acks="all",
            linger_ms=5,
            max_batch_size=256 * 1024,
            **self.settings.kafka_client_options(),
        )
        try:
            await producer.start()
        except (KafkaConnectionError, OSError) as exc:
            await producer.stop()
            raise unreachable(self.settings, exc) from exc
        self._producer = producer

    async def send_record(self, short_topic: str, key: str, record: Any) -> None:
        await self.send_raw(short_topic, key.encode(), self.codec.encode(record))

    async def send_raw(
        self,
        short_topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
        *,
        full_topic: str | None = None,
    ) -> None:
        if self._producer is None:
            raise RuntimeError("Publisher.start() was not called")
        if self._failure is not None:
            raise self._failure
        topic = full_topic or self.settings.topic(short_topic)
        future = await self._producer.send(topic, value=value, key=key, headers=headers)
        self.sent[topic] += 1
        self._inflight.add(future)
        future.add_done_callback(self._done)
        if len(self._inflight) > 50_000:
            await self._producer.flush()

    async def flush(self) -> None:
        """Returns once the broker acknowledged everything sent so far (or raises its error)."""
        if self._producer is not None:
            await self._producer.flush()
        if self._failure is not None:
            raise self._failure

    def _done(self, future: asyncio.Future[Any]) -> None:
        self._inflight.discard(future)
        if not future.cancelled() and future.exception() is not None and self._failure is None:
            self._failure = future.exception()

    async def close(self) -> None:
        if self._producer is not None:
            try:
                await self._producer.flush()
            finally:
                await self._producer.stop()
                self._producer = None
        if self._failure is not None:
            raise self._failure


# --- `journey publish`: JSON lines -> contract records -------------------------------------------


class PublishError(ValueError):
    """A line that is not a contract record; names the line."""


def records_from_lines(
    lines: Iterable[str],
    codec: Codec,
    topic: str | None,
    now_ms: Callable[[], int],
    *,
    stamp: bool,
) -> Iterator[tuple[str, str, bytes]]:
    """(short topic, customer_id, value) per JSON line, validated against the topic's schema.

    A line is the record's fields; without ``topic`` it names its topic in a ``"topic"`` field
    (``"orders"`` or ``"shop.orders"``). A missing ``occurred_at`` is now on the journey clock
    (``stamp``: always, replacing the line's); a missing ``event_id`` gets a fresh unique one.
    """
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise PublishError(f"line {number}: not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise PublishError(f"line {number}: a JSON object is expected")
        short = str(data.pop("topic", None) or topic or "")
        short = short.removeprefix("shop.")
        record = TOPIC_RECORDS.get(short)
        if record is None:
            raise PublishError(
                f"line {number}: unknown topic {short!r}; one of {', '.join(TOPIC_RECORDS)}"
            )
        if stamp or "occurred_at" not in data:
            data["occurred_at"] = now_ms()
        data.setdefault("event_id", f"publish-{uuid.uuid4()}")
        try:
            value = codec.encode_dict(record.__name__, data)
        except EncodeError as exc:
            raise PublishError(f"line {number}: {exc}") from None
        yield short, str(data.get("customer_id")), value


async def publish_lines(
    settings: Settings,
    lines: Iterable[str],
    topic: str | None,
    now_ms: Callable[[], int],
    *,
    stamp: bool,
) -> Counter[str]:
    """Publish every line (all validated first: a bad line sends nothing); keyed by customer_id,
    so aiokafka's murmur2 partitioner puts it where the contract says."""
    publisher = Publisher(settings)
    records = list(records_from_lines(lines, publisher.codec, topic, now_ms, stamp=stamp))
    await publisher.start()
    try:
        for short, customer_id, value in records:
            await publisher.send_raw(short, customer_id.encode(), value)
    finally:
        await publisher.close()
    return publisher.sent
