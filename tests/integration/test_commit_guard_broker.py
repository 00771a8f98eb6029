"""The commit guard in a real Faust app against the real broker: offsets 0, 1, 3 and 4 of a
partition are acked, 2 never is. The group's committed offset must reach 2 and never pass it
(stock faust-streaming 0.15.3 commits 5: ``streams/runtime/commit_guard.py``, case 2). And a
partition written in transactions, whose commit markers take offsets that are not messages: the
guard commits over them to the end (the holes are proven by aiokafka's own fetches)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from confluent_kafka import Producer

from streams.runtime import commit_guard
from streams.runtime.commit_guard import install_commit_guard
from tests.integration.conftest import BOOTSTRAP

NEVER_ACKED = 2
MESSAGES = 5


async def committed(admin: AIOKafkaAdminClient, group: str, tp: TopicPartition) -> int | None:
    offsets = await admin.list_consumer_group_offsets(group)
    found = offsets.get(tp)
    return None if found is None or found.offset < 0 else int(found.offset)


def produce_in_transactions(topic: str, tag: str) -> int:
    """Three committed transactions (another client library, as a shop's producer might be):
    m0 m1 marker m2 marker m3 marker. Returns the partition's end offset."""
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "transactional.id": f"guard-it-{tag}"})
    producer.init_transactions(30)
    for values in ([b"m0", b"m1"], [b"m2"], [b"m3"]):
        producer.begin_transaction()
        for value in values:
            producer.produce(topic, value=value, partition=0)
        producer.commit_transaction(30)
    return 7


async def commit_and_delete(group: str, tp: TopicPartition, committed: int, before: int) -> None:
    """The group committed ``committed`` long ago; retention has since deleted the records
    below ``before`` (the group was stopped longer than the topic's retention)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=group)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: committed})
    finally:
        await consumer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(before)})
    finally:
        await admin.close()


async def run(
    tmp: Path,
    guard: bool,
    *,
    never_acked: int | None = NEVER_ACKED,
    transactions: bool = False,
    retention: tuple[int, int] | None = None,
    watch: int = 10,
    dropped_once: int | None = None,
    handled: list[int] | None = None,
) -> list[int | None]:
    """The committed offsets seen while a Faust app handles the partition; the first entry is
    the one after everything but offset ``never_acked`` was acked and several commit intervals
    passed. ``retention``: (committed, deleted before) before the app starts.
    ``dropped_once``: that offset's first delivery is dropped unhandled (neither acked nor
    waited for, as a buffer emptied by a rebalance once did): only the guard's heal brings it
    again. ``handled``: filled with the offsets the agent received, in order."""
    tag = uuid.uuid4().hex[:10]
    topic, group = f"it-{tag}.guard", f"guard-it-{tag}"
    tp = TopicPartition(topic, 0)
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        if transactions:
            end = await asyncio.to_thread(produce_in_transactions, topic, tag)
            expected = [0, 1, 3, 5]
        else:
            producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
            await producer.start()
            try:
                for n in range(MESSAGES):
                    await producer.send_and_wait(topic, f"m{n}".encode(), partition=0)
            finally:
                await producer.stop()
            end, expected = MESSAGES, list(range(MESSAGES))
        if retention is not None:
            await commit_and_delete(group, tp, *retention)
            expected = list(range(retention[1], MESSAGES))

        app = faust.App(
            group,
            broker=f"kafka://{BOOTSTRAP}",
            store="memory://",
            datadir=str(tmp / "faust"),
            web_enabled=False,
            autodiscover=False,
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=0.2,
            topic_allow_declare=False,
        )
        if guard:
            install_commit_guard(app)
        if handled is None:
            handled = []
        received = handled

        @app.agent(app.topic(topic, key_serializer="raw", value_serializer="raw"))
        async def agent(stream: Any) -> None:
            async for event in stream.noack().events():
                offset = event.message.offset
                received.append(offset)
                if offset == dropped_once and received.count(offset) == 1:
                    app.consumer.unacked.discard(event.message)
                    continue
                if offset != never_acked:
                    event.ack()

        await app.start()
        try:
            deadline = time.monotonic() + 60
            while len(set(received)) < len(expected) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert sorted(set(received)) == expected, received
            assert dropped_once is not None or len(received) == len(expected), received
            assert end >= expected[-1] + 1
            seen: list[int | None] = []
            for _ in range(watch):  # 0.2 s each: a commit interval
                await asyncio.sleep(0.2)
                seen.append(await committed(admin, group, tp))
            return seen
        finally:
            await app.stop()
    finally:
        await admin.close()


def test_the_broker_never_gets_an_offset_past_a_message_that_was_not_acked(
    tmp_path: Path,
) -> None:
    seen = asyncio.run(run(tmp_path, guard=True))
    assert seen[-1] == NEVER_ACKED, seen
    assert all(offset is None or offset <= NEVER_ACKED for offset in seen), seen


def test_without_the_guard_faust_commits_past_it(tmp_path: Path) -> None:
    """The attack is real: stock Faust commits 5 (re-check the guard if this ever fails)."""
    seen = asyncio.run(run(tmp_path, guard=False))
    assert seen[-1] == MESSAGES, seen


def test_the_guard_commits_over_transaction_markers(tmp_path: Path) -> None:
    """Offsets 2, 4 and 6 are commit markers: no record is fetched there, and the guard must not
    stall its commit at them (it would heal by seeking back to them for ever). The last one ends
    the partition: only the range of aiokafka's fetch tells it is not a message."""
    seen = asyncio.run(run(tmp_path, guard=True, never_acked=None, transactions=True))
    assert seen[-1] == 7, seen


def test_the_guard_commits_over_offsets_retention_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group committed 1 and was stopped; retention deleted offsets 0..2 meanwhile. aiokafka's
    fetch from 1 is out of range and it resets to 3: no fetch covers 1 and 2 again, so the
    commit stalls there until the guard's heal finds the broker's log start beyond them and goes
    on from it (no seek back for ever)."""
    monkeypatch.setattr(commit_guard, "STALL_SECONDS", 1.0)
    monkeypatch.setattr(commit_guard, "STALL_CHECK_SECONDS", 0.5)
    seen = asyncio.run(run(tmp_path, guard=True, never_acked=None, retention=(1, 3), watch=25))
    assert seen[-1] == MESSAGES, seen


def test_a_dropped_message_is_delivered_again_by_the_guards_heal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offset 2 is dropped unhandled on its first delivery, 3 and 4 are acked: the commit waits
    at 2, and after ``STALL_SECONDS`` the heal seeks the partition back to it on the real
    consumer (a seek run in the consumer's thread, ``CommitGuard._seek``). 2 comes again, is
    acked, and the commit reaches the end.

    The stall is 3 s here (10 s in a worker): the fetch after the seek can wait behind a long
    poll in flight (up to 1.5 s), and a stall shorter than that heals again before the message
    is back (a full ``make test`` saw 2 delivered three times with 1 s)."""
    monkeypatch.setattr(commit_guard, "STALL_SECONDS", 3.0)
    monkeypatch.setattr(commit_guard, "STALL_CHECK_SECONDS", 0.5)
    handled: list[int] = []
    seen = asyncio.run(
        run(tmp_path, guard=True, never_acked=None, dropped_once=2, handled=handled, watch=50)
    )
    assert handled.count(2) >= 2, handled  # dropped, then delivered again by the heal
    assert seen[-1] == MESSAGES, seen
