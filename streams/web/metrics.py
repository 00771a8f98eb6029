"""Prometheus metrics of a worker and of the loader, each served at its ``/metrics``.

Counters the pipeline keeps anyway (events per topic, dead letters per reason, decisions per
trigger type and status, sink totals) are read when Prometheus scrapes, so the hot path pays
nothing for them. Histograms are observed where the time is measured.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from streams.runtime.app import Pipeline
    from streams.runtime.loader import Loader

# What the README documents; tests scrape these names.
WORKER_METRIC_NAMES = (
    "journey_events_consumed_total",
    "journey_events_accepted_total",
    "journey_dead_letters_total",
    "journey_events_rekeyed_total",
    "journey_triggers_total",
    "journey_pending_timers",
    "journey_timer_lateness_seconds",
    "journey_event_processing_seconds",
    "journey_consumer_lag",
    "journey_events_misrouted_total",
    "journey_ordering_buffered",
    "journey_ordering_paused",
    "journey_ordering_pauses_total",
    "journey_ordering_gave_up_total",
    "journey_records_sent_total",
    "journey_records_unacknowledged",
)
LOADER_METRIC_NAMES = (
    "journey_facts_consumed_total",
    "journey_sink_rows_total",
    "journey_sink_duplicate_rows_total",
    "journey_sink_batches_total",
    "journey_sink_failures_total",
    "journey_sink_flush_seconds",
    "journey_facts_undecodable_total",
    "journey_loader_lag",
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.timer_lateness = LeanHistogram(
            "journey_timer_lateness_seconds",
            "How long after its time a timer was evaluated.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.processing = LeanHistogram(
            "journey_event_processing_seconds",
            "Time to process one input event in the agent (decode, journey, outputs).",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 1),
            registry=self.registry,
        )

    def attach(self, pipeline: Pipeline, lag: Callable[[], dict[tuple[str, int], int]]) -> None:
        self.registry.register(_PipelineCollector(pipeline, lag))


class LeanHistogram(Collector):
    """A Prometheus histogram observed once per event by the worker's one thread: a bucket index
    and two additions per ``observe`` (0.2 us), where ``prometheus_client``'s ``Histogram``
    takes a lock and walks its buckets (0.7 us). Exposed the same way: the same names, buckets
    (cumulative, ``le``), ``_count``, ``_sum`` and ``_created``. Not for use from several
    threads."""

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(float(b) for b in buckets)
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError(f"{name}: buckets must be increasing")
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0
        self.created = time.time()
        registry.register(self)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation)
        cumulative: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            cumulative.append((floatToGoString(bound), total))  # type: ignore[no-untyped-call]
        family.add_metric([], cumulative, self.sum)
        family.add_sample(f"{self.name}_created", {}, self.created)
        yield family


class _PipelineCollector(Collector):
    def __init__(self, pipeline: Pipeline, lag: Callable[[], dict[tuple[str, int], int]]) -> None:
        self.pipeline = pipeline
        self.lag = lag

    def describe(self) -> list[Metric]:
        return []  # names are only known per scrape (labels); skip the describe pass

    def collect(self) -> Iterator[Metric]:
        ingest, engine, outputs = self.pipeline.ingest, self.pipeline.engine, self.pipeline.outputs
        yield _counter(
            "journey_events_consumed", "Input messages consumed.", "topic", ingest.consumed
        )
        yield _counter(
            "journey_events_accepted", "Input events decoded and valid.", "topic", ingest.accepted
        )
        yield _counter(
            "journey_dead_letters", "Inputs sent to the dead-letter topic.", "reason", ingest.dead
        )
        rekeyed = CounterMetricFamily(
            "journey_events_rekeyed",
            "Events re-keyed by customer_id through the repartition topic.",
        )
        rekeyed.add_metric([], ingest.repartitioned)
        yield rekeyed
        yield _counter(
            "journey_events_misrouted",
            "Events on another partition than their customer_id's under murmur2 (re-routed).",
            "topic",
            ingest.misrouted,
        )
        ordering = self.pipeline.ordering
        if ordering is not None:
            buffered = GaugeMetricFamily(
                "journey_ordering_buffered", "Messages held by the event-time merge."
            )
            buffered.add_metric([], len(ordering))
            yield buffered
            paused = GaugeMetricFamily(
                "journey_ordering_paused",
                "Input topic-partitions whose fetching the event-time merge paused (share full).",
            )
            paused.add_metric([], len(ordering.paused))
            yield paused
            pauses = CounterMetricFamily(
                "journey_ordering_pauses", "Times the event-time merge paused fetching a partition."
            )
            pauses.add_metric([], ordering.pauses)
            yield pauses
            yield _counter(
                "journey_ordering_gave_up",
                "Times the event-time merge released without knowing nothing older would come "
                "(wait: ordering_wait ran out; capacity: ordering_buffer was full).",
                "reason",
                ordering.forced,
            )
        triggers = CounterMetricFamily(
            "journey_triggers", "Trigger decisions.", labels=["type", "status"]
        )
        for (trigger_type, status), n in sorted(engine.decisions.items()):
            triggers.add_metric([trigger_type, status], n)
        yield triggers
        pending = GaugeMetricFamily(
            "journey_pending_timers", "Customers with a timer waiting in this worker."
        )
        pending.add_metric([], len(engine.index))
        yield pending
        yield _counter("journey_records_sent", "Records published, by kind.", "kind", outputs.sent)
        unacked = GaugeMetricFamily(
            "journey_records_unacknowledged",
            "Records not yet acknowledged by the broker: sent, or queued for the next flush.",
        )
        unacked.add_metric([], self.pipeline.unacknowledged)
        yield unacked
        lag = GaugeMetricFamily(
            "journey_consumer_lag",
            "Messages behind the end of each assigned input partition.",
            labels=["topic", "partition"],
        )
        for (topic, partition), behind in sorted(self.lag().items()):
            lag.add_metric([topic, str(partition)], behind)
        yield lag


def _counter(name: str, documentation: str, label: str, values: Any) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, n in sorted(values.items()):
        family.add_metric([str(key)], n)
    return family


class LoaderMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.sink_flush = Histogram(
            "journey_sink_flush_seconds",
            "Duration of one ClickHouse sink flush (every table's batch and the erasures).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )

    def attach(self, loader: Loader) -> None:
        self.registry.register(_LoaderCollector(loader))


class _LoaderCollector(Collector):
    def __init__(self, loader: Loader) -> None:
        self.loader = loader

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        sink, stats = self.loader.sink, self.loader.stats
        yield _counter(
            "journey_facts_consumed", "Fact-topic records read by the loader.", "topic",
            stats.consumed,
        )  # fmt: skip
        yield _counter(
            "journey_sink_rows", "Rows written to ClickHouse.", "table", sink.stats.rows_per_table
        )
        for name, help_text, value in (
            ("journey_sink_duplicate_rows", "Facts published twice, stored once.",
             sink.stats.duplicate_rows),
            ("journey_sink_batches", "ClickHouse inserts that succeeded.", sink.stats.batches),
            ("journey_sink_failures", "ClickHouse inserts or deletes that failed (and were "
             "retried).", sink.stats.failures),
            ("journey_facts_undecodable", "Fact-topic records that are not the topic's record.",
             stats.undecodable),
        ):  # fmt: skip
            counter = CounterMetricFamily(name, help_text)
            counter.add_metric([], value)
            yield counter
        lag = GaugeMetricFamily(
            "journey_loader_lag",
            "Fact-topic messages the loader has not stored in ClickHouse yet, per partition.",
            labels=["topic", "partition"],
        )
        for (topic, partition), behind in sorted(self.loader.lag().items()):
            lag.add_metric([topic, str(partition)], behind)
        yield lag
