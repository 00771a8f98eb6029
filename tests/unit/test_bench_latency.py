"""The latency target's second probe: half the maximum rate of the probe's own workload."""

from __future__ import annotations

from typing import Any

from bench.report import targets_section
from bench.run import half_max_rate


def probe(**figures: Any) -> dict[str, Any]:
    return {"p99_ms": 200, "triggers_per_s": 3000.0, **figures}


def test_half_of_what_one_core_sustains_when_the_rate_probed_was_more() -> None:
    half = half_max_rate(probe(orders_per_worker_cpu_s=4000.0), rate=3000.0)
    assert half == {
        "rate": 2000.0,
        "maximum": 4000.0,
        "how": "orders per worker CPU-second in the probe",
    }


def test_no_second_probe_when_the_rate_probed_was_half_the_maximum_already() -> None:
    assert half_max_rate(probe(orders_per_worker_cpu_s=6300.0), rate=3000.0) is None
    assert half_max_rate(probe(), rate=3000.0) is None  # nothing to tell the maximum by


def test_what_the_worker_sustained_while_behind_when_that_is_lower() -> None:
    behind = probe(orders_per_worker_cpu_s=5000.0, triggers_per_s=2000.0, p99_ms=4000)
    half = half_max_rate(behind, rate=3000.0)
    assert half is not None
    assert (half["rate"], half["how"]) == (1000.0, "what the worker sustained while behind")


def test_the_targets_show_both_probes() -> None:
    results: dict[str, Any] = {
        "args": {"latency_fraction": 0.5},
        "latency": probe(orders_per_s=3000.0, p99_ms=500, orders_per_worker_cpu_s=4000.0),
        "latency_half_max": {
            **probe(orders_per_s=2000.0, p99_ms=90),
            "max_rate": {"rate": 2000.0, "maximum": 4000.0, "how": "orders per CPU-second"},
        },
    }
    text = "\n".join(targets_section(results))
    first = next(line for line in text.splitlines() if "0.5 x the e2e rate" in line)
    second = next(line for line in text.splitlines() if "own workload" in line)
    assert "500 ms" in first and "4,000 orders per CPU-second" in first and "**no**" in first
    assert "2,000 orders/s = 0.5 x 4,000 orders/s" in second and "90 ms" in second
    assert "yes" in second
