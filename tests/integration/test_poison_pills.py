"""Poison pills: schema-valid messages the pipeline cannot carry each become a dead letter with
a reason, the valid traffic around them is stored, and SIGTERM stops a worker promptly."""

from __future__ import annotations

import time
from typing import Any

from schemas.codec import Codec
from schemas.records import DeadLetter
from tests.integration.conftest import Env, consume_all, publish
from tests.integration.support import TOPIC_OF, as_messages, valid_events
from tests.unit.test_bounds import PILLS

CODEC = Codec.load()


def pill_messages() -> list[tuple[str, bytes | None, bytes]]:
    return [(TOPIC_OF[type(r)], b"c", CODEC.encode(r)) for _, r, _ in PILLS]


def test_every_poison_pill_is_a_dead_letter_and_traffic_flows(env: Env, start_worker: Any) -> None:
    events = valid_events(12)
    good = as_messages(events)
    pills = pill_messages()
    env.journey("topics", "create")
    publish(env, [*good[:30], *pills, *good[30:]])

    worker = start_worker()
    worker.wait_until(
        lambda s: (
            s.get("events_rows", 0) >= len(events) and s.get("deadletter_rows", 0) >= len(pills)
        )
    )
    assert worker.stop(timeout=30) == 0

    letters = [
        CODEC.decode(m.value, DeadLetter)
        for m in consume_all(env, env.settings().topic("deadletter"), len(pills))
    ]
    assert len(letters) == len(pills)
    assert {letter.reason_code for letter in letters} == {"validation"}
    reasons = " | ".join(letter.reason for letter in letters)
    for name, _, field in PILLS:
        assert field in reasons, name
    (row,) = env.sql("SELECT uniqExact(event_id) AS ids FROM journey.events")
    assert row["ids"] == len(events)
    (dead,) = env.sql("SELECT count() AS n FROM journey.deadletters FINAL")
    assert dead["n"] == len(pills)


def test_sigterm_while_pills_flow_returns_within_30_seconds(env: Env, start_worker: Any) -> None:
    env.journey("topics", "create")
    worker = start_worker()
    worker.wait_until(lambda s: s.get("ready"))
    publish(env, pill_messages() * 20 + as_messages(valid_events(5)))
    worker.wait_until(lambda s: s.get("consumed", 0) > 0)
    started = time.monotonic()
    assert worker.stop(timeout=30) == 0
    assert time.monotonic() - started < 30
