"""A check for the background loop of ``Acks`` (the worker's and the loader's acknowledgement)."""

from __future__ import annotations

import asyncio
from typing import Any


async def assert_stop_ends_when_a_wake_up_races_it(loop: Any, turns: int) -> None:
    """Python 3.11's ``asyncio.wait_for`` swallows a cancellation that arrives just as what it
    waits for completes: a loop built on it never ended, and ``stop()`` hung for ever. ``loop``
    has ``start()``, ``stop()`` and the ``_wake`` event its loop waits on."""
    loop.start()
    await asyncio.sleep(0.01)  # the loop waits for a wake-up
    loop._wake.set()
    for _ in range(turns):
        await asyncio.sleep(0)
    stopping = asyncio.ensure_future(loop.stop())
    done, _ = await asyncio.wait({stopping}, timeout=3)
    assert stopping in done, "stop() did not end"
