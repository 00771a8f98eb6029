"""Commit an offset only when every message of its partition below it was acked.

Faust commits, per partition, the end of the first run of acked offsets (``Consumer._new_offset``,
called by ``_commit_tps``). In faust-streaming 0.15.3 that run can start above a message that was
never acked, so the offset is committed past it and nothing ever delivers it again:

1. **Nothing committed yet** (``_committed_offset`` is None, which is also what a committed 0
   becomes in ``perform_seek``): the first acked run is taken wherever it starts. Acked 5,6,7 with
   0..4 still in flight commits 8. Worse, a rebalance does not bring 0..4 back: aiokafka's
   ``seek_to_committed`` leaves the position alone when nothing (or 0) is committed, so the guard
   seeks such partitions to their beginning itself (``seek_to_committed`` below).
2. **The message at the committed offset**: the check is ``min(acked) - committed > 1``, so with
   committed C and acked C+1.. (C not acked) it commits past C. (Faust allows this because it
   never records C as a gap when C is not a message: its read offset after a seek is C itself.)
3. **The message that ends a gap**: when the fetcher sees offset O after offset R with O - R > 1
   it calls ``_add_gap(tp, R + 1, O)``, and the interval it stores includes O itself. The next
   ``_new_offset`` folds the gap into the acked offsets, so O counts as acked: with R and O+1
   acked and O in flight, it commits O+2.

The guard replaces ``_new_offset`` with a conservative walk: from the committed offset (or, when
none is committed, where the first fetch since the partition was assigned began: the position the
consumer started from) it advances over acked offsets and over **holes**, offsets proven not to
be messages (compacted away, transaction markers, aborted transactions, deleted by retention).

**A hole is proven only by aiokafka's own fetch.** Each batch of records aiokafka hands over
comes from one fetch response, and covers the offsets from where that fetch began (the
consumer's position, checked by aiokafka against the response) to where the next one begins:
every offset of that range that is not one of the records is not a message. ``FetchResult.getall``
is wrapped to return the records as a ``FetchedRecords`` list that carries the range
(``record_fetch_ranges``, checked against the pinned aiokafka version). Nothing is inferred
between two batches or from a seek: where the guard believed a seek put the consumer is not
evidence of where aiokafka fetched. (Session 10 found such an inference wrong. aiokafka's
``seek_to_committed`` seeks one partition after another, awaiting each committed offset, while
the consumer's thread goes on polling: a poll took 279..331 after aiokafka's seek to 279 and
before the guard heard of the seek, the next batch began at 332, and the commit walked over 53
page views nobody handled.) An offset no range covers stalls the commit, and a stalled commit
heals (below): the fetch from the stalled offset covers it. Offsets deleted by retention before
the group handled them are the one kind of hole no fetch can cover again; the heal proves them
from the broker's log start instead.

Every record fetched counts as a message that must be acked, so a message that was fetched and
then dropped unacked (by a stream, a buffer, a rebalance, Faust's own filters) stalls the
partition's commit instead of being skipped: it is delivered again by the next seek to the
committed offset (a rebalance, a restart or a heal). Faust's own gap tree is not used (it is
trimmed so it does not grow).

4. **A message the stream skipped is acked.** Faust's stream drops a message that arrives while a
   rebalance has stopped the flow (or from an older generation) and acks it, although nothing
   handled it; as an acked offset it would be committed past. The guard counts only acks of
   messages the stream handed on (``message.tracked``); a skipped one stalls the partition's
   commit until the seek that follows the rebalance delivers it again (the multi-worker test lost
   such messages).

5. **A message fetched again below Faust's read offset is dropped.** Faust's fetch loop hands
   on a message only at or above the partition's read offset, which it sets after handing on
   each message and which a seek resets. A seek made while the fetch loop is in the middle of a
   batch from the old position (the rebalance's seek to the committed offset, the heal below)
   is overwritten by the batch's next message, and the messages the seek fetches again below
   it are dropped unacked: the commit stalls until a heal, whose own seek can be overwritten
   the same way (session 14 saw a partition heal twice, 12 s apart). For the acked topics the
   guard's consumer reads no read offset (``ReadOffsets``): every message aiokafka hands over
   goes on to the stream. One handled before (a batch fetched before a seek back, then again
   after it) is handled again: the journey's outputs and the loader's rows are idempotent
   (event ids, trigger ids, unique keys), as for every redelivery.

6. **A seek from the wrong thread.** Faust's consumer seeks (``_seek``) by calling aiokafka's
   ``seek`` directly from the event loop's thread, while aiokafka runs in the consumer's own
   thread: it changes the fetcher's positions and records under a running fetch, and resolves
   a future of that thread's loop without waking it. The guard's own seeks (to a partition's
   beginning, the heal's) go through the consumer's thread (``call_thread``), as Faust's
   ``seek_to_committed`` and the table recovery's seeks already do.

**A stalled partition heals itself.** A message that was fetched and then dropped unacked is
normally delivered again by the next seek to the committed offset, but that seek only comes with
a rebalance or a restart: a worker that keeps its partitions would stall the partition's commit
for ever (the multi-worker hand-over test saw a partition's commit stop after the last
rebalance). So when a partition's commit has waited ``STALL_SECONDS`` at the same offset while
later offsets of it were acked, and no message at that offset is in flight (Faust's unacked set:
held by the stream, the event-time merge or waiting for its acks), the guard seeks the partition
back to that offset itself (``guard_heal``, every ``STALL_CHECK_SECONDS``), logs it and counts it
(``heals``). The messages after it are delivered again: the journey's outputs and the loader's
rows are idempotent (event ids, trigger ids, unique keys).

The overridden methods and the private bookkeeping they use (``_acked``, ``_acked_index``,
``_committed_offset``, ``_gap``) are those of the pinned faust-streaming version, and the wrapped
``FetchResult.getall`` that of the pinned aiokafka version; another version of either refuses to
install until this module has been checked against it (``install_commit_guard``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from time import monotonic
from typing import Any, cast

import aiokafka
import faust
from aiokafka.consumer.fetcher import FetchResult
from faust.transport.consumer import Consumer
from faust.types import TP
from faust.types.tuples import ConsumerMessage, ack_lock
from mode.utils.futures import notify

log = logging.getLogger(__name__)

# A consumed message's last ack goes to its consumer's ``ack`` (``ack_events`` does it inline).
_FINAL_ACK = ConsumerMessage.on_final_ack

# A partition whose commit waits this long at an offset nothing is handling is sought back to it.
STALL_SECONDS = 10.0
STALL_CHECK_SECONDS = 2.0

# The versions whose internals this module was checked against (read the module docstring again,
# and the tests in tests/unit/test_commit_guard.py, before changing either).
PINNED_FAUST_VERSION = "0.15.3"
PINNED_AIOKAFKA_VERSION = "0.14.0"


class FetchedRecords(list[Any]):
    """The records aiokafka handed over from one fetch response for one partition, and the
    offsets that hand-over covered: ``[begin, end)``. Every offset of it that is not one of the
    records is not a message."""

    __slots__ = ("begin", "end")

    def __init__(self, records: Iterable[Any], begin: int, end: int) -> None:
        super().__init__(records)
        self.begin = begin
        self.end = end


def record_fetch_ranges() -> None:
    """Make aiokafka's ``FetchResult.getall`` return ``FetchedRecords`` (once per process; other
    aiokafka consumers just get a list that carries two more attributes).

    ``getall`` hands over records only when the consumer's position is where the response's
    records continue (``check_assignment``: ``position == next_fetch_offset``). The
    ``PartitionRecords`` skips the records below the fetch offset, control batches and aborted
    transactions, and moves ``next_fetch_offset`` past each record and past the last offset of
    each batch (kept in a compacted batch): so ``next_fetch_offset`` before and after ``getall``
    bound the offsets it covered."""
    if getattr(FetchResult.getall, "records_ranges", False):
        return
    getall = FetchResult.getall

    def wrapped(self: Any, max_records: int | None = None) -> Any:
        partition_records = self._partition_records
        begin = None if partition_records is None else partition_records.next_fetch_offset
        records = getall(self, max_records)
        if not records or begin is None:
            return records
        return FetchedRecords(records, begin, partition_records.next_fetch_offset)

    wrapped.records_ranges = True  # type: ignore[attr-defined]
    FetchResult.getall = wrapped


class ReadOffsets(dict[TP, int | None]):
    """Faust's read offsets (``Consumer._read_offset``) for a guarded consumer: the read offset
    of a partition of an acked topic is never known, so Faust's fetch loop drops none of its
    messages (see 5. above). Written as before (seeks, the fetch loop), read as None."""

    __slots__ = ("acking",)

    def __init__(self, acking: set[str]) -> None:
        super().__init__()
        self.acking = acking  # the conductor's set of acked topics (the same object, kept up)

    def __getitem__(self, tp: TP) -> int | None:
        if tp.topic in self.acking:
            return None
        return self.get(tp)


class CommitGuard(Consumer):
    """Mixin for a concrete Faust consumer class (see ``guarded``): a conservative
    ``_new_offset`` and the hole bookkeeping it needs."""

    # Per partition of an acked topic: where the first fetch since the partition was assigned
    # began, and the holes (half-open [begin, end) ranges, ascending, disjoint) not yet
    # committed past.
    _guard_first: dict[TP, int]
    _guard_holes: dict[TP, list[tuple[int, int]]]
    # Partitions whose commit waits at an offset while later ones are acked: since when.
    _guard_waiting: dict[TP, tuple[int, float]]
    heals: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._guard_first = {}
        self._guard_holes = {}
        self._guard_waiting = {}
        self.heals = 0
        super().__init__(*args, **kwargs)
        self._read_offset = ReadOffsets(self.app.topics.acking_topics)

    # -- bookkeeping of what was fetched -------------------------------------------------------

    # The two ``safe-super`` ignores: this class is only used in front of a concrete consumer
    # (``guarded``), which implements the abstract methods after it in the MRO.

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        # Every record aiokafka hands over counts, before Faust filters any (a paused partition,
        # a changed generation, an offset below its read offset): one Faust drops unacked
        # stalls the commit instead of looking like a hole.
        records = await super()._getmany(active_partitions, timeout)  # type: ignore[safe-super]
        acks_enabled_for = self.app.topics.acks_enabled_for
        for tp, batch in records.items():
            if batch and isinstance(batch, FetchedRecords) and acks_enabled_for(tp.topic):
                self.guard_fetched(tp, batch.begin, [record.offset for record in batch], batch.end)
        return records

    def guard_fetched(self, tp: TP, begin: int, offsets: list[int], end: int) -> None:
        """aiokafka handed over the records at ``offsets`` (ascending) of ``tp``, from one
        fetch that covered ``[begin, end)``: the other offsets of that range are holes."""
        self._guard_first.setdefault(tp, begin)
        position = begin
        for offset in offsets:
            if offset > position:
                self.guard_hole(tp, position, offset)
            position = offset + 1
        if end > position:
            self.guard_hole(tp, position, end)

    def guard_hole(self, tp: TP, begin: int, end: int) -> None:
        """Offsets ``[begin, end)`` of ``tp`` are not messages (kept merged and in order: a seek
        back fetches the same holes again)."""
        holes = self._guard_holes.setdefault(tp, [])
        if not holes or begin > holes[-1][1]:
            holes.append((begin, end))
            return
        merged: list[tuple[int, int]] = []
        for hole in sorted([*holes, (begin, end)]):
            if merged and hole[0] <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hole[1]))
            else:
                merged.append(hole)
        holes[:] = merged

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()  # type: ignore[safe-super]
        # aiokafka seeks only to a committed offset above 0: with nothing committed the position
        # stays where the fetches got to, and the messages fetched before (held by the event-time
        # merge, skipped by the stream during the rebalance) would never come again. The
        # multi-worker test lost them when the partition stayed with its worker through the
        # first rebalances. Seek such partitions to where the group starts: their beginning.
        acked = self.app.topics.acks_enabled_for
        fresh = [tp for tp, offset in committed.items() if not offset and acked(tp.topic)]
        if fresh:
            beginnings = await self.earliest_offsets(*fresh)
            for tp in fresh:
                start = int(beginnings.get(tp) or 0)
                await self._seek(tp, start)
                self._guard_first[tp] = start
        return committed

    async def _seek(self, partition: TP, offset: int) -> None:
        """aiokafka's ``seek``, run in the consumer's thread (see 6. above)."""
        thread: Any = cast(Any, self)._thread  # the ThreadDelegateConsumer's (the concrete class)
        await thread.call_thread(thread.seek, partition, offset)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self.guard_forget(revoked)
        await super().on_partitions_revoked(revoked)

    def guard_forget(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self._guard_first.pop(tp, None)
            self._guard_holes.pop(tp, None)
            self._guard_waiting.pop(tp, None)

    def guard_stalled(self, now: float) -> list[tuple[TP, int]]:
        """(partition, offset) of every commit that has waited ``STALL_SECONDS`` at an offset
        no message in flight has (see the module doc)."""
        due = [
            (tp, offset)
            for tp, (offset, since) in self._guard_waiting.items()
            if now - since >= STALL_SECONDS
        ]
        if not due:
            return []
        in_flight = {(m.tp, m.offset) for m in list(self._unacked_messages)}
        return [(tp, offset) for tp, offset in due if (tp, offset) not in in_flight]

    async def guard_heal(self) -> int:
        """Seek every stalled partition back to where its commit waits. Returns how many.

        Where retention deleted the offsets the commit waits at before anyone handled them (a
        group stopped longer than the topic's retention), no fetch can cover them again: the
        broker's log start is the proof that they are no longer messages, and the commit goes
        on from it (logged: those events are lost to retention, not to the guard)."""
        stalled = [(tp, o) for tp, o in self.guard_stalled(monotonic()) if self._assigned(tp)]
        beginnings = await self.earliest_offsets(*[tp for tp, _ in stalled]) if stalled else {}
        for tp, offset in stalled:
            self._guard_waiting.pop(tp, None)
            start = int(beginnings.get(tp) or 0)
            if start > offset:
                log.warning(
                    "%s[%d]: offsets %d..%d were deleted by the topic's retention before this "
                    "group handled them; the commit goes on from %d",
                    tp.topic, tp.partition, offset, start - 1, start,
                )  # fmt: skip
                self.guard_hole(tp, offset, start)
                continue
            log.warning(
                "%s[%d]: the message at offset %d was fetched but never handled, and the commit "
                "waits for it; seeking back to it (the messages after it are delivered again)",
                tp.topic, tp.partition, offset,
            )  # fmt: skip
            self.heals += 1
            await self.seek(tp, offset)
        return len(stalled)

    def _assigned(self, tp: TP) -> bool:
        if tp in self.assignment():
            return True
        self._guard_waiting.pop(tp, None)
        return False

    def ack(self, message: Any) -> bool:
        if not message.tracked:  # skipped by the stream (see 4. above): not handled
            return False
        return bool(super().ack(message))

    def ack_events(self, events: Iterable[Any]) -> int:
        """``event.ack()`` for each of ``events`` (Faust events of this consumer's messages), in
        order, with the same effect, under one hold of Faust's ``ack_lock`` instead of three per
        message: what ``Message.ack``, ``ConsumerMessage.on_final_ack``, ``ack`` above and
        ``Consumer.ack`` of the pinned Faust do, inline (the worker's acknowledgement flush acks
        every message it handled: one call per message was most of the flush's own CPU). Returns
        how many offsets became committable. An event of another kind of message, or of another
        consumer, is acked its own way."""
        committable = 0
        waiting = False
        with ack_lock:
            acks_enabled_for = self.app.topics.acks_enabled_for
            committed_offsets = self._committed_offset
            acked_indexes = self._acked_index
            acked_lists = self._acked
            unacked = self._unacked_messages
            for event in events:
                message = event.message
                if type(message).on_final_ack is not _FINAL_ACK or event.app.consumer is not self:
                    committable += bool(event.ack())
                    continue
                if message.acked:
                    continue
                refcount = message.refcount = max(message.refcount - 1, 0)
                if refcount or not message.tracked:
                    continue
                message.acked = True
                if not acks_enabled_for(message.topic):
                    continue
                waiting = True
                tp, offset = message.tp, message.offset
                committed = committed_offsets[tp]
                if committed is None or offset >= committed:
                    acked_index = acked_indexes[tp]
                    if offset not in acked_index:
                        unacked.discard(message)
                        acked_index.add(offset)
                        acked_lists[tp].append(offset)
                        self._n_acked += 1
                        committable += 1
            if waiting:
                notify(self._waiting_for_ack)
        return committable

    # -- the offset to commit -------------------------------------------------------------------

    def _new_offset(self, tp: TP) -> int | None:
        with ack_lock:  # ``ack()`` mutates the same lists under it
            acked = self._acked[tp]
            if not acked:
                self._guard_waiting.pop(tp, None)
                return None
            committed = self._committed_offset[tp]
            start = committed if committed is not None else self._guard_first.get(tp)
            if start is None:  # acked, yet nothing fetched since the assignment: do not guess
                return None
            acked.sort()
            holes = self._guard_holes.get(tp, [])
            position, taken, hole = start, 0, 0
            while True:
                if taken < len(acked) and acked[taken] < position:
                    taken += 1  # below the start, or a duplicate: already covered
                elif taken < len(acked) and acked[taken] == position:
                    taken += 1
                    position += 1
                else:
                    while hole < len(holes) and holes[hole][1] <= position:
                        hole += 1
                    if hole < len(holes) and holes[hole][0] <= position:
                        position = holes[hole][1]
                        hole += 1
                    else:
                        break
            if taken:
                self._acked_index[tp].difference_update(acked[:taken])
                del acked[:taken]
            if acked:  # later offsets acked: the commit waits at ``position``
                waiting = self._guard_waiting.get(tp)
                if waiting is None or waiting[0] != position:
                    self._guard_waiting[tp] = (position, monotonic())
            else:
                self._guard_waiting.pop(tp, None)
            if holes:
                self._guard_holes[tp] = [h for h in holes if h[1] > position]
            gaps = self._gap.get(tp)
            if gaps:
                gaps.chop(0, position)  # Faust's own gap tree: unused here, kept from growing
            if position == start or (committed is not None and position <= committed):
                return None
            return position


def guarded(consumer_class: type[Consumer]) -> type[Consumer]:
    """``consumer_class`` with the commit guard in front of it."""
    if issubclass(consumer_class, CommitGuard):
        return consumer_class
    return type(f"Guarded{consumer_class.__name__}", (CommitGuard, consumer_class), {})


def install_commit_guard(app: faust.App) -> None:
    """Make ``app``'s consumer commit conservatively. Call before the consumer exists (before
    the worker starts): Faust creates it from ``app.transport.Consumer``."""
    if faust.__version__ != PINNED_FAUST_VERSION:
        raise RuntimeError(
            f"streams/runtime/commit_guard.py overrides internals of faust-streaming "
            f"{PINNED_FAUST_VERSION}, but {faust.__version__} is installed: check Consumer."
            f"_new_offset, _getmany, _drain_messages, seek_to_committed and ack against the "
            f"module's docstring, and _drain_messages, getmany and the conductor's handler "
            f"against streams/runtime/handover.py's copy; run tests/unit/test_commit_guard.py "
            f"and tests/unit/test_handover.py, then update PINNED_FAUST_VERSION"
        )
    if aiokafka.__version__ != PINNED_AIOKAFKA_VERSION:
        raise RuntimeError(
            f"streams/runtime/commit_guard.py wraps aiokafka {PINNED_AIOKAFKA_VERSION}'s "
            f"FetchResult.getall, but {aiokafka.__version__} is installed: check getall, "
            f"check_assignment and PartitionRecords.next_fetch_offset against "
            f"record_fetch_ranges, run tests/unit/test_commit_guard.py, then update "
            f"PINNED_AIOKAFKA_VERSION"
        )
    if getattr(app, "_consumer", None) is not None:
        raise RuntimeError("install_commit_guard must run before the app's consumer is created")
    record_fetch_ranges()
    transport: Any = app.transport
    transport.Consumer = guarded(transport.Consumer)

    @app.timer(interval=STALL_CHECK_SECONDS)  # type: ignore[untyped-decorator]
    async def _heal_stalled_commits() -> None:
        consumer: Any = app.consumer
        if isinstance(consumer, CommitGuard):
            await consumer.guard_heal()
