"""The worker's Faust app and its event-time merge at a rebalance (streams/runtime/app.py ``_App``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import faust
import pytest

from streams.runtime.app import _App
from tests.unit.test_ordering import TOPICS, Broker, make


@dataclass(eq=False)
class Message:
    topic: str = "orders"
    partition: int = 0
    offset: int = 5


@dataclass(eq=False)
class Event:
    message: Message = field(default_factory=Message)


@dataclass
class Consumer:
    """What Faust's consumer waits for before a rebalance goes on (``wait_empty``)."""

    unacked: set[Any] = field(default_factory=set)


def test_messages_the_merge_drops_are_no_longer_awaited_by_the_consumer() -> None:
    """Faust waits at a rebalance until every message it tracks is acked or garbage; its stream
    keeps the last one received referenced, so a message the merge held (and dropped) must be
    untracked: else a worker joined by another waited for ever and lost its partitions."""
    broker = Broker()
    broker.caught_up(*TOPICS)
    broker.end[("orders", 0)] = 9
    broker.end[("orders", 1)] = 9
    app = _App("test-app-merge", autodiscover=False, web_enabled=False)
    app.ordering = make(broker, partitions=2)
    held, moved, handling = Event(), Event(), Event()
    consumer = Consumer({held.message, moved.message, handling.message})
    app._consumer = consumer  # type: ignore[assignment]
    app.ordering.push(held, "orders", 0, 5, 1_000, now_ms=0)
    app.drop_held()  # a rebalance begins
    assert len(app.ordering) == 0
    assert consumer.unacked == {moved.message, handling.message}
    # Received between the seek and the end of the rebalance, for a partition no longer ours.
    moved.message.partition, moved.message.offset = 1, 0
    app.ordering.push(moved, "orders", 1, 0, 1_000, now_ms=0)
    app.untrack(app.ordering.assign([("orders", 0)]))
    assert consumer.unacked == {handling.message}  # the one being handled is still awaited


async def test_the_merge_is_emptied_on_the_event_loop_when_faust_waits_for_the_agent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where Faust waits (after suspending the flow), not in ``on_rebalance_start``, which runs
    in the consumer's thread while the agent may still put a message in the merge."""
    awaited: list[set[Any]] = []

    async def wait_empty(self: Any, consumer: Consumer, logger: Any) -> None:
        awaited.append(set(consumer.unacked))

    monkeypatch.setattr(faust.App, "_consumer_wait_empty", wait_empty)
    broker = Broker()
    broker.caught_up(*TOPICS)
    broker.end[("orders", 0)] = 9
    app = _App("test-app-merge-wait", autodiscover=False, web_enabled=False)
    app.ordering = make(broker)
    held, handling = Event(), Event()
    consumer = Consumer({held.message, handling.message})
    app._consumer = consumer  # type: ignore[assignment]
    app.ordering.push(held, "orders", 0, 5, 1_000, now_ms=0)
    await app._consumer_wait_empty(consumer, None)
    assert awaited == [{handling.message}]
    assert len(app.ordering) == 0


async def test_the_input_topics_events_carry_the_messages_own_bytes() -> None:
    """``RawSchema``: no serializer runs; the key, value (None too) and headers are the
    message's, as Faust's ``raw`` serializer gave them."""
    from faust.types import Message as FaustMessage

    from streams.runtime.app import RawSchema

    app = faust.App("test-raw-schema", broker="kafka://127.0.0.1:1", autodiscover=False)
    topic = app.topic("journey.orders", schema=RawSchema())
    for value in (b"\x00\xff avro", None):
        message = FaustMessage("journey.orders", 3, 7, 0.0, 0, [("h", b"1")], b"c-1", value, None)
        event = await topic.decode(message)
        assert (event.key, event.value, event.message) == (b"c-1", value, message)
        assert event.headers == {"h": b"1"}


def test_fausts_monitor_keeps_no_per_message_statistics_and_rebalances_quietly() -> None:
    from streams.runtime.app import QuietMonitor

    app = _App("test-quiet-monitor", broker="kafka://127.0.0.1:1", autodiscover=False,
               Monitor=QuietMonitor)  # fmt: skip
    app.on_init_dependencies()
    assert isinstance(app.monitor, QuietMonitor) and app.monitor in set(app.sensors)
    tp, message = ("journey.orders", 0), Message()
    app.sensors.on_message_in(tp, 5, message)  # type: ignore[arg-type]
    state = app.sensors.on_stream_event_in(tp, 5, None, Event())  # type: ignore[arg-type]
    app.sensors.on_stream_event_out(tp, 5, None, Event(), state)  # type: ignore[arg-type]
    app.sensors.on_message_out(tp, 5, message)  # type: ignore[arg-type]
    assert app.monitor.messages_received_total == 0 and app.monitor.events_total == 0
    # Faust warns "Missing sensor state for rebalance" when no sensor kept a state.
    assert app.sensors.on_rebalance_start(app)


