"""A Schema Registry outage holds the stream back (backpressure); it never makes dead letters."""

from __future__ import annotations

import json
import time
from typing import Any

from schemas.codec import Codec
from schemas.records import OrderChanged
from schemas.registry import confluent_frame
from tests.integration.conftest import Env, publish
from tests.registry_replay import RegistryReplay

CODEC = Codec.load()


def test_registry_outage_is_backpressure(env: Env, start_worker: Any) -> None:
    env.journey("topics", "create")
    order = OrderChanged("e-out-1", "c-out", 1_764_150_000_000, "o-out", "PLACED", 100, "EUR")
    schema = CODEC.schema_for("OrderChanged")
    body = CODEC.encode(order)[10:]  # the Avro body after the single-object header: same schema
    with RegistryReplay() as registry:
        schema_id = registry.state.add("shop.orders-value", json.dumps(schema))
        registry.state.down = True
        publish(env, [("orders", b"c-out", confluent_frame(schema_id, body))])
        worker = start_worker(
            JOURNEY_SCHEMA_REGISTRY_URL=registry.url,
            JOURNEY_SINK_RETRY_BACKOFF="100ms",
            JOURNEY_SINK_RETRY_BACKOFF_MAX="500ms",
        )
        worker.wait_until(lambda s: s.get("consumed", 0) >= 1)
        asked = len(registry.state.requests)
        time.sleep(4)
        status = worker.wait_until(lambda s: True)
        assert status["dead_letters"] == {} and status["accepted"] == 0
        assert len(registry.state.requests) > asked  # it keeps asking, it does not give up
        registry.state.down = False
        status = worker.wait_until(lambda s: s.get("events_rows", 0) >= 1)
        assert status["dead_letters"] == {}
        assert worker.stop() == 0
