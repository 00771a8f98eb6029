"""The fetch loop's callback run eagerly (streams/runtime/eager.py), on Faust's real consumer
class: what finishes in its first step costs no task, what suspends behaves as in mode's
``wait_first`` (the flow being suspended cuts it short)."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import warnings
from typing import Any

import faust
import pytest

from streams.runtime.commit_guard import install_commit_guard
from streams.runtime.eager import EagerCallback, install_eager_callback
from streams.runtime.fetching import install_fetch_control

CURRENT: contextvars.ContextVar[str] = contextvars.ContextVar("current", default="none")


def consumer() -> Any:
    app = faust.App("test-eager", broker="kafka://127.0.0.1:1", autodiscover=False)
    install_commit_guard(app)
    install_fetch_control(app)
    install_eager_callback(app)
    made: Any = app.consumer  # created, not started: no broker needed
    assert isinstance(made, EagerCallback)
    return made


async def test_a_callback_that_does_not_suspend_finishes_at_once_without_tasks() -> None:
    c = consumer()
    seen: list[str] = []
    flow = asyncio.Event()

    async def callback(message: str) -> None:
        seen.append(message)

    tasks = len(asyncio.all_tasks())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a flow wait never awaited would warn
        await c.wait_first(callback("m1"), flow.wait())
        gc.collect()
    assert seen == ["m1"] and c.eager_finished == 1 and c.eager_suspended == 0
    assert len(asyncio.all_tasks()) == tasks


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

    waiting = asyncio.ensure_future(c.wait_first(callback("m1"), asyncio.Event().wait()))
    await asyncio.sleep(0.01)
    assert not waiting.done() and c.eager_suspended == 1
    gate.set_result("opened")
    await waiting
    assert seen == [("opened", "m1")]
    assert CURRENT.get() == "none"  # the callback's context is its own, as in a task


async def test_a_suspended_flow_cuts_a_waiting_callback_short() -> None:
    c = consumer()
    flow = asyncio.Event()
    cancelled: list[str] = []

    async def callback(message: str) -> None:
        try:
            await asyncio.Event().wait()  # e.g. a full stream buffer
        except asyncio.CancelledError:
            cancelled.append(message)
            raise

    waiting = asyncio.ensure_future(c.wait_first(callback("m1"), flow.wait()))
    await asyncio.sleep(0.01)
    flow.set()
    await asyncio.wait_for(waiting, 1)
    await asyncio.sleep(0)
    assert cancelled == ["m1"]


async def test_an_error_in_the_callback_reaches_the_fetch_loop() -> None:
    c = consumer()

    async def callback(message: str) -> None:
        raise RuntimeError(f"cannot deliver {message}")

    async def failing_later(message: str) -> None:
        await asyncio.sleep(0)
        raise RuntimeError(f"later {message}")

    with pytest.raises(RuntimeError, match="cannot deliver m1"):
        await c.wait_first(callback("m1"), asyncio.Event().wait())
    with pytest.raises(RuntimeError, match="later m2"):
        await c.wait_first(failing_later("m2"), asyncio.Event().wait())


async def test_other_waits_are_modes() -> None:
    c = consumer()
    event = asyncio.Event()
    event.set()
    result = await c.wait_first(event, timeout=1)
    assert result.done == [event] and not result.stopped
