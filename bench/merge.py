"""Step 8: what the event-time merge (``streams/runtime/ordering.py``, issue 11) costs.

Throughput: in each round of step 7 the worker runs once with the merge (the default settings:
the e2e worker of step 1 when it is not profiled) and once without it
(``JOURNEY_ORDERING_BUFFER=1``: one buffered message at most, so every message is handled as
soon as it arrives), each with its own app id on the same pre-filled topics from offset 0. The
order alternates from round to round (with, without; then without, with), so load that drifts
during the run weighs on both. Latency: the probe of step 3 (orders -> ORDER_CONFIRMATION, broker
append times) on a worker without the merge, at the same rates as step 3's worker with it.

Pure functions here; ``bench/run.py`` runs the workers."""

from __future__ import annotations

import statistics
from typing import Any

# The merge as a pass-through: the buffer holds one message, which pop_ready() hands over at
# once (in order when nothing can be older, given up as "capacity" otherwise).
MERGE_OFF = {"JOURNEY_ORDERING_BUFFER": "1"}
GAVE_UP_METRIC = "journey_ordering_gave_up"


def merge_round(e2e_round: dict[str, Any], ordering_buffer: int) -> dict[str, Any]:
    """One worker run of the comparison, timed from the worker's ``ready`` to the last event
    handled (``from_ready`` of ``bench.run.run_e2e``), not from the first event handled as in
    step 1: with the merge, the first is handled only when no input partition of its partition
    number may still deliver something older, after fetching and holding up to
    ``JOURNEY_ORDERING_BUFFER`` messages, and that work must count (measured: at 10,000 events,
    all held before the first was handled, timing from the first handled made the merge look
    3 x cheaper). Step 1's figures are kept under ``from_first_handled``."""
    from bench.contest import worker_round

    ready = e2e_round.get("from_ready") or {}
    first = worker_round(e2e_round)
    return {
        **first,
        "events_per_s": ready.get("events_per_s"),
        "cpu_s_per_1k": ready.get("cpu_s_per_1k"),
        "seconds": ready.get("seconds"),
        "from_first_handled": {k: first[k] for k in ("events_per_s", "cpu_s_per_1k")},
        "ordering_buffer": ordering_buffer,
        "gave_up": e2e_round.get("ordering_gave_up"),
        "app_id": e2e_round.get("app_id"),
    }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    return round(a / b, digits) if a and b else None


def summarize_merge(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median CPU s per 1k events and events/s with and without the merge, their ratios
    (with / without: > 1 means the merge costs CPU; < 1 for events/s means it slows), and each
    round's ratio (the two runs of a round ran back to back, under about the same load)."""
    out: dict[str, Any] = {}
    for side in ("with", "without"):
        runs = [p[side] for p in pairs if p.get(side)]
        cpu = [r["cpu_s_per_1k"] for r in runs if r.get("cpu_s_per_1k")]
        rate = [r["events_per_s"] for r in runs if r.get("events_per_s")]
        median_cpu, median_rate = _median(cpu), _median(rate)
        out[side] = {
            "cpu_s_per_1k": round(median_cpu, 4) if median_cpu else None,
            "cpu_s_per_1k_rounds": cpu,
            "events_per_s": round(median_rate, 1) if median_rate else None,
            "events_per_s_rounds": rate,
            "triggers": [r.get("triggers") for r in runs],
            "partial": any(r.get("partial") for r in runs),
        }
    w, wo = out["with"], out["without"]
    out["cpu_ratio"] = _ratio(w["cpu_s_per_1k"], wo["cpu_s_per_1k"])
    out["rate_ratio"] = _ratio(w["events_per_s"], wo["events_per_s"])
    out["cpu_ratio_rounds"] = [
        _ratio(p["with"].get("cpu_s_per_1k"), p["without"].get("cpu_s_per_1k"))
        for p in pairs
        if p.get("with") and p.get("without")
    ]
    out["rate_ratio_rounds"] = [
        _ratio(p["with"].get("events_per_s"), p["without"].get("events_per_s"))
        for p in pairs
        if p.get("with") and p.get("without")
    ]
    if w["cpu_s_per_1k"] and wo["cpu_s_per_1k"]:
        out["cpu_ms_per_event_added"] = round(w["cpu_s_per_1k"] - wo["cpu_s_per_1k"], 4)
    return out


def _diff(a: Any, b: Any) -> Any:
    return a - b if isinstance(a, int | float) and isinstance(b, int | float) else None


def compare_latency(with_merge: dict[str, Any], without: dict[str, Any]) -> dict[str, Any]:
    """Step 3's probe with the merge and without it: p50/p99 of each, and what the merge adds
    (with - without, ms; negative: the run with the merge was faster this time)."""
    out: dict[str, Any] = {"with": _probe(with_merge), "without": _probe(without)}
    for key in ("p50_ms", "p99_ms"):
        out[f"added_{key}"] = _diff(with_merge.get(key), without.get(key))
        out[f"added_unloaded_{key}"] = _diff(
            (with_merge.get("unloaded") or {}).get(key), (without.get("unloaded") or {}).get(key)
        )
    return out


def _probe(latency: dict[str, Any]) -> dict[str, Any]:
    keys = ("orders_per_s", "target_rate", "triggers_matched", "triggers_missing")
    unloaded = latency.get("unloaded") or {}
    return {
        **{k: latency.get(k) for k in (*keys, "p50_ms", "p90_ms", "p99_ms", "max_ms")},
        "unloaded": {k: unloaded.get(k) for k in ("orders_per_s", "p50_ms", "p99_ms")},
    }
