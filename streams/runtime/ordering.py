"""Event-time merge of the input topics, per partition number (Kafka Streams' timestamp sync).

Kafka orders messages within one topic-partition only. With a backlog (a deploy, a crash,
catch-up, a replay, an import) the consumer hands over whole per-topic batches, so a customer's
feedback could be applied before the consent update that happened earlier on another topic.
This buffer restores the order that matters: every input topic's partition ``p`` carries the
same customers (co-partitioned), so for each partition number it keeps the messages received
from each topic-partition in arrival order and releases the one whose *head* is oldest by event
time (``occurred_at``; a tick by its clock time). So:

* **Within a topic-partition** the order never changes: only heads are compared, hence the
  offsets of one topic-partition are handed over (and acked) in increasing order.
* **An empty topic-partition** holds its partition number back while it may still deliver an
  older message: until it is caught up to its end offset (the highwater the consumer knew when
  it last polled: a record appended after the messages of a poll comes with a later poll and
  does not hold them back; an end its broker's latest fetch left out is not known,
  ``fetching.FetchedEnds``), or until no input at all has arrived for ``wait_ms``
  (``JOURNEY_ORDERING_WAIT``). The wait counts idle time, not time spent handling other
  messages: during a catch-up the laggard's message is usually queued behind others
  (measured: a wall-clock bound of 200 ms released out of order while the worker was busy with
  a backlog). ``idle_topics`` (the worker's own ticks) do not count as input. Once the wait
  has run out the partition number flows freely until every laggard has caught up or delivered
  (as ``max.task.idle.ms``). Live, every empty topic-partition is caught up, so nothing waits
  for it. A tick waits for the laggards like any input (fired before an older event not
  received yet, a cart addition that cancels a timer, its timers would be decided otherwise),
  and holds back what is behind it while it is not received yet, like any input
  (``bench/README.md``, session 8: letting inputs pass it lost a decision).
* **Ties** (the same time) go in a fixed topic order (``topic_order``: who sets consent and time
  zone first, ticks last), so the outcome never depends on delivery order.
* **Bounded memory, by pausing the fetch** (Kafka Streams' ``buffered.records.per.partition``):
  each assigned topic-partition may hold an equal share of half the ``capacity``; a queue that
  reaches its share has its fetching paused (``pause``), and resumed (``resume``) once it is
  down to half of it. So in a catch-up the topics that are ahead stop being fetched while the
  one behind fetches its next batch, and order is kept instead of given up. Only what the
  consumer had already handed over arrives after a pause (the other half of the buffer is for
  that). If the buffer still reaches ``capacity``, the oldest head is released whether or not
  an empty topic-partition might deliver something older, and the caller takes nothing new
  from the consumer until it has handled what was released (backpressure, never a deadlock).
  Such releases are counted (``forced``) so an operator sees when order was given up. A share
  below two messages (``capacity`` 1: the bench's pass-through) pauses nothing.
* A message without an event time (it will be dead-lettered: it cannot be decoded) goes as
  soon as it is a head: no decision depends on it.

Pure and synchronous: no Kafka, no Faust, no clock of its own (``now_ms`` is passed in, a
monotonic time; pausing is a callback). The worker feeds it in ``app.py``; the pauses act on its
consumer in ``fetching.py``.
"""

from __future__ import annotations

import struct
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

# What the buffer holds: the worker's Faust events (anything, to the buffer). Not a type
# parameter: the compiled classes are extension types (ordering.pxd), which cannot be generic.
Item = Any

TopicPartition = tuple[str, int]
# (topic, partition) -> the offset after the last message on the broker, None if not known yet.
OffsetLookup = Callable[[str, int], int | None]
# Pause or resume fetching one topic-partition.
FetchSwitch = Callable[[str, int], None]

# How often ``pop_ready(now, partition)`` looks at every partition number again, not only the one
# that just received a message: a wait that ran out, an end offset learned since.
SWEEP_MS = 20.0

FORCED_BY_CAPACITY = "capacity"
FORCED_BY_WAIT = "wait"


# The order key of a message without an event time: before any other.
_NO_TIME = -(2**63)


class _Buffered:
    """A message held, with what orders it. A plain class, not a dataclass: compiled, it is an
    extension type (``ordering.pxd``) whose ``__init__`` is compiled too."""

    __slots__ = ("item", "key", "offset", "time_ms")

    def __init__(self, item: Item, offset: int, time_ms: int | None, key: tuple[int, int]) -> None:
        self.item = item
        self.offset = offset
        self.time_ms = time_ms  # None: no event time, released as soon as it is a head
        # (event time or _NO_TIME, the topic's rank): heads are released smallest first.
        self.key = key


class _PartitionGroup:
    """The topic-partitions sharing one partition number."""

    __slots__ = ("blocked_since", "queues", "waited_out")

    def __init__(self) -> None:
        self.queues: dict[str, deque[_Buffered]] = {}
        self.blocked_since: float | None = None
        self.waited_out = False  # the wait ran out: flow until the laggards deliver


