"""``make bench``: measure the pipeline here; write ``bench/results/latest.{json,md}``.

Steps (each prints progress; sizes come from flags or BENCH_* environment variables):

1. publish the first N simulator events of 100k customers (not timed), then one ``journey
   worker`` (Kafka in, Kafka out) consumes them: events/s from its first consumed event to the
   last, and the records it published per topic;
7. on the same topics, each in its own subprocess, two rounds (issue 13): a Quix Streams app
   running our model with RocksDB state and changelog, a plain aiokafka loop with our model and
   a dict (the ceiling), decode alone (step 2, the raw ceiling); the worker of step 1 is run
   once per round too (a new app id each time). CPU seconds per 1,000 events, median;
5. the same events replayed through the pure model: state bytes per customer;
6. the worker is stopped, a fresh one with an empty data dir restores the table from the
   changelog: customers/s (start to ready), raw and net of an empty-table baseline;
3. on that worker: orders at half the e2e rate, broker append of the order to broker append of
   its ORDER_CONFIRMATION, p50/p99;
4. in-process, no Kafka: 1M pending timers fired by 250 ms ticks, lateness p50/p99;
8. the cost of the event-time merge (issue 11): in each round of 7 the worker also runs
   without it (JOURNEY_ORDERING_BUFFER=1), alternating with the default worker: CPU seconds
   per 1,000 events and events/s with and without, and their ratio; then step 3's latency
   probe on a worker without the merge, at the same rates: p50/p99 of both and the difference;
9. the two roles apart (issue 12): one worker (step 1's rounds), N workers in one group on the
   same input, and the loader alone on the facts of step 1's first run: events (rows) per
   CPU-second of each role, records published per input event.

The numbers are written as measured: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    Status,
    WorkerProcess,
    World,
    counter_by_label,
    cpu_between,
    create_topics,
    delete_topics,
    install_signal_handlers,
    kill_all,
    log,
)
from bench.contest import run_contestants, summarize, worker_round
from bench.merge import (
    GAVE_UP_METRIC,
    MERGE_OFF,
    compare_latency,
    merge_round,
    summarize_merge,
)
from bench.report import write_markdown
from bench.roles import (
    FACTS,
    one_worker,
    per_input_event,
    published_records,
    run_loader,
    run_workers,
    scaling,
)
from schemas.codec import Codec
from streams import compiled
from streams.settings import parse_duration_ms

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
STEPS = ("e2e", "contest", "state", "recovery", "latency", "timers", "merge", "roles", "profile")


def _env(name: str, default: str) -> str:
    return os.environ.get(f"BENCH_{name}", default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark the journey pipeline (see bench/README.md). Flags default to "
        "BENCH_<FLAG> environment variables (BENCH_CUSTOMERS=...), then to the sizes below.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--customers", type=int, default=int(_env("CUSTOMERS", "100000")))
    p.add_argument(
        "--events",
        type=int,
        default=int(_env("EVENTS", "300000")),
        help="events to publish; 0: up to the first event of the last customer (~6 per customer)",
    )
    p.add_argument("--arrival-window", default=_env("ARRIVAL_WINDOW", "1d"))
    p.add_argument("--seed", type=int, default=int(_env("SEED", "42")))
    p.add_argument(
        "--partitions",
        type=int,
        default=int(_env("PARTITIONS", os.environ.get("JOURNEY_PARTITIONS", "12"))),
    )
    p.add_argument(
        "--e2e-timeout",
        type=float,
        default=float(_env("E2E_TIMEOUT", "360")),
        help="stop the e2e run after this many seconds and report the rate so far (partial)",
    )
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=float(_env("READY_TIMEOUT", "300")),
        help="how long a restoring worker may take to become ready",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=int(_env("ROUNDS", "2")),
        help="rounds of the side-by-side comparison (the worker and each contestant)",
    )
    p.add_argument(
        "--peer-timeout",
        type=float,
        default=float(_env("PEER_TIMEOUT", "420")),
        help="how long one contestant of step 7 may take",
    )
    p.add_argument(
        "--profile",
        type=float,
        default=float(_env("PROFILE", "30")),
        help="step 10: seconds of py-spy (bench extra) on a worker of its own over the same "
        "events, and on the firing of --profile-timers timers; 0: no profile",
    )
    p.add_argument(
        "--prototypes",
        action="store_true",
        help="also measure the Faust batch prototypes of bench/faust_batch.py in step 7",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=int(_env("WORKERS", "0")),
        help="journey workers in one group in step 9; 0: one per core, at most one per partition",
    )
    p.add_argument("--status-every", type=float, default=float(_env("STATUS_EVERY", "1")))
    p.add_argument("--latency-seconds", type=float, default=float(_env("LATENCY_SECONDS", "25")))
    p.add_argument(
        "--latency-fraction",
        type=float,
        default=float(_env("LATENCY_FRACTION", "0.5")),
        help="order rate of the latency probe, as a fraction of the measured e2e rate",
    )
    p.add_argument(
        "--latency-timer-rate",
        type=float,
        default=float(_env("LATENCY_TIMER_RATE", "40")),
        help="cart events/s during the probe whose timers come due during it (0: none)",
    )
    p.add_argument(
        "--latency-backlog",
        type=int,
        default=int(_env("LATENCY_BACKLOG", "40000")),
        help="orders sent at once to find the probe workload's maximum rate (0: skip that, and "
        "the probe at half of it)",
    )
    p.add_argument(
        "--latency-floor-rate",
        type=float,
        default=float(_env("LATENCY_FLOOR_RATE", "50")),
        help="first, 8 s of orders at this low rate: the latency of an idle worker (0: skip)",
    )
    p.add_argument("--timer-customers", type=int, default=int(_env("TIMER_CUSTOMERS", "1000000")))
    p.add_argument("--timer-spread", type=float, default=float(_env("TIMER_SPREAD", "60")))
    p.add_argument(
        "--timer-processes",
        type=int,
        default=int(_env("TIMER_PROCESSES", "2")),
        help="step 4 again, the same timers split over this many processes at once, each with "
        "its share of the partitions (as N workers on N cores); 0 or 1: not run",
    )
    p.add_argument(
        "--profile-timers",
        type=int,
        default=int(_env("PROFILE_TIMERS", "300000")),
        help="step 10: timers due over 20 s in the profiled timer run",
    )
    p.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="JOURNEY_X=VALUE",
        help="extra setting for every bench worker (repeatable)",
    )
    p.add_argument(
        "--skip", default=_env("SKIP", ""), help=f"comma-separated steps to skip: {STEPS}"
    )
    p.add_argument("--keep", action="store_true", help="keep topics and data dirs (debugging)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.workers <= 0:
        args.workers = max(1, min(os.cpu_count() or 1, args.partitions))
    unknown = args.skip - set(STEPS)
    if unknown:
        p.error(f"unknown steps in --skip: {sorted(unknown)}")
    return args


# --- the machine ---------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    version = os.environ.get("KAFKA_VERSION", "4.4.0")
    jars = sorted((REPO / ".cache").glob(f"kafka-{version}/libs/kafka_*-{version}.jar")) or sorted(
        (REPO / ".cache").glob("kafka-*/libs/kafka_*.jar")
    )
    jar = jars[-1].name if jars else None
    kafka = jar.removesuffix(".jar").split("-", 1)[1] if jar else None
    packages = {}
    for name in (
        "faust-streaming",
        "aiokafka",
        "fastavro",
        "msgspec",
        "orjson",
        "chdb",
        "rocksdict",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            packages[name] = importlib.metadata.version(name)
    # What the workers and step 4 run: the compiled modules, unless a source changed since.
    found = compiled.check()[0]
    git: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        git["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "streams", "schemas", "sinks"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.split("\n")
        git["uncommitted_pipeline_files"] = sorted(line[3:] for line in changed if line.strip())
    memory_gb = None
    with contextlib.suppress(OSError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        memory_gb = round(kb / 1024 / 1024, 1)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "kafka": kafka,
        "kafka_jar": jar,
        "packages": packages,
        "compiled": {**found.as_dict(), "summary": found.summary()},
        "git": git,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# --- steps -----------------------------------------------------------------------------------
def e2e_rate(history: list[Status], total: int) -> dict[str, Any]:
    """Events/s from the first consumed event to the last, from the worker's status lines.

    Each line has ``consumed`` and ``elapsed_s`` taken at the same moment. The start is the first
    line showing consumption, moved back by what it had consumed at the rate of the next
    interval; the end is interpolated inside the interval in which ``consumed`` reached the
    total, at the rate of the interval before. ``steady`` uses whole intervals only."""
    points = [(s.data["elapsed_s"], s.data["consumed"]) for s in history if "consumed" in s.data]
    busy = [i for i, (_, c) in enumerate(points) if c > 0]
    if not busy:
        return {}
    a = busy[0]
    b = next((i for i, (_, c) in enumerate(points) if c >= total), len(points) - 1)
    ta, ca = points[a]
    tb, cb = points[b]
    if b == a:  # everything between two status lines: no duration to divide by
        return {
            "events": cb,
            "too_short": "all consumed within one status interval: raise --events",
        }
    partial = cb < total
    if partial:  # stopped by the time limit: the rate of what was consumed
        total = cb

    def rate(i: int, j: int) -> float:
        (ti, ci), (tj, cj) = points[i], points[j]
        return (cj - ci) / (tj - ti) if tj > ti else 0.0

    start = ta
    if ca and a + 1 <= b and rate(a, a + 1) > 0:
        start = ta - min(ca / rate(a, a + 1), ta - points[a - 1][0] if a else ta)
    end = tb
    if not partial and b - 1 > a and rate(b - 2, b - 1) > 0:
        tp, cp = points[b - 1]
        end = min(tb, tp + (total - cp) / rate(b - 2, b - 1))
    seconds = max(end - start, 1e-9)
    per_interval = [
        rate(i, i + 1) for i in range(a, b) if points[i + 1][0] > points[i][0] and i + 1 < b
    ]
    steady_end = b if partial else b - 1
    steady = rate(a, steady_end) if steady_end > a else None
    return {
        "events": total,
        "partial": partial,
        "seconds": round(seconds, 2),
        "events_per_s": round(total / seconds, 1),
        "steady_events_per_s": round(steady, 1) if steady else None,
        "interval_rates_min_max": (
            [round(min(per_interval)), round(max(per_interval))] if per_interval else None
        ),
        "status_lines": len(points),
    }


def run_e2e(
    world: World,
    args: argparse.Namespace,
    total: int,
    results: dict[str, Any],
    profile_to: Path | None = None,
    step: str = "e2e",
) -> Any:
    """One worker consumes the pre-filled topics (step 1; step 8 runs it with other settings)."""
    number = {"e2e": 1, "profile": 10}.get(step, 9 if step.startswith("roles") else 8)
    label = f"[{number}] {step}"
    log(f"{label}: one journey worker ({world.app_id}) consumes the {total:,} events")
    worker = WorkerProcess(world, "1", status_every=args.status_every)
    results["workers"].append({"step": step, "argv": worker.argv, "env": worker.env})
    last_print = [0.0]

    def show(status: Status) -> None:
        d = status.data
        if status.at - last_print[0] >= 10 or d.get("consumed", 0) >= total:
            last_print[0] = status.at
            log(
                f"  worker: consumed {d.get('consumed', 0):,}/{total:,} ({d.get('rate', 0):,.0f}/s)"
                f", records sent {sum((d.get('sent') or {}).values()):,}, emitted "
                f"{d.get('emitted', 0):,}, pending timers {d.get('pending_timers', 0):,}"
            )

    ready = worker.wait_until(lambda d: d.get("ready", False), 180, show)
    ready_s = time.monotonic() - worker.started
    profiler = None
    if profile_to is not None:
        from bench.profile import start_py_spy

        profiler = start_py_spy(worker.process.pid, args.profile, profile_to)
    try:
        done = worker.wait_until(lambda d: d.get("consumed", 0) >= total, args.e2e_timeout, show)
    except TimeoutError:
        log(f"  {step}: time limit of {args.e2e_timeout:.0f}s reached: the partial rate")
        assert worker.last is not None
        done = worker.last
    e2e = e2e_rate(worker.history, total)
    if profiler is not None:
        from bench.profile import finish_py_spy

        e2e["profile"] = finish_py_spy(profiler, profile_to)
    e2e["worker_start_to_ready_s"] = round(ready_s, 1)
    e2e["last_status"] = done.data
    busy = [st for st in worker.history if st.data.get("consumed", 0) > 0]
    if busy and busy[0].cpu and done.cpu:
        e2e["cpu_cores"] = cpu_between(busy[0].cpu, done.cpu)
        first, last = busy[0].cpu.worker, done.cpu.worker
        if first is not None and last is not None and last > first:
            # Robust to other load on the machine: what one core of worker time gets through.
            events = done.data["consumed"] - busy[0].data["consumed"]
            e2e["events_per_worker_cpu_s"] = round(events / (last - first), 1)
    e2e["from_ready"] = from_ready(ready, done)
    log(
        f"  {step}: {e2e.get('events_per_s', 0):,.0f} events/s ({e2e.get('events', 0):,} events in "
        f"{e2e.get('seconds')}s; steady {e2e.get('steady_events_per_s')}/s); cores used "
        f"{e2e.get('cpu_cores')}"
    )
    e2e["status_trace"] = trace(worker.history)
    e2e["app_id"] = world.app_id
    # What the event-time merge gave up on (step 8): from the worker's own counter.
    metrics = worker.metrics()
    e2e["ordering_gave_up"] = (
        counter_by_label(metrics, GAVE_UP_METRIC, "reason") if metrics is not None else None
    )
    if step == "e2e":
        results["e2e"] = e2e
    e2e["shutdown_s"] = round(worker.stop(), 1)
    e2e["final_status"] = worker.last.data if worker.last else None
    # What this run published (its own output topics) and its table's changelog.
    e2e["published"] = published_records(world)
    e2e["changelog_records"] = e2e["published"]["changelog"]
    log(f"  published (records per topic, changelog included): {e2e['published']}")
    return e2e


def from_ready(ready: Status, done: Status) -> dict[str, Any]:
    """Events/s and worker CPU s per 1,000 events from the worker's first ``ready`` status line
    to the one that showed the last event handled (step 8). Unlike step 1's window (first event
    handled to last) it includes the time and CPU spent fetching and holding messages before the
    first is handled, which the event-time merge does at the start of a backlog."""
    events = done.data.get("consumed", 0) - ready.data.get("consumed", 0)
    seconds = done.at - ready.at
    out: dict[str, Any] = {"events": events, "seconds": round(seconds, 2)}
    if events > 0 and seconds > 0:
        out["events_per_s"] = round(events / seconds, 1)
    if events > 0 and ready.cpu and done.cpu:
        first, last = ready.cpu.worker, done.cpu.worker
        if first is not None and last is not None and last > first:
            out["cpu_s_per_1k"] = round(1000 * (last - first) / events, 4)
    return out


def trace(history: list[Status]) -> list[list[Any]]:
    """[elapsed_s, consumed, records waiting for the broker, pending_timers, worker cores,
    machine busy cores] per status line, for looking at stalls afterwards."""
    rows: list[list[Any]] = []
    previous: Status | None = None
    for status in history:
        d = status.data
        cores: dict[str, Any] = {}
        if previous is not None and previous.cpu and status.cpu:
            cores = cpu_between(previous.cpu, status.cpu)
        row = [d.get("elapsed_s"), d.get("consumed"), d.get("unacknowledged")]
        row += [d.get("pending_timers"), cores.get("worker"), cores.get("machine_busy")]
        rows.append(row)
        previous = status
    return rows


def run_recovery(
    world: World, args: argparse.Namespace, label: str, results: dict[str, Any], step: str
) -> tuple[WorkerProcess, dict[str, Any]]:
    """Start a worker with an empty data dir; time from process start to ``ready: true``."""
    worker = WorkerProcess(world, label, status_every=min(args.status_every, 0.25))
    results["workers"].append({"step": step, "argv": worker.argv, "env": worker.env})
    status = worker.wait_until(lambda d: d.get("ready", False), args.ready_timeout)
    seconds = status.at - worker.started
    rebuild = status.data.get("index_rebuild") or {}
    return worker, {
        "start_to_ready_s": round(seconds, 2),
        "cpu_cores": cpu_between(worker.cpu_start, status.cpu) if status.cpu else None,
        "customers": rebuild.get("customers"),
        "with_timers": rebuild.get("with_timers"),
        "index_rebuild_s": round(rebuild.get("seconds", 0.0), 3),
        # changelog records read and applied (the rest were compacted away by the broker)
        "restored_records": status.data.get("restored_records"),
    }


def run_timers(
    args: argparse.Namespace,
    customers: int,
    spread_s: float,
    profile_to: Path | None = None,
    as_python: bool = False,
) -> dict[str, Any]:
    """Step 4 in a process of its own (``bench/timers.py``); its log lines pass through.
    ``as_python``: without the compiled modules (``JOURNEY_COMPILED=0``)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "timers.json"
        profile = ["--profile-to", str(profile_to)] if profile_to is not None else []
        subprocess.run(
            [*_timers_argv(customers, spread_s, args.partitions), "--out", str(out), *profile],
            check=True,
            env={**os.environ, compiled.DISABLE_ENV: "0"} if as_python else None,
        )  # fmt: skip
        result: dict[str, Any] = json.loads(out.read_text())
    return result


