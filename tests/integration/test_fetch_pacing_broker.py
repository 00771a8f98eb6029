"""Fetch pacing (streams/runtime/fetching.py) with aiokafka's real fetcher against the real
broker: while records keep coming the broker gathers them for ``gather_ms`` per fetch (far
fewer fetches than one per record), and after a pause the consumer long-polls again, so the
first record after it is fetched at once."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.runtime.fetching import GATHER_BYTES, pace_fetches
from tests.integration.conftest import BOOTSTRAP

LONG_POLL_MS = 3000
GATHER_MS = 100
RECORDS = 150


async def fetches_while_records_trickle_in(topic: str, paced: bool) -> tuple[int, Any, float]:
    """Fetches made while RECORDS records arrive one every 5 ms; then, after a pause, the
    fetcher and how long a single record took from its send to the consumer."""
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP, group_id=None, fetch_max_wait_ms=LONG_POLL_MS,
        auto_offset_reset="earliest",
    )  # fmt: skip
    if paced:
        pace_fetches(consumer, GATHER_MS)
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=0)
    await consumer.start()
    await producer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        fetcher: Any = consumer._fetcher
        fetches = 0
        proc = fetcher._proc_fetch_request

        async def counted(*args: Any) -> bool:
            nonlocal fetches
            fetches += 1
            found: bool = await proc(*args)
            return found

        fetcher._proc_fetch_request = counted
        got: list[bytes] = []

        async def consume(until: int) -> None:
            while len(got) < until:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                got.extend(r.value for r in batch.get(tp, []))

        consuming = asyncio.ensure_future(consume(RECORDS))
        for n in range(RECORDS):
            await producer.send_and_wait(topic, f"r{n}".encode(), partition=0)
            await asyncio.sleep(0.005)
        await asyncio.wait_for(consuming, 30)
        made = fetches
        await asyncio.sleep(GATHER_MS * 3 / 1000)  # a fetch comes back empty: long poll
        sent = time.monotonic()
        await producer.send_and_wait(topic, b"after the pause", partition=0)
        await asyncio.wait_for(consume(RECORDS + 1), 30)
        return made, fetcher, time.monotonic() - sent
    finally:
        await producer.stop()
        await consumer.stop()


async def test_paced_fetches_gather_while_records_flow_and_long_poll_after_a_pause() -> None:
    topic = f"it-{uuid.uuid4().hex[:10]}.pacing"
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    unpaced, _, _ = await fetches_while_records_trickle_in(topic, paced=False)
    paced, fetcher, after_pause = await fetches_while_records_trickle_in(topic, paced=True)
    # 150 records over about a second: unpaced nearly a fetch per record, paced one per 100 ms.
    assert paced * 3 < unpaced, (paced, unpaced)
    # After the pause the fetch is a long poll that returns at the first record: not held for
    # the long poll (3 s), as a fetch that waits for GATHER_BYTES would be.
    assert after_pause < LONG_POLL_MS / 1000 / 2, after_pause
    assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) in (
        (1, LONG_POLL_MS),  # the fetch in flight is a long poll again ...
        (GATHER_BYTES, GATHER_MS),  # ... or the one that brought the last record gathers
    )
