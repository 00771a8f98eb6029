"""The engine against an in-memory table and broker (no Kafka, no ClickHouse): the outbox,
copy-on-write, and the records each message publishes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import streams.runtime.engine as engine_module
from schemas.codec import Codec
from schemas.records import (
    CustomerSnapshot,
    Decision,
    JourneyEvent,
    OrderChanged,
    OrderItem,
    Trigger,
)
from streams.clock import Clock
from streams.journey.config import JourneyConfig
from streams.runtime.acks import Acks
from streams.runtime.engine import JourneyEngine, unpack, unpack_prefix
from streams.runtime.outputs import Outputs
from streams.settings import Settings

CODEC = Codec.load()
T = 1_780_000_000_000
SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]


class FakeBroker:
    """Records what is produced; deliveries complete when ``acknowledge`` is called."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes | None]] = []
        self.headers: list[list[Any]] = []
        self.waiting: list[asyncio.Future[None]] = []

    def produce(
        self, topic: str, key: bytes, value: bytes | None, headers: Sequence[Any] | None
    ) -> Any:
        self.records.append((topic, key, value))
        self.headers.append(list(headers or ()))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(done)
        return done

    def acknowledge(self) -> None:
        for done in self.waiting:
            if not done.done():
                done.set_result(None)
        self.waiting.clear()

    def on(self, short: str, record: type | None = None) -> list[Any]:
        topic = SETTINGS.topic(short)
        found = [(key, value) for t, key, value in self.records if t == topic]
        if record is None:
            return found
        return [CODEC.decode(value, record) for _, value in found]


class World:
    """A table that outlives workers (the changelog), and one worker's engine and outputs."""

    def __init__(
        self, table: dict[bytes, bytes] | None = None, clock: Clock | None = None, **engine: Any
    ) -> None:
        self.table: dict[bytes, bytes] = {} if table is None else table
        self.broker = FakeBroker()
        self.acks = Acks()
        self.outputs = Outputs(SETTINGS, self.broker.produce, self.acks)
        self.failures: list[tuple[str, BaseException]] = []

        async def failed(t: str, p: int, o: int, customer: str, exc: BaseException) -> None:
            self.failures.append((customer, exc))

        self.engine = JourneyEngine(
            self.table,
            self.outputs,
            CODEC,
            JourneyConfig(),
            clock or Clock(wall_ms=lambda: T),
            on_failure=failed,
            **engine,
        )

    @property
    def sent(self) -> list[Trigger]:
        return self.broker.on("triggers", Trigger)

    def decisions(self) -> list[Decision]:
        return self.broker.on("decisions", Decision)

    async def durable(self) -> None:
        """The broker acknowledges everything sent so far, and the acks run."""
        self.broker.acknowledge()
        flushing = asyncio.ensure_future(self.acks.flush())
        await asyncio.sleep(0)
        self.broker.acknowledge()  # snapshots sent by the flush itself
        await flushing


async def write_dirty(engine: JourneyEngine) -> None:
    """What a flush does with the states: take the dirty ones, write them."""
    engine.take_dirty()
    await engine.write_states()


def placed(event_id: str = "e1", customer: str = "c1") -> OrderChanged:
    return OrderChanged(
        event_id, customer, T, "o1", "PLACED", 2_000, "EUR", [OrderItem("p", 1, 2_000)]
    )


async def test_decisions_stay_in_the_outbox_until_the_broker_acknowledged_them() -> None:
    world = World()
    await world.engine.on_event(placed(), "shop.orders", 0, 5)
    (confirmation,) = world.sent
    await write_dirty(world.engine)  # what a flush does first
    value = world.table[b"c1"]
    assert unpack_prefix(value)[2] is True  # flagged: the rebuild finds it without decoding
    assert [entry[1][0] for entry in unpack(value).outbox] == [confirmation.trigger_id]
    await world.engine.on_tick(0, "journey.ticks", 1)
    await write_dirty(world.engine)
    assert unpack(world.table[b"c1"]).outbox != []  # not acknowledged yet: kept
    await world.durable()
    await world.engine.on_tick(0, "journey.ticks", 2)  # trims what became durable
    await write_dirty(world.engine)
    value = world.table[b"c1"]
    assert unpack_prefix(value)[2] is False and unpack(value).outbox == []
    assert [d.trigger_id for d in world.decisions()] == [confirmation.trigger_id]
    # Trimmed on the encoded row: the value a decode, trim and pack of the state would give.
    state = unpack(world.table[b"c1"])
    assert value == engine_module.pack(0, state)