def _timers_argv(customers: int, spread_s: float, partitions: int) -> list[str]:
    return [
        sys.executable, "-m", "bench.timers", "--customers", str(customers),
        "--spread", str(spread_s), "--partitions", str(partitions),
    ]  # fmt: skip


def run_timers_split(args: argparse.Namespace, customers: int, processes: int) -> dict[str, Any]:
    """Step 4 with its timers split over ``processes`` processes that run at once, as that many
    workers would share the partitions: each fires ``customers / processes`` timers due over the
    same ``--timer-spread`` on ``partitions / processes`` partitions. The lateness p99 is the
    largest of the processes' (each reports its own)."""
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"timers-{n}.json" for n in range(processes)]
        argv = _timers_argv(
            customers // processes, args.timer_spread, max(1, args.partitions // processes)
        )
        running = [subprocess.Popen([*argv, "--out", str(out)]) for out in outs]
        codes = [process.wait() for process in running]
        if any(codes):
            raise RuntimeError(f"bench.timers processes exited with {codes}")
        each: list[dict[str, Any]] = [json.loads(out.read_text()) for out in outs]
    return {
        "processes": processes,
        "customers": sum(r["customers"] for r in each),
        "timers_fired": sum(r["timers_fired"] for r in each),
        "lateness_at_tick_p99_ms": max(r["lateness_at_tick_p99_ms"] for r in each),
        "lateness_at_tick_p50_ms": max(r["lateness_at_tick_p50_ms"] for r in each),
        "process_cpu_us_per_timer": [r["process_cpu_us_per_timer"] for r in each],
        "each": each,
    }


