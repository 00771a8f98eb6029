"""The fetch loop's hand-over with one task (streams/runtime/handover.py), on Faust's real
consumer class: what mode's ``wait_first`` did, with one task and one future."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from streams.runtime.handover import OneTaskHandover, install_one_task_handover
from tests.unit.faust_apps import app_with


def consumer() -> Any:
    made: Any = app_with(
        "test-handover", install_one_task_handover
    ).consumer  # created, not started: no broker needed
    assert isinstance(made, OneTaskHandover)
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


def waiters(c: Any) -> int:
    return sum(len(event._waiters) for event in (c.suspend_flow, c._stopped, c._crashed))


async def test_the_callback_runs_in_a_task_of_its_own_and_is_awaited() -> None:
    c = consumer()
    seen: list[str] = []
    outer = asyncio.current_task()

    async def callback(message: str) -> None:
        seen.append(message)
        assert asyncio.current_task() is not outer  # a task, as with mode's wait_first

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the flow's wait, never awaited, must not warn
        assert await c.wait_first(callback("m1"), c.suspend_flow.wait()) is None
        gc.collect()
    assert seen == ["m1"] and waiters(c) == 0


async def test_it_starts_on_the_next_turn_of_the_loop_as_before() -> None:
    c = consumer()
    order: list[str] = []

    async def callback(message: str) -> None:
        order.append(message)

    async def other() -> None:
        order.append("other")

    asyncio.get_running_loop().create_task(other())  # scheduled first: runs first
    await c.wait_first(callback("m1"), c.suspend_flow.wait())
    assert order == ["other", "m1"]


async def test_a_callback_that_waits_is_awaited_until_it_finishes() -> None:
    c = consumer()
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def callback(message: str) -> None:
        seen.append(await gate)

    waiting = asyncio.ensure_future(c.wait_first(callback("m1"), c.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    assert not waiting.done() and waiters(c) == 3
    gate.set_result("opened")
    await asyncio.wait_for(waiting, 1)
    assert seen == ["opened"] and waiters(c) == 0


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
    assert cancelled == ["m1"] and waiters(c) == 0


async def test_with_the_flow_already_suspended_it_is_modes_wait_first() -> None:
    c = consumer()
    c.suspend_flow.set()
    cancelled: list[str] = []
    callback = blocked(cancelled)

    result = await asyncio.wait_for(c.wait_first(callback("m1"), c.suspend_flow.wait()), 1)
    await asyncio.sleep(0)
    assert len(result.done) == 1 and result.results == [True]  # mode's: the flow's wait won
    assert cancelled == ["m1"]


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
    await asyncio.sleep(0)
    assert waiters(c) == 0


async def test_the_fetch_loop_cancelled_cancels_the_callback() -> None:
    c = consumer()
    cancelled: list[str] = []
    callback = blocked(cancelled)

    waiting = asyncio.ensure_future(c.wait_first(callback("m1"), c.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0)
    assert cancelled == ["m1"] and waiters(c) == 0


async def test_other_waits_are_modes() -> None:
    c = consumer()
    event = asyncio.Event()
    event.set()
    result = await c.wait_first(event, timeout=1)
    assert result.done == [event] and not result.stopped
