"""The contestants of the throughput comparison (issue 13), each run as its own subprocess:

``python -m bench.peers {quix,dict,decode} --prefix P --expected N ...``

* ``quix``: a Quix Streams application running OUR model (``step`` then ``fire_due`` per event),
  the state stored as ``encode_state`` bytes in Quix's RocksDB store with its changelog topic,
  at-least-once (Quix's checkpoints: state flushed and producer flushed before the commit),
  the emitted triggers produced to a topic.
* ``dict``: the ceiling: an aiokafka loop over ``getmany``, decode, the same ``step`` /
  ``fire_due``, state objects in a dict, triggers produced; no durability at all.
* ``decode``: an aiokafka loop over ``getmany`` and ``Codec.decode``, nothing else.
* ``quix-facts`` and ``dict-facts``: the same two, producing what the journey worker produces
  per event since issue 12 (``streams/runtime/engine.py``, ``outputs.py``), built by the
  project's own functions (``apply_facts``): the canonical event, a decision record per decision
  (emitted and dropped), the triggers, the customer's snapshot (a tombstone on erasure), each
  keyed by customer id, to topics of their own (``--facts-prefix``: ``events``, ``decisions``,
  ``customers``; the triggers to ``--triggers-topic``). ``dict-facts`` coalesces the snapshots
  per ``getmany`` batch (the newest per customer, as the worker does per acknowledgement flush);
  ``quix-facts`` produces one per event: Quix has no per-checkpoint hook in a dataframe to
  coalesce them with (a sink is flushed per checkpoint, but would need a producer of its own).
  Neither keeps the worker's outbox (decisions kept in the state until the broker acknowledged
  them): Quix's at-least-once checkpoint flushes the producer before committing, the dict loop
  has no durability.

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
from schemas.records import TOPIC_RECORDS, CustomerChanged, CustomerSnapshot, Decision, JourneyEvent
from streams.journey.config import JourneyConfig
from streams.journey.decisions import Drop, Emit, Erase
from streams.journey.model import fire_due, new_state, step
from streams.journey.state import JourneyState, decode_state, encode_state
from streams.runtime import facts
from streams.runtime.engine import customer_snapshot_row
from streams.runtime.ingest import wall_clock_ms
from streams.settings import Settings

_TICK = os.sysconf("SC_CLK_TCK")
CONTESTANTS = ("quix", "quix-facts", "dict", "dict-facts", "decode")
# What the facts contestants produce, as the worker's ``Outputs`` counts it.
KINDS = ("events", "decisions", "triggers", "snapshots", "tombstones")


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


def _decided(
    decisions: list[Any], stage: str, codec: Codec, out: list[tuple[str, bytes | None]]
) -> bool:
    """The records of the decisions (as the engine's ``_prepare`` builds them): a decision record
    each, the trigger after an emitted one's. True if one of them erases the customer."""
    erase = False
    for decision in decisions:
        match decision:
            case Emit(trigger=trigger):
                out.append(("decisions", _decision_writer(codec)(facts.emitted(trigger))))
                out.append(("triggers", codec.encode(trigger)))
            case Drop():
                out.append(("decisions", _decision_writer(codec)(facts.dropped(decision, stage))))
            case Erase():
                erase = True
    return erase


@functools.cache
def _decision_writer(codec: Codec) -> Any:
    """A decision record from its outbox entry, as the engine writes it (``Codec.row_encoder``)."""
    return codec.row_encoder(Decision, facts.OUTBOX_FIELDS)


@functools.cache
def _snapshot_writer(codec: Codec) -> Any:
    """A snapshot from its row, as the engine writes it (``Codec.row_encoder``)."""
    return codec.row_encoder(CustomerSnapshot, facts.SNAPSHOT_FIELDS)


@functools.cache
def _event_writer(codec: Codec) -> Any:
    """A canonical event from its row, as the engine writes it (``Codec.row_encoder``)."""
    return codec.row_encoder(JourneyEvent, facts.JOURNEY_EVENT_FIELDS)


def apply_facts(
    state: JourneyState,
    record: Any,
    now: int,
    config: JourneyConfig,
    codec: Codec,
    where: tuple[str, int, int],
) -> tuple[JourneyState, list[tuple[str, bytes | None]]]:
    """``apply``, and what the worker publishes for the event (``JourneyEngine.on_event``), in its
    order: the canonical event, each decision (and trigger), then the customer's snapshot, or a
    tombstone (None) if erased. ``where``: the input (topic, partition, offset). The due timers
    fired here go with the event (the worker fires them on its ticks, with their own snapshot)."""
    out: list[tuple[str, bytes | None]] = []
    if state.erased:  # nothing about an erased customer is kept or sent
        if isinstance(record, CustomerChanged) and record.action == "ERASED":
            out.append(("tombstones", None))
        return state, out
    state, decisions = step(state, record, now, config)
    if not state.erased:
        out.append(("events", _event_writer(codec)(facts.canonical_event_row(record, now, *where))))
    erase = _decided(decisions, state.stage, codec, out)
    fire = state.next_fire_at()
    if fire is not None and fire <= now and not state.erased:
        state, more = fire_due(state, now, config)
        erase = _decided(more, state.stage, codec, out) or erase
    if erase:
        out.append(("tombstones", None))
    elif not state.erased:
        row = customer_snapshot_row(state, now, config)
        out.append(("snapshots", _snapshot_writer(codec)(row)))
    return state, out


# --- decode and dict: plain aiokafka loops -----------------------------------------------------
async def aiokafka_loop(
    args: argparse.Namespace, settings: Settings, model: bool, with_facts: bool = False
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
    topics = output_topics(args) if with_facts else {"triggers": out_topic}
    if model:
        for topic in set(topics.values()):
            await create_topic(settings, topic)
    produced = dict.fromkeys(KINDS, 0)
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
            snapshots: dict[bytes, bytes] = {}  # dict-facts: the newest per customer per batch
            for tp, messages in batch.items():
                cls = record_of[tp.topic]
                for message in messages:
                    record = decode(message.value, cls)
                    if not model:
                        continue
                    now = wall_clock_ms()
                    key = record.customer_id
                    state = states.get(key) or new_state(key)
                    if with_facts:
                        where = (message.topic, message.partition, message.offset)
                        states[key], out = apply_facts(state, record, now, config, codec, where)
                        bkey = key.encode()
                        for kind, value in out:
                            if kind == "snapshots" and value is not None:
                                snapshots[bkey] = value
                                continue
                            if kind == "tombstones":
                                snapshots.pop(bkey, None)
                            produced[kind] += 1
                            meter.triggers += kind == "triggers"
                            sends.append(await producer.send(topics[kind], value, key=bkey))
                        continue
                    states[key], triggers = apply(state, record, now, config)
                    for trigger in triggers:
                        sends.append(
                            await producer.send(out_topic, codec.encode(trigger), key=key.encode())
                        )
                    meter.triggers += len(triggers)
                meter.count += len(messages)
            for bkey, value in snapshots.items():
                sends.append(await producer.send(topics["snapshots"], value, key=bkey))
            produced["snapshots"] += len(snapshots)
            if sends:
                await asyncio.gather(*sends)  # the ceiling still waits for its outputs
            if meter.done():
                meter.finish()
    finally:
        await consumer.stop()
        await producer.stop()
    extra: dict[str, Any] = {"produced": produced} if with_facts else {}
    return meter.result(customers=len(states) if model else None, **extra)


def output_topics(args: argparse.Namespace) -> dict[str, str]:
    """The facts contestants' output topics, per kind (tombstones go with the snapshots)."""
    snapshots = args.facts_prefix + "customers"
    return {
        "events": args.facts_prefix + "events",
        "decisions": args.facts_prefix + "decisions",
        "triggers": args.triggers_topic,
        "snapshots": snapshots,
        "tombstones": snapshots,
    }


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


def quix_app(
    args: argparse.Namespace, settings: Settings, with_facts: bool = False
) -> dict[str, Any]:
    import logging

    from quixstreams import Application, message_context
    from quixstreams.models.serializers import Serializer
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

    if not with_facts:
        out = app.topic(
            args.triggers_topic,
            value_serializer="bytes",
            key_serializer="bytes",
            config=TopicConfig(num_partitions=settings.partitions, replication_factor=1),
        )
        sdf = sdf.apply(journey, stateful=True, expand=True)
        sdf.to_topic(out)
        app.run()
        if not meter.t1:
            meter.finish()
        return meter.result()

    # quix-facts: every record goes out as (topic, key, value) through one `to_topic` that picks
    # the topic per record (Quix's dynamic topic selection) and takes the key from the record.
    class Third(Serializer):  # type: ignore[misc]  # (the bench venv's, untyped here)
        def __call__(self, value: Any, ctx: Any) -> Any:
            return value[2]

    by_name: dict[str, Any] = {}
    outs: dict[str, Any] = {}
    for kind, name in output_topics(args).items():
        if name not in by_name:
            by_name[name] = app.topic(
                name,
                value_serializer=Third(),
                key_serializer="bytes",
                config=TopicConfig(num_partitions=settings.partitions, replication_factor=1),
            )
        outs[kind] = by_name[name]
    produced = dict.fromkeys(KINDS, 0)

    def journey_facts(record: Any, state: Any) -> list[tuple[Any, bytes, bytes | None]]:
        if not meter.count:
            meter.start()
        stored = state.get("s")
        js = decode_state(stored) if stored is not None else new_state(record.customer_id)
        ctx = message_context()
        where = (ctx.topic, ctx.partition, ctx.offset)
        js, records = apply_facts(js, record, wall_clock_ms(), config, codec, where)
        state.set("s", encode_state(js))
        meter.count += 1
        key = record.customer_id.encode()
        for kind, _ in records:
            produced[kind] += 1
            meter.triggers += kind == "triggers"
        if meter.done():
            meter.finish()
            app.stop()
        return [(outs[kind], key, value) for kind, value in records]

    sdf = sdf.apply(journey_facts, stateful=True, expand=True)
    sdf.to_topic(lambda value, key, timestamp, headers: value[0], key=lambda value: value[1])
    app.run()
    if not meter.t1:
        meter.finish()
    return meter.result(produced=produced)


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
    p.add_argument(
        "--facts-prefix", default="", help="quix-facts, dict-facts: prefix of the fact topics"
    )
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args(argv)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        kafka_bootstrap=args.bootstrap,
        topic_prefix=args.prefix,
        partitions=args.partitions,
    )
    with_facts = args.contestant.endswith("-facts")
    if args.contestant.startswith("quix"):
        result = quix_app(args, settings, with_facts)
    else:
        model = args.contestant != "decode"
        result = asyncio.run(aiokafka_loop(args, settings, model, with_facts))
    result["contestant"] = args.contestant
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
