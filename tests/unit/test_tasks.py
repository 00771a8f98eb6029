"""Ending background tasks at a stop (streams/runtime/tasks.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from streams.runtime.tasks import cancel_and_wait


async def test_a_task_that_forgets_a_cancel_is_cancelled_again_until_it_ends() -> None:
    async def forgets_one_cancel() -> None:  # as asyncio.wait_for of Python 3.11 can
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        await asyncio.sleep(10)

    task = asyncio.create_task(forgets_one_cancel())
    await asyncio.sleep(0)
    async with asyncio.timeout(2):
        await cancel_and_wait(task, every=0.05)
    assert task.cancelled()


async def test_a_cancel_of_the_caller_is_not_swallowed() -> None:
    release = asyncio.Event()

    async def ends_only_when_released() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    stubborn = asyncio.create_task(ends_only_when_released())
    await asyncio.sleep(0)
    stopping = asyncio.create_task(cancel_and_wait(stubborn, every=0.05))
    await asyncio.sleep(0.2)
    stopping.cancel()  # a stop given a deadline
    with pytest.raises(asyncio.CancelledError):
        await stopping
    release.set()
    await stubborn


async def test_a_failed_task_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise RuntimeError("broken")

    task = asyncio.create_task(fails(), name="the-loop")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="streams.runtime.tasks"):
        await cancel_and_wait(task)
    assert "task the-loop failed: RuntimeError('broken')" in caplog.text