async def test_a_message_publishes_its_event_decisions_and_snapshot() -> None:
    world = World()
    await world.engine.on_event(placed(), "shop.orders", 2, 7)
    (event,) = world.broker.on("journey_events", JourneyEvent)
    assert (event.event_id, event.event_type, event.amount_minor) == ("e1", "order.placed", 2_000)
    assert (event.input_topic, event.input_partition, event.input_offset) == ("shop.orders", 2, 7)
    (decision,) = world.decisions()
    assert decision.status == "EMITTED" and decision.trigger_type == "ORDER_CONFIRMATION"
    assert world.broker.on("snapshots") == []  # coalesced: sent before the next acks
    await world.durable()
    (snapshot,) = world.broker.on("snapshots", CustomerSnapshot)
    assert (snapshot.customer_id, snapshot.orders_count, snapshot.revenue_minor) == ("c1", 1, 2_000)
    # Every record is keyed by customer_id (the loader and any consumer rely on it).
    assert {key for _, key, _ in world.broker.records} == {b"c1"}


async def test_a_message_is_acknowledged_only_after_everything_it_caused() -> None:
    world = World()
    await world.engine.on_event(placed(), "shop.orders", 0, 5)
    acked: list[int] = []
    world.acks.after(lambda: acked.append(5))
    flushing = asyncio.ensure_future(world.acks.flush())
    await asyncio.sleep(0.01)
    assert acked == [] and not flushing.done()  # the broker has not acknowledged yet
    world.broker.acknowledge()
    await asyncio.sleep(0)
    world.broker.acknowledge()  # the snapshot the flush sent first
    await flushing
    assert acked == [5]


async def test_an_erasure_sends_a_tombstone_and_nothing_after_it() -> None:
    from schemas.records import CustomerChanged

    world = World()
    await world.engine.on_event(placed(), "shop.orders", 0, 5)
    await world.engine.on_event(
        CustomerChanged("x1", "c1", T + 1, "ERASED"), "shop.customers", 0, 6
    )
    await world.engine.on_event(placed("e9"), "shop.orders", 0, 7)
    await world.durable()
    assert world.broker.on("snapshots") == [(b"c1", None)]  # the coalesced snapshot is dropped
    assert [e.event_id for e in world.broker.on("journey_events", JourneyEvent)] == ["e1"]


async def test_a_crash_before_the_flush_resends_the_outbox_with_the_same_ids() -> None:
    first = World()
    await first.engine.on_event(placed(), "shop.orders", 0, 5)
    # A flush wrote the state (with its outbox) to the changelog; kill -9 before the broker
    # acknowledged the decisions, so before the message was acknowledged.
    await write_dirty(first.engine)
    second = World(first.table)
    second.engine.rebuild(second.table.items(), {0})
    # The redelivered event is a duplicate for the model, but its outputs are not lost.
    await second.engine.on_event(placed(), "shop.orders", 0, 5)
    await second.engine.on_tick(0, "journey.ticks", 9)
    await second.durable()
    assert [t.trigger_id for t in second.sent] == [t.trigger_id for t in first.sent]
    assert [d.trigger_id for d in second.decisions()] == [first.sent[0].trigger_id]
    # The redelivered message publishes its event again (same event_id: the loader keeps one).
    assert [e.event_id for e in second.broker.on("journey_events", JourneyEvent)] == ["e1"]
    assert second.engine.resent == 1
    await second.engine.on_tick(0, "journey.ticks", 10)
    await write_dirty(second.engine)
    assert unpack(second.table[b"c1"]).outbox == []


async def test_a_crash_before_the_state_was_written_decides_the_same_again() -> None:
    first = World()
    await first.engine.on_event(placed(), "shop.orders", 0, 5)
    # kill -9 before the flush: the outputs may be on the broker, the state is not (nor the ack).
    assert first.table == {}
    second = World(first.table)
    second.engine.rebuild(second.table.items(), {0})
    await second.engine.on_event(placed(), "shop.orders", 0, 5)  # redelivered
    await second.durable()
    assert [t.trigger_id for t in second.sent] == [t.trigger_id for t in first.sent] != []
    assert [d.trigger_id for d in second.decisions()] == [d.trigger_id for d in first.decisions()]


async def test_a_state_is_written_once_per_customer_per_flush() -> None:
    class CountingTable(dict[bytes, bytes]):
        writes = 0

        def __setitem__(self, key: bytes, value: bytes) -> None:
            CountingTable.writes += 1
            super().__setitem__(key, value)

    world = World(CountingTable())
    for n in range(10):
        await world.engine.on_event(placed(f"e{n}"), "shop.orders", 0, n)
    await world.engine.on_event(placed("x", customer="c2"), "shop.orders", 0, 10)
    assert CountingTable.writes == 0  # nothing before the flush
    # Read back before the flush: the newest state, not the table's.
    assert {f"e{n}" for n in range(10)} <= set(world.engine.load("c1").seen)
    await world.durable()
    assert CountingTable.writes == 2 and world.engine.state_writes == 2
    assert {f"e{n}" for n in range(10)} <= set(unpack(world.table[b"c1"]).seen)


