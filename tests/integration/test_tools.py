"""`journey publish` and `journey tail` against the real broker, a worker and chdb."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.integration.conftest import BOOTSTRAP, Env, publish


def test_publish_then_tail_triggers_decisions_and_deadletters(
    env: Env, start_worker: Any, tmp_path: Path
) -> None:
    env.journey("topics", "create")
    lines = tmp_path / "events.jsonl"
    lines.write_text(
        json.dumps({"customer_id": "pub-1", "order_id": "o-p1", "status": "PLACED",
                    "total_minor": 4995, "currency": "EUR"}) + "\n"
        + json.dumps({"topic": "cart", "customer_id": "pub-2", "cart_id": "k-p2",
                      "action": "PRODUCT_ADDED", "product_id": "sku-1", "quantity": 1}) + "\n"
    )  # fmt: skip
    out = env.journey("publish", "--topic", "orders", str(lines)).stdout
    assert "shop.orders: 1 published" in out and "shop.cart: 1 published" in out
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"customer_id": "pub-9", "order_id": "o"}\n')
    bad = env.journey("publish", "--topic", "orders", str(wrong), check=False)
    assert bad.returncode != 0 and "missing required field 'status'" in bad.stderr
    assert "nothing was sent" in bad.stderr
    publish(env, [("orders", b"pub-3", b"\x00\x00\x00\x00\x07body")])

    worker = start_worker()
    status = worker.wait_until(
        lambda s: s.get("emitted", 0) >= 1 and s.get("deadletter_rows", 0) >= 1
    )
    assert status["repartitioned"] == 0  # keyed and partitioned as the contract says
    triggers = env.journey("tail", "triggers", "--from-beginning", "--limit", "1", "--json").stdout
    (trigger,) = [json.loads(line) for line in triggers.splitlines()]
    assert (trigger["trigger_type"], trigger["customer_id"]) == ("ORDER_CONFIRMATION", "pub-1")
    human = env.journey("tail", "triggers", "--from-beginning", "--limit", "1").stdout
    assert "ORDER_CONFIRMATION" in human and "first_order=true" in human
    letters = env.journey("tail", "deadletter", "--from-beginning", "--limit", "1").stdout
    assert "no_registry" in letters
    worker.wait_until(lambda s: s.get("trigger_rows", 0) >= 1)
    assert worker.stop() == 0
    decisions = env.journey(
        "tail", "decisions", "--from-beginning", "--limit", "1", "--json"
    ).stdout
    (decision,) = [json.loads(line) for line in decisions.splitlines()]
    assert (decision["status"], decision["customer_id"]) == ("EMITTED", "pub-1")


def test_topics_create_makes_the_journey_tables_changelog_before_any_worker(env: Env) -> None:
    """Left to Faust, a starting worker created the changelog while its consumer already had the
    cluster's metadata: as the group's leader it then left the topic out of every assignment for
    minutes (no restore, no standby: a worker taking a partition over started from an empty
    table). ``journey topics create`` (and every start) makes it first, compacted as the table
    needs, with the inputs' partition count; ``topics list`` shows it."""
    settings = env.settings()
    changelog = settings.changelog_topic()
    out = env.journey("topics", "create", "--partitions", "3").stdout
    assert f" created  {changelog}" in out
    again = env.journey("topics", "create", "--partitions", "3").stdout
    assert f"  exists  {changelog}" in again

    async def describe() -> tuple[int, dict[str, str]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
        await admin.start()
        try:
            (meta,) = await admin.describe_topics([changelog])
            (response,) = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, changelog)]
            )
            configs = {c[0]: c[1] for c in response.resources[0][4]}
            return len(meta["partitions"]), configs
        finally:
            await admin.close()

    partitions, configs = asyncio.run(describe())
    assert partitions == 3
    assert configs["cleanup.policy"] == "compact"
    assert configs["segment.ms"] == str(settings.changelog_segment_ms)
    assert configs["min.cleanable.dirty.ratio"] == str(settings.changelog_dirty_ratio)
    listed = env.journey("topics", "list").stdout
    assert any(line.split() == [changelog, "3"] for line in listed.splitlines())


def test_a_changelog_with_another_partition_count_than_the_inputs_is_refused(env: Env) -> None:
    """The changelog's partition p holds the states of the inputs' partition p: a changelog
    made by hand with another count is an error that names both, not a worker that starts."""
    changelog = env.settings().changelog_topic()

    async def make() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(changelog, 2, 1)])
        finally:
            await admin.close()

    asyncio.run(make())
    done = env.journey("topics", "create", "--partitions", "3", check=False)
    assert done.returncode != 0
    assert f"{changelog} has 2 partitions and the input topics 3" in done.stderr
    worker = env.journey("worker", check=False)
    assert worker.returncode != 0 and "has 2 partitions" in worker.stderr
