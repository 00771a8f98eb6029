"""A prototype, measured but not shipped: the journey model under Faust with a batch path.

``python -m bench.faust_batch --prefix P --expected N --group G --state-dir D [--patch-fetch]
[--batch 0]``

A Faust app (the worker's broker settings: acks=all, linger 5 ms, 512 KiB batches) with one
agent over the input topics and a changelogged RocksDB table of ``encode_state`` bytes, like
the worker's, but the agent takes ``stream.take_events(20000, within=1 s)`` batches: each
customer's state is read once per batch, every event of the batch goes through ``step`` /
``fire_due`` (as ``bench.peers.apply``), and each customer's state is written once per batch
(one changelog record per customer per batch instead of one per event). Triggers are produced;
no ClickHouse sink, no ticks. ``--patch-fetch`` also replaces the fetch loop's per-message
``wait_first(callback(message), suspend_flow.wait())`` with a plain await of the callback while
the flow is not suspended.

A table write goes to the changelog partition of Faust's *current event*; in a batch that is
the last event taken, so each customer's write is made with its own latest event set as the
current one (Faust's context variable), or it would land in another partition's changelog.

``--batch 0`` is the worker's shape without its ingest, sink and ticks: ``stream.events()``, one
table write per event (``faust-event``).

Prints one JSON line like ``bench.peers``: CPU seconds of this process per 1,000 events.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import shutil
import sys
import weakref
from pathlib import Path
from typing import Any

from bench.peers import Meter, apply, create_topic
from schemas.codec import Codec
from schemas.records import TOPIC_RECORDS
from streams.journey.model import new_state
from streams.journey.state import JourneyState, decode_state, encode_state
from streams.runtime.ingest import wall_clock_ms
from streams.settings import Settings


def patch_fetch_loop() -> None:
    """Faust's fetch loop awaits ``wait_first(callback(message), suspend_flow.wait())`` per
    message: four futures and an ``asyncio.wait``. While the flow is not suspended, await the
    callback alone (the prototype of issue 13's lead; a rebalance that suspends the flow while a
    callback waits for room in a full stream buffer is then not interrupted)."""
    from faust.transport.consumer import Consumer
    from mode.services import WaitResults

    original = Consumer.wait_first

    async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
        if (
            len(coros) == 2
            and timeout is None
            and inspect.iscoroutine(coros[0])
            and inspect.iscoroutine(coros[1])
            and coros[1].__qualname__.endswith("Event.wait")
            and not self.suspend_flow.is_set()
        ):
            coros[1].close()
            result = await coros[0]
            return WaitResults([coros[0]], [result], False)
        return await original(self, *coros, timeout=timeout)

    Consumer.wait_first = wait_first  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.faust_batch")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--expected", type=int, required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--triggers-topic", required=True)
    p.add_argument("--batch", type=int, default=20_000, help="0: per event, no take_events")
    p.add_argument("--within", type=float, default=1.0)
    p.add_argument("--patch-fetch", action="store_true")
    args = p.parse_args(argv)

    import faust
    from faust.streams import _current_event

    if args.patch_fetch:
        patch_fetch_loop()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        kafka_bootstrap=args.bootstrap,
        topic_prefix=args.prefix,
        partitions=args.partitions,
    )
    codec = Codec.load(max_value_bytes=settings.max_value_bytes)
    config = settings.journey
    asyncio.run(create_topic(settings, args.triggers_topic))
    shutil.rmtree(args.state_dir, ignore_errors=True)
    Path(args.state_dir).mkdir(parents=True)
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        store="rocksdb://",
        datadir=args.state_dir,
        topic_partitions=args.partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=0.005,
        producer_max_batch_size=512 * 1024,
        web_enabled=False,
        autodiscover=False,
    )
    table = app.Table(
        "journeys", default=None, key_type=bytes, value_type=bytes, partitions=args.partitions
    )
    record_of = {full: TOPIC_RECORDS[short] for short, full in settings.input_topics().items()}
    inputs = app.topic(
        *record_of, key_serializer="raw", value_serializer="raw", partitions=args.partitions
    )
    out = app.topic(args.triggers_topic, key_serializer="raw", value_serializer="raw")
    meter = Meter(args.expected)
    decode = codec.decode

    async def handle(events: Any) -> None:
        if not meter.count:
            meter.start()
        states: dict[bytes, tuple[JourneyState, Any]] = {}
        for event in events:
            message = event.message
            key = message.key
            record = decode(message.value, record_of[message.topic])
            held = states.get(key)
            if held is None:
                stored = table.get(key)
                state = (
                    decode_state(stored) if stored is not None else new_state(record.customer_id)
                )
            else:
                state = held[0]
            state, triggers = apply(state, record, wall_clock_ms(), config)
            states[key] = (state, event)
            for trigger in triggers:
                await out.send(key=key, value=codec.encode(trigger))
            meter.triggers += len(triggers)
        for key, (state, event) in states.items():
            _current_event.set(weakref.ref(event))  # its own partition's changelog
            table[key] = encode_state(state)
        meter.count += len(events)
        if meter.done() and not meter.t1:
            meter.finish()
            name = "faust-event" if not args.batch else "faust-take"
            result = meter.result(
                contestant=name + ("+fetch-patch" if args.patch_fetch else ""), batch=args.batch
            )
            await app.producer.flush()  # (not timed) so that its changelog can be counted
            print(json.dumps(result), flush=True)
            os._exit(0)  # the figure is taken; no need for an orderly shutdown

    @app.agent(inputs, name="journey", concurrency=1)
    async def journey(stream: Any) -> None:
        if not args.batch:  # the worker's shape: one event, one table write
            async for event in stream.events():
                await handle([event])
        async for events in stream.take_events(args.batch, within=args.within):
            await handle(events)

    worker = faust.Worker(app, loglevel="warning", quiet=True)
    worker.execute_from_commandline()
    return 1


if __name__ == "__main__":
    sys.exit(main())
