"""Runs the pure journey model against the Faust table, the timer wheel and the outputs.

* **State** lives in the changelogged table ``journeys`` (customer_id -> bytes). A stored value
  is ``partition (2 bytes) + next timer time (8 bytes) + encode_state(state)``: the prefix lets
  the due-timer index be rebuilt from the table after a rebalance without decoding any state.
  Stored values are kept in a bounded cache in front of the table; this process is the only
  writer of its partitions, so the cache is coherent and is dropped on every rebalance.
* **Written behind, once per customer per batch.** A handled message leaves its customer's new
  state in ``_dirty``; every flush of ``Acks`` (each ``JOURNEY_ACK_INTERVAL``) takes the dirty
  states as it takes the messages to acknowledge (``take_dirty``), awaits the broker's
  acknowledgement of the records sent so far, then writes each taken customer's state to the
  table (with the outbox entries just made durable already dropped), then acknowledges the
  messages. States made while it waits are the next flush's: their records are not durable yet,
  and written now they would need a second write to drop their outbox entries. A customer
  with ten events in a batch costs one RocksDB write and one changelog record, not ten (the
  table's write path was most of the worker's CPU: issue 13). The changelog record of a state
  is registered with ``Acks`` like every other record (``app.table_writer``) and awaited by the
  same flush, so the messages that made it are acknowledged only once it is on the broker; a
  crash before that loses the state *and* redelivers the messages, which decide the same again
  (same trigger ids: they come from the triggering event, or from the timer stored in the
  state; a timer whose firing was not written is still due in the stored state, so the rebuilt
  index fires it again on a later tick, whether or not the tick that fired it is redelivered).
* **Timers** are due times in the states. An in-memory index (one heap per partition) says which
  customer to look at when; it is rebuilt from the table when partitions are assigned. The
  worker sends itself a tick per assigned partition a few times a second, through the ticks
  topic, co-partitioned with the inputs: due timers are fired while handling the tick of their
  partition, in the same agent as the events, so a customer's state has a single writer and the
  table write has the partition of the message being handled.
* **Everything it knows goes out as Kafka records** (``outputs.py``): emitted triggers to
  ``journey.triggers``, every decision to ``journey.decisions``, every accepted event in canonical
  form to ``journey.events``, the customer's snapshot to ``journey.customers`` (a tombstone on
  erasure). The engine holds no database connection; the loader stores those topics.
* **The state is never ahead of what it caused (the outbox).** The state is written to the table
  (and so to its changelog) as soon as a message is handled, but its records become durable only
  when the broker acknowledges them (``acks.py``). So every decision is first appended to
  the customer's outbox, in the state written with it, and leaves the outbox only after the
  broker acknowledged its decision and trigger records. Since a flush writes the states after
  awaiting the records sent before it started, those entries are dropped as the state is
  written (``_drop_durable``: one write per fired timer); the outbox is written only for
  decisions taken while the flush awaited the broker, and trimmed on a later tick of the
  partition (``_trim``). A state recovered with a non-empty outbox (the stored value is
  flagged, so the rebuild finds it without decoding) is re-sent on the partition's next tick,
  or as soon as the customer is touched, with the same trigger ids (consumers keep one record
  per trigger id and status). Canonical events need no outbox: a message is acknowledged only
  after its event record is, so a crash redelivers the message and its event is published
  again (same ``event_id``). Faust's transactions would be the other way, but are not reliable
  (faust-streaming #517, #323).
* **A message either applies completely or not at all.** The model mutates the state it is given,
  so every message is stepped on a state of its own, and everything that can fail for the
  message's sake (the model, building and encoding the records, packing) runs before the first
  output; the new state is swapped in only at the end. (The snapshot's row is built then too,
  and encoded only when sent, once per customer per flush: ``outputs.py``.) An exception leaves
  the stored state as it was; the agent turns it into a dead letter. The state a message steps
  on is a fresh decode of the customer's newest stored value, or the very object the customer's
  last message left (``_live``) while the newest stored value is still the one packed from it:
  the same state (tested: equal to its value's decode, sharing no container), without decoding
  it again. It is taken out of ``_live`` before it is stepped on, and put back only by a
  complete commit, so a failure leaves nothing half-applied there either.
"""

from __future__ import annotations

import dataclasses
import gc
import heapq
import logging
import operator
import struct
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from functools import partial
from typing import Any

