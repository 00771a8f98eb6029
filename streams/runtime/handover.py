"""How a fetched message reaches the agent, without a turn of the event loop per message on
either side.

**The fetch loop's side** (``EagerHandover``). Faust's ``Consumer._drain_messages`` (faust-
streaming, pinned: ``commit_guard.PINNED_FAUST_VERSION``) hands every fetched message to the
conductor with ``await self.wait_first(callback(message), self.suspend_flow.wait())``. mode's
``wait_first`` makes a task of the callback and of three waits (the flow suspended, the consumer
stopped, the consumer crashed), waits for the first with ``asyncio.wait`` and cancels the other
three: four tasks and a turn of the loop per message, the biggest single block of Faust's share
of the worker's CPU (issue 13's profiles, ``bench/README.md``). ``EagerHandover.wait_first`` runs
the callback's first step at once, in a copy of the context (what a task would do). The callback
(the conductor putting the message in the agent's queue) nearly always finishes there; then its
result is returned at once: the other three waits could only have cancelled a callback that had
already finished, and ``_drain_messages`` ignores the result. If it suspends (a full stream
buffer, flow control during a rebalance), the started callback goes on in a task in that same
context, handed to mode's ``wait_first`` with the flow's wait as before: a suspended flow still
cuts it short. Only that exact call (a coroutine and one other waitable, no timeout), with the
flow running, takes this path; every other ``wait_first`` of the consumer is mode's.

**One poll, one loop** (``EagerHandover._drain_messages``, ``DirectPut``). Above that, per
message, Faust's fetch loop stepped its ``getmany`` async generator, read the partition's
highwater for the monitor, and the conductor ran three coroutines (``on_message`` under an
asyncio lock, the handler, the schema's decode) to put the message in the agent's queue. The
fetch loop is now a copy of Faust's (pinned version) over the poll's records in a plain loop,
the same checks and bookkeeping message for message (tested against Faust's own over the same
polls, and under the commit guard's attacks), the highwater read once per partition per poll.
A message whose partition's one subscriber is an agent reading a ``RawSchema`` topic (the
worker's inputs) goes into the agent's queue by a plain call when nothing would make the
conductor wait: the conductor's lock free, the flow not suspended, the producer's buffer below
its size, the queue not full. Anything else (the worker's ticks, a wait) is the conductor's, as
before. Measured (a poll of 500 messages over 4 partitions, the agent's queue taken between
polls, one process): 14.7-17.3 us per message with Faust's loop and the eager hand-over below,
8.1-9.6 us with this one.

**The agent's side** (``stream_events(stream)``): what Faust's stream iteration (its Cython
``StreamIterator``) does per event, without its turn of the event loop before each one (an
``asyncio.sleep(0)``) and without its layers of generators and sensor calls. Per event, as Faust
does when the agent takes it: an event of another consumer generation, or taken while the flow
is suspended (a rebalance), is skipped (neither tracked nor acknowledged: the consumer delivers
it again from the committed offset); one of an acking topic is tracked (the consumer's
``unacked`` set, which a rebalance and a stop wait on). Where events queue up (a backlog) the
agent turns the loop at least every ``YIELD_EVERY_S`` of its own, so the fetch loop, the
acknowledgements and the ticks go on; so does the worker's agent while it handles what the
event-time merge released at once (``Turns``).

**Nothing queued for the agent is thrown away when the flow resumes** (``keep_queue``). Faust
makes every channel's queue with ``clear_on_resume``: mode's flow control empties it each time
it resumes the flow. After a rebalance of an app with tables (the worker), Faust's recovery
resumes the flow before it restores them (or finds nothing to restore), and again at the end
(``Recovery.on_recovery_completed``), after resuming the stream partitions and seeking them to
the committed offsets. (The loader has no tables: Faust resumes its flow once, after the seek.)
Messages of the new assignment fetched in between were in the agent's queue when the
second resume emptied it: dropped, never handled, never acked, and not fetched again (the seek
found the consumer where it already was). The commit guard then held the partition's commit
until its heal sought back 10-14 s later and delivered everything since again (the multi-worker
hand-over test: one message per partition of every topic, in about a third of its runs; traced
in session 14). The emptying is not needed: an event of an older consumer generation, or taken
while the flow is suspended, is skipped where it is taken (here, as in Faust's own stream), and
is delivered again from the committed offset. So the agent's queue is taken out of the flow
control's care; that changes only this: it is never emptied (the conductor still waits for a
suspended flow before it puts a message in it).

Measured together (session 11, the e2e step alone, alternated with the one-task hand-over they
replace): about 1.5 x the events per worker CPU-second. Each alone had lost messages in the
multi-worker kill test (sessions 7 and 9). Session 10 traced such a loss to the commit guard's
false holes after a seek, fixed in session 11 (``commit_guard.py``); since then the kill test
passed with each alone (11 runs, the seeds that had failed among them) and with both (5 runs).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Coroutine
from functools import partial
from time import perf_counter
from typing import Any

import faust
from faust.transport.conductor import ConductorHandler  # type: ignore[attr-defined]
from faust.transport.consumer import CONSUMER_FETCHING, Consumer
from faust.types import EventT
from mode.utils.locks import Event

from streams.runtime.fetching import install_consumer_mixin


async def _resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    """Go on with ``coro``, suspended on ``yielded`` (a future, or None: a bare yield), as a
    task would: resumed once what it waits for is done, or thrown into what that raised (a
    cancellation of this task cancels the future awaited, and the callback gets it)."""
    while True:
        step: Any
        try:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                # What the task running the callback would have done with what it yielded:
                # awaited again, a future still marked as blocking would refuse.
                yielded._asyncio_future_blocking = False
                await yielded
        except BaseException as exc:
            step = partial(coro.throw, exc)
        else:
            step = partial(coro.send, None)
        try:
            yielded = step()
        except StopIteration as stop:
            return stop.value


def _close(waitable: Any) -> None:
    if asyncio.iscoroutine(waitable):
        waitable.close()


# The flow's wait in the fetch loop's call: ``suspend_flow`` is an asyncio event in the pinned
# Faust, mode's elsewhere. Any other ``wait_first`` (whose result its caller may read) is mode's.
_EVENT_WAITS = frozenset({asyncio.Event.wait.__code__, Event.wait.__code__})


class EagerHandover(Consumer):
    """Mixin for a concrete Faust consumer class (see ``install_handover``)."""

    eager_finished: int = 0  # callbacks that finished in their first step
    eager_suspended: int = 0  # callbacks that suspended and went on in a task

    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
        if (
            timeout is not None
            or len(coros) != 2
            or not asyncio.iscoroutine(coros[0])
            or getattr(coros[1], "cr_code", None) not in _EVENT_WAITS
            # the flow already suspended (or the consumer stopped): mode's, the wait wins
            or self.suspend_flow.is_set()
            or self._stopped.is_set()
            or self._crashed.is_set()
        ):
            return await super().wait_first(*coros, timeout=timeout)
        callback, flow = coros
        context = contextvars.copy_context()
        try:
            yielded = context.run(callback.send, None)
        except StopIteration:
            _close(flow)  # never awaited: the callback finished first
            self.eager_finished += 1
            return None
        except BaseException:
            _close(flow)
            raise
        self.eager_suspended += 1
        task = asyncio.get_running_loop().create_task(_resume(callback, yielded), context=context)
        return await super().wait_first(task, flow)

    async def _drain_messages(self, fetcher: Any) -> None:
        """Faust's fetch loop (``Consumer._drain_messages`` and ``getmany`` of the pinned
        version), the same bookkeeping for every message: the stop checks, the flow and
        consumer generation checks, the read offsets and gaps the commit guard reads,
        ``commit_every``, a loop turn every 100 messages. What differs (the module's
        docstring, "one poll, one loop"):

        - the records of a poll are walked in a plain loop, not through the ``getmany`` async
          generator (a coroutine step per message);
        - a partition's highwater goes to the monitor once per poll, not once per message (it
          keeps the last one it is given);
        - a message the conductor would only put in its one agent's queue (``DirectPut``) is
          put there here, without its three coroutines and lock; any other goes to the
          conductor through ``wait_first`` as before."""
        app = self.app
        callback = self.callback
        direct = DirectPut(app) if callback == app.topics.on_message else None
        consumer_should_stop = self._stopped.is_set
        crashed = self._crashed.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = app.topics.acks_enabled_for
        to_message = self._to_message
        track_end = app.monitor.track_tp_end_offset
        highwater = self.highwater
        sleep = asyncio.sleep
        yield_every = 100
        num_since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                await self.sleep(0)
                if not self.should_stop:
                    records, active = await self._wait_next_records(1.0)
                    generation_id = app.consumer_generation_id
                    if records is None or self.should_stop:
                        pass
                    elif not self.flow_active:
                        try:
                            await self.perform_seek()
                        except Exception as ex:
                            self.log.warning(f"exception performing seek when flow not active {ex}")
                    else:
                        buffered = self._buffered_partitions
                        tracked: set[Any] = set()
                        for tp, record in self.scheduler.iterate(records):
                            if not self.flow_active:
                                break
                            if app.consumer_generation_id != generation_id:
                                break
                            if not (active is None or tp in active or tp in buffered):
                                continue
                            if tp not in tracked:
                                tracked.add(tp)
                                track_end(tp, highwater(tp))
                            message = to_message(tp, record)
                            num_since_yield += 1
                            if num_since_yield > yield_every:
                                await sleep(0)
                                num_since_yield = 0
                            offset = message.offset
                            r_offset = get_read_offset(tp)
                            if r_offset is None or offset >= r_offset:
                                gap = offset - (r_offset or 0)
                                if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                    await self._add_gap(tp, r_offset + 1, offset)
                                if commit_every is not None and self._n_acked >= commit_every:
                                    self._n_acked = 0
                                    await self.commit()
                                if (
                                    direct is None
                                    or consumer_should_stop()
                                    or crashed()
                                    or not direct.put(message)
                                ):
                                    await self.wait_first(
                                        callback(message), self.suspend_flow.wait()
                                    )
                                set_read_offset(tp, offset)
                            else:
                                self.log.dev(
                                    "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                    offset,
                                    message.key,
                                    message.value,
                                )
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class DirectPut:
    """What the conductor does with a message of a partition whose one subscriber is an agent
    reading a ``RawSchema`` topic, as a plain call: when nothing would make the conductor wait,
    the message gets its event and goes into the agent's queue. ``put(message)`` says whether it
    did; when it did not, nothing happened and the conductor takes the message.

    The conductor (Faust's ``Conductor.on_message`` and its ``ConductorHandler`` of the
    partition, pinned version) would: take the partition's handler under the conductor's lock;
    wait for the flow control (suspended during a rebalance); wait for the producer's buffer to
    ebb; count the message once per channel (``refcount``); decode it (``RawSchema``: the event
    of its own key and value); put it in the channel's queue, telling the handler when the
    queue's pressure is high, or wait for room if the queue is full. Here each of those waits is
    a check: the lock held (the subscriptions changing), the flow suspended, the buffer full,
    the queue full, the partition's handler not the conductor's or not one ``RawSchema``
    channel's: the conductor's path."""

    __slots__ = ("handlers", "lock", "routes", "suspended")

    def __init__(self, app: Any) -> None:
        self.handlers = app.topics._tp_to_callback
        self.lock = app.topics._tp_to_callback_lock
        self.suspended = app.flow_control._suspend.is_set
        # tp -> (its handler, the channel's queue, the event maker, the buffer's check, the
        # pressure callbacks); the event maker None: not this path's. At most one per
        # topic-partition the worker was ever assigned.
        self.routes: dict[Any, tuple[Any, Any, Any, Any, Any, Any]] = {}

    def put(self, message: Any) -> bool:
        if self.lock.locked() or self.suspended():
            return False
        tp = message.tp
        handler = self.handlers.get(tp)
        route = self.routes.get(tp)
        if route is None or route[0] is not handler:
            if handler is None:
                return False
            route = self.routes[tp] = _route(handler)
        _, queue, make_event, ebbed, high, drop = route
        if make_event is None or not ebbed() or queue.full():
            return False
        message.refcount += 1
        queue.put_nowait_enhanced(
            value=make_event(message), on_pressure_high=high, on_pressure_drop=drop
        )
        return True


def _route(handler: Any) -> tuple[Any, Any, Any, Any, Any, Any]:
    """What ``DirectPut`` needs of a partition's handler: the conductor's, for one channel
    whose decode is ``RawSchema``'s and with the worker's cheap producer-buffer check."""
    if (
        ConductorHandler is None
        or type(handler) is not ConductorHandler
        or len(handler.channels) != 1
    ):
        return (handler, None, None, None, None, None)
    (channel,) = handler.channels
    make_event = getattr(channel.decode, "event_of", None)
    ebbed = getattr(handler.wait_until_producer_ebb, "ebbed", None)
    if ebbed is None:
        make_event = None
    return (
        handler, channel.queue, make_event, ebbed, handler.on_pressure_high,
        handler.on_pressure_drop,
    )  # fmt: skip


def install_handover(app: faust.App) -> None:
    """Give ``app``'s consumer the eager hand-over. Call before the consumer exists, after
    ``install_commit_guard`` (which checks the Faust version)."""
    install_consumer_mixin(app, EagerHandover, "Eager")


# The longest the agent handles queued events without a turn of the event loop.
YIELD_EVERY_S = 0.005


class Turns:
    """When the agent last let the event loop turn, shared by the two places where it can work
    through many events at once: ``stream_events`` (a queue of fetched events) and the worker's
    agent handling what the event-time merge releases in one go (``app.py``: a merge that held a
    backlog's events until a tick came released up to a thousand at once, 0.2-0.5 s without a
    turn on this machine, while the acknowledgement flush, the ticks and the worker's HTTP
    endpoint waited). Either turns the loop once ``YIELD_EVERY_S`` of the agent's own work has
    passed since the last turn, whichever of them made it."""

    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since = perf_counter()

    def due(self) -> bool:
        """``YIELD_EVERY_S`` passed since the last turn (a plain call: no coroutine per event)."""
        return perf_counter() - self.since > YIELD_EVERY_S

    async def turn(self) -> None:
        """Let the event loop run whatever else is ready, once."""
        await asyncio.sleep(0)
        self.since = perf_counter()


def keep_queue(stream: Any) -> None:
    """Take the queue of ``stream`` (an agent's stream) out of mode's flow control, which empties
    it whenever the flow resumes (see the module's docstring). Call before iterating it."""
    queues = getattr(stream.app.flow_control, "_queues", None)
    if queues is None:  # another mode: its flow control keeps its queues elsewhere
        raise RuntimeError(
            "streams/runtime/handover.py keep_queue: the flow control has no _queues; check "
            "mode's FlowControlEvent.resume, which must not empty the agents' queues"
        )
    queues.discard(stream.channel.queue)


async def stream_events(stream: Any, turns: Turns | None = None) -> AsyncIterator[Any]:
    """The events of ``stream`` (an agent's stream, Faust's ``Stream``), as its ``events()``
    gives them: see the module's docstring. ``turns``: shared with the agent's own work."""
    keep_queue(stream)
    started = await stream.maybe_start()
    channel = stream.channel
    queue = channel.queue
    app = stream.app
    flow_active = app.flow_control.is_active
    acking = app.topics.acking_topics
    track = app.consumer.unacked.add
    turns = turns or Turns()
    try:
        while not stream.should_stop:
            if queue.empty():  # (also false while an error waits: get_nowait raises it)
                value = await queue.get()
                turns.since = perf_counter()
            else:
                value = queue.get_nowait()
                if turns.due():
                    await turns.turn()
            if not isinstance(value, EventT):
                continue
            message = value.message
            if not flow_active() or message.generation_id != app.consumer_generation_id:
                continue
            if not message.tracked and message.topic in acking:
                message.tracked = True
                track(message)
            yield value
    except StopAsyncIteration:
        # What Faust throws into the channel's queue when the stream stops (a worker's
        # shutdown): the iteration ends, as Faust's own does. Raised out of an async generator
        # it would be a RuntimeError, and the agent would crash with a traceback.
        return
    finally:
        stream._channel_stop_iteration(channel)
        if started:
            await stream.stop()
            stream.service_reset()
