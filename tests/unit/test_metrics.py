"""The worker's own histograms (streams/web/metrics.py): exposed as prometheus_client's are."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streams.web.metrics import LeanHistogram, Metrics

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 1)


def _exposed(registry: CollectorRegistry) -> list[str]:
    return [
        line
        for line in generate_latest(registry).decode().splitlines()
        if not line.startswith("x_seconds_created ")  # (the time each was made)
    ]


def test_a_lean_histogram_is_exposed_as_a_prometheus_histogram() -> None:
    """Same buckets (a value on a bound counts in it), count, sum and text as
    ``prometheus_client.Histogram`` given the same observations."""
    lean_registry, reference_registry = CollectorRegistry(), CollectorRegistry()
    lean = LeanHistogram("x_seconds", "doc", BUCKETS, lean_registry)
    reference = Histogram("x_seconds", "doc", buckets=BUCKETS, registry=reference_registry)
    for value in (0.0, 0.00005, 0.0001, 0.0003, 0.001, 0.7, 1, 3, 120.5):
        lean.observe(value)
        reference.observe(value)
    exposed = _exposed(lean_registry)
    assert exposed == _exposed(reference_registry)
    assert 'x_seconds_bucket{le="0.0001"} 3.0' in exposed
    assert 'x_seconds_bucket{le="+Inf"} 9.0' in exposed
    assert "x_seconds_created" in generate_latest(lean_registry).decode()


def test_buckets_must_increase() -> None:
    with pytest.raises(ValueError, match="increasing"):
        LeanHistogram("y_seconds", "doc", (0.1, 0.05), CollectorRegistry())


def test_the_worker_histograms_are_registered_once_under_their_names() -> None:
    metrics = Metrics()
    metrics.processing.observe(0.0002)
    metrics.timer_lateness.observe(2.0)
    text = generate_latest(metrics.registry).decode()
    assert 'journey_event_processing_seconds_bucket{le="0.00025"} 1.0' in text
    assert 'journey_timer_lateness_seconds_bucket{le="2.0"} 1.0' in text
    assert text.count("# TYPE journey_event_processing_seconds histogram") == 1
