"""Ending the background tasks of a worker and the loader at a stop (``cancel_and_wait``).

Two ways a stop went wrong on Python 3.11, both found in a stop that hung (CI, session 15):

* ``asyncio.wait_for`` forgets a cancel that arrives in the turn of the loop in which what it
  awaits completes: it returns the result, and a task that ends only when cancelled goes on for
  ever. Our code uses ``asyncio.timeout`` instead; libraries may not, so a cancel is repeated
  until the task has ended.
* ``with suppress(CancelledError): await task`` also swallows a cancel of the caller (a stop
  given a deadline): the caller goes on as if the task had ended.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Task[Any], every: float = 1.0) -> None:
    """Cancel ``task`` (again every ``every`` seconds while it runs) and wait until it has
    ended. A failure of the task is logged, not raised; a cancel of the caller is raised."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=every)
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s failed: %r", task.get_name(), task.exception(),
                  exc_info=task.exception())  # fmt: skip
