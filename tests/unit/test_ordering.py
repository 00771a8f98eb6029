"""The event-time merge (streams/runtime/ordering.py): order, ties, idle topics, the cap."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.runtime.ordering import (
    FORCED_BY_CAPACITY,
    FORCED_BY_WAIT,
    EventTimeBuffer,
    tick_time,
    tick_value,
)

TOPICS = ("customers", "cart", "orders", "feedback", "ticks")


class Broker:
    """End offsets (highwater) and committed offsets per topic-partition, as a test sets them."""

    def __init__(self) -> None:
        self.end: dict[tuple[str, int], int] = {}
        self.start: dict[tuple[str, int], int] = {}

    def caught_up(self, *topics: str, partition: int = 0, at: int = 0) -> None:
        for topic in topics:
            self.end[(topic, partition)] = at
            self.start[(topic, partition)] = at


def make(
    broker: Broker, *, wait_ms: int = 100, capacity: int = 1_000, partitions: int = 1
) -> EventTimeBuffer:
    buffer: EventTimeBuffer = EventTimeBuffer(
        TOPICS,
        wait_ms=wait_ms,
        capacity=capacity,
        end_offset=lambda topic, partition: broker.end.get((topic, partition)),
        start_offset=lambda topic, partition: broker.start.get((topic, partition)),
        idle_topics=("ticks",),
    )
    buffer.assign([(topic, p) for topic in TOPICS for p in range(partitions)])
    return buffer


def test_a_backlog_is_applied_in_event_time_order_across_topics() -> None:
    broker = Broker()
    broker.caught_up(*TOPICS)
    broker.end[("feedback", 0)] = 2
    broker.end[("customers", 0)] = 1
    buffer = make(broker)
    # The feedback topic's batch arrives first, the consent update (older) after it.
    buffer.push("nps-10", "feedback", 0, 0, 2_000, now_ms=0)
    buffer.push("nps-3", "feedback", 0, 1, 4_000, now_ms=0)
    assert buffer.pop_ready(now_ms=0) == []  # customers/0 has a message not received yet
    buffer.push("consent", "customers", 0, 0, 1_000, now_ms=0)
    assert buffer.pop_ready(now_ms=1) == ["consent", "nps-10", "nps-3"]
    assert len(buffer) == 0


def test_ties_go_in_topic_order_whatever_the_arrival_order() -> None:
    broker = Broker()
    broker.caught_up(*TOPICS)
    for topic in ("ticks", "feedback", "orders", "customers"):
        broker.end[(topic, 0)] = 1
    buffer = make(broker)
    for topic in ("ticks", "feedback", "orders", "customers"):
        buffer.push(topic, topic, 0, 0, 5_000, now_ms=0)
    assert buffer.pop_ready(now_ms=0) == ["customers", "orders", "feedback", "ticks"]


def test_within_a_topic_partition_arrival_order_is_kept_even_if_times_go_back() -> None:
    broker = Broker()
    broker.caught_up(*TOPICS)
    broker.end[("orders", 0)] = 3
    broker.end[("cart", 0)] = 1
    buffer = make(broker)
    buffer.push("o-late", "orders", 0, 0, 3_000, now_ms=0)
    buffer.push("o-early", "orders", 0, 1, 1_000, now_ms=0)  # a producer's clock went back
    buffer.push("o-last", "orders", 0, 2, 3_500, now_ms=0)
    buffer.push("cart", "cart", 0, 0, 2_000, now_ms=0)
    # Only heads are compared: offsets of one topic-partition leave in order (acks stay monotonic).
    assert buffer.pop_ready(now_ms=0) == ["cart", "o-late", "o-early", "o-last"]


def test_an_idle_topic_that_is_caught_up_does_not_hold_anything_back() -> None:
    broker = Broker()
    broker.caught_up(*TOPICS, at=7)  # nothing new anywhere, committed at the end
    broker.end[("orders", 0)] = 8
    buffer = make(broker)
    buffer.push("order", "orders", 0, 7, 1_000, now_ms=0)
    assert buffer.pop_ready(now_ms=0) == ["order"]  # live: no waiting at all
    assert not buffer.forced


def test_an_idle_topic_that_is_behind_holds_back_for_the_wait_then_flows() -> None:
    broker = Broker()
    broker.caught_up(*TOPICS)
    broker.end[("orders", 0)] = 2
    broker.end[("customers", 0)] = 5  # five messages on the broker, none received yet
    buffer = make(broker, wait_ms=100)
    buffer.push("o1", "orders", 0, 0, 1_000, now_ms=0)
    assert buffer.pop_ready(now_ms=1_000) == []
    assert buffer.pop_ready(now_ms=1_099) == []
    assert buffer.pop_ready(now_ms=1_100) == ["o1"]
    assert buffer.forced[FORCED_BY_WAIT] == 1
    # Having waited once, the partition flows until the laggard delivers: no wait per message.
    buffer.push("o2", "orders", 0, 1, 1_001, now_ms=0)
    assert buffer.pop_ready(now_ms=1_101) == ["o2"]
    assert buffer.forced[FORCED_BY_WAIT] == 1


def test_the_wait_counts_idle_time_only_and_ticks_are_not_input() -> None:
    broker = Broker()
    broker.caught_up(*TOPICS, partition=0)
    broker.caught_up(*TOPICS, partition=1)
    broker.end[("orders", 0)] = 1
    broker.end[("customers", 0)] = 5  # behind: its messages are queued behind a busy backlog
    broker.end[("orders", 1)] = 5
    buffer = make(broker, wait_ms=100, partitions=2)
    buffer.push("o1", "orders", 0, 0, 1_000, now_ms=0)
    assert buffer.pop_ready(now_ms=0) == []
    for i in range(5):  # the worker is busy: other input keeps arriving every 60 ms
        now = 60 * (i + 1)
        buffer.push(f"x{i}", "orders", 1, i, 500 + i, now_ms=now)
        assert buffer.pop_ready(now_ms=now + 1) == [f"x{i}"]
    buffer.push("tick", "ticks", 0, 0, 9_000, now_ms=350)  # its own ticks are not input
    assert buffer.pop_ready(now_ms=399) == []
    assert buffer.pop_ready(now_ms=400) == ["o1", "tick"]
    assert buffer.forced[FORCED_BY_WAIT] == 1


def test_a_tick_waits_for_an_older_event_not_received_yet() -> None:
    """A catch-up: the cart addition that cancels a timer is on the broker, not fetched yet. The
    tick that would fire the timer waits for it, so the timer is cancelled, as live."""
    broker = Broker()
    broker.caught_up(*TOPICS)
    broker.end[("cart", 0)] = 1  # the cart addition: on the broker, not received yet
    buffer = make(broker, wait_ms=100)
    buffer.push("tick", "ticks", 0, 0, 9_000, now_ms=0)
    assert buffer.pop_ready(now_ms=50) == []
    buffer.push("cart-add", "cart", 0, 0, 5_000, now_ms=60)
    assert buffer.pop_ready(now_ms=60) == ["cart-add", "tick"]
    assert not buffer.forced


def test_a_topic_partition_whose_end_is_unknown_is_waited_for() -> None:
    broker = Broker()
    broker.caught_up("customers", "cart", "orders", "ticks")  # feedback/0: not fetched yet
    broker.end[("orders", 0)] = 1
    buffer = make(broker, wait_ms=50)
    buffer.push("o1", "orders", 0, 0, 1_000, now_ms=0)
    assert buffer.pop_ready(now_ms=0) == []
    broker.caught_up("feedback")  # the first fetch answered: nothing there
    assert buffer.pop_ready(now_ms=10) == ["o1"]
    assert not buffer.forced


def test_the_position_of_a_topic_partition_is_the_last_message_received() -> None:
    broker = Broker()
    broker.caught_up(*TOPICS)
    broker.end[("customers", 0)] = 2
    broker.end[("orders", 0)] = 1
    buffer = make(broker)
    buffer.push("c1", "customers", 0, 0, 1_000, now_ms=0)
    buffer.push("c2", "customers", 0, 1, 2_000, now_ms=0)
    assert buffer.pop_ready(now_ms=0) == []  # orders/0 has one not received
    buffer.push("o1", "orders", 0, 0, 1_500, now_ms=0)
    assert buffer.pop_ready(now_ms=0) == ["c1", "o1", "c2"]
    # Everything received is released: customers/0 is at its end again, nothing waits.
    broker.end[("orders", 0)] = 2
    buffer.push("o2", "orders", 0, 1, 3_000, now_ms=0)
    assert buffer.pop_ready(now_ms=0) == ["o2"]


def test_partition_numbers_are_merged_independently() -> None:
    broker = Broker()
    broker.caught_up(*TOPICS, partition=0)
    broker.caught_up(*TOPICS, partition=1)
    broker.end[("orders", 0)] = 1
    broker.end[("customers", 1)] = 1
    broker.end[("feedback", 1)] = 1  # partition 1 waits for its feedback message
    buffer = make(broker, partitions=2)
    buffer.push("p1-consent", "customers", 1, 0, 1_000, now_ms=0)
    buffer.push("p0-order", "orders", 0, 0, 5_000, now_ms=0)
    assert buffer.pop_ready(now_ms=0) == ["p0-order"]  # partition 0 does not wait for 1


def test_the_cap_releases_the_oldest_head_instead_of_stalling() -> None:
    broker = Broker()
    broker.caught_up(*TOPICS)
    broker.end[("orders", 0)] = 10
    broker.end[("customers", 0)] = 10  # behind, and never delivers within the test
    buffer = make(broker, wait_ms=60_000, capacity=3)
    for offset, time_ms in enumerate((3_000, 1_000, 2_000)):
        buffer.push(f"o{offset}", "orders", 0, offset, time_ms, now_ms=0)
        released = buffer.pop_ready(now_ms=0)
        assert len(buffer) < 3
    assert released == ["o0"]  # the head, released to make room: never more than the cap
    assert buffer.forced[FORCED_BY_CAPACITY] == 1
    assert buffer.drain() == ["o1", "o2"]


def test_a_message_without_event_time_goes_as_soon_as_it_is_a_head() -> None:
    broker = Broker()
    broker.caught_up(*TOPICS)
    broker.end[("orders", 0)] = 2
    broker.end[("customers", 0)] = 3
    buffer = make(broker)
    buffer.push(
        "garbage", "orders", 0, 0, None, now_ms=0
    )  # undecodable: a dead letter, order is moot
    buffer.push("o1", "orders", 0, 1, 1_000, now_ms=0)
    assert buffer.pop_ready(now_ms=0) == ["garbage"]


def test_a_new_assignment_returns_the_messages_of_partitions_it_no_longer_holds() -> None:
    broker = Broker()
    broker.caught_up(*TOPICS)
    broker.end[("orders", 0)] = 1
    broker.end[("orders", 1)] = 1
    buffer = make(broker)
    buffer.push("o0", "orders", 0, 0, 1_000, now_ms=0)
    buffer.push("o1", "orders", 1, 0, 1_000, now_ms=0)
    assert buffer.assign([("orders", 1)]) == ["o0"]
    assert len(buffer) == 1
    assert buffer.pop_ready(now_ms=0) == ["o1"]


def test_a_message_received_between_the_seek_and_the_rebalance_end_is_kept() -> None:
    """The worker's rebalance: ``clear()`` when it begins, the consumer seeks to the committed
    offsets and delivers again, ``assign()`` when it completes. A message delivered before
    ``assign()`` is delivered once only: dropping it there lost it for good (the consumer went
    on after it, its successors were acked and Faust committed past it)."""
    broker = Broker()
    broker.caught_up(*TOPICS)
    broker.end[("orders", 0)] = 2
    buffer = make(broker)
    buffer.assign([("orders", 0)])
    buffer.push("stale", "orders", 0, 5, 1_000, now_ms=0)
    assert buffer.clear() == ["stale"]
    buffer.push("o0", "orders", 0, 0, 1_000, now_ms=0)
    assert buffer.assign([("orders", 0)]) == []
    buffer.push("o1", "orders", 0, 1, 2_000, now_ms=0)
    assert buffer.pop_ready(now_ms=0) == ["o0", "o1"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(TOPICS), st.integers(0, 50)), min_size=1, max_size=40),
    st.integers(1, 8),
)
def test_any_arrival_gives_per_topic_order_and_event_time_order_when_sorted(
    arrivals: list[tuple[str, int]], capacity: int
) -> None:
    """Whatever the arrival interleaving and cap: nothing is lost or duplicated, every topic's
    offsets leave in order; with room for everything, the output is sorted by (time, topic)."""
    broker = Broker()
    for topic in TOPICS:
        broker.caught_up(topic)
    per_topic: dict[str, list[int]] = {topic: [] for topic in TOPICS}
    for topic, time_ms in arrivals:
        per_topic[topic].append(time_ms)
    for topic, times in per_topic.items():
        broker.end[(topic, 0)] = len(times)
    # Each topic's times ascending (as a producer publishes them), arrival interleaved as given.
    for times in per_topic.values():
        times.sort()
    cursor = dict.fromkeys(TOPICS, 0)
    buffer = make(broker, wait_ms=10**9, capacity=capacity)
    out: list[str] = []
    for topic, _ in arrivals:
        offset = cursor[topic]
        cursor[topic] += 1
        buffer.push(f"{topic}/{offset}", topic, 0, offset, per_topic[topic][offset], now_ms=0)
        out += buffer.pop_ready(now_ms=0)
    out += buffer.pop_ready(now_ms=0)
    assert len(buffer) == 0  # every topic-partition at its end: everything left
    assert sorted(out) == sorted(f"{t}/{o}" for t in TOPICS for o in range(len(per_topic[t])))
    for topic in TOPICS:
        offsets = [int(item.split("/")[1]) for item in out if item.startswith(topic + "/")]
        assert offsets == sorted(offsets)
    if capacity >= len(arrivals):
        keys = [(per_topic[t][int(o)], TOPICS.index(t)) for t, o in (i.split("/") for i in out)]
        assert keys == sorted(keys)
        assert not buffer.forced


def test_ticks_carry_their_time() -> None:
    assert tick_time(tick_value(1_234_567), fallback_ms=9) == 1_234_567
    assert tick_time(b"", fallback_ms=9) == 9  # a tick from an older worker


def test_clear_drops_the_buffer_and_keeps_the_assignment() -> None:
    broker = Broker()
    broker.caught_up(*TOPICS)
    broker.end[("orders", 0)] = 1
    broker.end[("customers", 0)] = 1
    buffer = make(broker, wait_ms=10**9)
    buffer.push("o1", "orders", 0, 0, 1_000, now_ms=0)
    assert buffer.pop_ready(now_ms=0) == []
    assert buffer.clear() == ["o1"]
    # Still assigned: the redelivered order waits for customers/0 as before.
    buffer.push("o1", "orders", 0, 0, 1_000, now_ms=1)
    assert buffer.pop_ready(now_ms=1) == []
    buffer.push("c1", "customers", 0, 0, 500, now_ms=2)
    assert buffer.pop_ready(now_ms=2) == ["c1", "o1"]


def test_a_waiting_partition_is_released_by_the_sweep_of_another_partitions_message() -> None:
    broker = Broker()
    broker.caught_up(*TOPICS, partition=0)
    broker.caught_up(*TOPICS, partition=1)
    broker.end[("orders", 0)] = 1
    broker.end[("customers", 0)] = 5  # partition 0 waits for its laggard
    broker.end[("orders", 1)] = 4
    buffer = make(broker, wait_ms=100, partitions=2)  # sweeps every 20 ms
    buffer.push("p0-order", "orders", 0, 0, 1_000, now_ms=0)
    assert buffer.pop_ready(now_ms=0, partition=0) == []
    buffer.push("p1-a", "orders", 1, 0, 2_000, now_ms=0)
    assert buffer.pop_ready(now_ms=90, partition=1) == ["p1-a"]  # a sweep: 0 still waits
    # 105 ms: partition 0's wait has run out, but this is within 20 ms of the last sweep, so
    # only the partition of the message is looked at ...
    buffer.push("p1-b", "orders", 1, 1, 2_001, now_ms=0)
    assert buffer.pop_ready(now_ms=105, partition=1) == ["p1-b"]
    # ... and the next one after that is a sweep: partition 0 is released, in partition order.
    buffer.push("p1-c", "orders", 1, 2, 2_002, now_ms=0)
    assert buffer.pop_ready(now_ms=111, partition=1) == ["p0-order", "p1-c"]
    assert buffer.forced[FORCED_BY_WAIT] == 1
    # Without a partition, every one is looked at at once.
    buffer.push("p1-d", "orders", 1, 3, 2_003, now_ms=0)
    assert buffer.pop_ready(now_ms=112) == ["p1-d"]


# --- bounded memory by pausing the fetch (Kafka Streams' buffered.records.per.partition) --------
class Fetcher:
    """A consumer that hands over one batch per topic-partition per round, skipping paused ones
    (as aiokafka does); a batch already handed over arrives in full even if a pause comes
    in the middle of it."""

    def __init__(self, backlog: dict[tuple[str, int], list[int]], batch: int) -> None:
        self.backlog = backlog  # (topic, partition) -> event times, in offset order
        self.position = dict.fromkeys(backlog, 0)
        self.batch = batch
        self.paused: set[tuple[str, int]] = set()
        self.calls: list[tuple[str, str, int]] = []

    def pause(self, topic: str, partition: int) -> None:
        assert (topic, partition) not in self.paused
        self.paused.add((topic, partition))
        self.calls.append(("pause", topic, partition))

    def resume(self, topic: str, partition: int) -> None:
        assert (topic, partition) in self.paused
        self.paused.discard((topic, partition))
        self.calls.append(("resume", topic, partition))

    def run(self, buffer: EventTimeBuffer) -> list[Any]:
        out: list[Any] = []
        peak = 0
        while any(self.position[tp] < len(times) for tp, times in self.backlog.items()):
            progressed = False
            for tp, times in self.backlog.items():
                if tp in self.paused or self.position[tp] >= len(times):
                    continue
                start = self.position[tp]
                for offset in range(start, min(start + self.batch, len(times))):
                    buffer.push((tp[0], times[offset]), *tp, offset, times[offset], now_ms=0)
                    peak = max(peak, len(buffer))
                    out.extend(buffer.pop_ready(now_ms=0, partition=tp[1]))
                self.position[tp] = min(start + self.batch, len(times))
                progressed = True
            assert progressed, "every partition with a backlog is paused: a stall"
        out.extend(buffer.pop_ready(now_ms=0))
        assert len(buffer) == 0 and peak <= buffer.capacity
        return out


def paused_buffer(broker: Broker, fetcher: Fetcher, capacity: int) -> EventTimeBuffer:
    buffer: EventTimeBuffer = EventTimeBuffer(
        TOPICS,
        wait_ms=60_000,
        capacity=capacity,
        end_offset=lambda topic, partition: broker.end.get((topic, partition)),
        start_offset=lambda topic, partition: broker.start.get((topic, partition)),
        idle_topics=("ticks",),
        pause=fetcher.pause,
        resume=fetcher.resume,
    )
    buffer.assign(list(fetcher.backlog))
    return buffer


def test_a_catch_up_larger_than_the_buffer_keeps_event_time_order_by_pausing_busy_topics() -> None:
    """The bench's finding: the consumer hands over a batch per topic-partition, a rare topic's
    batch spans hours of a busy topic's, and the buffer filled up and gave up order. Pausing a
    topic-partition at its share of the buffer lets the rare topic's next batch in first."""
    broker = Broker()
    backlog = {
        ("orders", 0): list(range(0, 20_000, 10)),  # busy: 2,000 events
        ("customers", 0): list(range(5, 20_000, 400)),  # rare: 50 events over the same time
        ("feedback", 0): list(range(7, 20_000, 100)),
    }
    for (topic, partition), times in backlog.items():
        broker.end[(topic, partition)] = len(times)
        broker.start[(topic, partition)] = 0
    fetcher = Fetcher(backlog, batch=20)
    buffer = paused_buffer(broker, fetcher, capacity=600)  # 100 per topic-partition
    out = fetcher.run(buffer)
    assert [time for _, time in out] == sorted(time for times in backlog.values() for time in times)
    assert not buffer.forced
    assert buffer.pauses > 0
    assert fetcher.paused == set() and buffer.paused == set()


