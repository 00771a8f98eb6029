"""The worker's Faust app and its event-time merge at a rebalance (streams/app.py ``_App``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faust
import pytest
from aiokafka import TopicPartition

from streams.app import _App, deliver_dropped_again
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


async def test_a_kept_partition_without_a_committed_offset_is_read_again_where_it_dropped() -> None:
    """aiokafka leaves a partition with no committed offset where it was after a rebalance: the
    messages the merge dropped there were never delivered again (the multi-worker test lost
    offset 0 of a partition that stayed with its worker)."""
    seeks: list[tuple[str, int, int]] = []

    class Thread:
        def seek(self, tp: TopicPartition, offset: int) -> None:
            seeks.append((tp.topic, tp.partition, offset))

    class FaustConsumer:
        _thread = Thread()

        async def seek_to_committed(self) -> dict[TopicPartition, int | None]:
            return {
                TopicPartition("orders", 0): None,  # nothing committed yet
                TopicPartition("orders", 1): 0,  # committed at 0: aiokafka does not seek either
                TopicPartition("orders", 2): 7,  # moved back to 7 by aiokafka
                TopicPartition("orders", 3): None,  # nothing dropped: left where it is
            }

    consumer = FaustConsumer()
    dropped = {("orders", 0): 0, ("orders", 1): 4, ("orders", 2): 9, ("cart", 0): 3}
    deliver_dropped_again(consumer, dropped)
    committed = await consumer.seek_to_committed()
    assert seeks == [("orders", 0, 0), ("orders", 1, 4)]
    assert committed[TopicPartition("orders", 2)] == 7  # Faust gets what aiokafka said
    assert dropped == {}  # until the merge drops something again


def test_the_app_remembers_the_first_offset_it_dropped_per_partition() -> None:
    broker = Broker()
    broker.caught_up(*TOPICS)
    broker.end[("orders", 0)] = 9
    app = _App("test-app-merge-offsets", autodiscover=False, web_enabled=False)
    app.ordering = make(broker)
    for offset in (5, 6):
        app.ordering.push(Event(Message(offset=offset)), "orders", 0, offset, 1_000, now_ms=0)
    app.dropped[("orders", 0)] = 7  # an earlier rebalance of the same seek dropped 7 and on
    app.drop_held()
    assert app.dropped == {("orders", 0): 5}
