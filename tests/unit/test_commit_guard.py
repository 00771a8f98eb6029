"""The commit guard against Faust's own ``_new_offset``, through Faust's real fetch loop.

Each scenario runs the consumer's real ``_drain_messages`` (read offsets, ``_add_gap``), its real
``perform_seek``, ``ack`` and ``_filter_committable_offsets`` (which calls ``_new_offset``); only
aiokafka underneath is replaced by batches of records, each with the offsets its fetch covered
(what ``record_fetch_ranges`` makes aiokafka return; tested against aiokafka's own fetcher at the
end). The stock consumer commits past a message
that was never acked in the three cases of ``streams/runtime/commit_guard.py``; the guarded one never
does, and still commits over offsets that are not messages.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import aiokafka
import faust
import pytest
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, FetchResult, PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from streams.runtime import commit_guard
from streams.runtime.commit_guard import (
    CommitGuard,
    FetchedRecords,
    guarded,
    install_commit_guard,
)
from streams.runtime.handover import EagerHandover

TOPIC = "journey-test.shop.orders"
TP0 = TP(TOPIC, 0)


class Partition:
    """One consumer of one acked partition, driven the way a worker drives it."""

    def __init__(self, consumer_class: type[Any]) -> None:
        self.app = faust.App("commit-guard-test", broker="kafka://127.0.0.1:1", autodiscover=False)
        self.app.topics._acking_topics.add(TOPIC)
        self.delivered: dict[int, Any] = {}

        async def deliver(message: Any) -> None:
            self.delivered[message.offset] = message

        async def nothing(*args: Any, **kwargs: Any) -> None:
            return None

        self.consumer = consumer_class(
            self.app.transport,
            callback=deliver,
            on_partitions_revoked=nothing,
            on_partitions_assigned=nothing,
        )
        self.consumer._active_partitions = {TP0}
        self.consumer.highwater = lambda tp: 10**9
        self.committed: int | None = None
        self.log_start = 0  # the partition's first offset (retention deletes below it)
        self.sought: list[tuple[TP, int]] = []  # seeks to the beginning (nothing committed)
        self.position: int | None = None  # where aiokafka fetches next

        async def beginning(*tps: TP) -> dict[TP, int]:
            return {tp: self.log_start for tp in tps}

        async def call_thread(fun: Any, *args: Any) -> Any:  # the thread is not started here
            return fun(*args)

        self.consumer._thread.earliest_offsets = beginning
        self.consumer._thread.call_thread = call_thread

    async def seek_to_committed(self) -> None:
        """What a rebalance or a restart does: aiokafka seeks to the committed offset (only
        to one above 0), Faust's ``perform_seek`` resets its read and committed offsets."""

        async def from_broker() -> dict[TP, int | None]:
            return {TP0: self.committed}

        def seek(tp: TP, offset: int) -> None:  # Faust calls the thread's seek directly
            self.sought.append((tp, offset))
            self.position = offset

        self.consumer._thread.seek_to_committed = from_broker
        self.consumer._thread.seek = seek
        if self.committed:
            self.position = self.committed
        await self.consumer.perform_seek()

    async def rebalance(self) -> None:
        """The partition is revoked and assigned again: the messages in flight are dropped
        (never acked) and the consumer seeks to the committed offset."""
        await self.consumer.on_partitions_revoked({TP0})
        self.delivered.clear()
        self.consumer._active_partitions = {TP0}
        await self.seek_to_committed()

    async def fetch(self, offsets: Iterable[int], *, begin: int | None = None) -> None:
        """aiokafka hands over the records at these offsets, from a fetch that began at
        ``begin`` (by default where the consumer's position is) and ends after the last one:
        the other offsets in between are not messages."""
        batch = records(offsets, begin=self.position if begin is None else begin)
        self.position = batch.end
        batches = [{TP0: batch}]
        fetcher = SimpleNamespace(_stopped=asyncio.Event())

        async def getmany(active_partitions: Any, timeout: float) -> Any:
            if batches:
                return batches.pop(0)
            fetcher._stopped.set()
            return {}

        self.consumer._thread.getmany = getmany  # what aiokafka returns
        await self.consumer._drain_messages(fetcher)

    def ack(self, offsets: Iterable[int], *, handed_on: bool = True) -> None:
        """The stream acks these messages: handled (it tracked them when it handed them on), or
        skipped (``handed_on=False``: the flow was stopped by a rebalance)."""
        for offset in offsets:
            message = self.delivered[offset]
            message.tracked = message.tracked or handed_on
            self.consumer.ack(message)

    def commit(self) -> int | None:
        """The offset the consumer commits now (and records as committed), or None."""
        offsets = self.consumer._filter_committable_offsets([TP0])
        if TP0 in offsets:
            self.committed = offsets[TP0]
            self.consumer._committed_offset.update(offsets)
        return offsets.get(TP0)


