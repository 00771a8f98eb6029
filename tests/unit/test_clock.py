from __future__ import annotations

import pytest

from streams.clock import Clock


def test_real_time_by_default() -> None:
    wall = [1_000_000]
    clock = Clock(wall_ms=lambda: wall[0])
    wall[0] += 1_500
    assert clock.now_ms() == 1_001_500


def test_faster_clock_runs_from_its_epoch() -> None:
    wall = [1_000_000]
    clock = Clock(speed=3600, wall_ms=lambda: wall[0])
    assert clock.now_ms() == 1_000_000
    wall[0] += 1_000  # one second of wall time is an hour of journey time
    assert clock.now_ms() == 1_000_000 + 3_600_000


def test_speed_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Clock(speed=0)