class EventTimeBuffer:
    def __init__(
        self,
        topic_order: Sequence[str],
        *,
        wait_ms: int,
        capacity: int,
        end_offset: OffsetLookup,
        start_offset: OffsetLookup,
        idle_topics: Iterable[str] = (),
        sweep_ms: float = SWEEP_MS,
        pause: FetchSwitch | None = None,
        resume: FetchSwitch | None = None,
    ) -> None:
        """``topic_order``: every topic merged, in tie-break order.

        ``end_offset``: the highwater of a topic-partition as the consumer knew it at its last
        poll (``app.ConsumerOffsets``).
        ``start_offset``: where consumption of a topic-partition began after it was assigned
        (the committed offset), used until a message from it has been received.
        ``pause``/``resume``: stop and restart fetching a topic-partition (see the module's
        "Bounded memory"). A new assignment resumes everything by itself (the consumer's
        pauses do not outlive a rebalance), so the buffer forgets its pauses there.
        """
        if capacity < 1:
            raise ValueError("the ordering buffer needs room for at least one message")
        self.rank = {topic: i for i, topic in enumerate(topic_order)}
        self.wait_ms = wait_ms
        self.capacity = capacity
        self.end_offset = end_offset
        self.start_offset = start_offset
        self.idle_topics = frozenset(idle_topics)
        self._last_input_ms: float | None = None
        self.sweep_ms = sweep_ms
        self._swept_ms = float("-inf")
        self._groups: dict[int, _PartitionGroup] = {}
        self._assigned: dict[int, list[str]] = {}  # partition -> topics assigned to us there
        self._next_offset: dict[TopicPartition, int] = {}  # after the last message received
        self._size = 0
        self.forced: Counter[str] = Counter()  # releases that gave up waiting, by reason
        self._pause = pause
        self._resume = resume
        self._share = 0  # messages a topic-partition may hold before its fetching pauses; 0: never
        self.paused: set[TopicPartition] = set()
        self.pauses = 0  # how often fetching was paused, for the metrics

    def __len__(self) -> int:
        return self._size

    @property
    def full(self) -> bool:
        return self._size >= self.capacity

    # --- assignment ----------------------------------------------------------------------------
    def assign(self, partitions: Iterable[TopicPartition]) -> list[Item]:
        """The assignment after a rebalance; returns what was buffered for partitions not in it.

        What is buffered for a partition that stays assigned is kept: ``clear()`` emptied the
        buffer when the rebalance began, so it arrived after the consumer was moved back to
        the committed offset and nothing will deliver it again. Dropping it (as this once did,
        when the rebalance completed) lost it: the consumer went on after it, its successors
        were acked, and Faust committed past it (the crash test's "offsets never stored").
        The dropped messages of other partitions were never handled, so never acked: the
        consumer delivers them again from the committed offsets to whichever worker owns them.
        """
        self._assigned = {}
        for topic, partition in partitions:
            if topic in self.rank:
                self._assigned.setdefault(partition, []).append(topic)
        # Half the buffer is shared out; the other half takes what the consumer had already
        # handed over when a pause came (its poll batch and the agent's queue).
        count = sum(len(topics) for topics in self._assigned.values())
        share = self.capacity // max(1, 2 * count)
        self._share = share if share >= 2 and self._pause is not None else 0
        # Pauses made since the rebalance began were made on the new assignment: kept.
        self.paused = {tp for tp in self.paused if tp[0] in self._assigned.get(tp[1], ())}
        dropped: list[Item] = []
        for partition, group in list(self._groups.items()):
            mine = self._assigned.get(partition, ())
            for topic in [t for t in group.queues if t not in mine]:
                dropped.extend(buffered.item for buffered in group.queues.pop(topic))
            if partition not in self._assigned:
                del self._groups[partition]
        self._next_offset = {
            (topic, partition): offset
            for (topic, partition), offset in self._next_offset.items()
            if topic in self._assigned.get(partition, ())
        }
        self._size -= len(dropped)
        return dropped

    def clear(self) -> list[Item]:
        """Drop what is buffered (a rebalance or a stop begins), keeping the assignment: it was
        not handled, so not acked, and is delivered again from the committed offsets."""
        dropped = [
            buffered.item
            for group in self._groups.values()
            for queue in group.queues.values()
            for buffered in queue
        ]
        self._groups.clear()
        self._next_offset.clear()
        self._size = 0
        self.paused.clear()  # a rebalance or a stop: the consumer's pauses end with it
        return dropped

    # --- in and out -----------------------------------------------------------------------------
    def push(
        self,
        item: Item,
        topic: str,
        partition: int,
        offset: int,
        time_ms: int | None,
        now_ms: float,
    ) -> None:
        group = self._groups.get(partition)
        if group is None:
            group = self._groups[partition] = _PartitionGroup()
        queue = group.queues.get(topic)
        if queue is None:
            queue = group.queues[topic] = deque()
        key = (_NO_TIME if time_ms is None else time_ms, self.rank.get(topic, len(self.rank)))
        queue.append(_Buffered(item, offset, time_ms, key))
        self._next_offset[(topic, partition)] = offset + 1
        self._size += 1
        if topic not in self.idle_topics:
            self._last_input_ms = now_ms
        if self._share and len(queue) >= self._share:
            tp = (topic, partition)
            if tp not in self.paused and self._pause is not None:
                self.paused.add(tp)
                self.pauses += 1
                self._pause(topic, partition)

    def pop_ready(self, now_ms: float, partition: int | None = None) -> list[Item]:
        """Everything that may be handled now, in the order to handle it.

        ``partition``: the partition number that just received a message (the worker's call,
        once per message). Every other one was emptied or found waiting when it was last looked
        at, and only time (the wait) or a newly learned end offset can release it: those are
        looked at every ``sweep_ms``, not per message (per message, looking at all twelve was
        the merge's main cost). ``None``: look at all of them now."""
        out: list[Item] = []
        if partition is None or now_ms - self._swept_ms >= self.sweep_ms:
            self._swept_ms = now_ms
            partitions: Iterable[int] = sorted(self._groups)
        else:
            partitions = (partition,) if partition in self._groups else ()
        for partition in partitions:
            group = self._groups[partition]  # kept when empty: its wait state is still news
            # Whether an empty topic-partition may still deliver: looked up once, and again only
            # when a queue empties (nothing else here changes it).
            lagging: bool | None = None
            while True:
                head = _oldest_head(group)
                if head is None:
                    break
                topic, buffered = head
                if buffered.time_ms is not None:
                    if lagging is None:
                        lagging = self._laggards(partition, group)
                    if self._must_wait(group, now_ms, lagging):
                        break
                if self._take(partition, group, topic, out):
                    lagging = None
        while self.full:  # backpressure: give up order for the oldest head rather than stall
            self.forced[FORCED_BY_CAPACITY] += 1
            self._release_oldest(out)
        return out

    def drain(self) -> list[Item]:
        """Everything, heads by event time: when no more input can come (tests, shutdown)."""
        out: list[Item] = []
        while self._size:
            self._release_oldest(out)
        return out

    # --- internals -------------------------------------------------------------------------
    def _take(self, partition: int, group: _PartitionGroup, topic: str, out: list[Item]) -> bool:
        """Release the head of ``topic``'s queue; True if that emptied the queue."""
        queue = group.queues[topic]
        out.append(queue.popleft().item)
        self._size -= 1
        if self.paused and len(queue) <= self._share // 2:
            tp = (topic, partition)
            if tp in self.paused and self._resume is not None:
                self.paused.discard(tp)
                self._resume(topic, partition)
        if not queue:
            del group.queues[topic]
            return True
        return False

    def _release_oldest(self, out: list[Item]) -> None:
        chosen: tuple[tuple[int, int], int, str] | None = None
        for partition, group in self._groups.items():
            head = _oldest_head(group)
            if head is not None:
                candidate = (head[1].key, partition, head[0])
                if chosen is None or candidate < chosen:
                    chosen = candidate
        if chosen is None:
            return
        _, partition, topic = chosen
        group = self._groups[partition]
        self._take(partition, group, topic, out)

    def _laggards(self, partition: int, group: _PartitionGroup) -> bool:
        """Whether an empty topic-partition of this partition number may still deliver."""
        for topic in self._assigned.get(partition, ()):
            if topic in group.queues:
                continue
            end = self.end_offset(topic, partition)
            if end is None:
                return True  # not fetched yet: we cannot know
            position = self._next_offset.get((topic, partition))
            if position is None:
                position = self.start_offset(topic, partition)
            if position is None or position < end:
                return True
        return False

    def _must_wait(self, group: _PartitionGroup, now_ms: float, lagging: bool) -> bool:
        """``lagging``: ``_laggards`` of the group."""
        if not lagging:
            group.blocked_since, group.waited_out = None, False
            return False
        if group.waited_out:
            return False
        if group.blocked_since is None:
            group.blocked_since = now_ms
        idle_since = max(group.blocked_since, self._last_input_ms or group.blocked_since)
        if now_ms - idle_since < self.wait_ms:
            return True
        group.waited_out = True
        self.forced[FORCED_BY_WAIT] += 1
        return False


def _oldest_head(group: _PartitionGroup) -> tuple[str, _Buffered] | None:
    """The group's head to release first (the smallest key), with its topic."""
    best: _Buffered | None = None
    best_topic = ""
    for topic, queue in group.queues.items():
        head = queue[0]
        if best is None or head.key < best.key:
            best, best_topic = head, topic
    return None if best is None else (best_topic, best)


# --- ticks carry the journey time at which they were sent ------------------------------------
_TICK = struct.Struct(">q")


def tick_value(now_ms: int) -> bytes:
    return _TICK.pack(now_ms)


def tick_time(value: bytes | None, fallback_ms: int) -> int:
    """A tick's time; ``fallback_ms`` (the record timestamp) for a tick without one."""
    if value is not None and len(value) == _TICK.size:
        return int(_TICK.unpack(value)[0])
    return fallback_ms
