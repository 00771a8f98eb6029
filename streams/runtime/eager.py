"""Faust's fetch loop, without four tasks per message.

Faust's ``Consumer._drain_messages`` hands every fetched message to the conductor with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: mode's ``wait_first``
wraps the callback, the flow event, and the service's stopped and crashed events in four tasks,
waits for the first with ``asyncio.wait`` and cancels the others. The callback (the conductor
putting the message in the agent's queue) nearly always finishes without suspending, so that
machinery is most of what a message costs the fetch loop (issue 13's profile: the worker's
biggest single Faust block).

``EagerCallback.wait_first`` runs the callback's first step at once, in a copy of the context
(what a task would do). If it finishes there (no suspension), its result is returned at once:
the other three waits could only have cancelled a callback that had already finished, and
``_drain_messages`` ignores the result. If it suspends (flow control during a rebalance, a full
stream buffer), the started callback continues in a task in that same context, handed to mode's
``wait_first`` with the other waits as before: a suspended flow still cuts it short. Only that
exact call (a coroutine and one other waitable, no timeout) takes this path; every other
``wait_first`` of the consumer is mode's.

The fetch loop itself is Faust's, unchanged (session 4 replaced it and lost messages in the
multi-worker tests); this overrides one method of the consumer class of the pinned Faust version
(``commit_guard.PINNED_FAUST_VERSION``).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from functools import partial
from typing import Any

import faust
from faust.transport.consumer import Consumer


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


class EagerCallback(Consumer):
    """Mixin for a concrete Faust consumer class (see ``install_eager_callback``)."""

    eager_finished: int = 0  # callbacks that finished in their first step
    eager_suspended: int = 0  # callbacks that suspended and went on in a task

    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
        if timeout is not None:
            return await super().wait_first(*coros, timeout=timeout)
        if len(coros) != 2 or not asyncio.iscoroutine(coros[0]):
            return await super().wait_first(*coros)
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


def install_eager_callback(app: faust.App) -> None:
    """Give ``app``'s consumer the eager callback. Call before the consumer exists, after
    ``install_commit_guard`` (which checks the Faust version)."""
    if getattr(app, "_consumer", None) is not None:
        raise RuntimeError("install_eager_callback must run before the app's consumer is created")
    transport: Any = app.transport
    base = transport.Consumer
    if not issubclass(base, EagerCallback):
        base = type(f"Eager{base.__name__}", (EagerCallback, base), {})
    transport.Consumer = base
