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
ORDER = (
    "worker", "faust-event", "faust-take", "faust-take-patched", "quix-facts", "quix",
    "dict-facts", "dict", "decode",
)  # fmt: skip
CONTESTANTS = ("decode", "dict", "dict-facts", "quix", "quix-facts")
# Issue 13's peer: the Quix Streams application that "produces the same outputs" as the worker.
# Since issue 12 the worker publishes, per event, its canonical event, every decision, the
# triggers and the customer's snapshot: ``quix-facts`` produces those, ``quix`` the triggers only
# (kept beside it, with its ratio, as the figure of earlier runs).
PEER = "quix-facts"
TRIGGERS_ONLY = "quix"
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
    "quix-facts": "**issue 13's peer**: Quix Streams 3.28 running our `step`/`fire_due`, "
    "RocksDB state + changelog, producing the worker's outputs: canonical event, every decision, "
    "triggers, snapshot (one snapshot per event: Quix has no cheap way to coalesce them)",
    "quix": "Quix Streams 3.28 running our `step`/`fire_due`, RocksDB state + changelog, "
    "triggers only (not the worker's outputs since issue 12)",
    "dict-facts": "plain aiokafka loop: decode, `step`/`fire_due`, dict state, the worker's "
    "outputs produced (snapshots coalesced per batch) (no durability)",
    "dict": "plain aiokafka loop: decode, `step`/`fire_due`, dict state, triggers only "
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
    quix = contestant.startswith("quix")
    python = str(BENCH_PYTHON) if quix else sys.executable
    if quix and not BENCH_PYTHON.exists():
        raise RuntimeError(f"no {BENCH_PYTHON}: run `make bench`, which creates the bench venv")
    argv = [
        python, "-m", *module,
        "--bootstrap", world.bootstrap, "--prefix", world.prefix,
        "--partitions", str(world.partitions), "--expected", str(expected),
        "--group", f"{world.app_id}-{name}",
        "--state-dir", str(world.root / f"{name}-state"),
        "--triggers-topic", f"{world.prefix}bench.{name}.triggers",
        "--facts-prefix", f"{world.prefix}bench.{name}.",
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
        if quix
        else f"{group}-journeys-changelog"
        if contestant in _MODULE
        else None
    )
    if changelog is not None:
        from bench.workload import topic_records

        with contextlib.suppress(Exception):
            result["changelog_records"] = asyncio.run(topic_records(world.bootstrap, changelog))
    if contestant.endswith("-facts"):
        # What the topics hold after the round, beside what the contestant counted producing.
        from bench.workload import topics_records

        outs = {
            "events": f"{world.prefix}bench.{name}.events",
            "decisions": f"{world.prefix}bench.{name}.decisions",
            "triggers": f"{world.prefix}bench.{name}.triggers",
            "customers": f"{world.prefix}bench.{name}.customers",
        }
        with contextlib.suppress(Exception):
            held = asyncio.run(topics_records(world.bootstrap, list(outs.values())))
            result["topic_records"] = {kind: held[topic] for kind, topic in outs.items()}
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
        "produced": (e2e.get("last_status") or {}).get("sent"),
    }


def produced_per_event(run: dict[str, Any]) -> float | None:
    """Records a round produced per input event (the worker's: its ``sent`` counts, which
    include snapshots, tombstones, dead letters and repartitioned records), changelog aside."""
    produced, events = run.get("produced"), run.get("events")
    if not produced or not events:
        return None
    return round(float(sum(produced.values())) / float(events), 3)


def summarize(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Median per contestant, and the ratios to issue 13's peer (``quix-facts``: the same
    outputs as the worker) and to the triggers-only ``quix``."""
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
            "produced": [r.get("produced") for r in runs],
            "produced_per_event": [produced_per_event(r) for r in runs],
        }
    # ``*_vs_peer``: to quix-facts (issue 13's comparison); ``*_vs_quix``: to the triggers-only
    # quix (the ratio of the runs before quix-facts existed).
    for suffix, name in (("peer", PEER), ("quix", TRIGGERS_ONLY)):
        peer = out.get(name) or {}
        for entry in out.values():
            if peer.get("cpu_s_per_1k") and entry["cpu_s_per_1k"]:
                entry[f"cpu_vs_{suffix}"] = round(entry["cpu_s_per_1k"] / peer["cpu_s_per_1k"], 2)
            if peer.get("events_per_s") and entry["events_per_s"]:
                entry[f"rate_vs_{suffix}"] = round(entry["events_per_s"] / peer["events_per_s"], 2)
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
            + (f", produced {result['produced']}" if result.get("produced") else "")
        )