def fetch_response(*partitions: tuple[str, int, int, int, bytes]) -> Any:
    """A fetch response as aiokafka's fetcher reads it: per topic, per partition (partition,
    error code, highwater, last stable offset, log start offset, aborted transactions,
    preferred read replica, records)."""
    from types import SimpleNamespace

    topics: dict[str, list[tuple[Any, ...]]] = {}
    for topic, partition, error, highwater, records in partitions:
        topics.setdefault(topic, []).append(
            (partition, error, highwater, highwater, 0, None, -1, records)
        )
    return SimpleNamespace(topics=list(topics.items()))


def test_end_offsets_are_the_highwaters_of_the_current_assignment_at_the_last_poll() -> None:
    """``ConsumerOffsets.end_offset`` is what the fetch responses said when the consumer last
    polled (``taken``): a highwater its fetcher learns after that waits for the next poll, as
    the records it fetched do; a rebalance's new assignment is read at its next poll."""
    asyncio.run(_end_offsets())


async def _end_offsets() -> None:  # aiokafka's subscription state wants a running loop
    from types import SimpleNamespace

    from aiokafka.consumer.subscription_state import SubscriptionState
    from aiokafka.structs import TopicPartition

    from streams.runtime.app import ConsumerOffsets
    from streams.runtime.fetching import FetchedEnds

    subscription = SubscriptionState()  # the assignment as aiokafka keeps it
    fetched = FetchedEnds()
    consumer = SimpleNamespace(assignment=subscription.assigned_partitions, fetched_ends=fetched)
    offsets = ConsumerOffsets(SimpleNamespace(consumer=consumer))  # type: ignore[arg-type]
    offsets.taken()
    assert offsets.end_offset("orders", 0) is None  # not subscribed yet

    subscription.subscribe({"orders", "cart"})
    subscription.assign_from_subscribed({TopicPartition("orders", 0), TopicPartition("cart", 0)})
    offsets.taken()
    assert offsets.end_offset("orders", 0) is None  # assigned, not fetched yet
    fetched.record(1, fetch_response(("orders", 0, 0, 42, b"records"), ("cart", 0, 0, 3, b"")))
    assert offsets.end_offset("orders", 0) is None  # fetched after the poll: not yet
    offsets.taken()
    assert offsets.end_offset("orders", 0) == 42
    assert offsets.end_offset("cart", 0) == 3  # the same response: as current as the orders
    assert offsets.end_offset("orders", 1) is None  # not assigned here
    fetched.record(1, fetch_response(("orders", 0, 0, 50, b""), ("cart", 0, 0, 3, b"")))
    assert offsets.end_offset("orders", 0) == 42  # until the next poll

    subscription.assign_from_subscribed({TopicPartition("orders", 1)})  # a rebalance
    fetched.record(1, fetch_response(("orders", 1, 0, 7, b"")))
    offsets.taken()
    assert offsets.end_offset("orders", 0) is None
    assert offsets.end_offset("orders", 1) == 7


