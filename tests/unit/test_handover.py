"""The fetch loop's side of the hand-over (``handover.EagerHandover``), on Faust's real consumer
class: a callback that finishes in its first step costs no task and no turn of the loop; one
that suspends behaves as in mode's ``wait_first`` (a suspended flow, a stop or a crash cuts it
short). The agent's side is in ``test_stream_events.py``."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import warnings
from collections.abc import Callable, Coroutine
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from streams.runtime.handover import EagerHandover, install_handover
from tests.unit.faust_apps import app_with

CURRENT: contextvars.ContextVar[str] = contextvars.ContextVar("current", default="none")


def consumer() -> Any:
    made: Any = app_with("test-handover", install_handover).consumer  # not started: no broker
    assert isinstance(made, EagerHandover)
    return made


def blocked(cancelled: list[str]) -> Callable[[str], Coroutine[Any, Any, None]]:
    """A callback that waits for ever (a full stream buffer, the flow control) and notes its
    cancellation."""

    async def callback(message: str) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(message)
            raise

    return callback


async def test_a_callback_that_does_not_suspend_finishes_at_once_without_tasks() -> None:
    c = consumer()
    order: list[str] = []

    async def callback(message: str) -> None:
        order.append(message)

    async def other() -> None:
        order.append("other")

    tasks = len(asyncio.all_tasks())
    asyncio.get_running_loop().create_task(other())  # scheduled first, runs after: no loop turn
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the flow's wait, never awaited, must not warn
        assert await c.wait_first(callback("m1"), c.suspend_flow.wait()) is None
        gc.collect()
    assert order == ["m1"] and c.eager_finished == 1 and c.eager_suspended == 0
    assert len(asyncio.all_tasks()) == tasks + 1  # only ``other``
    await asyncio.sleep(0)
    assert order == ["m1", "other"]


async def test_a_callback_that_suspends_goes_on_in_its_own_context() -> None:
    c = consumer()
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    seen: list[tuple[str, str]] = []

    async def callback(message: str) -> str:
        CURRENT.set(message)
        got = await gate
        await asyncio.sleep(0)  # a bare yield too
        seen.append((got, CURRENT.get()))
        return got

    waiting = asyncio.ensure_future(c.wait_first(callback("m1"), c.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    assert not waiting.done() and c.eager_suspended == 1
    gate.set_result("opened")
    await asyncio.wait_for(waiting, 1)
    assert seen == [("opened", "m1")]
    assert CURRENT.get() == "none"  # the callback's context is its own, as in a task


@pytest.mark.parametrize("event", ["suspend_flow", "_stopped", "_crashed"])
async def test_a_suspended_flow_or_a_stop_cuts_a_waiting_callback_short(event: str) -> None:
    c = consumer()
    cancelled: list[str] = []
    callback = blocked(cancelled)

    waiting = asyncio.ensure_future(c.wait_first(callback("m1"), c.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    getattr(c, event).set()
    await asyncio.wait_for(waiting, 1)
    await asyncio.sleep(0)
    assert cancelled == ["m1"]


async def test_with_the_flow_already_suspended_it_is_modes_wait_first() -> None:
    c = consumer()
    c.suspend_flow.set()
    cancelled: list[str] = []
    callback = blocked(cancelled)

    result = await asyncio.wait_for(c.wait_first(callback("m1"), c.suspend_flow.wait()), 1)
    await asyncio.sleep(0)
    assert len(result.done) == 1 and result.results == [True]  # mode's: the flow's wait won
    assert cancelled == ["m1"] and c.eager_finished == 0


async def test_an_error_in_the_callback_reaches_the_fetch_loop() -> None:
    c = consumer()

    async def callback(message: str) -> None:
        raise RuntimeError(f"cannot deliver {message}")

    async def failing_later(message: str) -> None:
        await asyncio.sleep(0)
        raise RuntimeError(f"later {message}")

    with pytest.raises(RuntimeError, match="cannot deliver m1"):
        await c.wait_first(callback("m1"), c.suspend_flow.wait())
    with pytest.raises(RuntimeError, match="later m2"):
        await c.wait_first(failing_later("m2"), c.suspend_flow.wait())


async def test_the_fetch_loop_cancelled_cancels_a_suspended_callback() -> None:
    c = consumer()
    cancelled: list[str] = []
    callback = blocked(cancelled)

    waiting = asyncio.ensure_future(c.wait_first(callback("m1"), c.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0.01)
    assert cancelled == ["m1"]


async def test_a_wait_on_anything_but_the_flow_is_modes() -> None:
    """Only the fetch loop's call takes the eager path; another caller reads mode's result."""
    c = consumer()

    async def callback() -> str:
        return "done"

    result = await c.wait_first(callback(), asyncio.sleep(10))
    assert result.results == ["done"] and c.eager_finished == 0


async def test_other_waits_are_modes() -> None:
    c = consumer()
    event = asyncio.Event()
    event.set()
    result = await c.wait_first(event, timeout=1)
    assert result.done == [event] and not result.stopped


# The fetch loop itself (``EagerHandover._drain_messages``): against Faust's own, over the same
# polls, on an app as the worker builds it (its ``_App`` and ``RawSchema`` topic), no broker.

TOPIC = "test-handover.orders"


class Polls:
    """A worker's app whose consumer gets ``polls`` (each ``{partition: [offsets]}``) from
    aiokafka, then stops; the conductor's handlers built for 4 partitions of a ``RawSchema``
    topic (and of ``other``, a topic of Faust's own schema, when given)."""

    def __init__(self, polls: list[dict[int, list[int]]], other: bool = False) -> None:
        from aiokafka.structs import ConsumerRecord
        from faust.types import TP

        from streams.runtime.app import RawSchema, _App
        from streams.runtime.commit_guard import install_commit_guard
        from streams.runtime.fetching import install_fetch_control

        self.app = _App("test-handover-drain", broker="kafka://127.0.0.1:1", autodiscover=False)
        for install in (install_commit_guard, install_fetch_control, install_handover):
            install(self.app)
        # the agent's channel (iterated: what an agent's stream reads)
        self.topic = self.app.topic(TOPIC, schema=RawSchema(), partitions=4).__aiter__()
        self.tps = [TP(TOPIC, p) for p in range(4)]
        conductor = self.app.topics
        for tp in self.tps:
            conductor._tp_index[tp].add(self.topic)
        if other:
            self.other = self.app.topic("test-handover.other", value_serializer="raw").__aiter__()
            self.tps.append(TP("test-handover.other", 0))
            conductor._tp_index[self.tps[-1]].add(self.other)
        conductor._update_callback_map()
        self.app.flow_control.resume()
        self.consumer: Any = self.app.consumer
        self.consumer._active_partitions = set(self.tps)
        self.consumer._thread.highwater = lambda tp: 1000 + tp.partition
        self.polls = [
            {
                tp: [
                    ConsumerRecord(tp.topic, tp.partition, o, 0, 0, b"k%d" % o, b"v%d" % o, None,
                                   1, 1, ())
                    for o in offsets
                ]
                for tp in self.tps
                if (offsets := poll.get(tp.partition, []))
            }
            for poll in polls
        ]  # fmt: skip
        self.fetcher = SimpleNamespace(_stopped=asyncio.Event())
        self.delivered: list[tuple[int, int, bytes]] = []
        self.holding = False  # the agent takes nothing
        self.refcounts: list[int] = []

    def queues(self) -> list[Any]:
        return [self.topic.queue] + ([self.other.queue] if hasattr(self, "other") else [])

    def take(self) -> None:
        """The agent takes what is queued."""
        for queue in [] if self.holding else self.queues():
            while not queue.empty():
                event = queue.get_nowait()
                message = event.message
                assert event.value == message.value and event.key == message.key
                self.delivered.append((message.partition, message.offset, message.value))
                self.refcounts.append(message.refcount)

    async def run(self, drain: Any) -> None:
        async def wait_next(timeout: float) -> Any:
            self.take()
            if not self.polls:
                self.fetcher._stopped.set()
                return {}, set(self.tps)
            return self.polls.pop(0), set(self.tps)

        self.consumer._wait_next_records = wait_next
        await asyncio.wait_for(drain(self.consumer, self.fetcher), 5)
        self.take()

    def state(self) -> Any:
        return (
            self.delivered,
            self.refcounts,
            dict(self.consumer._read_offset),
            dict(self.app.monitor.tp_end_offsets),
        )


POLLS = [
    {0: [0, 1, 2], 1: [5, 6], 3: [9]},
    {0: [3, 7, 8], 2: [0, 1]},  # 4..6 of partition 0 not messages (a gap)
    {0: [1, 2, 9], 1: [7]},  # 1, 2 again (below the read offset: dropped, as Faust does)
    {3: [10, 11, 12], 2: [2]},
]


async def test_the_fetch_loop_delivers_what_fausts_own_delivers() -> None:
    from faust.transport.consumer import Consumer

    stock, ours = Polls(POLLS), Polls(POLLS)
    await stock.run(Consumer._drain_messages)
    await ours.run(type(ours.consumer)._drain_messages)
    assert ours.state() == stock.state()
    assert len(ours.delivered) == 17
    # each taken by the direct put, none through the conductor (which counts eager_finished)
    assert ours.consumer.eager_finished == 0 and stock.consumer.eager_finished == 17


async def test_a_topic_of_fausts_own_schema_goes_through_the_conductor() -> None:
    polls = [{0: [0, 1]}, {0: [2]}]
    ours = Polls(polls, other=True)
    for poll in ours.polls:  # the same offsets on the other topic's partition 0 too
        poll[ours.tps[-1]] = [replace(r, topic=ours.tps[-1].topic) for r in poll[ours.tps[0]]]
    await ours.run(type(ours.consumer)._drain_messages)
    assert sorted(ours.delivered) == sorted(2 * [(0, o, b"v%d" % o) for o in (0, 1, 2)])
    assert ours.consumer.eager_finished == 3  # the other topic's, by the conductor


@pytest.mark.parametrize("held", ["lock", "flow", "queue"])
async def test_whatever_would_make_the_conductor_wait_goes_to_the_conductor(held: str) -> None:
    """The subscriptions changing (the conductor's lock), the flow suspended (a rebalance), the
    agent's queue full: the conductor takes the message and waits as it always did; once that
    clears, everything is delivered once, in order."""
    ours = Polls([{0: [0, 1, 2], 1: [3]}])
    app, queue = ours.app, ours.topic.queue
    release: Callable[[], None]
    if held == "lock":
        await app.topics._tp_to_callback_lock.acquire()
        release = app.topics._tp_to_callback_lock.release
    elif held == "flow":
        app.flow_control.suspend()
        release = app.flow_control.resume
    else:
        queue._maxsize = 1
        queue.put_nowait(SimpleNamespace())  # full
        ours.holding = True

        def release() -> None:
            ours.holding = False
            queue.get_nowait()
            queue._maxsize = 0

    draining = asyncio.ensure_future(ours.run(type(ours.consumer)._drain_messages))
    await asyncio.sleep(0.05)
    assert not draining.done() and not ours.delivered  # waiting, as the conductor waits
    release()
    await asyncio.wait_for(draining, 5)
    assert ours.delivered == [(0, 0, b"v0"), (1, 3, b"v3"), (0, 1, b"v1"), (0, 2, b"v2")]
    assert ours.consumer.eager_suspended == 1  # the first one waited, in the conductor


async def test_a_full_producer_buffer_leaves_the_message_to_the_conductor() -> None:
    """Faust's own table writes fill the producer's buffer; the conductor flushes some of it
    before it delivers (``wait_until_ebb``): with the buffer over its size, every message goes
    through the conductor."""
    ours = Polls([{0: [0, 1], 1: [3]}])
    buffer = ours.app.producer.buffer
    buffer.max_messages = -1  # always "over": Faust's flush finds nothing to wait for
    await ours.run(type(ours.consumer)._drain_messages)
    assert sorted(ours.delivered) == [(0, 0, b"v0"), (0, 1, b"v1"), (1, 3, b"v3")]
    assert ours.consumer.eager_finished == 3