def records(offsets: Iterable[int], *, begin: int | None = None) -> FetchedRecords:
    found = [ConsumerRecord(TOPIC, 0, o, 0, 0, None, b"v", None, 0, 1, ()) for o in offsets]
    first = found[0].offset
    return FetchedRecords(found, first if begin is None else begin, found[-1].offset + 1)


STOCK = faust.App("stock", broker="kafka://127.0.0.1:1").transport.Consumer
GUARDED = guarded(STOCK)
# The worker's: the guard under its own fetch loop (handover.py), not Faust's
HANDED_OVER = type("EagerGuarded", (EagerHandover, GUARDED), {})


async def nothing_committed_first_message_in_flight(p: Partition) -> int:
    await p.fetch(range(0, 4))
    p.ack([1, 2, 3])
    return 0


async def committed_offset_in_flight(p: Partition) -> int:
    p.committed = 10
    await p.seek_to_committed()
    await p.fetch(range(10, 14))
    p.ack([11, 12, 13])
    return 10


async def message_ending_a_gap_in_flight(p: Partition) -> int:
    p.committed = 10
    await p.seek_to_committed()
    await p.fetch([10, 13, 14])  # 11 and 12 compacted away
    p.ack([10, 14])
    return 13


async def dropped_by_a_buffer_after_a_commit(p: Partition) -> int:
    """A stream dropped the message at the committed offset unacked (no seek involved);
    what came after it was acked."""
    await p.fetch(range(0, 4))
    p.ack(range(0, 4))
    assert p.commit() == 4
    await p.fetch(range(4, 12))
    p.ack(range(5, 12))
    return 4


async def skipped_by_the_stream_during_a_rebalance(p: Partition) -> int:
    """Faust's stream acks a message it skipped because the flow was stopped, unhandled."""
    await p.fetch(range(0, 4))
    p.ack([0, 1])
    p.ack([2], handed_on=False)
    p.ack([3])
    return 2


ATTACKS = [
    nothing_committed_first_message_in_flight,
    committed_offset_in_flight,
    message_ending_a_gap_in_flight,
    dropped_by_a_buffer_after_a_commit,
    skipped_by_the_stream_during_a_rebalance,
]


@pytest.mark.parametrize("attack", ATTACKS)
async def test_faust_commits_past_a_message_that_was_never_acked(attack: Any) -> None:
    """The attacks are real: stock Faust 0.15.3 loses the message (if a new version stops
    doing so, re-check the guard against it, see PINNED_FAUST_VERSION)."""
    p = Partition(STOCK)
    unacked = await attack(p)
    offset = p.commit()
    assert offset is not None and offset > unacked


@pytest.mark.parametrize("consumer", [GUARDED, HANDED_OVER])
@pytest.mark.parametrize("attack", ATTACKS)
async def test_the_guard_never_commits_past_a_message_that_was_never_acked(
    attack: Any, consumer: type[Any]
) -> None:
    p = Partition(consumer)
    unacked = await attack(p)
    offset = p.commit()
    assert offset is None or offset <= unacked
    # once the message is acked, everything up to the last acked offset is committed
    p.ack([unacked])
    assert p.commit() == max(p.delivered) + 1


async def test_the_guard_commits_over_offsets_that_are_not_messages() -> None:
    p = Partition(GUARDED)
    await p.fetch([5, 6, 9, 10])  # the log starts at 5 (retention); 7, 8 compacted
    p.ack([5, 6, 9, 10])
    assert p.commit() == 11
    await p.fetch([14])
    p.ack([14])
    assert p.commit() == 15


