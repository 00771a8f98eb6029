"""bench/timers.py, step 4 of ``make bench``, as ``bench/run.py`` starts it: its own process."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def test_the_timers_step_fires_every_timer_once_in_a_process_of_its_own(tmp_path: Path) -> None:
    out = tmp_path / "timers.json"
    subprocess.run(
        [sys.executable, "-m", "bench.timers", "--customers", "600", "--spread", "0.3",
         "--lead", "0.3", "--partitions", "3", "--out", str(out)],
        cwd=ROOT, check=True, timeout=120,
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert result["timers_fired"] == result["pending_timers_at_start"] == 600
    # Every timer in the heaviest path: a trigger and its decision each, one state write.
    assert result["triggers_emitted"] == 600
    assert result["records_produced"] == {"journey.triggers": 600, "journey.decisions": 600}
    assert result["state_writes_per_timer"] == 1.0
    assert result["lateness_at_tick_p99_ms"] is not None


def test_split_over_processes_each_fires_its_share_at_once(monkeypatch: Any) -> None:
    """``run_timers_split``: the same timers over N processes that run at once, each with its
    share of the customers and partitions; the largest p99 is reported."""
    from bench import run

    monkeypatch.chdir(ROOT)
    args = argparse.Namespace(timer_spread=0.3, partitions=4)
    split = run.run_timers_split(args, 600, 2)
    assert split["processes"] == 2 and split["customers"] == split["timers_fired"] == 600
    assert [each["partitions"] for each in split["each"]] == [2, 2]
    assert [each["timers_fired"] for each in split["each"]] == [300, 300]
    p99s = [each["lateness_at_tick_p99_ms"] for each in split["each"]]
    assert split["lateness_at_tick_p99_ms"] == max(p99s)