def test_without_pausing_the_same_catch_up_gives_up_order() -> None:
    """The control: the same backlog with a consumer that cannot pause."""
    broker = Broker()
    broker.caught_up(*TOPICS)
    backlog = {("orders", 0): list(range(0, 20_000, 10)), ("customers", 0): [5, 10_005]}
    for (topic, partition), times in backlog.items():
        broker.end[(topic, partition)] = len(times)
        broker.start[(topic, partition)] = 0
    fetcher = Fetcher(backlog, batch=500)
    buffer = make(broker, wait_ms=60_000, capacity=300)
    out = fetcher.run(buffer)
    assert buffer.forced[FORCED_BY_CAPACITY] > 0
    assert [time for _, time in out] != sorted(time for _, time in out)


def test_a_partition_is_resumed_at_half_its_share_and_paused_once() -> None:
    broker = Broker()
    broker.caught_up(*TOPICS)
    broker.end[("orders", 0)] = 100
    broker.end[("customers", 0)] = 1  # behind: orders wait for it
    fetcher = Fetcher({("orders", 0): [], ("customers", 0): []}, batch=1)
    buffer = paused_buffer(broker, fetcher, capacity=16)  # two topic-partitions: 4 each
    for offset in range(6):
        buffer.push(f"o{offset}", "orders", 0, offset, 1_000 + offset, now_ms=0)
        assert buffer.pop_ready(now_ms=0) == []
    assert fetcher.calls == [("pause", "orders", 0)]  # at 4, once, though 6 arrived
    buffer.push("c0", "customers", 0, 0, 500, now_ms=0)
    assert buffer.pop_ready(now_ms=0) == ["c0", "o0", "o1", "o2", "o3", "o4", "o5"]
    assert fetcher.calls == [("pause", "orders", 0), ("resume", "orders", 0)]


