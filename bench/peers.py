"""The contestants of the throughput comparison (issue 13), each run as its own subprocess:

``python -m bench.peers {quix,dict,decode} --prefix P --expected N ...``

* ``quix``: a Quix Streams application running OUR model (``step`` then ``fire_due`` per event),
  the state stored as ``encode_state`` bytes in Quix's RocksDB store with its changelog topic,
  at-least-once (Quix's checkpoints: state flushed and producer flushed before the commit),
  the emitted triggers produced to a topic.
* ``dict``: the ceiling: an aiokafka loop over ``getmany``, decode, the same ``step`` /
  ``fire_due``, state objects in a dict, triggers produced; no durability at all.
* ``decode``: an aiokafka loop over ``getmany`` and ``Codec.decode``, nothing else.

All read the pre-filled input topics from offset 0 (a fresh consumer group, or none). Each
prints one JSON line at the end: events, seconds and CPU seconds of this process (all threads,
from /proc/self/stat) from the first event handled to the N-th, and the triggers emitted.

Timers: the Faust worker fires due timers on per-partition ticks; these loops have no timer
wheel, so they call ``fire_due`` for the customer of each event after ``step``. Timers of
customers with no later event stay pending here (the trigger counts in the report show it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from schemas.codec import Codec
from schemas.records import TOPIC_RECORDS
from streams.journey.config import JourneyConfig
from streams.journey.decisions import Emit
from streams.journey.model import fire_due, new_state, step
from streams.journey.state import JourneyState, decode_state, encode_state
from streams.runtime.ingest import wall_clock_ms
from streams.settings import Settings

_TICK = os.sysconf("SC_CLK_TCK")
CONTESTANTS = ("quix", "dict", "decode")


def cpu_s() -> float:
    """User + system CPU seconds of this process, all threads (librdkafka's included)."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


class Meter:
    """First event to the N-th: wall and CPU seconds."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.triggers = 0
        self.t0 = self.c0 = self.t1 = self.c1 = 0.0
        self.process_start_cpu = cpu_s()

    def start(self) -> None:
        self.t0, self.c0 = time.monotonic(), cpu_s()

    def done(self) -> bool:
        return self.count >= self.expected

    def finish(self) -> None:
        self.t1, self.c1 = time.monotonic(), cpu_s()

    def result(self, **extra: Any) -> dict[str, Any]:
        seconds = max(self.t1 - self.t0, 1e-9)
        cpu = self.c1 - self.c0
        return {
            "events": self.count,
            "seconds": round(seconds, 3),
            "events_per_s": round(self.count / seconds, 1),
            "cpu_s": round(cpu, 3),
            "cpu_s_per_1k": round(1000 * cpu / self.count, 4) if self.count else None,
            "cores": round(cpu / seconds, 2),
            "triggers": self.triggers,
            "process_cpu_s_total": round(cpu_s(), 2),
            **extra,
        }


def apply(
    state: JourneyState, record: Any, now: int, config: JourneyConfig
) -> tuple[JourneyState, list[Any]]:
    """``step``, then the customer's timers that are due (no timer wheel here): the triggers."""
    state, decisions = step(state, record, now, config)
    fire = state.next_fire_at()
    if fire is not None and fire <= now and not state.erased:
        state, more = fire_due(state, now, config)
        decisions += more
    return state, [d.trigger for d in decisions if isinstance(d, Emit)]


# --- decode and dict: plain aiokafka loops -----------------------------------------------------
async def aiokafka_loop(
    args: argparse.Namespace, settings: Settings, model: bool
) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    codec = Codec.load(max_value_bytes=settings.max_value_bytes)
    config = settings.journey
    record_of = {full: TOPIC_RECORDS[short] for short, full in settings.input_topics().items()}
    consumer = AIOKafkaConsumer(
        *record_of,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    out_topic = args.triggers_topic
    if model:
        await create_topic(settings, out_topic)
    meter = Meter(args.expected)
    states: dict[str, JourneyState] = {}
    decode = codec.decode
    started = time.monotonic()
    try:
        while not meter.done():
            if time.monotonic() - started > args.timeout:
                raise TimeoutError(f"{meter.count:,} of {args.expected:,} after {args.timeout}s")
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            if not batch:
                continue
            if not meter.count:
                meter.start()
            sends = []
            for tp, messages in batch.items():
                cls = record_of[tp.topic]
                for message in messages:
                    record = decode(message.value, cls)
                    if not model:
                        continue
                    now = wall_clock_ms()
                    key = record.customer_id
                    state = states.get(key) or new_state(key)
                    states[key], triggers = apply(state, record, now, config)
                    for trigger in triggers:
                        sends.append(
                            await producer.send(out_topic, codec.encode(trigger), key=key.encode())
                        )
                meter.count += len(messages)
            if sends:
                meter.triggers += len(sends)
                await asyncio.gather(*sends)  # the ceiling still waits for its outputs
            if meter.done():
                meter.finish()
    finally:
        await consumer.stop()
        await producer.stop()
    return meter.result(customers=len(states) if model else None)


async def create_topic(settings: Settings, name: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(name, settings.partitions, 1)])
        while name not in await admin.list_topics():
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


# --- quix ----------------------------------------------------------------------------------------
def _state_dumps(value: Any) -> bytes:
    """Quix serializes state keys and values with this: our values are already bytes."""
    if isinstance(value, bytes):
        return value
    return json.dumps(value, separators=(",", ":")).encode()


def _state_loads(value: bytes) -> bytes:
    return value


def quix_app(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    import logging

    from quixstreams import Application
    from quixstreams.models.topics import TopicConfig
    from quixstreams.state.rocksdb import RocksDBOptions

    codec = Codec.load(max_value_bytes=settings.max_value_bytes)
    config = settings.journey
    state_dir = Path(args.state_dir)
    shutil.rmtree(state_dir, ignore_errors=True)
    app = Application(
        broker_address=settings.kafka_bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        rocksdb_options=RocksDBOptions(dumps=_state_dumps, loads=_state_loads),
        use_changelog_topics=True,
        processing_guarantee="at-least-once",
        loglevel=logging.WARNING,
    )
    meter = Meter(args.expected)
    frames = []
    for short, full in settings.input_topics().items():
        cls = TOPIC_RECORDS[short]
        topic = app.topic(
            full,
            value_deserializer="bytes",
            key_deserializer="bytes",
        )
        frames.append(app.dataframe(topic).apply(functools.partial(codec.decode, expected=cls)))
    sdf = functools.reduce(lambda a, b: a.concat(b), frames)
    # The merged stream's id (its store and changelog name) would join all seven topic names,
    # past Kafka's 249 characters: the same stream under a short id.
    sdf = sdf.__dataframe_clone__(stream=sdf.stream, stream_id="journeys")
    out = app.topic(
        args.triggers_topic,
        value_serializer="bytes",
        key_serializer="bytes",
        config=TopicConfig(num_partitions=settings.partitions, replication_factor=1),
    )

    def journey(record: Any, state: Any) -> list[bytes]:
        if not meter.count:
            meter.start()
        stored = state.get("s")
        js = decode_state(stored) if stored is not None else new_state(record.customer_id)
        js, triggers = apply(js, record, wall_clock_ms(), config)
        state.set("s", encode_state(js))
        meter.count += 1
        meter.triggers += len(triggers)
        if meter.done():
            meter.finish()
            app.stop()
        return [codec.encode(t) for t in triggers]

    sdf = sdf.apply(journey, stateful=True, expand=True)
    sdf.to_topic(out)
    app.run()
    if not meter.t1:
        meter.finish()
    return meter.result()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peers")
    p.add_argument("contestant", choices=CONTESTANTS)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--expected", type=int, required=True)
    p.add_argument("--group", default="")
    p.add_argument("--state-dir", default="")
    p.add_argument("--triggers-topic", default="")
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args(argv)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        kafka_bootstrap=args.bootstrap,
        topic_prefix=args.prefix,
        partitions=args.partitions,
    )
    if args.contestant == "quix":
        result = quix_app(args, settings)
    else:
        result = asyncio.run(aiokafka_loop(args, settings, model=args.contestant == "dict"))
    result["contestant"] = args.contestant
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
