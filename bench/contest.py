"""Issue 13's side-by-side comparison: the journey worker and the contestants of
``bench/peers.py`` on the same pre-filled topics, each in its own subprocess, two rounds.

The figure that matters is CPU seconds of the consumer process per 1,000 events: the machine
is shared, and the CPU a process spends per event moves much less with other load than its
events/s do. Each contestant's is the median of its rounds (with two rounds: their mean)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import _LIVE, REPO, World, log

# The Quix Streams contestant runs in the bench venv that `make bench` creates (the `bench`
# extra; see pyproject.toml for why not in .venv). BENCH_PEER_PYTHON overrides it.
BENCH_PYTHON = Path(
    os.environ.get("BENCH_PEER_PYTHON") or REPO / ".local" / "bench-venv" / "bin" / "python"
)

# Report order: the worker first, then the peer it is compared with, then the floors.
ORDER = ("worker", "faust-event", "faust-take", "faust-take-patched", "quix", "dict", "decode")
CONTESTANTS = ("decode", "dict", "quix")
# Prototypes of issue 13's proposals (bench/faust_batch.py), with --prototypes only.
PROTOTYPES = ("faust-event", "faust-take", "faust-take-patched")
_MODULE = {
    "faust-event": ["bench.faust_batch", "--batch", "0"],
    "faust-take": ["bench.faust_batch"],
    "faust-take-patched": ["bench.faust_batch", "--patch-fetch"],
}
LABELS = {
    "worker": "`journey worker` (Faust table + changelog, timer ticks, triggers and the fact "
    "topics: decisions, canonical events, snapshots)",
    "quix": "Quix Streams 3.28 running our `step`/`fire_due`, RocksDB state + changelog, "
    "triggers produced (no sink)",
    "dict": "plain aiokafka loop: decode, `step`/`fire_due`, dict state, triggers produced "
    "(no durability)",
    "decode": "aiokafka loop + `Codec.decode` only",
    "faust-event": "Faust agent, `stream.events()`, `step`/`fire_due`, one table write per "
    "event, triggers produced (the worker's shape without ingest, sink, ticks)",
    "faust-take": "prototype: Faust agent, `take_events(20000, within=1 s)`, `step`/`fire_due`, "
    "one table write per customer per batch, triggers produced (no sink, no ticks)",
    "faust-take-patched": "the same prototype + the fetch loop awaiting the callback directly",
}


def run_peer(
    world: World, contestant: str, round_no: int, expected: int, timeout: float
) -> dict[str, Any]:
    """One contestant of ``bench.peers`` in a subprocess; its one JSON result line."""
    name = f"{contestant}{round_no}"
    module = _MODULE.get(contestant) or ["bench.peers", contestant]
    python = str(BENCH_PYTHON) if contestant == "quix" else sys.executable
    if contestant == "quix" and not BENCH_PYTHON.exists():
        raise RuntimeError(f"no {BENCH_PYTHON}: run `make bench`, which creates the bench venv")
    argv = [
        python, "-m", *module,
        "--bootstrap", world.bootstrap, "--prefix", world.prefix,
        "--partitions", str(world.partitions), "--expected", str(expected),
        "--group", f"{world.app_id}-{name}",
        "--state-dir", str(world.root / f"{name}-state"),
        "--triggers-topic", f"{world.prefix}bench.{name}.triggers",
    ]  # fmt: skip
    if contestant not in _MODULE:
        argv += ["--timeout", str(timeout)]
    started = time.monotonic()
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        env=world.environ(),
    )
    _LIVE.append(process)
    try:
        out, _ = process.communicate(timeout=timeout + 60)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        raise RuntimeError(f"{name}: no result after {timeout + 60:.0f}s:\n{out[-3000:]}") from None
    # (Faust's worker logs what is printed: the line may have a prefix.)
    lines = [line[line.index('{"events"') :] for line in out.splitlines() if '{"events"' in line]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"{name} exited with {process.returncode}:\n{out[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["wall_s"] = round(time.monotonic() - started, 1)
    group = f"{world.app_id}-{name}"
    changelog = (
        f"changelog__{group}--journeys--default"
        if contestant == "quix"
        else f"{group}-journeys-changelog"
        if contestant in _MODULE
        else None
    )
    if changelog is not None:
        from bench.workload import topic_records

        with contextlib.suppress(Exception):
            result["changelog_records"] = asyncio.run(topic_records(world.bootstrap, changelog))
    result["argv"] = argv[2:]
    return result


def worker_round(e2e: dict[str, Any]) -> dict[str, Any]:
    """The worker's e2e figures in the contestants' terms."""
    per_cpu = e2e.get("events_per_worker_cpu_s")
    return {
        "events": e2e.get("events"),
        "partial": e2e.get("partial"),
        "events_per_s": e2e.get("events_per_s"),
        "cpu_s_per_1k": round(1000 / per_cpu, 4) if per_cpu else None,
        "cores": (e2e.get("cpu_cores") or {}).get("worker"),
        "triggers": (e2e.get("last_status") or {}).get("emitted"),
        "changelog_records": e2e.get("changelog_records"),
    }


def summarize(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Median per contestant, and the ratios to the Quix Streams contestant."""
    out: dict[str, Any] = {}
    for name, runs in rounds.items():
        cpu = [r["cpu_s_per_1k"] for r in runs if r.get("cpu_s_per_1k")]
        rate = [r["events_per_s"] for r in runs if r.get("events_per_s")]
        out[name] = {
            "cpu_s_per_1k": round(statistics.median(cpu), 4) if cpu else None,
            "cpu_s_per_1k_rounds": cpu,
            "events_per_s": round(statistics.median(rate), 1) if rate else None,
            "events_per_s_rounds": rate,
            "triggers": [r.get("triggers") for r in runs],
            "changelog_records": [r.get("changelog_records") for r in runs],
            "cores": [r.get("cores") for r in runs],
        }
    quix = out.get("quix") or {}
    for entry in out.values():
        if quix.get("cpu_s_per_1k") and entry["cpu_s_per_1k"]:
            entry["cpu_vs_quix"] = round(entry["cpu_s_per_1k"] / quix["cpu_s_per_1k"], 2)
        if quix.get("events_per_s") and entry["events_per_s"]:
            entry["rate_vs_quix"] = round(entry["events_per_s"] / quix["events_per_s"], 2)
    return out


def run_contestants(
    world: World,
    round_no: int,
    expected: int,
    timeout: float,
    rounds: dict[str, list[Any]],
    prototypes: bool = False,
) -> None:
    for contestant in CONTESTANTS + (PROTOTYPES if prototypes else ()):
        log(f"[7] round {round_no}: {contestant} contestant over the same {expected:,} events")
        result = run_peer(world, contestant, round_no, expected, timeout)
        rounds.setdefault(contestant, []).append(result)
        log(
            f"  {contestant}: {result['events_per_s']:,.0f} events/s, "
            f"{result['cpu_s_per_1k']} CPU s per 1k events ({result['cores']} cores), "
            f"{result['triggers']:,} triggers"
        )
