"""``BatchProducer``: the worker's facts go out as one record batch per topic-partition, and a
message is still acknowledged only after every record it caused is on the broker."""

from __future__ import annotations

import asyncio
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from streams.runtime.acks import Acks
from streams.runtime.batching import BatchProducer
from streams.runtime.ingest import key_partition
from streams.runtime.outputs import Outputs
from streams.settings import Settings

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
PARTITIONS = 3


class Cluster:
    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        count = self.partitions.get(topic)
        return set(range(count)) if count else None


class Client:
    def __init__(self, partitions: dict[str, int]) -> None:
        self.cluster = Cluster(partitions)


class FakeProducer:
    """aiokafka's producer as far as ``BatchProducer`` uses it: real record batches; each
    delivery is a future the test resolves (``deliver``) or fails (``refuse``)."""

    def __init__(self, batch_size: int = 16_384, known: set[str] | None = None) -> None:
        self.batch_size = batch_size
        self.known = known
        self.batches: list[tuple[str, int, list[tuple[bytes | None, bytes | None]]]] = []
        self.deliveries: list[asyncio.Future[Any]] = []
        self.single: list[tuple[str, bytes | None, bytes | None]] = []
        self.client = Client({})

    def knows(self, topic: str) -> bool:
        return self.known is None or topic in self.known

    async def partitions_for(self, topic: str) -> set[int]:
        if not self.knows(topic):
            return set()
        self.client.cluster.partitions[topic] = PARTITIONS
        return set(range(PARTITIONS))

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> Any:
        batch = DefaultRecordBatch(bytes(builder._build()))
        self.batches.append((topic, partition, [(r.key, r.value) for r in batch]))
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery

    async def send(
        self, topic: str, value: bytes | None, *, key: bytes | None, headers: Any
    ) -> Any:
        self.single.append((topic, key, value))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def deliver(self) -> None:
        for delivery in self.deliveries:
            if not delivery.done():
                delivery.set_result(None)


async def started(producer: FakeProducer, linger: float = 0.001) -> BatchProducer:
    batches = BatchProducer(producer, linger=linger)
    await batches.start(Outputs(SETTINGS, batches.produce, Acks()).topics)
    return batches


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.002)


async def test_records_go_to_their_keys_partition_in_order_one_delivery_per_batch() -> None:
    producer = FakeProducer()
    batches = await started(producer)
    topic = SETTINGS.topic("decisions")
    keys = [f"c{i}".encode() for i in range(30)]
    futures = [batches.produce(topic, key, key + b"-v", None) for key in keys]
    await settle()
    sent = {partition: records for t, partition, records in producer.batches if t == topic}
    for key in keys:  # the partition aiokafka's default partitioner would choose
        assert (key, key + b"-v") in sent[key_partition(key, PARTITIONS)]
    for records in sent.values():  # appended order within each partition
        assert records == sorted(records, key=lambda r: keys.index(r[0]))
    assert len(producer.batches) == len(sent) == PARTITIONS
    assert len({id(f) for f in futures}) == PARTITIONS  # one future per batch, shared
    await batches.stop()


async def test_a_full_batch_goes_first_and_order_is_kept_across_batches() -> None:
    producer = FakeProducer(batch_size=200)
    batches = await started(producer)
    topic = SETTINGS.topic("journey_events")
    key = b"customer-1"
    for i in range(40):
        batches.produce(topic, key, b"value-%03d" % i, None)
    await settle()
    assert len(producer.batches) > 2
    values = [v for _, _, records in producer.batches for _, v in records]
    assert values == [b"value-%03d" % i for i in range(40)]
    await batches.stop()


async def test_a_record_larger_than_a_batch_still_goes_alone() -> None:
    producer = FakeProducer(batch_size=100)
    batches = await started(producer)
    batches.produce(SETTINGS.topic("journey_events"), b"k", b"x" * 1000, None)
    await batches.stop()
    assert [len(r) for _, _, r in producer.batches] == [1]


async def test_tombstones_and_headers_are_kept() -> None:
    producer = FakeProducer()
    batches = await started(producer)
    batches.produce(SETTINGS.topic("snapshots"), b"gone", None, None)
    batches.produce(SETTINGS.topic("repartition"), b"k", b"v", [("source", b"orders")])
    await batches.stop()
    assert ("gone", None) in [(r[0].decode(), r[1]) for *_, rs in producer.batches for r in rs]


async def test_a_topic_without_metadata_is_sent_record_by_record() -> None:
    producer = FakeProducer(known=set())
    batches = await started(producer)
    delivery = batches.produce(SETTINGS.topic("triggers"), b"k", b"v", None)
    await delivery  # resolved once the broker has the record
    assert producer.single == [(SETTINGS.topic("triggers"), b"k", b"v")]
    assert batches.unbatched == 1 and producer.batches == []
    await batches.stop()


async def test_a_record_sent_alone_that_fails_fails_its_delivery() -> None:
    producer = FakeProducer(known=set())

    async def refused(topic: str, value: bytes | None, *, key: bytes | None, headers: Any) -> Any:
        raise RuntimeError("the producer's buffer is full")

    producer.send = refused  # type: ignore[method-assign]
    batches = await started(producer)
    acks = Acks()
    outputs = Outputs(SETTINGS, batches.produce, acks)
    outputs.trigger(b"c1", b"t1")
    acked: list[str] = []
    acks.after(lambda: acked.append("m1"))
    with pytest.raises(RuntimeError, match="buffer is full"):
        await acks.flush()  # what the message caused is not on the broker: no acknowledgement
    assert acked == []
    await batches.stop()


