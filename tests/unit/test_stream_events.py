"""The agent's side of the hand-over (``handover.stream_events``): what Faust's stream iteration
does per event, on Faust's own queue, messages and events (the stream around them is a stand-in:
a started Faust stream needs a running app)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.events import Event
from faust.types.tuples import ConsumerMessage
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from streams.runtime import handover
from streams.runtime.handover import stream_events

TOPIC = "journey.orders"


class Stand:
    """A stream, its app and consumer: what ``stream_events`` reads of them."""

    def __init__(self) -> None:
        self.flow = FlowControlEvent(initially_suspended=False)
        self.queue: ThrowableQueue[Any] = ThrowableQueue(flow_control=self.flow)
        self.unacked: set[Any] = set()
        self.app = SimpleNamespace(
            flow_control=self.flow,
            topics=SimpleNamespace(acking_topics={TOPIC}),
            consumer=SimpleNamespace(unacked=self.unacked),
            consumer_generation_id=3,
        )
        self.channel = SimpleNamespace(queue=self.queue)
        self.should_stop = False
        self.stopped = False

    async def maybe_start(self) -> bool:
        return True

    def _channel_stop_iteration(self, channel: Any) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    def service_reset(self) -> None:
        pass

    def put(self, offset: int, topic: str = TOPIC, generation: int = 3) -> ConsumerMessage:
        message = ConsumerMessage(
            topic, 0, offset, 0.0, 0, [], b"k", b"v", None, generation_id=generation
        )
        self.queue.put_nowait(Event(self.app, b"k", b"v", {}, message))  # type: ignore[arg-type]
        return message


async def take(stand: Stand, count: int) -> list[int]:
    offsets: list[int] = []
    events = stream_events(stand)
    async for event in events:
        offsets.append(event.message.offset)
        if len(offsets) == count:
            break
    await events.aclose()
    return offsets


async def test_events_come_in_order_and_are_tracked_as_faust_tracks_them() -> None:
    stand = Stand()
    messages = [stand.put(offset) for offset in range(3)]
    other = stand.put(3, topic="journey.not-acking")
    assert await asyncio.wait_for(take(stand, 4), 2) == [0, 1, 2, 3]
    assert all(m.tracked for m in messages) and set(messages) <= stand.unacked
    assert not other.tracked and other not in stand.unacked
    assert stand.stopped  # started by the iteration, stopped with it, as Faust's


async def test_an_event_of_another_generation_or_of_a_suspended_flow_is_skipped() -> None:
    stand = Stand()
    stale = stand.put(0, generation=2)  # fetched before a rebalance
    stand.put(1)
    assert await asyncio.wait_for(take(stand, 1), 2) == [1]
    assert not stale.tracked and stale not in stand.unacked  # delivered again, not awaited

    stand.put(2)
    stand.flow.suspend()  # a rebalance began
    taking = asyncio.ensure_future(take(stand, 1))
    await asyncio.sleep(0.05)
    assert not taking.done()  # skipped, and it waits for the next one
    stand.flow.resume()
    stand.put(3)
    assert await asyncio.wait_for(taking, 2) == [3]


async def test_it_waits_for_the_next_event_and_raises_what_the_channel_throws() -> None:
    stand = Stand()
    taking = asyncio.ensure_future(take(stand, 1))
    await asyncio.sleep(0.02)
    assert not taking.done()
    stand.put(5)
    assert await asyncio.wait_for(taking, 2) == [5]
    await stand.queue.throw(RuntimeError("decode failed"))
    with pytest.raises(RuntimeError, match="decode failed"):
        await asyncio.wait_for(take(stand, 1), 2)


@pytest.mark.parametrize("waiting", [True, False])
async def test_a_stopped_channel_ends_the_iteration_as_faust_does(waiting: bool) -> None:
    """At a worker's shutdown Faust throws StopAsyncIteration into the stream's queue: the
    agent's loop ends (Faust's own iteration returns), it does not crash with a RuntimeError."""
    stand = Stand()
    stand.put(1)
    seen: list[int] = []

    async def agent() -> None:
        async for event in stream_events(stand):
            seen.append(event.message.offset)

    if not waiting:  # thrown while events are still queued
        await stand.queue.throw(StopAsyncIteration())
    running = asyncio.ensure_future(agent())
    await asyncio.sleep(0.02)
    if waiting:  # thrown into the agent waiting for its next event
        await stand.queue.throw(StopAsyncIteration())
    await asyncio.wait_for(running, 2)
    assert seen == ([1] if waiting else []) and stand.stopped


class LoopTurns:
    """Another task on the event loop, counting the turns it gets."""

    def __init__(self) -> None:
        self.count = 0
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)

    def stop(self) -> None:
        self._task.cancel()


def work(seconds: float) -> None:
    """The agent's own work, without a turn of the loop."""
    busy = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < busy:
        pass


