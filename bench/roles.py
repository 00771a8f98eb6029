"""Step 9 (issue 12): the two roles measured apart, each in its own processes.

* **One journey worker** (Kafka in, Kafka out): step 1's runs. What it publishes is counted on
  the broker, per topic (each worker run writes output topics of its own, ``World.outputs``),
  so the cost of the fact topics shows as records produced per input event.
* **N journey workers** in one consumer group (``journey worker`` x N, their own names and data
  dirs) on the same pre-filled input from offset 0, a new app id: events/s of the group and the
  sum of the workers' CPU, from the first event handled (by any of them) to the last.
* **The loader** alone (``journey loader``, a new group and chdb) on the fact topics one worker
  run produced, from offset 0: facts read and rows stored per CPU-second of the loader.

CPU is user + system seconds of each process (all its threads) from ``/proc``. Pure functions
here, except ``run_workers``, ``run_loader`` and ``published_records``; ``bench/run.py`` runs
the step.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from dataclasses import replace
from typing import Any

from bench.common import (
    OUTPUT_TOPICS,
    LoaderProcess,
    Status,
    WorkerProcess,
    World,
    cpu_between,
    log,
)

# The group's run stops when no worker has handled an event for this long (a stuck rebalance).
STALL_S = 90.0
# Fact topics the loader reads (Settings.fact_topics), by short name.
FACTS = ("journey_events", "decisions", "snapshots", "deadletter")


# --- what a worker run published --------------------------------------------------------------
def published_records(world: World) -> dict[str, int]:
    """Records each output topic of the world's worker run holds, and its table's changelog."""
    from bench.workload import topics_records

    settings = world.settings()
    names = {short: settings.topic(short) for short in OUTPUT_TOPICS}
    names["changelog"] = f"{world.app_id}-journeys-changelog"
    counts = asyncio.run(topics_records(world.bootstrap, list(names.values())))
    return {short: counts[topic] for short, topic in names.items()}


def per_input_event(published: dict[str, int], events: int) -> dict[str, Any]:
    """Records produced per input event, per topic and in all; ``facts``: what the loader reads."""
    if not events:
        return {}
    out: dict[str, Any] = {k: round(v / events, 3) for k, v in published.items()}
    out["facts"] = round(sum(published.get(k, 0) for k in FACTS) / events, 3)
    out["all"] = round(sum(published.values()) / events, 3)
    return out


# --- N workers --------------------------------------------------------------------------------
def value_at(history: list[Status], at: float, key: str) -> float | None:
    """A worker's ``consumed`` (key "consumed") or process CPU seconds (key "cpu") at monotonic
    time ``at``, interpolated between its status lines (each carries both, read together);
    clamped to the first and last line."""
    points = [
        (s.at, float(s.data.get("consumed", 0)) if key == "consumed" else s.cpu.worker)
        for s in history
        if key == "consumed" or (s.cpu is not None and s.cpu.worker is not None)
    ]
    if not points:
        return None
    if at <= points[0][0]:
        return points[0][1]
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if t0 <= at <= t1:
            if v0 is None or v1 is None:
                return None
            return v0 + (v1 - v0) * (at - t0) / (t1 - t0) if t1 > t0 else v1
    return points[-1][1]


def group_window(histories: list[list[Status]], start: float, end: float) -> dict[str, Any] | None:
    """Events and CPU of a group of workers between two moments: sums of each worker's
    interpolated ``consumed`` and CPU."""
    events = cpu = 0.0
    # (A worker that printed no status line by the end handled nothing: left out.)
    for history in (h for h in histories if h):
        c0, c1 = value_at(history, start, "consumed"), value_at(history, end, "consumed")
        u0, u1 = value_at(history, start, "cpu"), value_at(history, end, "cpu")
        if c0 is None or c1 is None or u0 is None or u1 is None:
            return None
        events += c1 - c0
        cpu += u1 - u0
    seconds = end - start
    if seconds <= 0 or events <= 0:
        return None
    return {
        "events": round(events),
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds, 1),
        "cpu_s": round(cpu, 2),
        "cpu_s_per_1k": round(1000 * cpu / events, 4) if cpu > 0 else None,
        "events_per_cpu_s": round(events / cpu, 1) if cpu > 0 else None,
        "cores": round(cpu / seconds, 2),
    }


def group_figures(histories: list[list[Status]], total: int) -> dict[str, Any]:
    """The group's figures from its workers' status lines: from the first line (any worker)
    showing an event handled, moved back to the line before it (so no work is left out), to the
    moment the summed ``consumed`` reached ``total`` (or the last line: partial). ``all_busy``:
    the same from the moment every worker had handled an event (after the first rebalances)."""
    lines = sorted((s for h in histories for s in h), key=lambda s: s.at)
    if not lines:
        return {}
    # The first line showing an event, and the line before it of the same worker (which had
    # handled none): the work began between the two.
    began = [
        (history[i - 1].at if i else s.at, s.at)
        for history in histories
        for i, s in enumerate(history)
        if s.data.get("consumed", 0) > 0 and (i == 0 or history[i - 1].data.get("consumed", 0) == 0)
    ]
    if not began:
        return {"events": 0}
    start = min(began, key=lambda pair: pair[1])[0]
    summed_at = [(s.at, sum(value_at(h, s.at, "consumed") or 0 for h in histories)) for s in lines]
    reached = [at for at, summed in summed_at if summed >= total]
    partial = not reached
    # Partial (a time limit, or a stall): up to where the count stopped moving, not the idle tail.
    most = max(summed for _, summed in summed_at)
    end = reached[0] if reached else next(at for at, summed in summed_at if summed >= most)
    out: dict[str, Any] = group_window(histories, start, end) or {}
    out["partial"] = partial
    # From the moment the last of them had handled its first event.
    firsts = [next((s.at for s in h if s.data.get("consumed", 0) > 0), None) for h in histories]
    out["workers_that_handled_events"] = sum(f is not None for f in firsts)
    if all(f is not None for f in firsts):
        out["all_busy"] = group_window(histories, max(f for f in firsts if f is not None), end)
    return out


def run_workers(
    world: World,
    count: int,
    total: int,
    *,
    status_every: float,
    timeout: float,
    ready_timeout: float,
    results: dict[str, Any],
) -> dict[str, Any]:
    """``count`` workers in one group on the world's input from offset 0, until their summed
    ``consumed`` reaches ``total`` (or ``timeout``: partial)."""
    log(f"[9] {count} journey workers in one group ({world.app_id}) consume the {total:,} events")
    workers = [
        WorkerProcess(world, f"w{n}", status_every=status_every, name=f"worker-{n}")
        for n in range(1, count + 1)
    ]
    for worker in workers:
        results["workers"].append({"step": "roles-workers", "argv": worker.argv, "env": worker.env})
    deadline = time.monotonic() + ready_timeout + timeout
    last_print = 0.0
    summed = moved = 0
    moved_at = time.monotonic()
    stalled: float | None = None
    while time.monotonic() < deadline:
        for worker in workers:
            if worker.process.poll() is not None:
                raise RuntimeError(
                    f"worker {worker.data_label} exited with {worker.process.returncode}:\n"
                    f"{worker.tail()}"
                )
            worker.drain()
        summed = sum(w.last.data.get("consumed", 0) for w in workers if w.last)
        if time.monotonic() - last_print >= 10:
            last_print = time.monotonic()
            log(
                f"  workers: consumed {summed:,}/{total:,} ("
                + ", ".join(
                    f"{w.env['JOURNEY_WORKER_NAME']} {w.last.data.get('consumed', 0):,} "
                    f"p{w.last.data.get('partitions', [])}"
                    for w in workers
                    if w.last
                )
                + ")"
            )
        if summed >= total:
            break
        if summed != moved:
            moved, moved_at = summed, time.monotonic()
        elif summed and time.monotonic() - moved_at > STALL_S:
            # Seen here: a worker that has handled events stuck in a rebalance (Faust's
            # wait_empty for the messages the event-time merge holds), the group waiting on it.
            stalled = time.monotonic() - moved_at
            log(f"  workers: no event handled for {stalled:.0f}s: stopping them (partial)")
            break
        time.sleep(0.2)
    histories = [w.history for w in workers]
    figures = group_figures(histories, total)
    lines = sorted((s for h in histories for s in h if s.cpu is not None), key=lambda s: s.at)
    if len(lines) > 1:
        # The broker and the machine from the first status line to the last (machine-wide
        # samples: any worker's will do).
        machine = cpu_between(lines[0].cpu, lines[-1].cpu)  # type: ignore[arg-type]
        figures["machine"] = {k: machine.get(k) for k in ("broker", "machine_busy")}
    figures["per_worker"] = [
        {
            "name": w.env["JOURNEY_WORKER_NAME"],
            "consumed": w.last.data.get("consumed") if w.last else None,
            "partitions": w.last.data.get("partitions") if w.last else None,
            "emitted": w.last.data.get("emitted") if w.last else None,
            "sent": w.last.data.get("sent") if w.last else None,
        }
        for w in workers
    ]
    figures["workers"] = count
    figures["consumed"] = summed
    if stalled is not None:
        figures["stalled_s"] = round(stalled, 1)
    log(
        f"  {count} workers: {figures.get('events_per_s', 0):,.0f} events/s, "
        f"{figures.get('cpu_s_per_1k')} CPU s per 1k events ({figures.get('cores')} cores)"
        f"{' PARTIAL' if figures.get('partial') else ''}"
    )
    for worker in workers:
        # (A stuck worker may ignore SIGTERM: it is killed after 30 s.)
        worker.stop(timeout=30)
    figures["published"] = published_records(world)
    figures["app_id"] = world.app_id
    return figures


# --- the loader -------------------------------------------------------------------------------
def loader_window(history: list[Status], facts: int) -> dict[str, Any]:
    """The loader's figures from its samples: from the last sample before it read a fact (no
    loading work is left out) to the first showing every row it ends with stored."""
    if not history:
        return {}
    final = history[-1].data
    busy = [i for i, s in enumerate(history) if s.data.get("loaded", 0) > 0]
    if not busy:
        return {"facts": 0}
    start = history[busy[0] - 1] if busy[0] > 0 else history[busy[0]]
    end = next(
        s
        for s in history
        if s.data.get("sink_rows") == final.get("sink_rows")
        and s.data.get("loaded", 0) >= min(facts, final.get("loaded", 0))
    )
    out: dict[str, Any] = {
        "facts_expected": facts,
        "facts": final.get("loaded"),
        "facts_per_topic": final.get("loaded_per_topic"),
        "rows": final.get("sink_rows"),
        "rows_per_table": final.get("sink_rows_per_table"),
        "duplicate_rows": final.get("duplicate_rows"),
        "batches": final.get("sink_batches"),
        "failures": final.get("sink_failures"),
        "undecodable": final.get("undecodable_facts"),
        "partial": final.get("loaded", 0) < facts,
    }
    seconds = end.at - start.at
    loaded = end.data.get("loaded", 0) - start.data.get("loaded", 0)
    rows = end.data.get("sink_rows", 0) - start.data.get("sink_rows", 0)
    cpu = None
    if start.cpu and end.cpu and start.cpu.worker is not None and end.cpu.worker is not None:
        cpu = end.cpu.worker - start.cpu.worker
        out["cores"] = cpu_between(start.cpu, end.cpu)
    out["seconds"] = round(seconds, 2)
    if seconds > 0:
        out["facts_per_s"] = round(loaded / seconds, 1)
        out["rows_per_s"] = round(rows / seconds, 1)
    if cpu:
        out["cpu_s"] = round(cpu, 2)
        out["rows_per_cpu_s"] = round(rows / cpu, 1)
        out["facts_per_cpu_s"] = round(loaded / cpu, 1)
        out["cpu_s_per_1k_rows"] = round(1000 * cpu / rows, 4) if rows else None
    return out


def run_loader(
    facts_world: World, facts: int, *, timeout: float, ready_timeout: float, results: dict[str, Any]
) -> dict[str, Any]:
    """The loader alone, a new group and chdb, on the facts ``facts_world``'s worker published."""
    world = replace(
        facts_world, app_suffix=f"{facts_world.app_suffix}-load", outputs=facts_world.output_tag
    )
    log(f"[9] the loader alone ({world.app_id}-loader) loads the {facts:,} facts into ClickHouse")
    loader = LoaderProcess(world)
    results["workers"].append({"step": "roles-loader", "argv": loader.argv, "env": loader.env})
    try:
        ready = loader.wait_until(lambda d: d["ready"], ready_timeout)
        start_to_ready = ready.at - loader.started
        changed_at, seen = time.monotonic(), (-1, -1)

        def settled(d: dict[str, Any]) -> bool:
            nonlocal changed_at, seen
            now = (d["sink_rows"], d["duplicate_rows"])
            if now != seen:
                changed_at, seen = time.monotonic(), now
            return d["loaded"] >= facts and time.monotonic() - changed_at >= 3

        try:
            loader.wait_until(settled, timeout, every=0.25)
        except TimeoutError:
            log(f"  loader: time limit of {timeout:.0f}s reached: the partial rate")
        out = loader_window(loader.history, facts)
        out["start_to_ready_s"] = round(start_to_ready, 1)
        try:
            db = world.settings().clickhouse_database
            (stored,) = loader.sql(
                f"SELECT (SELECT count() FROM {db}.events FINAL) AS events, "
                f"(SELECT count() FROM {db}.triggers FINAL) AS triggers, "
                f"(SELECT count() FROM {db}.customers FINAL) AS customers, "
                f"(SELECT count() FROM {db}.deadletters FINAL) AS deadletters"
            )
            out["stored_final"] = stored
        except Exception as exc:  # the figures above stand without it
            out["stored_final"] = {"error": str(exc)[-500:]}
    finally:
        out_shutdown = loader.stop()
    out["shutdown_s"] = round(out_shutdown, 1)
    out["app_id"] = world.app_id
    log(
        f"  loader: {out.get('rows', 0):,} rows stored, {out.get('rows_per_s', 0):,.0f} rows/s, "
        f"{out.get('rows_per_cpu_s', 0):,.0f} rows per CPU-second; stored (FINAL) "
        f"{out.get('stored_final')}"
    )
    return out