async def test_a_message_is_acknowledged_only_after_its_batch_is() -> None:
    producer = FakeProducer()
    batches = await started(producer)
    acks = Acks(interval=60)
    outputs = Outputs(SETTINGS, batches.produce, acks)
    acked: list[str] = []
    outputs.event(b"c1", b"e1")
    outputs.decision(b"c1", b"d1")
    acks.after(lambda: acked.append("m1"))
    flush = asyncio.ensure_future(acks.flush())
    await settle()
    assert producer.batches and acked == [] and not flush.done()
    # A second message's record joins while the first flush waits; it has its own ack.
    outputs.event(b"c2", b"e2")
    acks.after(lambda: acked.append("m2"))
    producer.deliver()
    assert await flush == 1 and acked == ["m1"]
    second = asyncio.ensure_future(acks.flush())
    await settle()
    assert acked == ["m1"] and not second.done()  # its batch is not acknowledged yet
    producer.deliver()
    await second
    assert acked == ["m1", "m2"]
    await batches.stop()


async def test_a_refused_batch_acknowledges_nothing_and_stops_the_worker() -> None:
    producer = FakeProducer()
    batches = await started(producer)
    fatal: list[BaseException] = []
    acks = Acks(interval=60, on_fatal=fatal.append)
    outputs = Outputs(SETTINGS, batches.produce, acks)
    acked: list[str] = []
    outputs.trigger(b"c1", b"t1")
    acks.after(lambda: acked.append("m1"))
    flush = asyncio.ensure_future(acks.flush())
    await settle()
    producer.deliveries[0].set_exception(RuntimeError("record too large"))
    with pytest.raises(RuntimeError):
        await flush
    assert acked == [] and len(fatal) == 1
    await batches.stop()


async def test_pending_counts_records_not_batches() -> None:
    producer = FakeProducer()
    batches = await started(producer)
    acks = Acks(interval=60, max_pending=5)
    outputs = Outputs(SETTINGS, batches.produce, acks)
    for i in range(5):
        outputs.event(b"same", b"e%d" % i)
    assert acks.pending == 5
    room = asyncio.ensure_future(acks.wait_for_room())  # backpressure at max_pending records
    await asyncio.sleep(0)
    assert not room.done()
    await settle()
    producer.deliver()
    await acks.flush()
    await room
    assert acks.pending == 0
    await batches.stop()


class OneRequestInFlight(FakeProducer):
    """aiokafka's producer as it sends: a topic-partition's batch is taken only once the
    previous one has gone out in a request (``send_batch`` waits until then), and one request
    is in flight per broker; the test sends the next request (``request``)."""

    def __init__(self) -> None:
        super().__init__()
        self._message_accumulator = SimpleNamespace(_batches={})
        self.requests: list[list[tuple[str, int, list[Any]]]] = []
        self._sent = asyncio.Event()

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> Any:
        unsent = self._message_accumulator._batches
        while unsent.get((topic, partition)):
            self._sent.clear()
            await self._sent.wait()  # aiokafka: wait_drain of the batch before
        batch = DefaultRecordBatch(bytes(builder._build()))
        unsent[(topic, partition)] = deque([(topic, partition, [r.value for r in batch])])
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery

    def request(self) -> list[tuple[str, int, list[Any]]]:
        """The sender: every batch not sent yet goes out in one request."""
        unsent = self._message_accumulator._batches
        request = [queued.popleft() for queued in unsent.values() if queued]
        self.requests.append(request)
        self._sent.set()
        return request


async def test_a_busy_partition_holds_back_only_its_own_batches() -> None:
    """While aiokafka still holds a topic-partition's batch (its request in flight), the drain
    hands every other batch over (a trigger is not held behind the changelog) and keeps that
    partition's records in one open batch, handed over in order once the batch before it went."""
    producer = OneRequestInFlight()
    batches = await started(producer)
    busy, other = SETTINGS.topic("journey_events"), SETTINGS.topic("triggers")
    batches.append(busy, 0, b"k", b"busy-1", None)
    await settle()
    assert producer.request() == [(busy, 0, [b"busy-1"])]  # in flight
    batches.append(busy, 0, b"k", b"busy-2", None)  # waits in aiokafka for the next request
    await settle()
    batches.append(busy, 0, b"k", b"busy-3", None)  # must wait behind busy-2
    batches.append(other, 1, b"k", b"trigger", None)
    await settle()
    # The trigger is in the next request, with busy-2; busy-3 stays with us, busy-4 joins it.
    batches.append(busy, 0, b"k", b"busy-4", None)
    assert sorted(producer.request()) == [(busy, 0, [b"busy-2"]), (other, 1, [b"trigger"])]
    await settle()
    assert producer.request() == [(busy, 0, [b"busy-3", b"busy-4"])]
    await settle()
    assert producer.request() == []
    # A stop hands over what is left even while aiokafka still holds a batch of it.
    batches.append(busy, 0, b"k", b"busy-5", None)
    await settle()
    batches.append(busy, 0, b"k", b"busy-6", None)
    await settle()
    stop = asyncio.ensure_future(batches.stop())
    await settle()
    assert producer.request() == [(busy, 0, [b"busy-5"])]
    await stop
    assert producer.request() == [(busy, 0, [b"busy-6"])]
