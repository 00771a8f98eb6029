"""The worker's output records, sent as one Kafka record batch per topic-partition.

Every fact the worker publishes (``outputs.py``: canonical events, decisions, triggers,
snapshots, dead letters, re-routed events; about 1.6 records per input event) used to be one
``producer.send`` each: partitioning by a pure-Python murmur2, a delivery future per record, a
callback per future when the broker answered, and Faust's producer wrapper around it. That was
the largest block of the worker's CPU outside our own code (issue 13's profile). Here a record is
appended to the open ``BatchBuilder`` of its topic-partition (aiokafka's, the record batch
format in C), and a drain task hands each batch to aiokafka's ``send_batch`` about every
``linger`` seconds (a full batch at once): one future per batch. The journeys table's changelog
records go the same way (``app.table_writer``), with their partition given.

* **Acknowledgement is unchanged** (``acks.py``): ``produce`` returns the delivery future of the
  batch the record went into (a placeholder made when the batch was opened, resolved when the
  broker acknowledged the batch, or failed with its error), and ``Outputs`` registers it with
  ``Acks.wait_for`` before the message's own ``ack`` is registered, as before. A message is
  acknowledged only after every batch holding a record it caused is acknowledged.
* **Order per topic-partition is kept**: one drain task sends the batches in the order they
  were opened, and aiokafka keeps a topic-partition's batches in order.
* **Partitions** are those of Kafka's default partitioner (murmur2 of the key, as aiokafka's
  ``send`` would choose: ``ingest.key_partition``), from the producer's metadata; a topic whose
  metadata is not known yet (or a record without a key) goes through ``producer.send``.
* **Timestamps**: each record gets the time it was appended (``producer.send``'s default).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from streams.runtime.ingest import key_partition
from streams.runtime.outputs import Headers
from streams.runtime.tasks import cancel_and_wait

log = logging.getLogger(__name__)


def _unsent_batches(producer: Any) -> Any:
    """aiokafka's batches handed over and not sent yet, per ``TopicPartition`` (its message
    accumulator's, pinned aiokafka: ``commit_guard.PINNED_AIOKAFKA_VERSION``); an empty dict
    for a producer without one (``drain`` then waits in ``send_batch`` as aiokafka makes it)."""
    return getattr(getattr(producer, "_message_accumulator", None), "_batches", None) or {}


def _settle(placeholder: asyncio.Future[Any], delivery: asyncio.Future[Any]) -> None:
    if placeholder.done():
        return
    if delivery.cancelled():
        placeholder.set_exception(asyncio.CancelledError("the batch's delivery was cancelled"))
    elif (exc := delivery.exception()) is not None:
        placeholder.set_exception(exc)
    else:
        placeholder.set_result(delivery.result())


def _report(
    report: Callable[[int, int], None], partition: int, records: int, delivery: asyncio.Future[Any]
) -> None:
    if delivery.cancelled() or delivery.exception() is not None:
        return
    try:
        report(partition, delivery.result().offset + records - 1)
    except Exception as exc:  # bookkeeping only: the record is on the broker
        log.warning("after a batch of %d records to partition %d: %r", records, partition, exc)


class _Open:
    """A batch being filled: aiokafka's builder and the future of its delivery."""

    __slots__ = ("builder", "delivery", "records")

    def __init__(self, builder: Any, delivery: asyncio.Future[Any]) -> None:
        self.builder = builder
        self.delivery = delivery
        self.records = 0