async def test_a_rebalance_drops_unwritten_states_of_revoked_partitions_only() -> None:
    world = World()
    await world.engine.on_event(placed(), "shop.orders", 0, 5)
    await world.engine.on_event(placed("x", customer="c2"), "shop.orders", 1, 5)
    world.engine.rebuild(world.table.items(), {1})  # partition 0 went to another worker
    await write_dirty(world.engine)
    assert set(world.table) == {b"c2"}


async def test_a_rebalance_while_a_flush_holds_taken_states_drops_those_of_revoked_partitions() -> (
    None
):
    """States a flush took and has not written yet count as unwritten: a rebalance drops those
    of revoked partitions, and the rebuilt index sees the others over what the table holds."""
    world = World()
    await world.engine.on_event(placed(), "shop.orders", 0, 5)
    await world.engine.on_event(placed("x", customer="c2"), "shop.orders", 1, 5)
    world.engine.take_dirty()  # a flush took both, and awaits the broker
    await world.engine.on_event(placed("y", customer="c3"), "shop.orders", 1, 6)
    assert world.engine.rebuild(world.table.items(), {1}) == 2  # c2 and c3 have timers
    await world.engine.write_states()
    assert set(world.table) == {b"c2"}  # c1's partition is another worker's now; c3 is dirty
    await write_dirty(world.engine)
    assert set(world.table) == {b"c2", b"c3"}


async def test_a_recovered_outbox_is_resent_on_the_partitions_tick() -> None:
    first = World()
    await first.engine.on_event(placed(), "shop.orders", 0, 5)
    await write_dirty(first.engine)
    second = World(first.table)
    second.engine.rebuild(second.table.items(), {0})
    await second.engine.on_tick(0, "journey.ticks", 9)
    await second.durable()
    assert [t.trigger_id for t in second.sent] == [t.trigger_id for t in first.sent]
    assert len(second.decisions()) == 1
    # A re-sent outbox goes with a fresh snapshot (the first one may have been lost too).
    assert [s.customer_id for s in second.broker.on("snapshots", CustomerSnapshot)] == ["c1"]


async def test_a_failing_step_leaves_the_stored_state_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    await world.engine.on_event(placed(), "shop.orders", 0, 5)
    await write_dirty(world.engine)
    before = world.table[b"c1"]
    real_step: Callable[..., Any] = engine_module.step

    def half_applies(state: Any, *args: Any) -> Any:
        state.seen.append("half-applied")
        state.orders.clear()
        raise ValueError("year 97036 is out of range")

    monkeypatch.setattr(engine_module, "step", half_applies)
    with pytest.raises(ValueError):
        await world.engine.on_event(placed("e2"), "shop.orders", 0, 6)
    await write_dirty(world.engine)
    assert world.table[b"c1"] == before
    loaded = world.engine.load("c1")
    assert "half-applied" not in loaded.seen and loaded.orders
    monkeypatch.setattr(engine_module, "step", real_step)
    await world.engine.on_event(placed("e2"), "shop.orders", 0, 6)
    assert "e2" in world.engine.load("c1").seen