async def test_the_guard_commits_over_a_committed_offset_that_is_no_message() -> None:
    """Committed 10, but 10 is a transaction marker (or was deleted): the first record after
    the seek is 11. Faust's own rule allows this case; the guard knows it from the seek."""
    p = Partition(GUARDED)
    p.committed = 10
    await p.seek_to_committed()
    await p.fetch([11, 12])
    p.ack([11, 12])
    assert p.commit() == 13


async def test_the_guard_does_not_stall_where_faust_does() -> None:
    """After the message at offset 0, Faust records no gap (its read offset 0 is falsy), so
    stock Faust never commits past offsets 1..4 that are not messages."""
    stock, guard = Partition(STOCK), Partition(GUARDED)
    for p in (stock, guard):
        await p.fetch([0, 5, 6])
        p.ack([0, 5, 6])
    assert stock.commit() == 1 and stock.commit() is None
    assert guard.commit() == 7


async def test_a_redelivery_after_a_rebalance_commits_from_the_committed_offset() -> None:
    p = Partition(GUARDED)
    await p.fetch(range(0, 6))
    p.ack([0, 1, 2, 4, 5])
    assert p.commit() == 3
    await p.rebalance()
    await p.fetch(range(3, 8))  # 3.. again
    p.ack(range(4, 8))
    assert p.commit() is None
    p.ack([3])
    assert p.commit() == 8


async def fetch_in_flight_across_a_seek(p: Partition) -> None:
    """A rebalance seeks back to the committed 10 while a fetch from the old position is in
    flight: it returns 15 and 16, and Faust hands them on (at or above its read offset 10, which
    each message handed on then moves up). Then the fetch from 10 brings 10..16."""
    p.committed = 10
    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    calls = 0

    async def getmany(active_partitions: Any, timeout: float) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            await p.seek_to_committed()  # completes while the fetch is in flight
            return {TP0: records([15, 16])}
        fetcher._stopped.set()
        return {}

    p.consumer._thread.getmany = getmany
    await p.consumer._drain_messages(fetcher)
    await p.fetch(range(10, 17))  # the fresh fetch from 10


async def test_faust_drops_what_a_seek_fetches_again_below_its_read_offset() -> None:
    """Stock Faust drops 10..14 (below its read offset 16): messages nobody handled, never to be
    delivered again but by another seek (the stall and heal of session 14)."""
    p = Partition(STOCK)
    await fetch_in_flight_across_a_seek(p)
    assert sorted(p.delivered) == [15, 16]


@pytest.mark.parametrize("consumer", [GUARDED, HANDED_OVER])
async def test_the_guard_hands_on_what_a_seek_fetches_again(consumer: type[Any]) -> None:
    """The guarded consumer hands on every message fetched (5. in commit_guard.py); the commit
    waits for 10..14 (a fetch in flight across the seek proves no hole below 15) and goes on
    once they are acked."""
    p = Partition(consumer)
    await fetch_in_flight_across_a_seek(p)
    assert sorted(p.delivered) == list(range(10, 17))
    p.ack([15, 16])
    assert p.commit() is None
    p.ack(range(10, 15))
    assert p.commit() == 17


