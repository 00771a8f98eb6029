"""The HTTP endpoints: a worker's (health, readiness, metrics, status) and the loader's
(health, readiness, metrics, read-only SQL)."""

from __future__ import annotations

import re
from typing import Any

from streams.web.metrics import LOADER_METRIC_NAMES, WORKER_METRIC_NAMES
from tests.integration.conftest import Env, publish
from tests.integration.support import as_messages, get, valid_events


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent); label order is free."""
    for line in metrics.splitlines():
        match = re.match(r"^([a-z_]+)(?:\{(.*)\})? ([0-9.e+-]+)$", line)
        if not match or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if found == labels:
            return float(match[3])
    return 0.0


def test_metrics_move_as_events_are_processed(env: Env, start_worker: Any) -> None:
    base = f"http://127.0.0.1:{env.vars['JOURNEY_WEB_PORT']}"  # the loader
    own = f"http://127.0.0.1:{env.vars['JOURNEY_WORKER_WEB_PORT']}"  # the (one) worker
    env.journey("topics", "create")
    worker = start_worker()
    worker.wait_until(lambda s: s.get("ready") and s.get("loader_ready"))
    for url in (base, own):
        assert get(f"{url}/health") == (200, "ok\n")
        assert get(f"{url}/ready")[0] == 200

    status, before = get(f"{own}/metrics")
    assert status == 200
    _, loader_before = get(f"{base}/metrics")
    for names, text in ((WORKER_METRIC_NAMES, before), (LOADER_METRIC_NAMES, loader_before)):
        for name in names:
            assert f"# HELP {name}" in text or f"# HELP {name.removesuffix('_total')}" in text, name
    orders_topic = env.settings().topic("orders")
    assert sample(before, "journey_events_consumed_total", topic=orders_topic) == 0

    events = valid_events(5)  # 5 customers, one of each record type each
    publish(env, [*as_messages(events), ("orders", b"c-bad", b"garbage")])
    worker.wait_until(
        lambda s: s.get("events_rows", 0) >= len(events) and s.get("deadletter_rows", 0) >= 1
    )

    _, after = get(f"{own}/metrics")
    assert sample(after, "journey_events_consumed_total", topic=orders_topic) == 6
    assert sample(after, "journey_dead_letters_total", reason="bad_header") == 1
    assert sample(after, "journey_triggers_total", type="ORDER_CONFIRMATION", status="EMITTED") == 5
    assert sample(after, "journey_event_processing_seconds_count") >= len(events)
    assert sample(after, "journey_records_sent_total", kind="events") == len(events)
    _, loaded = get(f"{base}/metrics")
    assert sample(loaded, "journey_sink_rows_total", table="events") >= len(events)
    assert sample(loaded, "journey_sink_batches_total") >= 1
    assert sample(loaded, "journey_sink_flush_seconds_count") >= 1
    _, status_json = get(f"{own}/status")
    assert '"role": "worker"' in status_json
    for partition in range(3):
        assert (
            sample(after, "journey_consumer_lag", topic=orders_topic, partition=str(partition)) == 0
        )

    # While the worker owns the embedded ClickHouse, analysts' queries go through it.
    done = env.journey("sql", "SELECT count() AS n FROM journey.events FINAL", "--format", "json")
    assert done.stdout.strip() == f'[{{"n": {len(events)}}}]'
    report = env.journey("report").stdout
    assert "Funnel" in report and "running loader" in report
    refused = env.journey("sql", "DROP TABLE journey.events", check=False)
    assert refused.returncode != 0 and "read-only" in refused.stderr
    status, body = get(
        f"{base}/sql?query=INSERT%20INTO%20journey.events%20(event_id)%20VALUES%20('x')",
        headers={"X-Requested-By": "journey"},
    )
    assert status == 400 and "read-only" in body
    assert worker.stop() == 0