async def test_queued_events_leave_the_loop_its_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backlog in the queue: the agent turns the loop every YIELD_EVERY_S of its own."""
    monkeypatch.setattr(handover, "YIELD_EVERY_S", 0.001)
    stand = Stand()
    for offset in range(200):
        stand.put(offset)
    other = LoopTurns()
    await asyncio.sleep(0)
    other.count = 0
    seen = 0
    async for _ in stream_events(stand):
        seen += 1
        work(0.0002)
        if seen == 200:
            break
    other.stop()
    assert 10 <= other.count < 200  # about one turn per 5 events, not one per event


async def test_the_agents_own_work_on_released_events_shares_the_streams_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker's agent handles what the event-time merge releases at once (up to a thousand
    events for one message received) with the same ``Turns`` as the stream: the loop turns every
    YIELD_EVERY_S of the agent's work in either place, and not again just after a turn."""
    monkeypatch.setattr(handover, "YIELD_EVERY_S", 0.001)
    stand = Stand()
    stand.put(0)
    stand.put(1)
    other = LoopTurns()
    await asyncio.sleep(0)
    turns = handover.Turns()
    per_message: list[int] = []
    handled = 0
    async for event in stream_events(stand, turns):
        other.count = 0
        for _ in range(100):  # released by the merge for this message, 0.1 ms each
            if turns.due():
                await turns.turn()
            work(0.0001)
            handled += 1
        per_message.append(other.count)
        if event.message.offset == 1:
            break
    other.stop()
    assert handled == 200
    # 10 ms of work per message: about one turn per ms, never one per event.
    assert all(4 <= n < 50 for n in per_message), per_message
    # Just after a turn it is not due; after YIELD_EVERY_S of work it is.
    await turns.turn()
    assert not turns.due()
    work(0.002)
    assert turns.due()


async def test_what_is_queued_for_the_agent_survives_the_flow_resuming() -> None:
    """Faust's channel queues are emptied whenever the flow resumes (``clear_on_resume``); after
    a rebalance that recovers the table it resumes twice, the second time after messages of the
    new assignment were queued (session 14: dropped unacked, the commit stalled until a heal).
    The agent's queue is taken out of that (``keep_queue``); another channel's still is not."""
    stand = Stand()
    stand.queue = ThrowableQueue(flow_control=stand.flow, clear_on_resume=True)
    stand.channel = SimpleNamespace(queue=stand.queue)
    other: ThrowableQueue[Any] = ThrowableQueue(flow_control=stand.flow, clear_on_resume=True)
    other.put_nowait("queued elsewhere")
    for offset in range(3):
        stand.put(offset)
    events = stream_events(stand)
    first = await asyncio.wait_for(events.__anext__(), 2)
    stand.flow.resume()  # the recovery's second resume, with 1 and 2 queued
    rest = [await asyncio.wait_for(events.__anext__(), 2) for _ in range(2)]
    await events.aclose()
    assert [e.message.offset for e in [first, *rest]] == [0, 1, 2]
    assert other.empty()  # the flow control does empty the queues it manages


def test_keep_queue_refuses_a_flow_control_it_does_not_know() -> None:
    stand = Stand()
    stand.app.flow_control = SimpleNamespace()  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="_queues"):
        handover.keep_queue(stand)