async def test_a_heal_overwritten_by_a_batch_in_progress_still_delivers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Session 14 saw a partition heal twice, 12 s apart: the heal's seek back to 4 set Faust's
    read offset to 4, the batch the fetch loop was in the middle of handed on 12 after it (read
    offset 12), and the fetch from 4 came below it. The guarded consumer delivers 4..11 again."""
    p, clock, sought = await stalled(monkeypatch)  # waits at 4; 5..11 acked
    clock.now += commit_guard.STALL_SECONDS
    assert await p.consumer.guard_heal() == 1 and sought == [(TP0, 4)]
    p.consumer._read_offset[TP0] = 4  # what Faust's seek sets (the stand-in seek does not)
    await p.fetch([12], begin=12)  # the batch in progress
    p.delivered.clear()
    await p.fetch(range(4, 13), begin=4)  # the heal's fetch from 4
    assert sorted(p.delivered) == list(range(4, 13))
    p.ack([4, 12])
    assert p.commit() == 13


async def test_a_batch_that_does_not_begin_where_a_seek_went_proves_no_hole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Session 10's loss: a poll took 279..331, the rebalance's seek to the committed 279
    followed, and the first batch after it began at 332 (a fetch that landed after the seek: Faust
    seeks from its own thread). The guard took 279..331 for a hole, because it believed the seek,
    and committed past 53 page views nobody handled. Only the fetch's own range proves a hole:
    the commit stalls at 279, heals by seeking back, and moves once 279..331 are handled."""
    clock = Clock()
    monkeypatch.setattr(commit_guard, "monotonic", clock)
    p = Partition(GUARDED)
    p.committed = 279
    await p.seek_to_committed()
    await p.fetch(range(279, 332))  # taken; the rebalance drops them unacked
    await p.rebalance()  # seeks to 279
    await p.fetch(range(332, 340), begin=332)
    p.ack(range(332, 340))
    assert p.commit() is None
    assert p.consumer._guard_holes.get(TP0, []) == []

    sought: list[tuple[TP, int]] = []
    seek = p.consumer.seek

    async def heal_seek(tp: TP, offset: int) -> None:
        sought.append((tp, offset))
        await seek(tp, offset)

    p.consumer.assignment = lambda: {TP0}
    p.consumer.seek = heal_seek
    clock.now += commit_guard.STALL_SECONDS
    assert await p.consumer.guard_heal() == 1 and sought == [(TP0, 279)]
    await p.fetch(range(279, 340))
    p.ack(range(279, 340))
    assert p.commit() == 340


async def test_holes_fetched_again_after_a_seek_back_are_kept_once() -> None:
    p = Partition(GUARDED)
    await p.fetch([0, 3, 4, 9], begin=0)
    await p.fetch([0, 3, 4, 9], begin=0)  # a seek back to 0
    await p.fetch([12], begin=10)
    await p.fetch([3, 4, 9], begin=2)
    assert p.consumer._guard_holes[TP0] == [(1, 3), (5, 9), (10, 12)]
    p.ack([0, 3, 4, 9, 12])
    assert p.commit() == 13
    assert p.consumer._guard_holes[TP0] == []


@pytest.mark.parametrize("consumer", [GUARDED, HANDED_OVER])
@pytest.mark.parametrize("seed", range(40))
async def test_random_fetches_acks_and_rebalances_never_commit_past_an_unacked_message(
    seed: int, consumer: type[Any]
) -> None:
    rng = random.Random(seed)
    messages = sorted(rng.sample(range(0, 120), 60))  # the partition's messages; the rest holes
    p = Partition(consumer)
    processed: set[int] = set()  # acked at some point (before a rebalance counts too)
    position = 0
    stale: list[int] = []  # a fetch from before the last seek, landing after it

    def check() -> None:
        first_unprocessed = min((m for m in messages if m not in processed), default=None)
        if p.committed is not None and first_unprocessed is not None:
            assert p.committed <= first_unprocessed, (seed, p.committed, first_unprocessed)

    for _ in range(30):
        step = rng.random()
        if step < 0.35:  # the broker returns the next few messages
            batch = [m for m in messages if m >= position][: rng.randint(1, 8)]
            if batch:
                await p.fetch(batch, begin=position)
                position = batch[-1] + 1
        elif step < 0.4:  # a fetch from the position before the last seek lands after it
            if stale:
                await p.fetch(stale, begin=stale[0])
                stale = []
        elif step < 0.7:  # the streams ack some of what was delivered, in any order
            pending = [o for o in p.delivered if o not in p.consumer._acked_index[TP0]]
            chosen = rng.sample(pending, min(len(pending), rng.randint(0, 4)))
            p.ack(chosen)
            processed.update(chosen)
        elif step < 0.9:
            p.commit()
        else:  # a rebalance: what is in flight is dropped and fetched again
            stale = [m for m in messages if m >= position][: rng.randint(1, 8)]
            await p.rebalance()
            position = p.committed or 0
        check()
    # and it is not stuck: once everything is processed, everything is committed
    await p.rebalance()
    await p.fetch([m for m in messages if m >= (p.committed or 0)], begin=p.committed or 0)
    p.ack(p.delivered)
    processed.update(p.delivered)
    p.commit()
    check()
    assert p.committed == messages[-1] + 1