async def test_a_customer_failing_in_a_tick_is_reported_and_the_others_fire(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    for customer in ("c1", "c2"):
        await world.engine.on_event(placed("e-" + customer, customer), "shop.orders", 0, 5)
    await world.durable()
    real = engine_module.fire_due

    def broken_for_c1(state: Any, now: int, config: Any) -> Any:
        if state.customer_id == "c1":
            raise OverflowError("date value out of range")
        return real(state, now, config)

    monkeypatch.setattr(engine_module, "fire_due", broken_for_c1)
    for customer in ("c1", "c2"):
        world.engine.index.set(0, customer, T)
    await world.engine.on_tick(0, "journey.ticks", 3)
    assert [c for c, _ in world.failures] == ["c1"]


def test_a_far_timer_is_packed_not_crashed() -> None:
    state = engine_module.new_state("c1")
    from streams.journey.state import Timer

    state.timers["x"] = Timer("t", "WIN_BACK", 2**63 - 5, 2**63 - 5, "e")
    partition, next_fire, _ = unpack_prefix(engine_module.pack(3, state))
    assert partition == 3 and next_fire == engine_module.NO_TIMER


async def test_sums_beyond_int64_saturate_instead_of_failing() -> None:
    from schemas.bounds import MAX_MONEY_MINOR, MAX_QUANTITY
    from schemas.records import CartChanged

    world = World()
    for n in range(30):  # each line is within the bounds; their sum is not within Int64
        add = CartChanged(
            f"a{n}", "c1", T + n, "k", "PRODUCT_ADDED", f"p{n}", None, MAX_QUANTITY,
            MAX_MONEY_MINOR, "EUR",
        )  # fmt: skip
        await world.engine.on_event(add, "shop.cart", 0, n)
    assert world.engine.load("c1").carts["k"].value_minor == 2**63 - 1


async def test_a_prediction_is_kept_in_the_snapshot_and_is_no_event() -> None:
    from schemas.records import CustomerPrediction

    world = World()
    await world.engine.on_event(placed(), "shop.orders", 0, 5)
    await world.engine.on_event(
        CustomerPrediction("prediction/c1/9", "c1", T, 0.75, 0.5, 4_200, T + 86_400_000),
        SETTINGS.topic("predictions"), 0, 3,
    )  # fmt: skip
    await world.durable()
    (snapshot,) = world.broker.on("snapshots", CustomerSnapshot)
    assert (snapshot.probability_alive, snapshot.predicted_clv_minor) == (0.75, 4_200)
    assert snapshot.expected_next_order_at == T + 86_400_000
    assert snapshot.expected_orders_90d == 0.5
    # Not a shop event: no journey.events record, no decision.
    assert [e.event_id for e in world.broker.on("journey_events", JourneyEvent)] == ["e1"]
    assert len(world.decisions()) == 1


async def test_a_prediction_out_of_bounds_is_a_dead_letter() -> None:
    from schemas.records import CustomerPrediction, DeadLetter
    from streams.runtime.ingest import Ingest, key_partition

    world = World()
    ingest = Ingest(SETTINGS, CODEC, world.outputs, partitions=12)
    topic = SETTINGS.topic("predictions")
    partition = key_partition(b"c1", 12)
    good = CustomerPrediction("p/c1/1", "c1", T, 0.5, 0.1, 10)
    bad = CustomerPrediction("p/c1/2", "c1", T, 1.5, 0.1, 10)
    assert await ingest.handle(topic, partition, 1, b"c1", CODEC.encode(good), []) == good
    assert await ingest.handle(topic, partition, 2, b"c1", CODEC.encode(bad), []) is None
    (letter,) = world.broker.on("deadletter", DeadLetter)
    assert letter.reason_code == "validation" and "probability_alive" in letter.reason


async def test_a_state_write_that_fails_keeps_the_messages_unacknowledged() -> None:
    class Refusing(dict[bytes, bytes]):
        refuse = True

        def __setitem__(self, key: bytes, value: bytes) -> None:
            if Refusing.refuse:
                raise OSError("the store is closed")
            super().__setitem__(key, value)

    world = World(Refusing())
    await world.engine.on_event(placed(), "shop.orders", 0, 5)
    acked: list[int] = []
    world.acks.after(lambda: acked.append(5))
    world.broker.acknowledge()
    flushing = asyncio.ensure_future(world.acks.flush())
    await asyncio.sleep(0)
    world.broker.acknowledge()  # the snapshot the flush sent first: then the states are written
    with pytest.raises(OSError):
        await flushing
    assert acked == [] and world.table == {}
    Refusing.refuse = False
    decided = len(world.decisions())
    await world.durable()
    assert acked == [5] and b"c1" in world.table
    # Written on the retry without the entries that became durable in the failed flush.
    assert unpack_prefix(world.table[b"c1"])[2] is False
    assert unpack(world.table[b"c1"]).outbox == []
    await world.engine.on_tick(0, "journey.ticks", 1)
    await world.durable()
    assert len(world.decisions()) == decided  # nothing re-sent


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_the_worker_writes_states_into_a_faust_table_outside_of_a_message(
    store: str, tmp_path: Path
) -> None:
    """The write-behind goes through Faust's Table API from the acks loop, where no event is
    current: the store gets the value (in RocksDB, the database of the given partition: one
    write batch each), the changelog a record of the given partition (in that partition's record
    batch), the acknowledgements wait for it, and once it is on the broker its offset is the
    store's persisted offset."""
    from types import SimpleNamespace

    import faust

    from streams.runtime.app import table_writer
    from streams.runtime.batching import BatchProducer
    from tests.unit.test_batching import FakeProducer

    app = faust.App(
        "write-behind-test", broker="kafka://127.0.0.1:1", store=store, datadir=str(tmp_path)
    )
    table = app.Table("journeys", default=None, key_type=bytes, value_type=bytes, partitions=4)
    app.consumer.topic_partitions = lambda topic: 0  # metadata without the changelog yet
    persisted: list[tuple[Any, int]] = []
    table.data.set_persisted_offset = lambda tp, offset: persisted.append((tp, offset))
    producer = FakeProducer()
    acks = Acks()
    batches = BatchProducer(producer)
    await batches.start([])
    write = table_writer(table, batches, acks)
    write([(3, b"c1", b"state-1"), (1, b"c2", b"state-2"), (3, b"c3", b"state-3")])
    assert table[b"c1"] == b"state-1" and table[b"c2"] == b"state-2"
    if store == "rocksdb://":  # in the partition's own database, and indexed there
        assert table.data._dbs[3][b"c3"] == b"state-3" and b"c3" not in table.data._dbs[1]
        assert table.data._key_index[b"c2"] == 1
    assert acks.pending == 3
    flush = asyncio.ensure_future(acks.flush())
    await asyncio.sleep(0.05)
    assert not flush.done()  # the changelog records are not on the broker yet
    changelog = "write-behind-test-journeys-changelog"
    assert producer.batches == [
        (changelog, 3, [(b"c1", b"state-1"), (b"c3", b"state-3")]),
        (changelog, 1, [(b"c2", b"state-2")]),
    ]
    for base, delivery in zip((10, 20), producer.deliveries, strict=True):
        delivery.set_result(SimpleNamespace(offset=base))
    await flush
    assert [(tp.topic, tp.partition, offset) for tp, offset in persisted] == [
        (changelog, 3, 11),  # the batch's last record: base offset + 1
        (changelog, 1, 20),
    ]
    await batches.stop()


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_the_worker_reads_a_state_from_its_partition_of_a_faust_table(
    store: str, tmp_path: Path
) -> None:
    """``table_reader``: what the table holds for a key (``None`` for a key it has not), read
    in RocksDB from the given partition's database (where ``table_writer`` put it), as the
    store's own read with that partition's event current; indexed there, as that read does.
    Another store has none: the engine reads ``table.get``."""
    import faust

    from streams.runtime.app import table_reader

    app = faust.App("read-test", broker="kafka://127.0.0.1:1", store=store, datadir=str(tmp_path))
    table = app.Table("journeys", default=None, key_type=bytes, value_type=bytes, partitions=4)
    read = table_reader(table)
    if store == "memory://":
        assert read is None
        return
    assert read is not None
    assert read(2, b"c1") is None
    table.data._db_for_partition(2)[b"c1"] = b"state-1"
    assert read(1, b"c1") is None  # another partition's database
    assert read(2, b"c1") == b"state-1"
    assert table.data._key_index[b"c1"] == 2


async def test_a_state_not_cached_is_read_from_the_partition_of_its_message() -> None:
    """The engine reads a customer it has not cached with ``read(partition, key)``, the
    partition of the message (or tick) that concerns it: where ``write`` put it."""
    world = World()
    await world.engine.on_event(placed(customer="c7"), "shop.orders", 3, 5)
    await write_dirty(world.engine)
    stored = dict(world.table)
    reads: list[tuple[int, bytes]] = []

    def read(partition: int, key: bytes) -> bytes | None:
        reads.append((partition, key))
        return stored.get(key)

    later = World(table=stored)  # a worker started after it: nothing cached
    later.engine = JourneyEngine(
        stored, later.outputs, CODEC, JourneyConfig(), Clock(wall_ms=lambda: T), read=read
    )
    await later.engine.on_event(placed("e2", customer="c7"), "shop.orders", 3, 6)
    assert reads == [(3, b"c7")]
    assert later.engine.load("c7").seen[-2:] == ["e1", "e2"]  # the stored state, then e2


async def test_more_customers_changed_between_flushes_than_the_cache_holds() -> None:
    """A state not written yet is found even after it left the cache (it raised KeyError once:
    more customers changed within one acknowledgement interval than the cache holds)."""
    world = World()
    world.engine._cache_size = 2
    for i in range(5):
        await world.engine.on_event(placed(f"e{i}", f"c{i}"), "orders", 0, i)
    assert len(world.engine._dirty) == 5 and len(world.engine._cache) == 2
    for i in range(5):
        assert world.engine.load(f"c{i}").orders_count == 1
    await world.durable()
    assert not world.engine._dirty and len(world.table) == 5


async def test_a_message_that_fails_is_a_processing_error_dead_letter_and_the_next_is_handled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker's own handling (``MessageHandler``, what the agent calls per message): an
    exception in the model leaves the state as it was, becomes a dead letter with its summary,
    and the stream goes on."""
    from types import SimpleNamespace

    from schemas.records import DeadLetter
    from streams.runtime.ingest import Ingest, key_partition
    from streams.runtime.intake import MessageHandler

    world = World()
    crashes: list[BaseException] = []

    async def crash(exc: BaseException) -> None:
        crashes.append(exc)

    ingest = Ingest(SETTINGS, CODEC, world.outputs, partitions=12)
    handle = MessageHandler(ingest, world.engine, SETTINGS.topic("ticks"), crash)
    topic, partition = SETTINGS.topic("orders"), key_partition(b"c1", 12)

    def message(offset: int, event_id: str) -> Any:
        value = CODEC.encode(placed(event_id))
        return SimpleNamespace(
            topic=topic, partition=partition, offset=offset, key=b"c1", value=value, headers=[]
        )

    real_step: Callable[..., Any] = engine_module.step

    def fails_on_e2(state: Any, record: Any, *args: Any) -> Any:
        if record.event_id == "e2":
            state.seen.append("half-applied")  # in place, then the exception
            raise ValueError("year 97036 is out of range\nsecond line")
        return real_step(state, record, *args)

    monkeypatch.setattr(engine_module, "step", fails_on_e2)
    assert await handle(message(5, "e1"))
    before = world.engine.load("c1")
    assert await handle(message(6, "e2"))
    after = world.engine.load("c1")
    assert after.seen == before.seen and "half-applied" not in after.seen
    (letter,) = world.broker.on("deadletter", DeadLetter)
    assert (letter.topic, letter.partition, letter.offset) == (topic, partition, 6)
    assert letter.reason_code == "processing_error"
    assert letter.reason == "ValueError: year 97036 is out of range"
    assert letter.value == message(6, "e2").value and letter.record_type == "OrderChanged"
    assert await handle(message(7, "e3"))  # the stream goes on
    assert "e3" in world.engine.load("c1").seen and crashes == []
    events = world.broker.on("journey_events", JourneyEvent)
    assert [e.event_id for e in events] == ["e1", "e3"]


class Wall:
    """A journey clock the test moves."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def test_a_timer_that_changes_nothing_a_snapshot_shows_sends_no_snapshot() -> None:
    from schemas.records import CartChanged, CustomerChanged

    wall = Wall(T)
    world = World()
    world.engine.clock = Clock(wall_ms=wall)
    # T is 20:26 UTC: the reminder an hour later is at 13:26 in UTC-8, outside quiet hours.
    consent = CustomerChanged("e0", "c1", T, "UPDATED", marketing_consent=True,
                              time_zone="Etc/GMT+8")  # fmt: skip
    add = CartChanged("e1", "c1", T, "k", "PRODUCT_ADDED", "p", "shoes", 1, 4_999, "EUR")
    await world.engine.on_event(consent, "shop.customers", 0, 1)
    await world.engine.on_event(add, "shop.cart", 0, 2)
    await world.durable()
    assert len(world.broker.on("snapshots")) == 1
    wall.now = T + JourneyConfig().abandoned_cart_first_delay + 1_000
    await world.engine.on_tick(0, "journey.ticks", 3)
    await world.durable()
    (reminder,) = world.sent
    assert reminder.trigger_type == "ABANDONED_CART"
    assert len(world.broker.on("snapshots")) == 1  # the customer looks the same


async def test_a_customer_lapsing_on_a_timer_gets_a_snapshot() -> None:
    wall = Wall(T)
    world = World()
    world.engine.clock = Clock(wall_ms=wall)
    await world.engine.on_event(placed(), "shop.orders", 0, 5)
    await world.durable()
    (before,) = world.broker.on("snapshots", CustomerSnapshot)
    assert before.segment == "NEW"
    # Nothing but the clock changed the segment: the win-back timer's firing sends it.
    wall.now = T + JourneyConfig().win_back_delay + 1_000
    await world.engine.on_tick(0, "journey.ticks", 6)
    await world.durable()
    assert "WIN_BACK" in {d.trigger_type for d in world.decisions()}
    assert [s.segment for s in world.broker.on("snapshots", CustomerSnapshot)] == ["NEW", "LAPSED"]


async def test_a_flush_writes_the_state_once_its_records_are_durable_without_its_outbox() -> None:
    """The state is written after the broker acknowledged what it caused, with those outbox
    entries already dropped: one write per customer, no second write to trim the outbox."""
    world = World()
    await world.engine.on_event(placed(), "shop.orders", 0, 5)
    acked: list[int] = []
    world.acks.after(lambda: acked.append(5))
    flushing = asyncio.ensure_future(world.acks.flush())
    await asyncio.sleep(0.01)
    assert world.table == {} and acked == []  # deliveries first, then the states
    world.broker.acknowledge()
    await asyncio.sleep(0)
    world.broker.acknowledge()  # the snapshot the flush sent first
    await flushing
    value = world.table[b"c1"]
    assert unpack_prefix(value)[2] is False and unpack(value).outbox == []
    assert value == engine_module.pack(0, unpack(value))  # what the full path would store
    assert world.engine.load("c1").outbox == []  # the cache holds the trimmed value too
    assert acked == [5] and world.engine.state_writes == 1
    await world.engine.on_tick(0, "journey.ticks", 1)  # nothing left to visit
    await world.durable()
    assert world.engine.state_writes == 1 and len(world.decisions()) == 1


async def test_a_state_changed_while_a_flush_awaits_the_broker_is_written_by_the_next() -> None:
    """A flush writes the states it took with its messages, trimmed of what became durable; a
    customer changed again while it awaits the broker keeps its newer state for the next flush,
    which writes it trimmed too: one write per flush, none to trim an outbox afterwards."""
    world = World()
    await world.engine.on_event(placed(), "shop.orders", 0, 5)
    flushing = asyncio.ensure_future(world.acks.flush())
    await asyncio.sleep(0)  # the flush took the state, sent the snapshot, awaits the deliveries
    taken = len(world.broker.waiting)
    # Handled while the flush awaits the broker: its decision is not durable in this flush.
    second = OrderChanged(
        "e2", "c1", T + 1, "o2", "PLACED", 1_000, "EUR", [OrderItem("p", 1, 1_000)]
    )
    await world.engine.on_event(second, "shop.orders", 0, 6)
    assert len(world.sent) == 2
    for done in world.broker.waiting[:taken]:
        done.set_result(None)
    for _ in range(5):
        await asyncio.sleep(0)
    assert world.engine.state_writes == 1  # written once the first records were acknowledged
    # The flush then awaits what was registered meanwhile (in the worker: the states' changelog
    # records) before it acknowledges the messages.
    world.broker.acknowledge()
    await flushing
    stored = unpack(world.table[b"c1"])
    # The state of the first message, its decision durable and dropped; the second's is dirty.
    assert stored.outbox == [] and stored.outbox_seq == 1 and stored.orders_count == 1
    world.broker.acknowledge()
    await world.durable()
    stored = unpack(world.table[b"c1"])
    assert stored.orders_count == 2 and stored.outbox == [] and stored.outbox_seq > 1
    assert world.engine.state_writes == 2
    await world.engine.on_tick(0, "journey.ticks", 1)  # nothing left to trim
    await world.durable()
    assert world.engine.state_writes == 2
    assert len(world.decisions()) == stored.outbox_seq  # each sent once, none re-sent


async def test_a_state_written_before_its_records_were_durable_is_trimmed_on_a_tick() -> None:
    world = World()
    await world.engine.on_event(placed(), "shop.orders", 0, 5)
    await write_dirty(world.engine)  # as a flush that took the state but not its records
    assert unpack(world.table[b"c1"]).outbox
    await world.durable()  # not dirty any more: a visit of the next tick trims it
    assert unpack(world.table[b"c1"]).outbox
    await world.engine.on_tick(0, "journey.ticks", 1)
    await write_dirty(world.engine)
    assert unpack(world.table[b"c1"]).outbox == []


def test_the_timer_index_gives_each_due_customer_once_and_only_when_due() -> None:
    index = engine_module.TimerIndex()
    index.set(0, "a", T + 10)
    index.set(0, "b", T + 10)  # the same time as a
    index.set(0, "c", T + 10)
    index.set(0, "d", T + 30)
    index.set(1, "e", T)  # another partition
    index.set(0, "c", T + 20)  # moved: its entry at T + 10 is stale
    index.set(0, "f", T + 5)
    index.set(0, "f", None)  # no timer any more
    assert len(index) == 5
    assert index.pop_due(0, T + 9) == []
    assert sorted(index.pop_due(0, T + 10)) == ["a", "b"]
    assert index.pop_due(0, T + 10) == []
    index.set(0, "a", T + 10)  # set again at a time already fired: due at the next pop
    assert index.pop_due(0, T + 25) == ["a", "c"]
    assert index.pop_due(0, T + 1_000) == ["d"]
    assert index.pop_due(1, T + 1_000) == ["e"]
    assert len(index) == 0


def test_a_timer_moved_away_and_back_is_due_once() -> None:
    index = engine_module.TimerIndex()
    index.set(0, "a", T)
    index.set(0, "a", T + 50)
    index.set(0, "a", T)  # two entries at T now, and a stale one at T + 50
    assert index.pop_due(0, T + 100) == ["a"]
    index.clear()
    index.set(0, "b", T)
    assert index.pop_due(0, T) == ["b"] and len(index) == 0


async def test_a_write_failing_after_others_keeps_it_and_the_rest_dirty() -> None:
    class RefusingC2(dict[bytes, bytes]):
        refuse = True

        def __setitem__(self, key: bytes, value: bytes) -> None:
            if key == b"c2" and RefusingC2.refuse:
                raise OSError("the store is closed")
            super().__setitem__(key, value)

    world = World(RefusingC2())
    for customer in ("c1", "c2", "c3"):
        await world.engine.on_event(placed("e-" + customer, customer), "shop.orders", 0, 5)
    with pytest.raises(OSError):
        await write_dirty(world.engine)
    assert set(world.table) == {b"c1"}  # written before the failure, and not dirty any more
    RefusingC2.refuse = False
    await write_dirty(world.engine)
    assert set(world.table) == {b"c1", b"c2", b"c3"}
    assert world.engine.state_writes == 3  # c1 was not written twice


def _shared_containers(state: Any) -> list[str]:
    """Lists, dicts and records reachable from ``state`` by two paths: none may be, or changing
    one through the state kept live would change it elsewhere too (a decode never shares)."""
    seen: dict[int, str] = {}
    shared: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, list | dict) or hasattr(value, "__slots__"):
            if id(value) in seen:
                shared.append(f"{path} is {seen[id(value)]}")
                return
            seen[id(value)] = path
        if isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}[{key!r}]")
        elif hasattr(value, "__slots__") and not isinstance(value, str | int | float):
            for name in value.__slots__:
                walk(getattr(value, name), f"{path}.{name}")

    walk(state, "state")
    return shared