def test_a_pass_through_buffer_pauses_nothing() -> None:
    broker = Broker()
    broker.caught_up(*TOPICS)
    broker.end[("orders", 0)] = 3
    fetcher = Fetcher({("orders", 0): []}, batch=1)
    buffer = paused_buffer(broker, fetcher, capacity=3)  # a share below 2
    for offset in range(3):
        buffer.push(f"o{offset}", "orders", 0, offset, offset, now_ms=0)
        buffer.pop_ready(now_ms=0)
    assert fetcher.calls == [] and not buffer.paused


def test_pauses_end_with_a_rebalance_and_survive_its_completion() -> None:
    """``clear()`` (a rebalance begins: the consumer's new assignment is not paused) forgets
    every pause; ``assign()`` (it completes) keeps the pauses made since on partitions still
    assigned: those were made on the new assignment and still have to be resumed."""
    broker = Broker()
    broker.caught_up(*TOPICS)
    broker.end[("orders", 0)] = broker.end[("orders", 1)] = 100
    broker.end[("customers", 0)] = broker.end[("customers", 1)] = 1  # behind
    fetcher = Fetcher({tp: [] for tp in [("orders", 0), ("orders", 1), ("customers", 0)]}, 1)
    buffer = paused_buffer(broker, fetcher, capacity=24)  # three topic-partitions: 4 each
    for offset in range(4):
        buffer.push(f"a{offset}", "orders", 0, offset, 1_000, now_ms=0)
    assert buffer.paused == {("orders", 0)}
    buffer.clear()
    fetcher.paused.clear()  # the consumer's new assignment
    assert buffer.paused == set()
    for offset in range(4):
        buffer.push(f"b{offset}", "orders", 0, offset, 1_000, now_ms=0)
        buffer.push(f"c{offset}", "orders", 1, offset, 1_000, now_ms=0)
    assert buffer.paused == {("orders", 0), ("orders", 1)}
    buffer.assign([("orders", 0), ("customers", 0)])
    assert buffer.paused == {("orders", 0)}