def test_install_refuses_another_faust_version(monkeypatch: pytest.MonkeyPatch) -> None:
    app = faust.App("guard-version", broker="kafka://127.0.0.1:1")
    monkeypatch.setattr(faust, "__version__", "0.99.0")
    with pytest.raises(RuntimeError, match=r"0\.99\.0 is installed"):
        install_commit_guard(app)


def test_install_makes_the_apps_consumer_a_guarded_one() -> None:
    app = faust.App("guard-install", broker="kafka://127.0.0.1:1")
    install_commit_guard(app)
    install_commit_guard(app)  # twice is harmless
    assert isinstance(app.consumer, CommitGuard)
    assert type(app.consumer).__mro__[2] is STOCK
    with pytest.raises(RuntimeError, match="before the app's consumer"):
        install_commit_guard(faust_app_with_consumer())


def faust_app_with_consumer() -> faust.App:
    app = faust.App("guard-late", broker="kafka://127.0.0.1:1")
    assert app.consumer is not None
    return app


def test_the_pinned_version_is_installed() -> None:
    assert faust.__version__ == commit_guard.PINNED_FAUST_VERSION


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def stalled(monkeypatch: pytest.MonkeyPatch) -> tuple[Partition, Clock, list[Any]]:
    """A partition whose commit waits at 4: fetched, dropped unacked, 5.. acked."""
    clock = Clock()
    monkeypatch.setattr(commit_guard, "monotonic", clock)
    p = Partition(GUARDED)
    sought: list[tuple[TP, int]] = []

    async def seek(tp: TP, offset: int) -> None:
        sought.append((tp, offset))

    p.consumer.assignment = lambda: {TP0}
    p.consumer.seek = seek
    await dropped_by_a_buffer_after_a_commit(p)
    assert p.commit() is None  # waits at 4
    return p, clock, sought


async def test_a_commit_stalled_at_a_message_nobody_handles_seeks_back_to_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p, clock, sought = await stalled(monkeypatch)
    clock.now += commit_guard.STALL_SECONDS - 1
    assert p.commit() is None
    assert await p.consumer.guard_heal() == 0 and sought == []  # not for long enough yet
    clock.now += 1
    assert await p.consumer.guard_heal() == 1
    assert sought == [(TP0, 4)] and p.consumer.heals == 1
    assert await p.consumer.guard_heal() == 0  # once


async def test_offsets_deleted_by_retention_before_they_were_handled_end_the_stall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Committed 10, but the group was stopped longer than the retention: the log starts at 40
    now, aiokafka's fetch from 10 is out of range and it resets to 40. No fetch covers 10..39
    again, so seeking back would stall the commit for ever; the broker's log start proves them
    gone, and the commit goes on from it."""
    clock = Clock()
    monkeypatch.setattr(commit_guard, "monotonic", clock)
    p = Partition(GUARDED)
    p.committed, p.log_start = 10, 40
    await p.seek_to_committed()
    await p.fetch(range(40, 45), begin=40)  # after aiokafka's reset to the earliest offset
    p.ack(range(40, 45))
    assert p.commit() is None
    p.consumer.assignment = lambda: {TP0}
    clock.now += commit_guard.STALL_SECONDS
    assert await p.consumer.guard_heal() == 1
    assert p.consumer.heals == 0  # no seek
    assert p.commit() == 45


async def test_no_seek_while_the_message_is_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    p, clock, sought = await stalled(monkeypatch)
    p.consumer._unacked_messages.add(p.delivered[4])  # held by the merge, say
    clock.now += commit_guard.STALL_SECONDS + 1
    assert await p.consumer.guard_heal() == 0 and sought == []
    p.ack([4])
    assert p.commit() == 12
    clock.now += commit_guard.STALL_SECONDS + 1
    assert await p.consumer.guard_heal() == 0 and sought == []


async def test_no_seek_while_the_commit_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waiting at an offset is measured from when the commit first stopped there."""
    clock = Clock()
    monkeypatch.setattr(commit_guard, "monotonic", clock)
    p = Partition(GUARDED)
    await p.fetch(range(0, 30))
    for n in range(10):  # acked out of order by two, committed step by step
        p.ack([3 * n + 1, 3 * n + 2])
        p.commit()
        p.ack([3 * n])
        p.commit()
        clock.now += commit_guard.STALL_SECONDS / 3
    assert p.committed == 30 and p.consumer.guard_stalled(clock.now) == []