def run_profiles(
    world: World, args: argparse.Namespace, total: int, results: dict[str, Any]
) -> dict[str, Any]:
    """Step 10: where the time goes, for the targets the figures above miss. py-spy
    (``--nonblocking``: nothing is paused) on a worker of its own over the same events, and on
    the firing of a shorter timer run; neither run's figures count for anything else."""
    from bench.profile import PY_SPY

    profiles: dict[str, Any] = {"seconds": args.profile}
    if not PY_SPY.exists():
        missing = f"{PY_SPY} is missing: `make bench` installs it (the bench extra)"
        log(f"[10] profile: not run, {missing}")
        return {**profiles, "worker": {"error": missing}, "timers": {"error": missing}}
    log(f"[10] profile: py-spy for {args.profile:.0f}s on a worker over the same events")
    # As Python (JOURNEY_COMPILED=0): py-spy sees no frame of the compiled modules, whose time
    # would count for whichever Python function called them.
    as_python = {**world.extra_env, compiled.DISABLE_ENV: "0"}
    run = run_e2e(
        replace(world, app_suffix="-profile", extra_env=as_python),
        args,
        total,
        results,
        profile_to=args.out / "profile-worker",
        step="profile",
    )
    profiles["worker"] = run.get("profile")
    profiles["worker_events_per_cpu_s"] = run.get("events_per_worker_cpu_s")
    log(f"[10] profile: py-spy on {args.profile_timers:,} timers firing over 20 s (in-process)")
    timers = run_timers(
        args, args.profile_timers, 20, profile_to=args.out / "profile-timers", as_python=True
    )
    profiles["timers"] = timers.get("profile")
    profiles["timers_process_cpu_us_per_timer"] = timers.get("process_cpu_us_per_timer")
    profiles["timers_customers"] = args.profile_timers
    return profiles


