"""Creating the contract's topics and checking that the journey's inputs are co-partitioned."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from streams.settings import Settings

log = logging.getLogger(__name__)

# Dead letters are kept long enough for someone to look at them and replay them.
DEADLETTER_RETENTION_MS = 30 * 86_400_000
TICKS_RETENTION_MS = 3_600_000


class BrokerUnavailable(RuntimeError):
    pass


class TopicLayoutError(RuntimeError):
    pass


def unreachable(settings: Settings, exc: BaseException) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc}). Start the local broker with "
        "`make kafka-up`, or set JOURNEY_KAFKA_BOOTSTRAP (and the JOURNEY_KAFKA_SECURITY_* "
        "options) to your cluster."
    )


async def _admin(settings: Settings) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=f"{settings.app_id}-admin",
        request_timeout_ms=15_000,
        **settings.kafka_client_options(),
    )
    try:
        await admin.start()
    except (KafkaConnectionError, OSError) as exc:
        await admin.close()
        raise unreachable(settings, exc) from exc
    return admin


async def partition_counts(settings: Settings, topics: Iterable[str]) -> dict[str, int | None]:
    """Partition count of each topic, ``None`` where the topic does not exist."""
    wanted = list(topics)
    admin = await _admin(settings)
    try:
        existing = set(await admin.list_topics())
        present = [t for t in wanted if t in existing]
        described = await admin.describe_topics(present) if present else []
    finally:
        await admin.close()
    counts: dict[str, int | None] = dict.fromkeys(wanted)
    for topic in described:
        if topic.get("error_code", 0) == 0:
            counts[topic["topic"]] = len(topic["partitions"])
    return counts


async def create_topics(settings: Settings, partitions: int | None = None) -> dict[str, str]:
    """Create every contract topic that is missing. Returns topic -> 'created' | 'exists'."""
    partitions = partitions or settings.partitions
    admin = await _admin(settings)
    outcome: dict[str, str] = {}
    try:
        existing = set(await admin.list_topics())
        for topic in settings.all_topics():
            if topic in existing:
                outcome[topic] = "exists"
                continue
            config = {}
            if topic == settings.topic("deadletter"):
                config["retention.ms"] = str(DEADLETTER_RETENTION_MS)
            elif topic == settings.topic("snapshots"):
                # The newest snapshot per customer is the current one; a tombstone erases.
                config["cleanup.policy"] = "compact"
            elif topic == settings.topic("ticks"):
                # Ticks only matter for a moment; keep the topic small.
                config["retention.ms"] = str(TICKS_RETENTION_MS)
                config["segment.ms"] = str(TICKS_RETENTION_MS)
            try:
                await admin.create_topics(
                    [NewTopic(topic, partitions, settings.replication_factor, topic_configs=config)]
                )
                outcome[topic] = "created"
            except TopicAlreadyExistsError:
                outcome[topic] = "exists"
            except KafkaError as exc:
                raise TopicLayoutError(f"could not create topic {topic}: {exc}") from exc
        # The journey table's changelog too, before any worker starts. Left to Faust, a worker
        # creates it as it starts, while its consumer already has the cluster's metadata:
        # missing there, the topic is left out of every assignment the worker makes as the
        # group's leader ("Ignoring missing topic") until its metadata is refreshed (5 minutes):
        # no partition of the table is restored or kept as a standby, and a worker taking a
        # partition over starts from an empty table (tests/integration/test_multi_worker.py).
        # Its partition count is the inputs' (they may have been created with another count).
        changelog = settings.changelog_topic()
        if changelog in existing:
            outcome[changelog] = "exists"
        else:
            config = {"cleanup.policy": "compact", **settings.changelog_config()}
            (first_input, *_) = settings.copartitioned_topics()
            counts = await partition_counts(settings, [first_input])
            try:
                await admin.create_topics(
                    [NewTopic(changelog, counts[first_input] or partitions,
                              settings.replication_factor, topic_configs=config)]
                )  # fmt: skip
                outcome[changelog] = "created"
            except TopicAlreadyExistsError:
                outcome[changelog] = "exists"
            except KafkaError as exc:
                raise TopicLayoutError(f"could not create topic {changelog}: {exc}") from exc
        # A new topic takes a moment to appear in every broker's metadata: wait for it, so
        # that whatever runs next (the worker's layout check) sees the topics just created.
        deadline = asyncio.get_running_loop().time() + 30
        while not {*settings.all_topics(), changelog} <= set(await admin.list_topics()):
            if asyncio.get_running_loop().time() > deadline:
                raise TopicLayoutError("created topics did not appear in the metadata within 30 s")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    return outcome


def check_copartitioning(settings: Settings, counts: dict[str, int | None]) -> int:
    """The journey agent keeps one state per customer: all its inputs must share a layout."""
    missing = sorted(t for t, n in counts.items() if n is None)
    if missing:
        raise TopicLayoutError(
            f"missing topic(s): {', '.join(missing)}. Create them with `journey topics create`."
        )
    distinct = {n for n in counts.values() if n is not None}
    if len(distinct) > 1:
        listing = ", ".join(f"{t}={n}" for t, n in sorted(counts.items()))
        raise TopicLayoutError(
            "the input topics are not co-partitioned: they must all have the same partition count "
            f"so that every event of a customer reaches the same worker ({listing}). Give them the "
            "same count before starting the worker; adding partitions to a topic that holds data "
            "moves customers between partitions: follow docs/runbook.md (adding partitions)."
        )
    return distinct.pop()


async def verify_layout(settings: Settings, wait_for_missing: float = 10.0) -> int:
    """Partition count of the journey's inputs, or a TopicLayoutError saying what to fix.

    A topic created a moment ago may not be in every broker's metadata yet: missing topics are
    asked for again for a few seconds before they count as missing. The journey table's
    changelog, where it exists, must have the inputs' count too (its partition p holds the
    states of the inputs' partition p).
    """
    changelog = settings.changelog_topic()
    deadline = asyncio.get_running_loop().time() + wait_for_missing
    while True:
        counts = await partition_counts(settings, [*settings.copartitioned_topics(), changelog])
        stored = counts.pop(changelog)
        if all(n is not None for n in counts.values()):
            break
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.5)
    count = check_copartitioning(settings, counts)
    if stored is not None and stored != count:
        raise TopicLayoutError(
            f"the journey table's changelog {changelog} has {stored} partitions and the input "
            f"topics {count}: its partition p must hold the states of the inputs' partition p. "
            "A changelog is never repartitioned in place: follow docs/runbook.md (adding "
            "partitions)."
        )
    return count


async def wait_for_group_coordinator(
    settings: Settings, group_ids: Iterable[str], timeout: float = 60.0
) -> None:
    """Return once the broker has a coordinator for each consumer group.

    On a fresh broker the offsets topic is created by the first group request, and until it is
    ready every consumer logs GroupCoordinatorNotAvailable at ERROR level: a healthy start would
    print errors. Asking here first, quietly, lets the worker start when the broker is ready.
    """
    admin = await _admin(settings)
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        for group_id in group_ids:
            while True:
                try:
                    await admin.find_coordinator(group_id)
                    break
                except KafkaError as exc:
                    if asyncio.get_running_loop().time() > deadline:
                        raise BrokerUnavailable(
                            f"Kafka at {settings.kafka_bootstrap} has no group coordinator for "
                            f"{group_id} after {timeout:.0f} s ({exc})"
                        ) from exc
                    await asyncio.sleep(0.2)
    finally:
        await admin.close()