async def test_a_rebalance_with_nothing_committed_seeks_to_the_beginning() -> None:
    """aiokafka leaves the position alone when nothing is committed: 0..5, fetched and then
    dropped (held by the merge) before the rebalance, would never come again, and the guard
    would start from the first offset fetched after it (6). It seeks to the beginning instead."""
    p = Partition(GUARDED)
    await p.fetch(range(0, 6))  # held, never acked
    await p.rebalance()
    assert p.sought == [(TP0, 0)]
    await p.fetch(range(0, 10))  # from the beginning again
    p.ack(range(6, 10))
    assert p.commit() is None
    p.ack(range(0, 6))
    assert p.commit() == 10


async def test_the_beginning_is_where_retention_left_the_log() -> None:
    p = Partition(GUARDED)
    p.log_start = 40
    await p.rebalance()
    assert p.sought == [(TP0, 40)]
    await p.fetch(range(40, 45))
    p.ack(range(40, 45))
    assert p.commit() == 45


def batch_bytes(base: int, deltas: list[int], *, last_delta: int | None = None) -> bytes:
    """One record batch (message format v2) with records at ``base + delta``: the offsets
    between them were compacted away. ``last_delta`` keeps the batch's last offset after its
    last record was compacted away too."""
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    for delta in deltas:
        builder.append(delta, timestamp=1, key=None, value=b"v", headers=[])
    buffer = builder.build()
    struct.pack_into(">q", buffer, 0, base)  # base offset (not covered by the CRC)
    if last_delta is not None:
        struct.pack_into(">i", buffer, 23, last_delta)  # last offset delta (not checked here)
    return bytes(buffer)


class PartitionState:
    """aiokafka's view of one assigned partition, as ``FetchResult`` reads and moves it."""

    def __init__(self, position: int) -> None:
        self.position = position
        self.paused = False

    def consumed_to(self, position: int) -> None:
        self.position = position


def fetch_result(fetch_offset: int, data: bytes) -> tuple[Any, PartitionState]:
    state = PartitionState(fetch_offset)
    assignment = SimpleNamespace(active=True, state_value=lambda tp: state)
    partition_records = PartitionRecords(
        TP0, MemoryRecords(data), None, fetch_offset, None, None, False, READ_UNCOMMITTED
    )
    result = FetchResult(TP0, assignment=assignment, partition_records=partition_records, backoff=0)
    return result, state


def test_aiokafkas_fetch_results_carry_the_offsets_they_covered() -> None:
    """Through aiokafka's own ``FetchResult`` and ``PartitionRecords``: a fetch from 10 whose
    response begins with the batch holding 8 (records below the fetch offset are skipped), with
    12 and 13 compacted away, and a last batch whose records after 20 were compacted away."""
    commit_guard.record_fetch_ranges()
    data = batch_bytes(8, [0, 2, 3, 6]) + batch_bytes(15, [0, 5], last_delta=7)
    result, state = fetch_result(10, data)
    first = result.getall(max_records=2)
    assert isinstance(first, FetchedRecords)
    assert [r.offset for r in first] == [10, 11] and (first.begin, first.end) == (10, 12)
    rest = result.getall()
    assert [r.offset for r in rest] == [14, 15, 20] and (rest.begin, rest.end) == (12, 23)
    assert state.position == 23  # aiokafka fetches next from where the range ends

    guard = Partition(GUARDED)
    for batch in (first, rest):
        guard.consumer.guard_fetched(TP0, batch.begin, [r.offset for r in batch], batch.end)
    assert guard.consumer._guard_holes[TP0] == [(12, 14), (16, 20), (21, 23)]