def run_latency(
    worker: WorkerProcess,
    world: World,
    codec: Codec,
    args: argparse.Namespace,
    rate: float,
    tag: str = "",
) -> dict[str, Any]:
    from bench.workload import latency_probe

    floor: dict[str, Any] | None = None
    if args.latency_floor_rate > 0 and not tag:
        floor = asyncio.run(
            latency_probe(
                world.settings(),
                codec,
                rate=args.latency_floor_rate,
                seconds=8,
                tag=f"{world.tag}f",
                timer_rate=0,
            )
        )
        log(
            f"  at {args.latency_floor_rate:.0f} orders/s (unloaded): p50 {floor['p50_ms']} ms, "
            f"p99 {floor['p99_ms']} ms"
        )
    before = read_settle_status(worker, 1.5)
    latency = asyncio.run(
        latency_probe(
            world.settings(),
            codec,
            rate=rate,
            seconds=args.latency_seconds,
            tag=world.tag + tag,
            timer_rate=args.latency_timer_rate,
            worker_pid=worker.process.pid,
        )
    )
    after = read_settle_status(worker, 1.5)
    was = before.get("triggers", {})
    latency["target_rate"] = round(rate, 1)
    latency["worker_timer_lateness_p99_ms"] = after.get("timer_lateness_p99_ms")
    latency["worker_decisions_during_probe"] = {
        k: v - was.get(k, 0) for k, v in after.get("triggers", {}).items() if v != was.get(k, 0)
    }
    latency["worker_status_after"] = after
    latency["unloaded"] = floor
    log(
        f"  latency p50 {latency['p50_ms']} ms, p99 {latency['p99_ms']} ms "
        f"({latency['triggers_matched']:,} matched); worker timer lateness p99 "
        f"{latency['worker_timer_lateness_p99_ms']} ms"
    )
    return latency