from schemas.codec import Codec
from schemas.records import (
    CustomerChanged,
    CustomerPrediction,
    CustomerSnapshot,
    InputEvent,
    JourneyEvent,
    Trigger,
)
from schemas.records import (
    Decision as DecisionRecord,
)
from streams.clock import Clock
from streams.journey.config import JourneyConfig
from streams.journey.decisions import EMITTED, LAPSED, Decision, Drop, Emit, Erase
from streams.journey.model import fire_due, marketing_block, new_state, predicted, segment, step
from streams.journey.state import (
    EMPTY_OUTBOX,
    OUTBOX_AT,
    JourneyState,
    decode_state,
    encode_row,
    encode_state,
    encode_state_parts,
    state_row,
)
from streams.runtime import facts
from streams.runtime.outputs import Outputs

log = logging.getLogger(__name__)

_PREFIX = struct.Struct(">Hq")
# Set in the stored partition number: the state has an outbox (outputs not known durable).
OUTBOX_FLAG = 0x8000
_OUTBOX_BYTE = OUTBOX_FLAG >> 8  # the flag in the stored value's first byte
NO_TIMER = 2**62
# Where a stored value's outbox is: (start, end) of its bytes in the value, and the sequence of
# its last entry (when that is durable, ``EMPTY_OUTBOX`` in its place is the value without it).
OutboxAt = tuple[int, int, int]
# Live states kept (``JourneyEngine._live``): most customers' next event comes within the same
# few thousand customers (a backlog is fetched per partition, a live customer clicks on). Beyond
# this many, they are all dropped at once (a miss costs a decode, nothing else).
LIVE_STATES = 2048
# The newest emitted triggers, which the console prints with each status line. Not more: a
# trigger kept here is freed when it leaves, cold by then (with 1,000 kept, that was 1.7 % of a
# fired timer's CPU with a million pending timers).
RECENT_TRIGGERS = 5
# (topic, partition, offset, customer_id, exception): one customer's work in a tick failed.
OnFailure = Callable[[str, int, int, str, BaseException], Awaitable[None]]


def tune_gc() -> None:
    """A worker keeps many long-lived objects (the timer index, cached values): the default
    collection thresholds make Python rescan them constantly. Measured with 300k pending timers:
    timers fired per CPU-second 18.3k -> 21k, p99 lateness 824 -> 494 ms."""
    gc.set_threshold(100_000, 50, 100)


def pack(partition: int, state: JourneyState, next_fire: int | None = None) -> bytes:
    """``next_fire``: ``state.next_fire_at()`` when the caller has it already."""
    if next_fire is None:
        next_fire = state.next_fire_at()
    return _prefix(partition, state, next_fire) + encode_state(state)


def _prefix(partition: int, state: JourneyState, next_fire: int | None) -> bytes:
    flags = OUTBOX_FLAG if state.outbox else 0
    return _PREFIX.pack(
        partition | flags, NO_TIMER if next_fire is None else min(next_fire, NO_TIMER)
    )


def pack_outbox(
    partition: int, state: JourneyState, next_fire: int | None
) -> tuple[bytes, OutboxAt | None]:
    """``pack``, and where the outbox is in the value when it has one (``OutboxAt``)."""
    prefix = _prefix(partition, state, next_fire)
    if not state.outbox:
        return prefix + encode_state(state), None
    head, outbox = encode_state_parts(state)
    start = len(prefix) + len(head)
    return b"".join((prefix, head, outbox)), (start, start + len(outbox), state.outbox[-1][0])


def unpack_prefix(value: bytes) -> tuple[int, int, bool]:
    """(partition, next timer time, has an outbox), without decoding the state."""
    partition, next_fire = _PREFIX.unpack_from(value)
    return partition & ~OUTBOX_FLAG, next_fire, bool(partition & OUTBOX_FLAG)


def _put_each(
    table: MutableMapping[bytes, bytes], entries: Sequence[tuple[int, bytes, bytes]]
) -> None:
    for _, key, value in entries:
        table[key] = value


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def unpack(value: bytes) -> JourneyState:
    return decode_state(value[_PREFIX.size :])