# --- the section ------------------------------------------------------------------------------
def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def one_worker(e2e_rounds: list[dict[str, Any]], events: int) -> dict[str, Any]:
    """Step 1's runs as the one-worker figures (median of the rounds) and what the first
    published."""
    per_cpu = [r["events_per_worker_cpu_s"] for r in e2e_rounds if r.get("events_per_worker_cpu_s")]
    rates = [r["events_per_s"] for r in e2e_rounds if r.get("events_per_s")]
    cores = [
        r["cpu_cores"]["worker"] for r in e2e_rounds if (r.get("cpu_cores") or {}).get("worker")
    ]
    events_per_cpu_s = _median(per_cpu)
    published = (e2e_rounds[0].get("published") or {}) if e2e_rounds else {}
    return {
        "rounds": len(e2e_rounds),
        "events": events,
        "events_per_s": _median(rates),
        "events_per_s_rounds": rates,
        "events_per_cpu_s": events_per_cpu_s,
        "events_per_cpu_s_rounds": per_cpu,
        "cpu_s_per_1k": round(1000 / events_per_cpu_s, 4) if events_per_cpu_s else None,
        "cores": cores,
        "partial": any(r.get("partial") for r in e2e_rounds),
        "published": published,
        "published_rounds": [r.get("published") for r in e2e_rounds],
        "per_input_event": per_input_event(published, events),
        "app_id": e2e_rounds[0].get("app_id") if e2e_rounds else None,
    }


def scaling(one: dict[str, Any], group: dict[str, Any]) -> dict[str, Any]:
    """The group against one worker: events/s over N x one worker's, CPU per event over one's."""
    n = group.get("workers") or 0
    out: dict[str, Any] = {}
    if n and one.get("events_per_s") and group.get("events_per_s"):
        out["rate_over_n_x_one"] = round(group["events_per_s"] / (n * one["events_per_s"]), 3)
        out["rate_over_one"] = round(group["events_per_s"] / one["events_per_s"], 3)
    if one.get("cpu_s_per_1k") and group.get("cpu_s_per_1k"):
        out["cpu_per_event_over_one"] = round(group["cpu_s_per_1k"] / one["cpu_s_per_1k"], 3)
    return out