def run_backlog(worker: WorkerProcess, world: World, codec: Codec, orders: int) -> dict[str, Any]:
    """The maximum rate of the latency probe's own workload (orders of new customers, each a
    trigger, a decision, a snapshot and a state: dearer than the e2e mix): ``orders`` sent as
    fast as the probe's producer goes (about 3 s), and the rate at which the worker appended
    their triggers while it worked through them (from the first to the last)."""
    from bench.workload import latency_probe

    seconds = 3.0
    backlog = asyncio.run(
        latency_probe(
            world.settings(),
            codec,
            rate=orders / seconds,
            seconds=seconds,
            tag=f"{world.tag}b",
            timer_rate=0,
            worker_pid=worker.process.pid,
            wait_s=60,
        )
    )
    log(
        f"  backlog of {backlog['orders_sent']:,} orders: the worker appended their triggers at "
        f"{backlog['triggers_per_s']}/s ({backlog['triggers_missing']} missing), "
        f"{backlog['orders_per_worker_cpu_s']} orders per worker CPU-second"
    )
    return backlog


def half_max_rate(backlog: dict[str, Any]) -> dict[str, Any] | None:
    """Half the rate the worker sustained on a backlog of the probe's orders (``run_backlog``);
    None if it was not measured."""
    sustained = backlog.get("triggers_per_s")
    if not sustained:
        return None
    return {
        "rate": round(0.5 * sustained, 1),
        "maximum": sustained,
        "how": f"orders/s the worker sustained on a backlog of {backlog['orders_sent']:,} orders",
    }