def _unchanged(
    shows: facts.SnapshotShows, published: facts.SnapshotShows | None, state: JourneyState
) -> bool:
    """The snapshot says what the last one sent for the customer said (``updated_at`` aside).

    ``published`` is what the previous state's snapshot shows at the same clock time, not the record
    sent back then: the two can differ only where the clock enters. A customer becomes LAPSED
    as time passes (the win-back timer fires just then), and one never seen counts as first seen
    now; in both cases the snapshot is sent. Every stored state had its snapshot sent, or will
    have it sent again: a message whose snapshot a crash lost is redelivered (an event always
    sends one) and a timer's is re-sent with its recovered outbox."""
    return shows == published and shows.segment != LAPSED and state.first_seen_at is not None


def snapshot_shows(state: JourneyState, now: int, config: JourneyConfig) -> facts.SnapshotShows:
    """What the customer's snapshot shows at ``now`` (``updated_at`` aside): its segment and
    whether marketing may reach it, from the model."""
    consent = marketing_block(state, config) is None
    return facts.snapshot_shows(state, segment(state, now, config), consent, now)


def customer_snapshot_row(state: JourneyState, now: int, config: JourneyConfig) -> tuple[Any, ...]:
    """The customer's snapshot (``journey.customers``) at ``now``, as the row the engine encodes
    (``facts.snapshot_row``). Pure (the bench's contestants encode theirs from it)."""
    return facts.snapshot_row(snapshot_shows(state, now, config), now)


# The fields of a Trigger, in the order the outbox keeps them. ``dataclasses.fields`` per call
# was 4 % of a fired timer's CPU.
TRIGGER_FIELDS = tuple(f.name for f in dataclasses.fields(Trigger))
_trigger_values = operator.attrgetter(*TRIGGER_FIELDS)


def trigger_fields(trigger: Trigger) -> list[Any]:
    return list(_trigger_values(trigger))


def _saturate(state: JourneyState) -> None:
    """Sums the model keeps over many events (a cart's value, refunds, revenue) are bounded per
    event at the door but not in total: they stop at Int64 instead of failing the encoding."""
    saturate = facts.saturate
    state.revenue_minor = saturate(state.revenue_minor) or 0
    for cart in state.carts.values():
        cart.value_minor = saturate(cart.value_minor) or 0
    for order in state.orders.values():
        order.refunded_minor = saturate(order.refunded_minor) or 0


class TimerIndex:
    """Which customer has a timer due when, per partition. Stale entries are skipped lazily.

    Per partition, a heap of due times (ints) and, per due time, the customer or customers due
    then. The heap held ``(fire_at, customer_id)`` tuples before: with a million timers, a pop
    compared tuples scattered in memory on each of its ~17 levels (8 % of a fired timer's CPU
    at 1M in session 8's profile); ints compare in a fraction of that."""

    def __init__(self) -> None:
        self._heaps: dict[int, list[int]] = {}
        # Per partition: due time -> the customer due then, or a list when several are.
        self._due: dict[int, dict[int, str | list[str]]] = {}
        self._next: dict[str, int] = {}

    def set(self, partition: int, customer_id: str, fire_at: int | None) -> None:
        if fire_at is None or fire_at >= NO_TIMER:
            self._next.pop(customer_id, None)
            return
        if self._next.get(customer_id) == fire_at:
            return
        self._next[customer_id] = fire_at
        due = self._due.get(partition)
        if due is None:
            due = self._due[partition] = {}
            self._heaps[partition] = []
        then = due.get(fire_at)
        if then is None:
            due[fire_at] = customer_id
            heapq.heappush(self._heaps[partition], fire_at)
        elif isinstance(then, str):
            due[fire_at] = [then, customer_id]
        else:
            then.append(customer_id)

    def pop_due(self, partition: int, now: int) -> list[str]:
        heap = self._heaps.get(partition)
        found: list[str] = []
        if not heap or heap[0] > now:
            return found
        due = self._due[partition]
        pop = heapq.heappop
        current = self._next
        while heap and heap[0] <= now:
            fire_at = pop(heap)
            then = due.pop(fire_at)
            for customer_id in (then,) if isinstance(then, str) else then:
                if current.get(customer_id) == fire_at:
                    del current[customer_id]
                    found.append(customer_id)
        return found

    def clear(self) -> None:
        self._heaps.clear()
        self._due.clear()
        self._next.clear()

    def __len__(self) -> int:
        return len(self._next)


