"""The guides' examples, run as written (docs/producing.md, docs/consuming-triggers.md), against
the real broker and a worker; the registry ones against tests/registry_replay.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import DeserializingConsumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer

from schemas.codec import Codec
from schemas.records import DeadLetter, MessageEngagement
from schemas.registry import confluent_frame
from tests.integration.conftest import BOOTSTRAP, Env, consume_all, publish
from tests.registry_replay import RegistryReplay

ROOT = Path(__file__).resolve().parents[2]
CODEC = Codec.load()


def example(guide: str, name: str) -> str:
    text = (ROOT / "docs" / guide).read_text()
    match = re.search(rf"<!-- example: {re.escape(name)} -->\n```\w+\n(.*?)\n```", text, re.S)
    assert match, f"no example {name} in docs/{guide}"
    return match.group(1)


def run_example(guide: str, name: str, env: Env, timeout: float = 120, **extra: str) -> str:
    code = example(guide, name)
    variables = {
        **os.environ,
        "BOOTSTRAP": BOOTSTRAP,
        "TOPIC_PREFIX": env.vars["JOURNEY_TOPIC_PREFIX"],
        **extra,
    }
    if name.startswith("kcat"):
        command = ["bash", "-c", code]
    elif name.startswith("java"):
        # Java's single-file launcher, with the client jars of the broker this test runs.
        source = Path(variables.get("JAVA_SOURCE_DIR", "/tmp")) / "ProduceOrder.java"
        source.write_text(code)
        libs = next((ROOT / ".cache").glob("kafka-*/libs"))
        command = ["java", "-cp", f"{libs}/*", str(source)]
    else:
        command = [sys.executable, "-c", code]
    done = subprocess.run(
        command, env=variables, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"example {name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_producer_examples_become_events_and_triggers(env: Env, start_worker: Any) -> None:
    """Every producer example (Python, kcat, Java), JSON and both Avro framings, is accepted on
    the right partition;
    the registry-framed order (confluent-kafka's AvroSerializer) becomes a trigger, and with the
    registry framing on the outputs, confluent-kafka's AvroDeserializer reads that trigger."""
    env.journey("topics", "create")
    tag = uuid.uuid4().hex[:6]
    customers = {name: f"{name}-{tag}" for name in ("json", "registry", "aiokafka", "kcat", "java")}
    with RegistryReplay() as registry:
        run_example("producing.md", "python-confluent-json", env, CUSTOMER_ID=customers["json"])
        run_example(
            "producing.md",
            "python-confluent-avro-registry",
            env,
            CUSTOMER_ID=customers["registry"],
            SCHEMA_REGISTRY_URL=registry.url,
        )
        run_example("producing.md", "python-aiokafka-avro", env, CUSTOMER_ID=customers["aiokafka"])
        run_example("producing.md", "kcat-json", env, CUSTOMER_ID=customers["kcat"])
        run_example(
            "producing.md",
            "java-json",
            env,
            CUSTOMER_ID=customers["java"],
            JAVA_SOURCE_DIR=str(env.tmp),
        )
        subject = f"{env.vars['JOURNEY_TOPIC_PREFIX']}shop.orders-value"
        assert subject in registry.state.subjects  # the serializer registered its schema

        worker = start_worker(
            JOURNEY_SCHEMA_REGISTRY_URL=registry.url,
            JOURNEY_OUTPUT_FRAMING="confluent",
            JOURNEY_SCHEMA_REGISTRY_AUTO_REGISTER="true",
        )
        status = worker.wait_until(lambda s: s.get("events_rows", 0) >= 5, timeout=120)
        assert status["dead_letters"] == {} and status["repartitioned"] == 0
        worker.wait_until(lambda s: s.get("emitted", 0) >= 4, timeout=60)
        assert worker.stop() == 0

        rows = env.sql("SELECT customer_id, event_type FROM journey.events ORDER BY customer_id")
        assert {(r["customer_id"], r["event_type"]) for r in rows} == {
            (customers["json"], "order.placed"),
            (customers["registry"], "order.placed"),
            (customers["aiokafka"], "order.placed"),
            (customers["kcat"], "cart.product_added"),
            (customers["java"], "order.placed"),
        }
        consumer = DeserializingConsumer(
            {
                "bootstrap.servers": BOOTSTRAP,
                "group.id": f"guide-{tag}",
                "auto.offset.reset": "earliest",
                "value.deserializer": AvroDeserializer(SchemaRegistryClient({"url": registry.url})),
            }
        )
        consumer.subscribe([f"{env.vars['JOURNEY_TOPIC_PREFIX']}journey.triggers"])
        triggers: list[dict[str, Any]] = []
        try:
            for _ in range(60):
                message = consumer.poll(1.0)
                if message is not None and message.error() is None:
                    triggers.append(message.value())
                if len(triggers) >= 4:
                    break
        finally:
            consumer.close()
    assert {(t["trigger_type"], t["customer_id"]) for t in triggers} == {
        ("ORDER_CONFIRMATION", customers["json"]),
        ("ORDER_CONFIRMATION", customers["registry"]),
        ("ORDER_CONFIRMATION", customers["aiokafka"]),
        ("ORDER_CONFIRMATION", customers["java"]),
    }
    assert all(t["attributes"]["first_order"] == "true" for t in triggers)


def test_registry_framing_without_a_registry_is_explained(env: Env, start_worker: Any) -> None:
    env.journey("topics", "create")
    publish(env, [("orders", b"c-1", confluent_frame(3, b"\x02\x00"))])
    worker = start_worker()
    worker.wait_until(lambda s: s.get("deadletter_rows", 0) >= 1)
    assert worker.stop() == 0
    (letter,) = [
        CODEC.decode(m.value, DeadLetter)
        for m in consume_all(env, env.settings().topic("deadletter"), 1)
    ]
    assert letter.reason_code == "no_registry"
    assert "JOURNEY_SCHEMA_REGISTRY_URL" in letter.reason
    shown = env.journey("dlq", "show", letter.dead_letter_id).stdout
    assert "JOURNEY_SCHEMA_REGISTRY_URL" in shown


def test_consumer_example_dedupes_and_reports(env: Env, start_worker: Any, tmp_path: Path) -> None:
    """The consuming guide's example reads the triggers of a worker, prints each once (also when
    run again) and reports DELIVERED back; kcat lists them too."""
    env.journey("topics", "create")
    tag = uuid.uuid4().hex[:6]
    run_example("producing.md", "python-confluent-json", env, CUSTOMER_ID=f"shopper-{tag}")
    worker = start_worker()
    worker.wait_until(lambda s: s.get("emitted", 0) >= 1)
    assert worker.stop() == 0
    extra = {"SEEN_DB": str(tmp_path / "seen.sqlite"), "RUN_SECONDS": "8", "GROUP_ID": f"g-{tag}"}
    first = run_example("consuming-triggers.md", "python-consume-triggers", env, **extra)
    assert first.count(f"ORDER_CONFIRMATION to shopper-{tag}") == 1
    # Another consumer group reads the same trigger again: the durable dedupe drops it.
    again = run_example(
        "consuming-triggers.md", "python-consume-triggers", env, **{**extra, "GROUP_ID": f"h-{tag}"}
    )
    assert "ORDER_CONFIRMATION" not in again
    (report,) = [
        CODEC.decode(m.value, MessageEngagement)
        for m in consume_all(env, env.settings().topic("engagement"), 1)
    ]
    assert (report.action, report.customer_id) == ("DELIVERED", f"shopper-{tag}")
    listed = run_example("consuming-triggers.md", "kcat-consume", env)
    assert f"key shopper-{tag}" in listed