def run_without_merge(
    world: World,
    args: argparse.Namespace,
    total: int,
    results: dict[str, Any],
    pair: dict[str, Any],
) -> None:
    """Step 8: the e2e worker without the event-time merge, its own app id, same topics."""
    off = replace(
        world,
        app_suffix=f"-nomerge{pair['round']}",
        extra_env={**world.extra_env, **MERGE_OFF},
    )
    run = run_e2e(off, args, total, results, step="merge-without")
    pair["without"] = merge_round(run, int(MERGE_OFF["JOURNEY_ORDERING_BUFFER"]))
    pair["order"].append("without")


def run_roles(
    main_world: World, args: argparse.Namespace, total: int, results: dict[str, Any]
) -> None:
    """Step 9 (issue 12): one worker (step 1's rounds, or a run of its own when step 1 is
    skipped), ``--workers`` workers in one group, and the loader alone on the facts the first
    one-worker run published."""
    rounds = results.get("e2e_rounds") or []
    facts_world = main_world  # step 1's first round
    if not rounds:
        facts_world = replace(main_world, app_suffix="-one")
        rounds = [run_e2e(facts_world, args, total, results, step="roles-one")]
    one = one_worker(rounds, total)
    roles: dict[str, Any] = {"one_worker": one}
    results["roles"] = roles
    group_world = replace(main_world, app_suffix=f"-group{args.workers}")
    asyncio.run(_create(group_world))  # (not by N workers starting at once)
    group = run_workers(
        group_world,
        args.workers,
        total,
        status_every=args.status_every,
        timeout=args.e2e_timeout,
        ready_timeout=args.ready_timeout,
        results=results,
    )
    group["per_input_event"] = per_input_event(group["published"], total)
    group["scaling"] = scaling(one, group)
    roles["workers"] = group
    facts = sum(one["published"].get(short, 0) for short in FACTS)
    loader = run_loader(
        facts_world,
        facts,
        timeout=args.e2e_timeout,
        ready_timeout=args.ready_timeout,
        results=results,
    )
    if loader.get("cpu_s"):
        # What one loader keeps up with, in the workers' terms.
        loader["input_events_per_cpu_s"] = round(total / loader["cpu_s"], 1)
    roles["loader"] = loader


def read_settle_status(worker: WorkerProcess, seconds: float = 3.0) -> dict[str, Any]:
    """The worker's latest status after a short wait (a status line is at most 1 s old)."""
    time.sleep(seconds)
    worker.drain()
    return worker.last.data if worker.last else {}


