"""The pipeline's one clock. Tests and demos run it faster than real time.

``now_ms()`` is ``epoch + (wall - epoch) * speed``: at speed 1 it is the wall clock; at speed
3600 an hour passes every second, starting from the moment the clock was created (or from
``epoch_ms``), so a simulator and a worker sharing a clock agree on what time it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Clock:
    def __init__(
        self,
        speed: float = 1.0,
        epoch_ms: int | None = None,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self.speed = speed
        self._wall_ms = wall_ms
        self.epoch_ms = epoch_ms if epoch_ms is not None else wall_ms()

    def now_ms(self) -> int:
        if self.speed == 1.0:
            return self._wall_ms()
        return int(self.epoch_ms + (self._wall_ms() - self.epoch_ms) * self.speed)
