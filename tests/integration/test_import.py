"""`journey import` of a simulated history through a real broker and worker.

The history lies 200-230 days in the past: every trigger it causes was due long before the
worker decides it, so the replay guard must record them EXPIRED and send nothing. Importing the
same file again must change nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from schemas.codec import Codec
from schemas.records import TOPIC_RECORDS, CustomerChanged
from streams.ops.simulator import DAY, Behaviour, SimulationConfig, generate
from streams.runtime.facts import event_type
from tests.integration.conftest import Env, consume_all

CODEC = Codec.load()
REPLAY_GUARD_MS = 24 * 3_600_000


def write_history(path: Path, now: int) -> tuple[list[Any], list[int]]:
    """The simulated history as JSONL (plus two bad lines); its good records and bad lines."""
    config = SimulationConfig(
        seed=3,
        customers=200,
        start_ms=now - 230 * DAY,
        arrival_window_ms=7 * DAY,
        horizon_ms=30 * DAY,  # the history ends 200 days ago
        run_id="imp",
        # The simulator erases 0.5% of customers, at the end of their lives: raised so that a
        # 30-day history holds a few erasures. No birthdays: a birthday is not history (its
        # trigger recurs every year, so a timer stays pending and the next one may be due
        # today); its replay is covered in tests/unit/journey/test_triggers.py.
        behaviour=Behaviour(erased=0.03, birthday_given=0.0),
    )
    records = [e.record for e in generate(config) if e.record is not None]
    topic_of = {cls: topic for topic, cls in TOPIC_RECORDS.items()}
    lines: list[bytes] = []
    bad: list[int] = []
    for i, record in enumerate(records):
        if i in (10, 500):
            lines.append(b'{"record": "order.placed", "event_id": "broken"\n')  # not JSON
            bad.append(len(lines))
        if i == 1000:
            lines.append(orjson.dumps({**orjson.loads(CODEC.to_json(record)), "record": "order.teleported"}) + b"\n")  # fmt: skip
            bad.append(len(lines))
        # Every form of naming the record: the event type, the class, the topic.
        form = (event_type(record), type(record).__name__, topic_of[type(record)])[i % 3]
        lines.append(orjson.dumps({"record": form, **orjson.loads(CODEC.to_json(record))}) + b"\n")
    path.write_bytes(b"".join(lines))
    return records, bad


def import_history(env: Env, path: Path, good: int, bad: list[int]) -> str:
    started = time.monotonic()
    done = env.journey("import", str(path), check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output  # some rows were rejected
    for line in bad:
        assert f"line {line}: " in output, output
    assert f"{len(bad)} of {good + len(bad):,} rows were rejected" in output, output
    assert f"published     {good:,} rows" in output, output
    print(f"import of {good + len(bad)} rows took {time.monotonic() - started:.1f}s\n{output}")
    return output


def run_worker_until_done(env: Env, start_worker: Any, good: int, again: bool = False) -> None:
    """A worker until it consumed `good` rows and decided every timer, then SIGTERM."""
    worker = start_worker()
    status = worker.wait_until(
        lambda s: s.get("consumed", 0) >= good and s.get("pending_timers", 1) == 0, timeout=180
    )
    # The second worker resumes at the committed offsets: it may see a few of the first again.
    assert status["consumed"] >= good if again else status["consumed"] == good, status
    assert not status["dead_letters"], status
    assert status["emitted"] == 0, status["triggers"]
    worker.wait_loaded()
    assert worker.stop() == 0


def table_state(env: Env) -> dict[str, Any]:
    events = env.sql("SELECT event_id FROM journey.events FINAL")
    customers = env.sql("SELECT customer_id FROM journey.customers FINAL")
    triggers = env.sql(
        "SELECT trigger_id, customer_id, status, reason, "
        "toUnixTimestamp64Milli(due_at) AS due, toUnixTimestamp64Milli(decided_at) AS decided "
        "FROM journey.triggers FINAL"
    )
    return {
        "events": [r["event_id"] for r in events],
        "customers": [r["customer_id"] for r in customers],
        "triggers": triggers,
    }


def test_importing_history_stores_it_and_sends_nothing(
    env: Env, start_worker: Any, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    path = tmp_path / "history.jsonl"
    records, bad = write_history(path, now)
    erased = {r.customer_id for r in records if isinstance(r, CustomerChanged) and r.action == "ERASED"}  # fmt: skip
    assert erased, "the history should hold erasures"
    expected_events = {r.event_id for r in records if r.customer_id not in erased}
    expected_customers = {r.customer_id for r in records} - erased
    assert len(expected_events) < len(records)  # erased customers' rows are deleted by design

    env.journey("topics", "create")
    import_history(env, path, len(records), bad)
    started = time.monotonic()
    run_worker_until_done(env, start_worker, len(records))
    print(f"worker took {time.monotonic() - started:.1f}s for {len(records)} events")

    first = table_state(env)
    assert len(first["events"]) == len(set(first["events"])) == len(expected_events)
    assert set(first["events"]) == expected_events
    assert sorted(first["customers"]) == sorted(expected_customers)  # one row per customer
    statuses = {(t["status"], t["reason"]) for t in first["triggers"]}
    # The replay guard: nothing due longer ago than 24 h at decision time is sent ...
    late = [t for t in first["triggers"] if t["status"] == "EMITTED" and t["decided"] - t["due"] > REPLAY_GUARD_MS]  # fmt: skip
    assert not late
    # ... and for a history that ended 200 days ago, that is every trigger.
    assert not [t for t in first["triggers"] if t["status"] == "EMITTED"], statuses
    expired = [t for t in first["triggers"] if t["status"] == "EXPIRED"]
    assert expired and {t["reason"] for t in expired} == {"replay_guard"}
    assert all(now - t["due"] > 100 * DAY for t in expired)  # at most 90 days after the history
    assert not {t["customer_id"] for t in first["triggers"]} & erased
    assert not consume_all(env, env.settings().topic("triggers"), 1, timeout=3)
    print(
        f"{len(first['events'])} events, {len(first['customers'])} customers, "
        f"{len(erased)} erased; triggers: {sorted(Counter((t['status'], t['reason']) for t in first['triggers']).items())}"
    )

    # The same file again: the broker gets every row twice, the tables change in nothing.
    import_history(env, path, len(records), bad)
    run_worker_until_done(env, start_worker, len(records), again=True)
    second = table_state(env)
    assert sorted(second["events"]) == sorted(first["events"])
    assert sorted(second["customers"]) == sorted(first["customers"])
    assert not [t for t in second["triggers"] if t["status"] == "EMITTED"]
    assert sorted(t["trigger_id"] for t in second["triggers"]) == sorted(t["trigger_id"] for t in first["triggers"])  # fmt: skip
    assert not consume_all(env, env.settings().topic("triggers"), 1, timeout=3)