async def _create(world: World) -> None:
    await create_topics(world.settings())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    bootstrap = os.environ.get("JOURNEY_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    started = time.monotonic()
    extra_env = dict(item.split("=", 1) for item in args.worker_env)
    root = Path(tempfile.mkdtemp(prefix="journey-bench-"))
    main_world = World("main", bootstrap, root, args.partitions, extra_env)
    base_world = World("base", bootstrap, root, args.partitions, extra_env, tag=main_world.tag)
    # Step 8's latency probe without the merge.
    off_env = {**extra_env, **MERGE_OFF}
    off_world = World("nomerge", bootstrap, root, args.partitions, off_env, tag=main_world.tag)
    results: dict[str, Any] = {
        "machine": machine(),
        "bootstrap": bootstrap,
        "args": {k: (sorted(v) if isinstance(v, set) else str(v)) for k, v in vars(args).items()},
        "workers": [],
    }
    log(f"bench {main_world.tag}: broker {bootstrap}, data under {root}")
    log(
        f"machine: {results['machine']['cpus']} CPUs, Python {results['machine']['python']}, "
        f"Kafka {results['machine']['kafka']}, load {results['machine']['load_average_at_start']}"
    )
    settings = main_world.settings()
    results["worker_settings"] = json.loads(settings.model_dump_json())
    codec = Codec.load(max_value_bytes=settings.max_value_bytes)
    failed = False
    try:
        asyncio.run(_create(main_world))
        window_ms = parse_duration_ms(args.arrival_window)
        log(
            f"[prep] publishing simulator events: {args.customers:,} customers arriving over "
            f"{args.arrival_window}, events: {args.events or 'until every customer has appeared'}"
        )
        from bench.workload import publish_simulation

        published = asyncio.run(
            publish_simulation(
                settings,
                codec,
                customers=args.customers,
                events=args.events,
                arrival_window_ms=window_ms,
                seed=args.seed,
                replay_states="state" not in args.skip,
            )
        )
        total = published.events
        results["workload"] = {
            "events": total,
            "customers": published.customers,
            "publish_seconds": round(published.seconds, 1),
            "shop_time_span_h": round((published.last_at_ms - published.first_at_ms) / 3.6e6, 2),
            "by_topic": dict(published.by_topic),
            "by_kind": dict(published.by_kind.most_common()),
        }
        if published.state_sizes:
            results["state_bytes"] = published.state_sizes
            log(f"[5] state bytes per customer: {published.state_sizes}")

        e2e: dict[str, Any] = {}
        rounds: dict[str, list[dict[str, Any]]] = {}
        merge_pairs: list[dict[str, Any]] = []
        default_buffer = settings.ordering_buffer
        merging = "merge" not in args.skip
        for round_no in range(1, max(1, args.rounds) + 1):
            if "contest" not in args.skip:
                run_contestants(
                    main_world, round_no, total, args.peer_timeout, rounds, args.prototypes
                )
            # Step 8: the worker without the merge, before the default one in even rounds and
            # after it in odd ones, so that drifting load weighs on both.
            pair: dict[str, Any] = {"round": round_no, "order": []}
            if merging:
                merge_pairs.append(pair)
            if merging and round_no % 2 == 0:
                run_without_merge(main_world, args, total, results, pair)
            if "e2e" not in args.skip:
                world = (
                    main_world if round_no == 1 else replace(main_world, app_suffix=f"-r{round_no}")
                )
                e2e_round = run_e2e(world, args, total, results)
                rounds.setdefault("worker", []).append(worker_round(e2e_round))
                results.setdefault("e2e_rounds", []).append(e2e_round)
                if round_no == 1:  # recovery restores this run's table
                    e2e = e2e_round
                if merging:
                    pair["with"] = merge_round(e2e_round, default_buffer)
                    pair["order"].append("with")
            if merging and "with" not in pair:
                with_world = replace(main_world, app_suffix=f"-merge{round_no}")
                with_round = run_e2e(with_world, args, total, results, step="merge-with")
                pair["with"] = merge_round(with_round, default_buffer)
                pair["order"].append("with")
            if merging and round_no % 2 == 1:
                run_without_merge(main_world, args, total, results, pair)
        if merge_pairs:
            results["merge"] = {
                "rounds": merge_pairs,
                "summary": summarize_merge(merge_pairs),
                "without_env": MERGE_OFF,
                "with_ordering_buffer": default_buffer,
                "with_ordering_wait_ms": settings.ordering_wait,
            }
        if e2e:
            results["e2e"] = e2e  # (each round's run_e2e wrote its own)
        if rounds:
            results["contest"] = {"rounds": rounds, "summary": summarize(rounds)}
            decode = results["contest"]["summary"].get("decode") or {}
            if decode.get("cpu_s_per_1k"):
                results["raw"] = {
                    "events_per_s": decode["events_per_s"],
                    "events_per_cpu_s": round(1000 / decode["cpu_s_per_1k"], 1),
                    "how": "the decode contestant of step 7 (median of its rounds): aiokafka "
                    "AIOKafkaConsumer(group_id=None, auto_offset_reset=earliest), "
                    "getmany(max_records=20000), Codec.decode(value, TOPIC_RECORDS[topic]) per "
                    "value, in its own process; timed from the first batch to the N-th event",
                }
        if results.get("raw") and e2e.get("events_per_s"):
            results["e2e_over_raw"] = round(e2e["events_per_s"] / results["raw"]["events_per_s"], 3)

        if "roles" not in args.skip:
            run_roles(main_world, args, total, results)

        if "recovery" not in args.skip:
            log("[6] recovery: a fresh worker, empty data dir, restores the table from Kafka")
            restoring, recovery = run_recovery(main_world, args, "2", results, "recovery")
            restoring.stop()
            log(
                f"  restored {recovery['customers']} customers; ready after "
                f"{recovery['start_to_ready_s']}s"
            )
            results["recovery"] = {"restore": recovery}

        if "recovery" not in args.skip or "latency" not in args.skip:
            log("[6] baseline: the same start on an empty table (another prefix)")
            asyncio.run(_create(base_world))
            first, _ = run_recovery(base_world, args, "1", results, "baseline-first")
            first.stop()
            worker2, baseline = run_recovery(base_world, args, "2", results, "baseline")
            log(f"  baseline: ready after {baseline['start_to_ready_s']}s")
            if "recovery" in results:
                rec = results["recovery"]
                rec["baseline"] = baseline
                customers = rec["restore"]["customers"] or 0
                raw_s = rec["restore"]["start_to_ready_s"]
                net_s = raw_s - baseline["start_to_ready_s"]
                rec["customers_per_s"] = round(customers / raw_s, 1)
                rec["net_seconds"] = round(net_s, 2)
                rec["net_customers_per_s"] = round(customers / net_s, 1) if net_s > 0 else None
                log(
                    f"  recovery: {rec['customers_per_s']:,} customers/s raw, "
                    f"{rec['net_customers_per_s']} net of the baseline"
                )

            if "latency" not in args.skip:
                rate = args.latency_fraction * float(e2e.get("events_per_s") or 2000.0)
                log(
                    f"[3] latency: orders at {rate:,.0f}/s for {args.latency_seconds:.0f}s on the "
                    "running baseline worker"
                )
                results["latency"] = run_latency(worker2, base_world, codec, args, rate)
                if args.latency_backlog > 0:
                    log("[3] the maximum rate of the probe's own workload: a backlog of orders")
                    backlog = run_backlog(worker2, base_world, codec, args.latency_backlog)
                    half = half_max_rate(backlog)
                    results["latency_backlog"] = backlog
                    if half is not None:
                        log(f"[3] latency at half that: orders at {half['rate']:,.0f}/s")
                        again = run_latency(worker2, base_world, codec, args, half["rate"], "h")
                        results["latency_half_max"] = {**again, "max_rate": half}
            worker2.stop()

            if "latency" not in args.skip and "merge" not in args.skip:
                log(
                    f"[8] merge cost, live: the same probe at {rate:,.0f}/s on a worker without "
                    "the merge (JOURNEY_ORDERING_BUFFER=1), fresh prefix"
                )
                asyncio.run(_create(off_world))
                worker3, _ = run_recovery(off_world, args, "1", results, "merge-latency-without")
                without = run_latency(worker3, off_world, codec, args, rate)
                worker3.stop()
                merge = results.setdefault("merge", {})
                merge["latency"] = compare_latency(results["latency"], without)
                merge["latency_without"] = without
                log(
                    f"  merge adds p50 {merge['latency']['added_p50_ms']} ms, p99 "
                    f"{merge['latency']['added_p99_ms']} ms at {rate:,.0f} orders/s"
                )

        if "timers" not in args.skip:
            log(f"[4] timers: {args.timer_customers:,} pending timers in-process (no Kafka)")
            results["timers"] = run_timers(args, args.timer_customers, args.timer_spread)
            t = results["timers"]
            log(
                f"  timer lateness p50 {t['lateness_at_tick_p50_ms']} ms, p99 "
                f"{t['lateness_at_tick_p99_ms']} ms; {t['timers_fired_per_s']} timers/s"
            )
            if args.timer_processes > 1:
                log(
                    f"[4] timers: the same {args.timer_customers:,} split over "
                    f"{args.timer_processes} processes at once"
                )
                split = run_timers_split(args, args.timer_customers, args.timer_processes)
                results["timers_split"] = split
                log(
                    f"  timer lateness p99 {split['lateness_at_tick_p99_ms']} ms (the largest); "
                    f"process CPU per timer {split['process_cpu_us_per_timer']} us"
                )

        if "profile" not in args.skip and args.profile > 0:
            results["profile"] = run_profiles(main_world, args, total, results)
    except (Exception, KeyboardInterrupt):
        failed = True
        results["error"] = traceback.format_exc()
        log(f"bench stopped early:\n{results['error']}")
    finally:
        kill_all()
        if not args.keep:
            with contextlib.suppress(Exception):
                deleted = asyncio.run(
                    delete_topics(
                        bootstrap,
                        (
                            main_world.prefix,
                            main_world.app_id,  # also the app ids of later rounds
                            f"changelog__{main_world.app_id}",  # the Quix contestants'
                            base_world.prefix,
                            base_world.app_id,
                            off_world.prefix,
                            off_world.app_id,
                        ),
                    )
                )
                log(f"deleted {len(deleted)} bench topics")
            shutil.rmtree(root, ignore_errors=True)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["bench_seconds"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_markdown(results, args.out / "latest.md")
    log(f"wrote {args.out / 'latest.json'} and latest.md in {results['bench_seconds']:.0f}s")
    print((args.out / "latest.md").read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