def test_a_fetch_result_moved_by_a_seek_hands_over_nothing() -> None:
    commit_guard.record_fetch_ranges()
    result, state = fetch_result(10, batch_bytes(10, [0, 1, 2]))
    state.position = 4  # a seek before the records were taken
    assert result.getall() == []


def test_install_refuses_another_aiokafka_version(monkeypatch: pytest.MonkeyPatch) -> None:
    app = faust.App("guard-aiokafka-version", broker="kafka://127.0.0.1:1")
    monkeypatch.setattr(aiokafka, "__version__", "0.99.0")
    with pytest.raises(RuntimeError, match=r"aiokafka 0\.14\.0's FetchResult.getall, but 0\.99\.0"):
        install_commit_guard(app)


async def test_the_guards_seeks_run_in_the_consumers_thread() -> None:
    """Faust's ``_seek`` calls aiokafka's ``seek`` from the event loop's thread; the guard's
    consumer hands it to the consumer's thread, where aiokafka runs (6. in commit_guard.py)."""
    p = Partition(GUARDED)
    calls: list[Any] = []

    async def call_thread(fun: Any, *args: Any) -> Any:
        calls.append((fun, args))
        return fun(*args)

    def seek(tp: TP, offset: int) -> None:
        calls.append(("seek", tp, offset))

    p.consumer._thread.call_thread = call_thread
    p.consumer._thread.seek = seek
    await p.consumer.seek(TP0, 7)
    assert calls == [(seek, (TP0, 7)), ("seek", TP0, 7)]  # the seek ran inside call_thread


@pytest.mark.parametrize("seed", range(25))
async def test_acking_events_in_bulk_does_what_acking_each_does(seed: int) -> None:
    """``ack_events`` (the worker's acknowledgement flush) against each ``event.ack()`` (Faust's
    own path) on two consumers given the same messages: tracked or skipped by the stream, taken
    by one stream or two (refcount), acked before, below the committed offset, acked twice, of
    a topic without acks: the same acked offsets, unacked set, counters and message flags."""
    rng = random.Random(seed)
    offsets = sorted(rng.sample(range(0, 60), 25))
    committed = rng.choice([None, offsets[3], offsets[10]])
    plan = [
        (rng.random() < 0.85, rng.choice([1, 1, 1, 2]), rng.random() < 0.1) for _ in offsets
    ]  # (tracked, refcount, acked before)
    order = [*offsets, *rng.sample(offsets, 5)]  # some twice
    rng.shuffle(order)
    results = []
    for bulk in (False, True):
        p = Partition(GUARDED)
        p.app._consumer = p.consumer  # the consumer of the events' app
        await p.fetch(offsets)
        p.consumer._committed_offset[TP0] = committed
        if seed % 5 == 4:  # a topic without acks: the messages are marked acked, nothing more
            p.app.topics._acking_topics.discard(TOPIC)
        events = {}
        for offset, (tracked, refcount, acked_before) in zip(offsets, plan, strict=True):
            message = p.delivered[offset]
            message.tracked = tracked
            message.incref(refcount)
            p.consumer._unacked_messages.add(message)
            if acked_before:
                p.consumer.ack(message)
            events[offset] = faust.Event(p.app, None, b"v", {}, message)
        other = faust.types.Message("another-topic", 0, 7, 0.0, 0, {}, None, b"v", None)
        other_event = faust.Event(p.app, None, b"v", {}, other)  # a message of no consumer
        chosen = [events[o] for o in order] + [other_event]
        if bulk:
            returned = p.consumer.ack_events(chosen)
        else:
            returned = sum(bool(event.ack()) for event in chosen)
        c = p.consumer
        results.append(
            (
                returned,
                dict(c._acked),
                {tp: sorted(index) for tp, index in c._acked_index.items()},
                c._n_acked,
                sorted(m.offset for m in c._unacked_messages),
                [(m.acked, m.refcount) for m in (e.message for e in events.values())],
                (other.acked, other.refcount),
            )
        )
    stock, bulk_result = results
    assert bulk_result == stock
    assert stock[0] > 0 or seed % 5 == 4  # something became committable
