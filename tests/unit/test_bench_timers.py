"""bench/timers.py, step 4 of ``make bench``, as ``bench/run.py`` starts it: its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
