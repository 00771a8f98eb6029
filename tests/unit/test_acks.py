"""``Acks``, where a message is acknowledged, in both roles: the worker's (with ``Outputs``: only
after its snapshot is on the broker) and the loader's (with the ClickHouse sink: only after its
row is stored)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from sinks.clickhouse.sink import ClickHouseSink
from streams.runtime.acks import Acks
from streams.runtime.loader import acks_after_storing
from streams.runtime.outputs import Outputs
from streams.settings import Settings
from tests.unit.fake_clickhouse import FakeClient, RefusingClickHouse, make_sink
from tests.unit.loops import assert_stop_ends_when_a_wake_up_races_it

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
SNAPSHOTS = SETTINGS.topic("snapshots")


class Producer:
    """Deliveries complete at once; ``fail`` refuses sends; ``hold`` keeps each delivery open
    (the broker has not answered) until ``release``."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes | None]] = []
        self.fail = False
        self.hold = False
        self.held: list[asyncio.Future[None]] = []
        self.entered = asyncio.Event()

    def produce(self, topic: str, key: bytes, value: bytes | None, headers: Any) -> Any:
        self.entered.set()
        if self.fail:
            raise RuntimeError("the producer's buffer is full")
        self.sent.append((key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.hold:
            self.held.append(done)
        else:
            done.set_result(None)
        return done

    def release(self) -> None:
        self.hold = False
        for done in self.held:
            done.set_result(None)
        self.held.clear()


def make() -> tuple[Producer, Acks, Outputs]:
    producer = Producer()
    acks = Acks()
    return producer, acks, Outputs(SETTINGS, producer.produce, acks)


async def test_a_snapshot_that_could_not_be_sent_stays_queued_and_holds_its_ack() -> None:
    producer, acks, outputs = make()
    acked: list[str] = []
    outputs.snapshot(b"c1", b"s1")
    outputs.snapshot(b"c2", b"s2")
    acks.after(lambda: acked.append("m1"))
    producer.fail = True
    with pytest.raises(RuntimeError):
        await acks.flush()
    assert acked == [] and producer.sent == []
    assert outputs.queued == 2  # counted in the worker's "unacknowledged" until sent
    producer.fail = False
    assert await acks.flush() == 1
    assert acked == ["m1"] and outputs.queued == 0
    assert sorted(producer.sent) == [(b"c1", b"s1"), (b"c2", b"s2")]


async def test_a_message_handled_while_snapshots_are_sent_waits_for_the_next_flush() -> None:
    producer, acks, outputs = make()
    acked: list[str] = []
    outputs.snapshot(b"c1", b"s1")
    acks.after(lambda: acked.append("m1"))
    producer.hold = True
    flush = asyncio.ensure_future(acks.flush())
    await producer.entered.wait()
    # The agent goes on while the flush awaits the broker: m2's snapshot is queued after the
    # flush sent the queue, so m2 must not be acknowledged by this flush.
    outputs.snapshot(b"c2", b"s2")
    outputs.snapshot(b"c1", b"s1-newer")
    acks.after(lambda: acked.append("m2"))
    producer.release()
    assert await flush == 1
    assert acked == ["m1"]
    assert producer.sent == [(b"c1", b"s1")]
    assert await acks.flush() == 1
    assert acked == ["m1", "m2"]
    assert sorted(producer.sent[1:]) == [(b"c1", b"s1-newer"), (b"c2", b"s2")]


async def test_an_erasure_is_never_followed_by_an_older_snapshot() -> None:
    producer, acks, outputs = make()
    # Erased while a flush awaits the broker: its snapshot went first, the tombstone after it.
    outputs.snapshot(b"c1", b"s1")
    outputs.snapshot(b"c2", b"s2")
    producer.hold = True
    flush = asyncio.ensure_future(acks.flush())
    await producer.entered.wait()
    outputs.erased(b"c2")
    producer.release()
    await flush
    await acks.flush()
    # Erased with a snapshot still queued: the snapshot is never sent.
    outputs.snapshot(b"c3", b"s3")
    outputs.erased(b"c3")
    await acks.flush()
    sent = {key: [value for k, value in producer.sent if k == key] for key in (b"c2", b"c3")}
    assert sent == {b"c2": [b"s2", None], b"c3": [None]}, producer.sent


@pytest.mark.parametrize("turns", range(6))
async def test_stop_ends_the_loop_even_when_a_wake_up_races_the_cancellation(turns: int) -> None:
    await assert_stop_ends_when_a_wake_up_races_it(Acks(interval=10), turns)


# --- the loader: ``Acks`` with the ClickHouse sink as its hook (``acks_after_storing``) -------


def loader_acks(client: FakeClient) -> tuple[ClickHouseSink, Acks, list[BaseException]]:
    sink = make_sink(client)
    fatal: list[BaseException] = []
    return sink, acks_after_storing(sink, sink.settings, on_fatal=fatal.append), fatal  # type: ignore[arg-type]


def delivery() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


async def test_a_fact_is_acked_only_after_its_row_is_stored() -> None:
    client = FakeClient(failures=2)  # ClickHouse fails twice: the flush retries
    sink, acks, _ = loader_acks(client)
    acked: list[int] = []
    for offset in range(3):
        sink.add("events", (offset,), "journey.events", 0, offset)
        acks.after(lambda o=offset: acked.append(o))  # type: ignore[misc]
    assert acked == []
    assert await acks.flush() == 3
    assert acked == [0, 1, 2]
    assert len(client.attempts) == 3 and [rows for _, rows, _ in client.inserts] == [
        [(0,), (1,), (2,)]
    ]


async def test_a_refused_rows_fact_is_acked_after_its_dead_letter_is_on_the_broker() -> None:
    client = RefusingClickHouse(code=53)
    sink, acks, _ = loader_acks(client)
    letter = delivery()

    async def on_bad_row(table: str, row: Any, exc: BaseException) -> None:
        acks.wait_for(letter)  # what the loader's bad_row does with the dead letter's send

    sink.on_bad_row = on_bad_row
    acked: list[int] = []
    for offset, value in enumerate([1, -1, 2]):
        sink.add("events", (value,), "journey.events", 0, offset)
        acks.after(lambda o=offset: acked.append(o))  # type: ignore[misc]
    flushing = asyncio.ensure_future(acks.flush())
    await asyncio.sleep(0.01)
    assert acked == [] and sorted(r for _, rows, _ in client.inserts for r in rows) == [(1,), (2,)]
    letter.set_result(None)
    assert await flushing == 3
    assert acked == [0, 1, 2]  # no row blocks the others


async def test_a_dead_letter_the_broker_refuses_keeps_facts_unacked_and_stops() -> None:
    _, acks, fatal = loader_acks(FakeClient())
    letter = delivery()
    letter.set_exception(RuntimeError("broker gone"))
    acks.wait_for(letter)  # a fact that did not decode: FactStore.dead_letter
    acked: list[int] = []
    acks.after(lambda: acked.append(1))
    with pytest.raises(RuntimeError):
        await acks.flush()
    assert acked == [] and len(fatal) == 1


async def test_a_failed_flush_acks_nothing_until_its_rows_are_stored() -> None:
    client = RefusingClickHouse(code=53)
    sink, acks, _ = loader_acks(client)
    refusals = [RuntimeError("the producer's buffer is full")]

    async def on_bad_row(table: str, row: Any, exc: BaseException) -> None:
        if refusals:
            raise refusals.pop()

    sink.on_bad_row = on_bad_row
    acked: list[int] = []
    sink.add("events", (-1,), "journey.events", 0, 0)
    acks.after(lambda: acked.append(0))
    sink.add("events", (1,), "journey.events", 0, 1)
    acks.after(lambda: acked.append(1))
    with pytest.raises(RuntimeError):
        await acks.flush()
    assert acked == []
    sink.add("events", (2,), "journey.events", 0, 2)
    acks.after(lambda: acked.append(2))
    assert await acks.flush() == 3
    assert acked == [0, 1, 2]
    assert sorted(r for _, rows, _ in client.inserts for r in rows) == [(1,), (1,), (2,)]


async def test_a_full_batch_is_flushed_without_waiting_for_the_interval() -> None:
    client = FakeClient()
    sink, acks, _ = loader_acks(client)
    acks.interval = 600
    acked: list[int] = []
    acks.start()
    try:
        await asyncio.sleep(0.01)  # the loop waits
        for offset in range(3):  # a batch
            sink.add("events", (offset,), "journey.events", 0, offset)
            acks.after(lambda o=offset: acked.append(o))  # type: ignore[misc]
        for _ in range(100):
            if acked:
                break
            await asyncio.sleep(0.01)
        assert acked == [0, 1, 2]
    finally:
        await acks.stop()


async def test_stop_returns_while_clickhouse_keeps_failing() -> None:
    import streams.runtime.acks as acks_module

    sink, acks, _ = loader_acks(FakeClient(failures=10**9))
    sink.add("events", ("x",), "journey.events", 0, 1)
    acked: list[bool] = []
    acks.after(lambda: acked.append(True))
    old = acks_module.STOP_SECONDS
    acks_module.STOP_SECONDS = 0.3
    try:
        await asyncio.wait_for(acks.stop(), timeout=5)
    finally:
        acks_module.STOP_SECONDS = old
    assert acked == [] and not sink.reachable


@pytest.mark.parametrize("turns", range(4))
async def test_the_loaders_stop_ends_the_loop_even_when_a_wake_up_races_it(turns: int) -> None:
    _, acks, _ = loader_acks(FakeClient())
    acks.interval = 10
    await assert_stop_ends_when_a_wake_up_races_it(acks, turns)


async def test_durable_callbacks_and_after_delivery_hooks_run_between_deliveries_and_acks() -> None:
    acks = Acks()
    order: list[str] = []
    delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    acks.wait_for(delivery)
    acks.durable(lambda: order.append("durable"))
    acks.after(lambda: order.append("ack"))
    fail = True

    async def write() -> None:
        order.append("write")
        if fail:
            raise OSError("the store is closed")

    acks.after_deliveries.append(write)
    flushing = asyncio.ensure_future(acks.flush())
    await asyncio.sleep(0.01)
    assert order == []  # nothing before the broker acknowledged
    delivery.set_result(None)
    with pytest.raises(OSError):
        await flushing
    # The records are durable (a fact), the message is not acknowledged (its state not written).
    assert order == ["durable", "write"]
    fail = False
    assert await acks.flush() == 1
    assert order == ["durable", "write", "write", "ack"]


async def test_what_an_after_deliveries_hook_sends_is_acknowledged_before_the_message() -> None:
    """The worker writes a state (and sends its changelog record) once the records the state
    caused are durable: the message behind it is acknowledged only after that record is too."""
    acks = Acks()
    acked: list[str] = []
    changelog: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def write_states() -> None:
        acks.wait_for(changelog)

    acks.after_deliveries.append(write_states)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    acks.wait_for(done)  # the message's own record
    acks.after(lambda: acked.append("m1"))
    flush = asyncio.ensure_future(acks.flush())
    await asyncio.sleep(0.01)
    assert acked == [] and not flush.done()
    changelog.set_result(None)
    assert await flush == 1 and acked == ["m1"]


async def test_a_refused_changelog_record_acknowledges_nothing() -> None:
    fatal: list[BaseException] = []
    acks = Acks(on_fatal=fatal.append)
    acked: list[str] = []
    refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    refused.set_exception(RuntimeError("changelog partition offline"))

    async def write_states() -> None:
        acks.wait_for(refused)

    acks.after_deliveries.append(write_states)
    acks.after(lambda: acked.append("m1"))
    with pytest.raises(RuntimeError):
        await acks.flush()
    assert acked == [] and len(fatal) == 1


async def test_the_loop_turns_between_the_durable_callbacks_and_the_hooks() -> None:
    """A flush does not hold the event loop through both its bookkeeping and its hooks (the
    worker's state writes): a message waiting to be handled is handled in between."""
    acks = Acks()
    order: list[str] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)  # the broker has the record already: awaiting it does not yield
    acks.wait_for(done)
    acks.durable(lambda: order.append("durable"))

    async def hook() -> None:
        order.append("hook")

    acks.after_deliveries.append(hook)

    async def message() -> None:
        order.append("message")

    flushing = asyncio.ensure_future(acks.flush())
    handled = asyncio.ensure_future(message())  # waits for the loop to turn once the flush runs
    await flushing
    await handled
    assert order == ["durable", "message", "hook"]


async def test_events_are_acknowledged_in_bulk_after_their_records_and_kept_when_a_flush_fails() -> (
    None
):
    """The worker's messages (``after_event``) are acknowledged by one ``ack_events`` call per
    flush, once the records before them and the states written behind them are on the broker;
    a flush whose hook fails acknowledges none of them, and the next one does."""
    acks = Acks()
    bulk: list[list[str]] = []
    acks.ack_events = lambda events: bulk.append(list(events))
    record: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    acks.wait_for(record)
    acks.after_event("m1")
    acks.after_event("m2")
    failing = [True]

    async def write_states() -> None:
        if failing[0]:
            raise OSError("the store is closed")

    acks.after_deliveries.append(write_states)
    acks.durable(lambda: None)
    flush = asyncio.ensure_future(acks.flush())
    await asyncio.sleep(0.01)
    assert bulk == [] and not flush.done()  # the record is not on the broker yet
    record.set_result(None)
    with pytest.raises(OSError):
        await flush
    assert bulk == []
    acks.after_event("m3")
    failing[0] = False
    assert await acks.flush() == 3
    assert bulk == [["m1", "m2", "m3"]] and acks.acked == 3


async def test_events_are_acknowledged_one_by_one_without_a_bulk_acknowledger() -> None:
    acks = Acks()
    acked: list[str] = []
    events = [SimpleNamespace(ack=lambda name=name: acked.append(name)) for name in ("a", "b")]
    for event in events:
        acks.after_event(event)
    assert await acks.flush() == 2 and acked == ["a", "b"]
