"""Faust's fetch loop hands each message over with one task, not four.

``Consumer._drain_messages`` (faust-streaming, pinned: ``commit_guard.PINNED_FAUST_VERSION``)
hands every fetched message to the conductor with
``await self.wait_first(callback(message), self.suspend_flow.wait())``. mode's ``wait_first``
makes a task of the callback and of three waits (the flow suspended, the consumer stopped, the
consumer crashed), waits for the first with ``asyncio.wait``, then cancels the other three: four
tasks, three cancellations and a wait per message, the biggest single block of Faust's share of
the worker's CPU (issue 13's profiles, ``bench/README.md``).

``OneTaskHandover.wait_first`` does the same with one task and one future: the callback runs in
a task of its own, as before (so it starts on the loop's next turn, as before, and a suspended
flow cuts it short, as before), and one future is woken by whichever comes first: the callback
finishing, or one of the three events being set (the future is put among each event's waiters,
where ``Event.wait`` would put its own). What follows is mode's: a callback still running is
cancelled, a callback that failed raises, and the result (which ``_drain_messages`` ignores)
is None.

* If the flow is already suspended, or the consumer stopped or crashed, the call is mode's, as
  it is for every other ``wait_first`` of the consumer (another signature, a timeout).
* Only the waiting changes: the callback, the conductor and the stream are Faust's. (Running the
  callback at once, without a task, was tried in session 7 and lost messages in the
  multi-worker test: not this.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import faust
from faust.transport.consumer import Consumer
from mode.utils.locks import Event

from streams.runtime.fetching import install_consumer_mixin

# The flow's wait: ``suspend_flow`` is an asyncio event in the pinned Faust, mode's elsewhere.
_EVENT_WAITS = frozenset({asyncio.Event.wait.__code__, Event.wait.__code__})


def _wake(waiter: asyncio.Future[None], _: Any) -> None:
    if not waiter.done():
        waiter.set_result(None)


class OneTaskHandover(Consumer):
    """Mixin for a concrete Faust consumer class (see ``install_one_task_handover``)."""

    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
        if (
            timeout is not None
            or len(coros) != 2
            or not asyncio.iscoroutine(coros[0])
            or getattr(coros[1], "cr_code", None) not in _EVENT_WAITS
        ):
            return await super().wait_first(*coros, timeout=timeout)
        events = (self.suspend_flow, self._stopped, self._crashed)
        if events[0].is_set() or events[1].is_set() or events[2].is_set():
            return await super().wait_first(*coros)
        callback: Coroutine[Any, Any, Any] = coros[0]
        coros[1].close()  # the flow's own wait is never started: its event is watched below
        loop = asyncio.get_running_loop()
        task = loop.create_task(callback)
        waiter: asyncio.Future[None] = loop.create_future()
        task.add_done_callback(lambda done: _wake(waiter, done))
        for event in events:
            event._waiters.append(waiter)
        try:
            await waiter
        finally:
            for event in events:
                event._waiters.remove(waiter)
            if not task.done():
                task.cancel()
        if task.done():
            task.result()  # raises what the callback raised (or its cancellation), as mode does
        return None


def install_one_task_handover(app: faust.App) -> None:
    """Give ``app``'s consumer the one-task hand-over. Call before the consumer exists, after
    ``install_commit_guard`` (which checks the Faust version)."""
    install_consumer_mixin(app, OneTaskHandover, "OneTask")
