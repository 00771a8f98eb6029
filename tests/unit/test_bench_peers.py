"""bench/peers.py's facts contestants (issue 13, "produces the same outputs"): ``apply_facts``
builds the same records, byte for byte, as the journey engine publishes for the same events."""

from __future__ import annotations

from collections import Counter

import pytest

import streams.runtime.engine as engine_module
from bench.peers import apply_facts
from schemas.codec import Codec
from streams.clock import Clock
from streams.journey.config import JourneyConfig
from streams.journey.model import new_state
from streams.journey.state import JourneyState
from streams.ops.simulator import SimulationConfig, generate
from tests.unit.test_engine import SETTINGS, World

CODEC = Codec.load()
DAY = 86_400_000
START = 1_780_000_000_000
KIND_OF = {
    SETTINGS.topic("journey_events"): "events",
    SETTINGS.topic("decisions"): "decisions",
    SETTINGS.topic("triggers"): "triggers",
}


async def test_apply_facts_builds_what_the_engine_publishes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [START]
    monkeypatch.setattr(engine_module, "wall_clock_ms", lambda: now[0])  # ingested_at
    world = World()
    world.engine.clock = Clock(wall_ms=lambda: now[0])
    config = JourneyConfig()
    events = generate(
        SimulationConfig(seed=7, customers=300, start_ms=START, arrival_window_ms=DAY, run_id="p")
    )
    # Each customer on a partition of its own: the engine's tick of the partition after each of
    # the customer's events fires its due timers, as the contestants do at the customer's events.
    partition_of: dict[str, int] = {}
    states: dict[str, JourneyState] = {}
    peer: list[tuple[str, bytes, bytes | None]] = []
    snapshots: dict[bytes, bytes | None] = {}
    for offset, event in enumerate(events):
        if offset == 4_000:
            break
        record = event.record
        assert record is not None
        now[0] = max(now[0], event.at_ms)
        key = record.customer_id
        partition = partition_of.setdefault(key, len(partition_of))
        where = (event.topic, partition, offset)
        await world.engine.on_event(record, *where)
        await world.engine.on_tick(partition, "journey.ticks", offset)
        # Durable, and the outbox trimmed: the engine's outbox sequence then restarts from 0
        # in the state an erasure leaves, and the erasure's decisions are published.
        await world.durable()
        await world.engine.on_tick(partition, "journey.ticks", offset)
        states[key], out = apply_facts(
            states.get(key) or new_state(key), record, now[0], config, CODEC, where
        )
        for kind, value in out:
            if kind in ("snapshots", "tombstones"):
                snapshots[key.encode()] = value
            else:
                peer.append((kind, key.encode(), value))
    published = [
        (KIND_OF[topic], key, value)
        for topic, key, value in world.broker.records
        if topic in KIND_OF
    ]
    kinds = Counter(kind for kind, _, _ in published)
    assert kinds["events"] > 3_900 and kinds["decisions"] > 0 and kinds["triggers"] > 0
    assert peer == published
    assert kinds["events"] < 4_000  # (an erased customer's later events are not published)
    # Snapshots: the engine's newest per customer (coalesced until a flush) is the contestant's.
    sent = {
        key: value
        for topic, key, value in world.broker.records
        if topic == SETTINGS.topic("snapshots")
    }
    assert sent == snapshots