async def _replay_simulated(
    monkeypatch: pytest.MonkeyPatch, live_size: int, events: int = 4_000
) -> tuple[list[tuple[str, bytes, bytes | None]], dict[bytes, bytes], int]:
    """Simulated shop traffic through one engine, with ticks and flushes in between, the clock
    following the events; every live state checked against a decode of its stored value."""
    from streams.ops.simulator import SimulationConfig, generate
    from streams.runtime.ingest import key_partition

    monkeypatch.setattr(engine_module, "wall_clock_ms", lambda: T)
    now = [T]
    world = World(clock=Clock(wall_ms=lambda: now[0]), live_size=live_size)
    engine = world.engine
    config = SimulationConfig(seed=7, customers=400, start_ms=T, arrival_window_ms=86_400_000)
    for offset, event in enumerate(generate(config)):
        if offset == events:
            break
        assert event.record is not None
        now[0] = max(now[0], event.record.occurred_at)
        partition = key_partition(event.key.encode(), 4)
        await engine.on_event(event.record, SETTINGS.topic(event.topic), partition, offset)
        live = engine._live.get(event.key)
        if live is not None:
            assert unpack(live[0]) == live[1]
            assert _shared_containers(live[1]) == []
        if offset % 97 == 0:
            for tick in range(4):
                await engine.on_tick(tick, SETTINGS.topic("ticks"), offset)
        if offset % 331 == 0:
            await world.durable()
    await world.durable()
    return world.broker.records, world.table, engine.live_hits