class _Outgoing:
    """One outbox entry on its way: its encoded decision and trigger (emits), and whether it is a
    re-send of an entry found in a recovered state (then it may duplicate a published one).

    A plain class, not a dataclass: compiled, it is an extension type (``engine.pxd``) whose
    ``__init__`` is compiled too (a dataclass's is generated Python, run interpreted)."""

    __slots__ = ("decision", "resend", "seq", "trigger")

    def __init__(self, seq: int, decision: bytes, trigger: bytes | None, resend: bool) -> None:
        self.seq = seq
        self.decision = decision
        self.trigger = trigger
        self.resend = resend


class _Prepared:
    """Everything a message does to one customer, computed before any of it is done (a plain
    class, as ``_Outgoing``)."""

    __slots__ = (
        "changed", "decided", "erase", "event", "next_fire", "outbox_at", "outgoing",
        "partition", "snapshot", "state", "value",
    )  # fmt: skip

    def __init__(
        self,
        state: JourneyState,
        partition: int,
        value: bytes,
        outbox_at: OutboxAt | None,
        next_fire: int | None,
        outgoing: list[_Outgoing],
        erase: bool,
        decided: list[Decision],
        changed: bool,
    ) -> None:
        self.state = state
        self.partition = partition
        self.value = value
        self.outbox_at = outbox_at
        self.next_fire = next_fire
        self.outgoing = outgoing
        self.snapshot: tuple[Any, ...] | None = None  # its row (encoded when sent)
        self.event: bytes | None = None  # the canonical event's record (an event's)
        self.erase = erase
        self.decided = decided
        self.changed = changed


