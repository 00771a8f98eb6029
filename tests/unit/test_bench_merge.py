"""Step 8 of ``make bench`` (the event-time merge's cost): its arithmetic and its report.

The workers themselves only run in ``make bench``; what can be wrong without a broker is here:
reading the worker's counter, the with / without ratios, the latency differences, the report."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily

from bench.common import CpuSample, Status, counter_by_label
from bench.merge import (
    GAVE_UP_METRIC,
    compare_latency,
    merge_round,
    summarize_merge,
)
from bench.report import merge_section
from bench.run import from_ready


class _Exported:
    """The worker's counters as streams/web/metrics.py exports them (a custom collector)."""

    def __init__(self, **families: dict[str, float]) -> None:
        self.families = families

    def collect(self) -> Any:
        for name, values in self.families.items():
            family = CounterMetricFamily(name, "help", labels=["reason"])
            for reason, n in values.items():
                family.add_metric([reason], n)
            yield family


def exported(**families: dict[str, float]) -> str:
    registry = CollectorRegistry()
    registry.register(_Exported(**families))
    return str(generate_latest(registry).decode())


METRICS = exported(
    journey_ordering_gave_up={"wait": 3.0, "capacity": 1234.0},
    journey_events_misrouted={"wait": 9.0},
)


def test_the_gave_up_counter_is_read_by_reason() -> None:
    assert counter_by_label(METRICS, GAVE_UP_METRIC, "reason") == {
        "wait": 3.0,
        "capacity": 1234.0,
    }


def test_a_counter_without_samples_is_zero_and_a_missing_one_unknown() -> None:
    empty = exported(journey_ordering_gave_up={})
    assert counter_by_label(empty, GAVE_UP_METRIC, "reason") == {}
    other = exported(journey_events_misrouted={"wait": 1.0})
    assert counter_by_label(other, GAVE_UP_METRIC, "reason") is None


def run(cpu: float, rate: float, triggers: int) -> dict[str, Any]:
    return {"cpu_s_per_1k": cpu, "events_per_s": rate, "triggers": triggers, "partial": False}


PAIRS = [
    {
        "round": 1,
        "order": ["with", "without"],
        "with": {**run(0.40, 2500.0, 100), "gave_up": {"wait": 2.0}},
        "without": {**run(0.32, 3000.0, 97), "gave_up": {"capacity": 50.0}},
    },
    {
        "round": 2,
        "order": ["without", "with"],
        "with": {**run(0.30, 3500.0, 100), "gave_up": {}},
        "without": {**run(0.30, 3400.0, 99), "gave_up": None},
    },
]


def test_with_over_without_medians_and_per_round() -> None:
    s = summarize_merge(PAIRS)
    assert s["with"]["cpu_s_per_1k"] == 0.35  # median (mean of two) of 0.40, 0.30
    assert s["without"]["cpu_s_per_1k"] == 0.31
    assert s["cpu_ratio"] == round(0.35 / 0.31, 3)
    assert s["rate_ratio"] == round(3000.0 / 3200.0, 3)
    assert s["cpu_ratio_rounds"] == [1.25, 1.0]
    assert s["rate_ratio_rounds"] == [round(2500 / 3000, 3), round(3500 / 3400, 3)]
    assert s["cpu_ms_per_event_added"] == 0.04
    assert s["with"]["triggers"] == [100, 100]


def test_a_round_with_one_side_missing_has_no_ratio() -> None:
    s = summarize_merge([PAIRS[0], {"round": 2, "order": ["without"], "without": run(1, 1, 1)}])
    assert s["cpu_ratio_rounds"] == [1.25]
    assert s["with"]["cpu_s_per_1k_rounds"] == [0.40]
    assert s["without"]["cpu_s_per_1k_rounds"] == [0.32, 1]


def test_latency_added_is_with_minus_without() -> None:
    with_ = {"p50_ms": 30, "p99_ms": 250, "orders_per_s": 800.0, "unloaded": {"p50_ms": 12}}
    without = {"p50_ms": 20, "p99_ms": 300, "orders_per_s": 801.0, "unloaded": {"p50_ms": 10}}
    lat = compare_latency(with_, without)
    assert (lat["added_p50_ms"], lat["added_p99_ms"]) == (10, -50)
    assert lat["added_unloaded_p50_ms"] == 2
    assert lat["added_unloaded_p99_ms"] is None  # not measured: no difference invented


def test_report_section_shows_both_sides_the_ratio_and_the_latency() -> None:
    latency = compare_latency(
        {"p50_ms": 30, "p99_ms": 250, "orders_per_s": 800.0},
        {"p50_ms": 20, "p99_ms": 300, "orders_per_s": 801.0},
    )
    results = {
        "workload": {"events": 3000},
        "merge": {"rounds": PAIRS, "summary": summarize_merge(PAIRS), "latency": latency},
    }
    text = "\n".join(merge_section(results))
    assert "## Cost of the event-time merge" in text
    assert "| with the merge (default) | **0.350** (0.400 / 0.300) |" in text
    assert "**0.310** (0.320 / 0.300)" in text
    assert "| with / without | **1.129** (1.250 / 1.000) |" in text
    assert "2 / 0, 0 / 0" in text  # gave up (wait / capacity) per round, with the merge
    assert "0 / 50, n/a" in text  # without; n/a where the counter was not exported
    assert "**10 ms**" in text and "**-50 ms**" in text
    assert merge_section({}) == []  # skipped: no section


def status(at: float, consumed: int, cpu: float) -> Status:
    return Status(at, {"consumed": consumed}, CpuSample(at, cpu, None, None))


def test_a_run_is_timed_from_ready_so_that_holding_messages_counts() -> None:
    # Ready at 10 s (2 events already handled), nothing handled while the merge held the
    # backlog (10-14 s, 1.5 CPU s), then the rest handled by 16 s.
    ready, held, done = status(10.0, 2, 1.0), status(14.0, 2, 2.5), status(16.0, 4002, 3.5)
    assert from_ready(ready, done) == {
        "events": 4000,
        "seconds": 6.0,
        "events_per_s": round(4000 / 6, 1),
        "cpu_s_per_1k": 0.625,  # 2.5 CPU s / 4,000 events, the holding included
    }
    assert "cpu_s_per_1k" not in from_ready(ready, held)  # no event: no per-event figure


def test_the_comparison_uses_the_from_ready_figures() -> None:
    e2e = {
        "events_per_s": 9000.0,
        "events_per_worker_cpu_s": 5000.0,  # from the first handled: 0.2 CPU s / 1k
        "from_ready": {"events_per_s": 3000.0, "cpu_s_per_1k": 0.5, "seconds": 6.0},
        "ordering_gave_up": {"wait": 9.0},
    }
    run = merge_round(e2e, 10_000)
    assert (run["events_per_s"], run["cpu_s_per_1k"]) == (3000.0, 0.5)
    assert run["from_first_handled"] == {"events_per_s": 9000.0, "cpu_s_per_1k": 0.2}
    assert run["gave_up"] == {"wait": 9.0}
