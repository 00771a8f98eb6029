"""The figures of a worker and of the loader, in one place: the console (``--status-every``),
``/status`` and the dashboard show these, ``/metrics`` exports the same counters.
"""

from __future__ import annotations

import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from streams.journey.decisions import Status

if TYPE_CHECKING:
    from streams.runtime.app import Pipeline
    from streams.runtime.loader import Loader


class RateMeter:
    """Events per second over the last few seconds, whoever asks how often."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()

    def rate(self, count: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self.samples.append((now, count))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()
        then, before = self.samples[0]
        return (count - before) / (now - then) if now > then else 0.0


def percentile(samples: Any, q: float) -> int | None:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def consumer_count(app: Any, name: str) -> int:
    """A counter the worker's consumer keeps (0 before it exists): ``heals``, partitions the
    commit guard sought back to a message nobody handled; ``restored_records`` and
    ``standby_records``, changelog records applied in bulk to partitions restored before they
    became active and to standby partitions (``restore.py``)."""
    return int(getattr(getattr(app, "_consumer", None), name, 0) or 0)


def worker_status(pipeline: Pipeline) -> dict[str, Any]:
    ingest, engine, outputs = pipeline.ingest, pipeline.engine, pipeline.outputs
    consumed = sum(ingest.consumed.values())
    try:
        ticks = pipeline.settings.topic("ticks")
        partitions = sorted(
            tp.partition for tp in pipeline.app.consumer.assignment() if tp.topic == ticks
        )
    except Exception:  # not started yet
        partitions = []
    return {
        "role": "worker",
        "name": pipeline.settings.worker_name,
        "consumed": consumed,
        "rate": round(pipeline.rate.rate(consumed), 1),
        "accepted": sum(ingest.accepted.values()),
        "per_topic": dict(ingest.consumed),
        "dead_letters": dict(ingest.dead),
        "repartitioned": ingest.repartitioned,
        "sent": dict(outputs.sent),
        "unencodable_snapshots": outputs.unencodable_snapshots,
        "unacknowledged": pipeline.unacknowledged,
        "acked": pipeline.acks.acked,
        "triggers": {f"{t}/{status}": n for (t, status), n in sorted(engine.decisions.items())},
        "emitted": sum(
            n for (_, status), n in engine.decisions.items() if status == Status.EMITTED
        ),
        "resent": engine.resent,
        "state_writes": engine.state_writes,
        "commit_heals": consumer_count(pipeline.app, "heals"),
        "ordering": ordering_status(pipeline),
        "pending_timers": len(engine.index),
        "partitions": partitions,
        "ready": engine.rebuilds > 0,
        "index_rebuild": engine.last_rebuild,
        "restored_records": consumer_count(pipeline.app, "restored_records"),
        "standby_records": consumer_count(pipeline.app, "standby_records"),
        "timer_lateness_p99_ms": percentile(engine.timer_lateness_ms, 0.99),
        "clock": datetime.fromtimestamp(pipeline.clock.now_ms() / 1000, UTC).isoformat(
            timespec="minutes"
        ),
    }


def ordering_status(pipeline: Pipeline) -> dict[str, Any]:
    """The event-time merge: held now, partitions whose fetching it paused now and how often,
    and releases that gave up order (by reason)."""
    ordering = pipeline.ordering
    if ordering is None:
        return {}
    return {
        "buffered": len(ordering),
        "paused": len(ordering.paused),
        "pauses": ordering.pauses,
        "gave_up": dict(ordering.forced),
    }


def loader_status(loader: Loader) -> dict[str, Any]:
    sink, stats = loader.sink, loader.stats
    return {
        "role": "loader",
        "loaded": sum(stats.consumed.values()),
        "loaded_per_topic": dict(stats.consumed),
        "sink_rows": sink.stats.rows,
        "sink_rows_per_table": dict(sink.stats.rows_per_table),
        "sink_batches": sink.stats.batches,
        "sink_failures": sink.stats.failures,
        "duplicate_rows": sink.stats.duplicate_rows,
        "erased": stats.erased,
        "commit_heals": consumer_count(loader.app, "heals"),
        "undecodable_facts": stats.undecodable,
        "loader_ready": loader.rebuilt,
        # Fact-topic messages not stored yet (0 once everything the workers published is in).
        "loader_lag": sum(loader.lag().values()),
    }


async def stored_counts(loader: Loader) -> dict[str, Any]:
    """What ClickHouse holds (``FINAL``: one row per key), or the error."""
    ch = loader.sink.clickhouse
    try:
        ((events, dead, triggers, customers),) = await ch.aquery_rows(
            f"SELECT (SELECT count() FROM {ch.database}.events FINAL), "
            f"(SELECT count() FROM {ch.database}.deadletters FINAL), "
            f"(SELECT count() FROM {ch.database}.triggers FINAL), "
            f"(SELECT count() FROM {ch.database}.customers FINAL)"
        )
    except Exception as exc:  # the display must never take the pipeline down
        return {"clickhouse_error": f"{exc.__class__.__name__}: {exc}"}
    return {
        "events_rows": events,
        "deadletter_rows": dead,
        "trigger_rows": triggers,
        "customer_rows": customers,
    }
