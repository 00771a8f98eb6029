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
