"""Publishing contract records to Kafka as a shop's producer would (simulator, imports, replays)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from schemas.codec import Codec
from streams.settings import Settings
from streams.topics import unreachable


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