class JourneyEngine:
    def __init__(
        self,
        table: MutableMapping[bytes, bytes],
        outputs: Outputs,
        codec: Codec,
        config: JourneyConfig,
        clock: Clock,
        cache_size: int = 50_000,
        live_size: int = LIVE_STATES,
        observe_lateness: Callable[[float], object] | None = None,
        on_failure: OnFailure | None = None,
        write: Callable[[Sequence[tuple[int, bytes, bytes]]], None] | None = None,
        read: Callable[[int, bytes], bytes | None] | None = None,
    ) -> None:
        """``write(entries)``: how states ``(partition, key, value)`` go into ``table`` (the
        worker's, ``app.table_writer``, one write per partition of the table's store; default:
        ``table[key] = value`` each). ``read(partition, key)``: a stored value from ``table``,
        ``None`` if it has none (the worker's, ``app.table_reader``, from the partition's store;
        default: ``table.get(key)``)."""
        self.table = table
        self._write = write or partial(_put_each, table)
        self._read = read
        # Customers whose newest state is not in the table yet: (partition, stored value, where
        # its outbox is in it, if known).
        self._dirty: dict[str, tuple[int, bytes, OutboxAt | None]] = {}
        # Those a flush took (``take_dirty``) and has not written yet.
        self._taken: dict[str, tuple[int, bytes, OutboxAt | None]] = {}
        self.state_writes = 0  # table writes (one per dirty customer per flush)
        outputs.acks.on_take.append(self.take_dirty)
        outputs.acks.after_deliveries.append(self.write_states)
        self.outputs = outputs
        self.codec = codec
        # An outbox entry's decision and trigger are written from its rows.
        self._encode_decision = codec.row_encoder(DecisionRecord, facts.OUTBOX_FIELDS)
        self._encode_trigger = codec.row_encoder(Trigger, TRIGGER_FIELDS)
        self._encode_event = codec.row_encoder(JourneyEvent, facts.JOURNEY_EVENT_FIELDS)
        outputs.encode_snapshot = codec.row_encoder(CustomerSnapshot, facts.SNAPSHOT_FIELDS)
        self.config = config
        self.clock = clock
        self.observe_lateness = observe_lateness
        self.on_failure = on_failure
        self.index = TimerIndex()
        # Stored values (bytes), not live states: the model mutates what it is given, so a
        # message works on its own decode (or on the live state below, taken out before use) and
        # a failure cannot leave a half-applied state here.
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_size = cache_size
        # The state object each of the last committed messages left, with the stored value it was
        # packed to (valid while that value is the customer's newest: compared by identity).
        self._live: dict[str, tuple[bytes, JourneyState]] = {}
        self._live_size = live_size
        self.live_hits = 0  # states taken from ``_live`` instead of decoded
        # Outbox bookkeeping of this process (reset on every rebalance): per customer, the last
        # outbox sequence handed to the sink and producer, and the last one known durable.
        self._sent: dict[str, int] = {}
        self._durable: dict[str, int] = {}
        # Per partition, customers to visit on its next tick: outbox entries became durable
        # (trim them), or a recovered state has an outbox (re-send it).
        self._visit: dict[int, set[str]] = {}
        self.resent = 0  # outbox entries re-sent after a recovery
        self.decisions: Counter[tuple[str, str]] = Counter()  # (trigger type, status)
        self.recent: deque[Trigger] = deque(maxlen=RECENT_TRIGGERS)  # the newest emitted
        # Recent timer lateness samples (how long after its time a timer was evaluated).
        self.timer_lateness_ms: deque[int] = deque(maxlen=100_000)
        self.rebuilds = 0
        self.last_rebuild: dict[str, float] = {}

    # --- state ---------------------------------------------------------------------------------
    def load(self, customer_id: str, partition: int | None = None) -> JourneyState:
        """The customer's state, the caller's own: it may mutate it freely (nothing else holds it).
        ``partition``: the customer's (the table's partition that holds it), if known.

        The object the customer's last commit left, if its stored value is still the newest
        (``_live``; taken out, so a failure cannot leave it half-changed), else a fresh decode."""
        stored = self._stored(customer_id, partition)
        if stored is None:
            return new_state(customer_id)
        live = self._live.pop(customer_id, None)
        if live is not None and live[0] is stored:
            self.live_hits += 1
            return live[1]
        return unpack(stored)

    def _stored(self, customer_id: str, partition: int | None = None) -> bytes | None:
        """The customer's newest stored value."""
        dirty = self._dirty.get(customer_id) or self._taken.get(customer_id)
        if dirty is not None:  # not written yet (it may have left the cache meanwhile)
            return dirty[1]
        stored = self._cache.get(customer_id)
        if stored is not None:
            self._cache.move_to_end(customer_id)
            return stored
        key = customer_id.encode()
        if partition is None or self._read is None:
            return self.table.get(key)
        return self._read(partition, key)

    def _store(
        self,
        partition: int,
        customer_id: str,
        value: bytes,
        next_fire: int | None,
        outbox_at: OutboxAt | None = None,
    ) -> None:
        self._dirty[customer_id] = (partition, value, outbox_at)  # written by the next flush
        self._cache[customer_id] = value
        self._cache.move_to_end(customer_id)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        self.index.set(partition, customer_id, next_fire)

    def take_dirty(self) -> None:
        """``Acks.on_take``: a flush takes the dirty states as it takes the messages to
        acknowledge (theirs, and maybe more); what is handled from here on is the next flush's.
        States a failed flush took and did not write stay taken (a newer one of a customer
        replaces its older)."""
        if self._taken:
            self._taken.update(self._dirty)
        else:
            self._taken = self._dirty
        self._dirty = {}

    async def write_states(self) -> None:
        """Write behind: each taken customer's state into the table (and its changelog), once,
        before the messages that made it are acknowledged (``Acks.after_deliveries``: the broker
        has acknowledged the records of those messages, and the outbox entries it made durable
        are dropped from the value written, so a fired timer costs one write, not a second one
        to trim its outbox). All of them in one ``write``: if it fails, every one stays taken
        and the flush fails: the messages behind them are not acknowledged until a later flush
        has written them. A customer changed again since the take keeps its newer state dirty,
        for the next flush."""
        taken, self._taken = self._taken, {}
        durable = self._durable
        entries: list[tuple[int, bytes, bytes]] = []
        trimmed: list[tuple[str, bytes, bytes]] = []  # (customer, value, the value written)
        for customer_id, (partition, value, outbox_at) in taken.items():
            kept = value
            if outbox_at is not None and customer_id in durable:
                kept = self._drop_durable(customer_id, value, outbox_at)
                if kept is not value:
                    trimmed.append((customer_id, value, kept))
            entries.append((partition, customer_id.encode(), kept))
        try:
            self._write(entries)
        except BaseException:
            taken.update(self._taken)  # (nothing took meanwhile: no await since)
            self._taken = taken
            raise
        self.state_writes += len(entries)
        cache, dirty = self._cache, self._dirty
        for customer_id, value, kept in trimmed:
            if cache.get(customer_id) is value:
                cache[customer_id] = kept
            if not kept[0] & _OUTBOX_BYTE and customer_id not in dirty:
                # every entry up to ``_sent`` is durable (unless a newer state sent more)
                self._sent.pop(customer_id, None)
                self._durable.pop(customer_id, None)

    def keep_dirty(self, partitions: set[int]) -> int:
        """Partitions were reassigned: states not written yet of partitions this worker no longer
        owns are dropped (their messages are not acknowledged: the new owner takes them again);
        the others stay, to be written by the next flush. Returns how many were dropped."""
        gone = 0
        for states in (self._dirty, self._taken):
            revoked = [c for c, (partition, *_) in states.items() if partition not in partitions]
            for customer_id in revoked:
                del states[customer_id]
            gone += len(revoked)
        return gone

    def rebuild(self, items: Iterable[tuple[bytes, bytes]], partitions: set[int]) -> int:
        """After a rebalance: forget cached states, index the timers of our partitions, and
        remember the states whose outbox must be re-sent (a state not written yet counts over
        what the table holds)."""
        started = time.perf_counter()
        dropped = self.keep_dirty(partitions)
        if dropped:
            log.warning("%d states of revoked partitions were not written: their messages are "
                        "handled again by the partitions' new owners", dropped)  # fmt: skip
        self._cache.clear()
        self._live.clear()
        self.index.clear()
        self._sent.clear()
        self._durable.clear()
        self._visit.clear()
        count = customers = outboxes = 0
        pending = {
            c.encode(): value for c, (_, value, _) in (*self._taken.items(), *self._dirty.items())
        }

        def states() -> Iterable[tuple[bytes, bytes]]:
            for key, stored in items:
                yield key, pending.pop(key, stored)
            yield from list(pending.items())  # new customers, not in the table yet

        for key, value in states():
            customers += 1
            partition, next_fire, has_outbox = unpack_prefix(value)
            if partition not in partitions:
                continue
            if next_fire < NO_TIMER:
                self.index.set(partition, key.decode(), next_fire)
                count += 1
            if has_outbox:
                self._visit.setdefault(partition, set()).add(key.decode())
                outboxes += 1
        gc.freeze()  # the rebuilt index lives until the next rebalance: stop rescanning it
        seconds = time.perf_counter() - started
        self.rebuilds += 1
        self.last_rebuild = {
            "customers": customers, "with_timers": count, "with_outbox": outboxes,
            "seconds": seconds,
        }  # fmt: skip
        log.info(
            "timer index rebuilt in %.2fs: %d customers, %d with pending timers, %d outboxes "
            "to re-send", seconds, customers, count, outboxes,
        )  # fmt: skip
        return count

    # --- the two things that happen ---------------------------------------------------------
    async def on_event(
        self, record: InputEvent | CustomerPrediction, topic: str, partition: int, offset: int
    ) -> None:
        """Apply one event. Raises if handling it failed; then nothing of it was applied."""
        now = self.clock.now_ms()
        state = self.load(record.customer_id, partition)
        if isinstance(record, CustomerPrediction):
            # Not an event of the shop: kept in the state, in the next snapshot, decides nothing.
            if not state.erased:
                self._commit(self._prepare(predicted(state, record), [], now, partition))
            return
        if state.erased:
            if isinstance(record, CustomerChanged) and record.action == "ERASED":
                # Erasing again is harmless, and finishes one a crash interrupted.
                self.outputs.erased(state.customer_id.encode())
            return  # nothing about an erased customer is kept or sent
        state, decisions = step(state, record, now, self.config)
        prepared = self._prepare(state, decisions, now, partition)
        if not state.erased:
            prepared.event = self._encode_event(
                facts.canonical_event_row(record, wall_clock_ms(), topic, partition, offset)
            )
        self._commit(prepared, live=True)

    async def on_tick(self, partition: int, topic: str, offset: int) -> None:
        """Fire the due timers of the partition, then trim or re-send outboxes. A customer whose
        work fails is reported (``on_failure``) and left as it was; the others go on."""
        now = self.clock.now_ms()
        for customer_id in self.index.pop_due(partition, now):
            try:
                state = self.load(customer_id, partition)
                fire_at = state.next_fire_at()
                if fire_at is not None:
                    late = max(0, now - fire_at)
                    self.timer_lateness_ms.append(late)
                    if self.observe_lateness is not None:
                        self.observe_lateness(late / 1000 / self.clock.speed)
                # Taken before the model mutates the state: most timers change nothing a
                # snapshot shows, and then none is sent (a third of a timer's encoding).
                published = None if state.erased else self._shows(state, now)
                state, decisions = fire_due(state, now, self.config)
                prepared = self._prepare(state, decisions, now, partition, published=published)
                self._commit(prepared)
            except Exception as exc:
                await self._failed(topic, partition, offset, customer_id, exc)
        for customer_id in self._visit.pop(partition, ()):
            try:
                if self._trim(customer_id, partition):
                    continue
                prepared = self._prepare(
                    self.load(customer_id, partition), [], now, partition, snapshot=False
                )
                if prepared.changed:
                    self._commit(prepared)
            except Exception as exc:
                await self._failed(topic, partition, offset, customer_id, exc)

    async def _failed(
        self, topic: str, partition: int, offset: int, customer_id: str, exc: BaseException
    ) -> None:
        log.error(
            "handling customer %s at %s/%d/%d failed: %r",
            customer_id,
            topic,
            partition,
            offset,
            exc,
        )
        if self.on_failure is None:
            raise exc
        await self.on_failure(topic, partition, offset, customer_id, exc)

    # --- the outbox ----------------------------------------------------------------------------
    def _prepare(
        self,
        state: JourneyState,
        decisions: list[Decision],
        now: int,
        partition: int,
        snapshot: bool = True,
        published: facts.SnapshotShows | None = None,
    ) -> _Prepared:
        """Pure: append the decisions to the outbox, drop what is durable, and build every row,
        record and the stored value. Raises on anything the message cannot be carried through.

        ``published``: what the snapshot of the state this one was made from shows at ``now``. A
        snapshot that shows the same is not sent again, unless the clock alone may have changed
        what the last one sent said (see ``_unchanged``)."""
        customer_id = state.customer_id
        recovered = state.outbox_seq
        erase = False
        for decision in decisions:
            match decision:
                case Emit(trigger=trigger):
                    state.outbox_seq += 1
                    state.outbox.append(
                        [state.outbox_seq, facts.emitted(trigger), trigger_fields(trigger)]
                    )
                case Drop():
                    state.outbox_seq += 1
                    state.outbox.append(
                        [state.outbox_seq, facts.dropped(decision, state.stage), None]
                    )
                case Erase():
                    erase = True
        before = len(state.outbox)
        durable = self._durable.get(customer_id, 0)
        if durable:
            state.outbox = [entry for entry in state.outbox if entry[0] > durable]
        sent = self._sent.get(customer_id, 0)
        # Positional, in the dataclasses' field order: keywords build a dict per call.
        outgoing = [
            _Outgoing(
                seq,
                self._encode_decision(entry),
                self._encode_trigger(fields) if fields is not None else None,
                seq <= recovered,  # resend
            )
            for seq, entry, fields in state.outbox
            if seq > sent
        ]
        _saturate(state)
        next_fire = state.next_fire_at()
        value, outbox_at = pack_outbox(partition, state, next_fire)
        prepared = _Prepared(
            state,
            partition,
            value,
            outbox_at,
            next_fire,
            outgoing,
            erase,
            decisions,
            bool(decisions) or bool(outgoing) or len(state.outbox) != before,  # changed
        )
        # A re-sent outbox goes with a fresh snapshot: the one of its message may be lost too.
        # (Re-sent entries come first: the outbox is in sequence order.)
        resend = bool(outgoing) and outgoing[0].resend
        if (snapshot or resend) and not state.erased:
            shows = self._shows(state, now)
            if resend or not _unchanged(shows, published, state):
                # Encoded when sent (``Outputs.send_snapshots``): only the newest per customer
                # per flush is, one in three events' snapshots in a backlog.
                prepared.snapshot = facts.snapshot_row(shows, now)
        return prepared

    def _shows(self, state: JourneyState, now: int) -> facts.SnapshotShows:
        return snapshot_shows(state, now, self.config)

    def _commit(self, prepared: _Prepared, live: bool = False) -> None:
        """Do what ``_prepare`` computed, then swap the new state in. ``live``: keep the state
        object for the customer's next message (an event's: a customer's events come in runs; a
        fired timer's customer seldom comes back soon, and states kept alive for nothing are
        work for the garbage collector: 48 -> 69 us per fired timer with a million pending)."""
        outputs = self.outputs
        state = prepared.state
        customer_id = state.customer_id
        key = customer_id.encode()
        if prepared.event is not None:
            outputs.event(key, prepared.event)
        for out in prepared.outgoing:
            outputs.decision(key, out.decision)
            if out.trigger is not None:
                outputs.trigger(key, out.trigger)
            if out.resend:
                self.resent += 1
        for decision in prepared.decided:
            match decision:
                case Emit(trigger=trigger):
                    self.decisions[(trigger.trigger_type, EMITTED)] += 1
                    self.recent.append(trigger)
                case Drop():
                    self.decisions[(decision.trigger_type, decision.status)] += 1
        if prepared.erase:
            outputs.erased(key)
            self._sent.pop(customer_id, None)
            self._durable.pop(customer_id, None)
        elif prepared.snapshot is not None:
            outputs.snapshot(key, prepared.snapshot)
        if prepared.outgoing:
            last = prepared.outgoing[-1].seq
            self._sent[customer_id] = last
            outputs.acks.durable(
                partial(self._became_durable, customer_id, prepared.partition, last)
            )
        elif not state.outbox:
            self._sent.pop(customer_id, None)
            self._durable.pop(customer_id, None)
        self._store(
            prepared.partition, customer_id, prepared.value, prepared.next_fire, prepared.outbox_at
        )
        if live and self._live_size:
            if len(self._live) >= self._live_size:
                self._live.clear()
            self._live[customer_id] = (prepared.value, state)

    def _trim(self, customer_id: str, partition: int) -> bool:
        """Drop the durable entries of the customer's outbox from its stored value, when nothing
        in it is left to send: on the positional row, without building the state's objects (a
        second decode per fired timer otherwise). False: the full path is needed (entries to
        re-send, another state version, no state)."""
        stored = self._stored(customer_id, partition)
        if stored is None:
            return False
        row = state_row(memoryview(stored)[_PREFIX.size :])
        if row is None:
            return False
        fields: list[Any] = row[1]
        outbox: list[list[Any]] = fields[OUTBOX_AT]
        sent = self._sent.get(customer_id, 0)
        if any(entry[0] > sent for entry in outbox):
            return False
        durable = self._durable.get(customer_id, 0)
        kept = [entry for entry in outbox if entry[0] > durable]
        if len(kept) != len(outbox):
            fields[OUTBOX_AT] = kept
            _, next_fire = _PREFIX.unpack_from(stored)
            flags = OUTBOX_FLAG if kept else 0
            value = _PREFIX.pack(partition | flags, next_fire) + encode_row(row)
            self._store(partition, customer_id, value, next_fire)
        if not kept:
            self._sent.pop(customer_id, None)
            self._durable.pop(customer_id, None)
        return True

    def _drop_durable(self, customer_id: str, value: bytes, outbox_at: OutboxAt) -> bytes:
        """``value`` (a dirty state about to be written) without its durable outbox entries. All
        of them durable (the usual case): ``EMPTY_OUTBOX`` in the outbox's place, without
        decoding; some (decided while the flush awaited the broker): on the plain row."""
        start, end, last = outbox_at
        durable = self._durable.get(customer_id, 0)
        if durable >= last:
            return bytes((value[0] & ~_OUTBOX_BYTE,)) + value[1:start] + EMPTY_OUTBOX + value[end:]
        row = state_row(memoryview(value)[_PREFIX.size :])
        assert row is not None  # encoded by this worker, in this version
        fields: list[Any] = row[1]
        outbox: list[list[Any]] = fields[OUTBOX_AT]
        kept = [entry for entry in outbox if entry[0] > durable]
        if len(kept) == len(outbox):
            return value
        fields[OUTBOX_AT] = kept  # not empty: the value keeps its outbox flag
        return value[: _PREFIX.size] + encode_row(row)

    def _became_durable(self, customer_id: str, partition: int, seq: int) -> None:
        """The broker acknowledged the outbox's records up to ``seq`` (``Acks.durable``: before
        the flush writes the states). A dirty state is trimmed as it is written; one written
        already (by an earlier flush, while these records were on their way) is trimmed by a
        visit on the partition's next tick."""
        if seq > self._durable.get(customer_id, 0):
            self._durable[customer_id] = seq
            if customer_id not in self._dirty and customer_id not in self._taken:
                self._visit.setdefault(partition, set()).add(customer_id)
