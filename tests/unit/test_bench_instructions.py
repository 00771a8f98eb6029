"""``python -m bench.instructions``: what it fires (valgrind itself is not run here)."""

from __future__ import annotations

import time

import pytest

from bench import instructions


async def test_the_firing_it_counts_fires_every_timer_between_its_two_marks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marks: list[int] = []
    monkeypatch.setattr(time, "thread_time", lambda: marks.append(1) or 0.0)
    await instructions.fire(36)  # raises unless all 36 timers were decided
    assert len(marks) == 2  # callgrind's dumps: the firing is the second part, alone


def test_without_valgrind_it_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(instructions.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="needs valgrind"):
        instructions.count(10)