async def test_a_state_kept_live_decides_and_publishes_as_its_decode_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The state object a customer's last message left is stepped on by its next message instead
    of a decode of the stored value: the same records and stored values, byte for byte, as with
    a decode every time (and each live state equals the decode of its value and shares nothing)."""
    live, live_table, hits = await _replay_simulated(monkeypatch, engine_module.LIVE_STATES)
    decoded, decoded_table, no_hits = await _replay_simulated(monkeypatch, 0)
    assert hits > 1_000 and no_hits == 0  # the live path was taken, and not taken
    assert len(live) > 4_000 and {t for t, _, _ in live} >= {SETTINGS.topic("triggers")}
    assert live == decoded
    assert live_table == decoded_table


async def test_a_live_state_is_not_used_once_its_stored_value_changed_otherwise() -> None:
    """The live state goes with the value its commit stored: once the flush stored the value
    without the outbox entries that became durable, the next message decodes that value."""
    world = World()
    await world.engine.on_event(placed(), "shop.orders", 0, 5)
    assert world.engine.load("c1").outbox  # (taken: the next load decodes)
    await world.engine.on_event(placed("e2"), "shop.orders", 0, 6)
    assert b"c1" not in world.table and "c1" in world.engine._live
    await world.durable()  # the outbox is durable: the value is written without it
    assert unpack(world.table[b"c1"]).outbox == []
    hits = world.engine.live_hits
    state = world.engine.load("c1")
    assert world.engine.live_hits == hits and state.outbox == []


async def test_only_the_snapshot_sent_is_encoded_and_one_that_cannot_be_is_logged_not_held(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A customer's snapshot is encoded when the flush sends it: three events of one customer
    within a flush encode one snapshot, the newest. A snapshot that cannot be encoded (a bug, or
    a value outside its schema) is logged and not sent; the messages are acknowledged and the
    other customers' snapshots sent."""
    world = World()
    real = world.outputs.encode_snapshot
    encoded: list[tuple[Any, ...]] = []

    def encode(row: Any) -> bytes:
        encoded.append(row)
        if row[0] == "c2":
            raise OverflowError("int too big to convert")
        return real(row)

    world.outputs.encode_snapshot = encode
    for offset, event_id in enumerate(("e1", "e2", "e3")):
        await world.engine.on_event(placed(event_id), "shop.orders", 0, offset)
    await world.engine.on_event(placed("e4", "c2"), "shop.orders", 0, 3)
    acked: list[str] = []
    world.acks.after(lambda: acked.append("m"))
    await world.durable()
    assert [row[0] for row in encoded] == ["c1", "c2"]
    (snapshot,) = world.broker.on("snapshots", CustomerSnapshot)
    assert snapshot.customer_id == "c1" and snapshot.orders_count == 1
    assert acked == ["m"] and world.outputs.queued == 0
    assert world.outputs.unencodable_snapshots == 1
    assert "the snapshot of customer b'c2' cannot be encoded" in caplog.text
