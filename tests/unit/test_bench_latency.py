"""The latency target's second probe: half the maximum rate of the probe's own workload."""

from __future__ import annotations

from typing import Any

from bench.report import targets_section
from bench.run import half_max_rate


def test_half_of_what_the_worker_sustained_on_a_backlog() -> None:
    backlog = {"orders_sent": 40_000, "triggers_per_s": 3000.0}
    assert half_max_rate(backlog) == {
        "rate": 1500.0,
        "maximum": 3000.0,
        "how": "orders/s the worker sustained on a backlog of 40,000 orders",
    }
    assert half_max_rate({"orders_sent": 0, "triggers_per_s": None}) is None


def test_the_targets_show_both_probes() -> None:
    results: dict[str, Any] = {
        "args": {"latency_fraction": 0.5},
        "latency": {"orders_per_s": 3000.0, "p99_ms": 500},
        "latency_half_max": {
            "orders_per_s": 2000.0,
            "p99_ms": 90,
            "max_rate": {"rate": 2000.0, "maximum": 4000.0, "how": "orders/s on a backlog"},
        },
    }
    lines = targets_section(results)
    first = next(line for line in lines if "0.5 x the e2e rate" in line)
    second = next(line for line in lines if "own workload" in line)
    assert "0.75 x the maximum rate" in first and "500 ms" in first and "**no**" in first
    assert "2,000 orders/s = 0.5 x 4,000 orders/s on a backlog" in second
    assert "90 ms" in second and "| yes" in second