class BatchProducer:
    """``produce(topic, key, value, headers)`` for ``Outputs``, over an ``AIOKafkaProducer``
    (``producer()``: Faust's, once started)."""

    def __init__(self, producer: Any, linger: float = 0.005) -> None:
        self._producer = producer
        self.linger = linger
        self._open: dict[tuple[str, int], _Open] = {}
        self._full: list[tuple[str, int, _Open]] = []
        # Full batches of a topic-partition whose previous batch aiokafka has not sent yet (see
        # ``drain``): the oldest, handed over first.
        self._held: list[tuple[str, int, _Open]] = []
        self._partitions: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._refreshed = 0.0
        # Per topic: told (partition, offset of the batch's last record) once a batch is on the
        # broker (the journeys table's changelog: the store's persisted offset).
        self.on_delivered: dict[str, Callable[[int, int], None]] = {}
        self.batches = 0  # batches handed to aiokafka
        self.records = 0  # records appended to them
        self.unbatched = 0  # records sent one by one (metadata unknown, no key)

    @property
    def producer(self) -> Any:
        return self._producer() if callable(self._producer) else self._producer

    async def start(self, topics: Sequence[str]) -> None:
        """Learn the output topics' partition counts (waits for their metadata), start draining."""
        for topic in topics:
            self._partitions[topic] = len(await self.producer.partitions_for(topic))
        self._refreshed = time.monotonic()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batches")

    async def stop(self) -> None:
        """Send what is open (after the last acknowledgement flush has awaited it, nothing is)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        await self.drain()

    def produce(
        self, topic: str, key: bytes, value: bytes | None, headers: Headers | None
    ) -> Awaitable[Any]:
        """Append the record to its topic-partition's open batch; the batch's delivery future.
        A plain call, not a coroutine: one coroutine less per record (two per fired timer).

        A topic whose partitions are not known yet (``start`` has not learnt them) or a record
        without a key goes through ``producer.send``, in a task of its own that resolves once the
        broker has the record (or fails with its error): ``Acks`` awaits it like a batch's
        delivery. ``Outputs`` never produces before ``start`` nor without a key."""
        partitions = self._partitions.get(topic)
        if not partitions or key is None:
            self.unbatched += 1
            return asyncio.ensure_future(self._send_one(topic, key, value, headers))
        return self.append(topic, key_partition(key, partitions), key, value, headers)

    async def _send_one(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None
    ) -> Any:
        delivery = await self.producer.send(
            topic, value, key=key, headers=list(headers) if headers else None
        )
        return await delivery

    def append(
        self, topic: str, partition: int, key: bytes, value: bytes | None, headers: Headers | None
    ) -> asyncio.Future[Any]:
        """Append a record to the open batch of ``topic``'s ``partition``; the batch's delivery
        future."""
        tp = (topic, partition)
        batch = self._open.get(tp) or self._open_batch(tp)
        headers = headers or []
        if batch.builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            # Full: it goes as it is, the record starts the next one (a first record always fits).
            del self._open[tp]
            self._full.append((*tp, batch))
            batch = self._open_batch(tp)
            if batch.builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                raise ValueError(f"a record for {topic} does not fit in an empty batch")
        batch.records += 1
        self.records += 1
        return batch.delivery

    def _open_batch(self, tp: tuple[str, int]) -> _Open:
        batch = self._open[tp] = _Open(
            self.producer.create_batch(), asyncio.get_running_loop().create_future()
        )
        self._wake.set()
        return batch

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if not self._full:
                await asyncio.sleep(self.linger)  # let the batches fill
            self._wake.clear()
            try:
                await self.drain(wait=False)
            except Exception as exc:  # every batch's future carries its own failure
                log.error("sending record batches failed: %r", exc, exc_info=exc)

    async def drain(self, *, wait: bool = True) -> None:
        """Hand every full and open batch to aiokafka, in the order they were opened per
        topic-partition; a batch aiokafka refuses fails its delivery future.

        aiokafka takes a topic-partition's batch only once it has sent the previous one, and it
        has one produce request in flight per broker: ``send_batch`` waits until that request
        is answered. Awaited in turn, one busy topic-partition (the changelog's, a second ago)
        held back every batch behind it, a trigger's too, past the next request: a request's
        round trip more for everything (session 19). ``wait=False`` (the drain task): a batch of
        a topic-partition whose previous batch aiokafka still holds stays here, the others go
        at once; its open batch goes on filling (one batch per request, as before), and the
        next drain, a ``linger`` later, tries again. ``wait=True`` (a stop): everything goes."""
        held, self._held = self._held, []
        full, self._full = self._full, []
        opened, self._open = self._open, {}
        batches = held + full + [(*tp, batch) for tp, batch in opened.items()]
        producer = self.producer
        # aiokafka's batches not yet sent, per topic-partition (a TopicPartition is a tuple).
        unsent: dict[Any, Any] = {} if wait else _unsent_batches(producer)
        blocked: set[tuple[str, int]] = set()
        for topic, partition, batch in batches:
            tp = (topic, partition)
            if tp in blocked or unsent.get(tp):
                blocked.add(tp)  # and every later batch of it, to keep their order
                if opened.get(tp) is batch and tp not in self._open:
                    self._open[tp] = batch  # its newest: it goes on filling
                else:
                    self._held.append((topic, partition, batch))
                continue
            batch.builder.close()
            try:
                delivery = await producer.send_batch(batch.builder, topic, partition=partition)
            except Exception as exc:
                if not batch.delivery.done():
                    batch.delivery.set_exception(exc)
                continue
            self.batches += 1
            delivery.add_done_callback(partial(_settle, batch.delivery))
            report = self.on_delivered.get(topic)
            if report is not None:
                delivery.add_done_callback(partial(_report, report, partition, batch.records))
        if blocked:
            self._wake.set()  # tried again a linger later
        now = time.monotonic()
        if now - self._refreshed > 1.0:  # partitions added to an output topic
            self._refreshed = now
            cluster = producer.client.cluster
            for topic in self._partitions:
                found = cluster.partitions_for_topic(topic)
                if found:
                    self._partitions[topic] = len(found)
