"""Step 10 of ``make bench``: py-spy's samples summarized by layer and frame, and the section of
``latest.md`` that says what the profiles behind the missed targets show."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench.profile import summarize
from bench.report import profile_section

ROOT = Path(__file__).resolve().parents[2]
LOOP = "Thread 0x1 (active): MainThread"
HELPER = "Thread 0x2 (idle): aiokafka"


def _samples(path: Path) -> Path:
    """py-spy's raw format: one collapsed stack and its sample count per line, thread first."""
    run = "run_forever (asyncio/base_events.py:600)"
    on_event = f"on_event ({ROOT}/streams/runtime/engine.py:%d)"
    lines = [
        f"{LOOP};{run};{on_event % 300};step ({ROOT}/streams/journey/model.py:90) 50",
        f"{LOOP};{run};{on_event % 302};_pack ({ROOT}/streams/runtime/engine.py:410) 20",
        f"{LOOP};{run};send (/x/site-packages/aiokafka/conn.py:500) 30",
        f"{HELPER};poll (/x/site-packages/aiokafka/consumer/fetcher.py:10) 7",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_busiest_thread_is_summarized_by_layer_and_frame(tmp_path: Path) -> None:
    profile = summarize(_samples(tmp_path / "p.txt"))
    assert profile["samples"] == 107 and profile["main_thread"] == LOOP
    assert profile["main_thread_by_layer_pct"] == [
        ("ours: model", 50.0),
        ("aiokafka", 30.0),
        ("ours: engine + agent", 20.0),
    ]
    # By function: the two lines of on_event count together.
    assert profile["main_thread_self_top_pct"][0] == ("step (streams/journey/model.py)", 50.0)
    inclusive = dict(profile["main_thread_inclusive_top_pct"])
    assert inclusive["on_event (streams/runtime/engine.py)"] == 70.0
    assert not any("base_events" in frame for frame in inclusive)  # the loop's own: left out


def test_the_report_shows_both_profiles_and_says_when_one_is_missing(tmp_path: Path) -> None:
    worker = summarize(_samples(tmp_path / "p.txt"))
    results = {
        "profile": {
            "seconds": 30.0,
            "worker": worker,
            "worker_events_per_cpu_s": 4460.0,
            "timers": {"error": "py-spy: permission denied\n"},
            "timers_customers": 300_000,
            "timers_process_cpu_us_per_timer": 116.2,
        }
    }
    text = "\n".join(profile_section(results))
    assert "## Where the time goes" in text
    assert "| `ours: model` | 50.0 | `step (streams/journey/model.py)` | 50.0 |" in text
    assert "4,460 events per CPU-second" in text and "300,000 timers" in text
    assert "**Timers firing**: not profiled (py-spy: permission denied)." in text
    assert profile_section({}) == []  # a run with --profile 0 or --skip profile


def test_without_py_spy_the_step_runs_nothing_and_the_report_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench.profile
    from bench.run import run_profiles

    monkeypatch.setattr(bench.profile, "PY_SPY", tmp_path / "py-spy")
    args = argparse.Namespace(profile=30.0, profile_timers=300_000, out=tmp_path)
    profiles = run_profiles(None, args, 300_000, {})  # type: ignore[arg-type]  # no worker starts
    text = "\n".join(profile_section({"profile": profiles}))
    assert "**The worker over the backlog**: not profiled (" in text
    assert "**Timers firing**: not profiled (" in text and "is missing" in text