def test_an_end_left_out_of_its_brokers_latest_fetch_is_unknown() -> None:
    """aiokafka leaves a topic-partition out of its fetches while it holds records fetched for
    it: its highwater is then older than what the next fetches brought for the others (the
    worker hand-over test, seed 4811: an order released before the page views appended ahead of
    it). An end counts only while its broker's latest fetch response carried it: one left out,
    answered with an error or behind a failed fetch is unknown until a response carries it
    again. Another broker's responses do not age it (each broker is fetched on its own)."""
    from streams.runtime.fetching import FetchedEnds

    fetched = FetchedEnds()
    views, orders, other = ("page_views", 0), ("orders", 0), ("orders", 1)  # other: broker 2
    tps = [views, orders, other]
    fetched.record(1, fetch_response(("page_views", 0, 0, 61, b"60"), ("orders", 0, 0, 1, b"")))
    fetched.record(2, fetch_response(("orders", 1, 0, 5, b"")))
    assert fetched.known_ends(tps) == {views: 61, orders: 1, other: 5}
    # page_views 0 still holds record 60: broker 1's next fetch leaves it out, brings an order.
    fetched.record(1, fetch_response(("orders", 0, 0, 2, b"1")))
    assert fetched.known_ends(tps) == {views: None, orders: 2, other: 5}
    fetched.record(2, fetch_response(("orders", 1, 0, 6, b"5")))  # broker 2 flows meanwhile
    assert fetched.known_ends(tps) == {views: None, orders: 2, other: 6}
    fetched.record(1, fetch_response(("page_views", 0, 6, -1, b""), ("orders", 0, 0, 2, b"")))
    assert fetched.known_ends(tps)[views] is None  # an error says nothing about the end
    fetched.record(1, fetch_response(("page_views", 0, 0, 71, b"61-70"), ("orders", 0, 0, 2, b"")))
    assert fetched.known_ends(tps) == {views: 71, orders: 2, other: 6}  # current again
    fetched.failed(2)  # broker 2 did not answer: its ends are no longer known to be current
    assert fetched.known_ends(tps) == {views: 71, orders: 2, other: None}
    assert fetched.known_ends([("cart", 0)]) == {("cart", 0): None}  # never fetched


def test_start_offsets_are_the_committed_or_earliest_offsets_as_at_the_last_poll() -> None:
    """``ConsumerOffsets.start_offset``: the committed offset (the earliest where retention
    deleted below it, or where none is committed), looked up once per poll: a commit made since
    is seen at the next poll, as the end offsets are; the earliest offsets of a new assignment
    at once."""
    asyncio.run(_start_offsets())


async def _start_offsets() -> None:
    from types import SimpleNamespace

    from faust.types import TP

    from streams.runtime.app import ConsumerOffsets
    from streams.runtime.fetching import FetchedEnds

    earliest: dict[Any, int] = {}

    async def earliest_offsets(*tps: Any) -> dict[Any, int]:
        return {tp: earliest[tp] for tp in tps if tp in earliest}

    consumer = SimpleNamespace(
        _committed_offset={},
        assignment=set,  # ``taken`` finds no assignment: no ends
        fetched_ends=FetchedEnds(),
        after_poll=[],
        earliest_offsets=earliest_offsets,
    )
    offsets = ConsumerOffsets(SimpleNamespace(consumer=consumer))  # type: ignore[arg-type]
    orders, cart = TP("orders", 0), TP("cart", 0)
    await offsets.assigned([orders, cart])
    assert consumer.after_poll == [offsets.taken]
    assert offsets.start_offset("orders", 0) is None  # nothing known
    consumer._committed_offset[orders] = 40
    assert offsets.start_offset("orders", 0) is None  # until the next poll
    offsets.taken()
    assert offsets.start_offset("orders", 0) == 40
    earliest.update({orders: 55, cart: 3})  # retention deleted orders up to 55
    await offsets.assigned([orders, cart])
    assert offsets.start_offset("orders", 0) == 55
    assert offsets.start_offset("cart", 0) == 3  # nothing committed: the earliest
    consumer._committed_offset[orders] = 60
    assert offsets.start_offset("orders", 0) == 55
    offsets.taken()
    assert offsets.start_offset("orders", 0) == 60


def test_the_producer_buffer_is_waited_for_only_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """The conductor awaits ``producer.buffer.wait_until_ebb()`` per message: the worker's waits
    only when the buffer holds more than its maximum, then with Faust's own wait."""
    asyncio.run(_ebb(monkeypatch))


async def _ebb(monkeypatch: pytest.MonkeyPatch) -> None:
    from faust.transport.producer import ProducerBuffer

    waited: list[int] = []

    async def faust_wait(buffer: Any) -> None:
        waited.append(buffer.pending.qsize())

    monkeypatch.setattr(ProducerBuffer, "wait_until_ebb", faust_wait)
    app = _App("test-ebb", broker="kafka://127.0.0.1:1", autodiscover=False, web_enabled=False)
    buffer = app.producer.buffer
    await buffer.wait_until_ebb()
    for n in range(buffer.max_messages):
        buffer.pending.put_nowait(n)
    await buffer.wait_until_ebb()
    assert waited == []  # at its maximum: not full
    buffer.pending.put_nowait("one more")
    await buffer.wait_until_ebb()
    assert waited == [buffer.max_messages + 1]
