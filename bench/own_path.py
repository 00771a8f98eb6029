"""The worker's own per-message path in one process, without Kafka or Faust: CPU per message.

``python -m bench.own_path [EVENTS] [--profile]`` (not part of ``make bench``). The make bench
workload (the simulator, seed 42, no malformed events) encoded as on the wire, handed over in
fetch-sized runs of up to 500 records per topic-partition, round robin (a backlog as the
consumer hands it over), through what the worker's agent awaits for each message
(``streams/runtime/intake.py``, ``Intake.take``): the decode for the event-time merge
(``Ingest.event_time``), the merge (``EventTimeBuffer``, the worker's topic order and
settings), ``MessageHandler`` (the ingest's checks, the engine) and ``Acks.after_event``. The
engine's table is a dict; its records go to a broker that acknowledges each at once
(``bench.timers.InstantBroker``); the acknowledgement flush runs every ``JOURNEY_ACK_INTERVAL``
as in the worker.

What it leaves out is everything beneath the agent: Faust's fetch, conductor and stream,
aiokafka, producing to a real broker, RocksDB. On this machine its figure moves by about 1 %
between runs of the same code, where a whole worker's moves by 5 %: a change to our own code
can be measured here first (bench/README.md, session 18).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from bench.timers import InstantBroker
from schemas.codec import Codec
from streams.clock import Clock
from streams.ops.simulator import SimulationConfig, generate
from streams.runtime.acks import Acks
from streams.runtime.app import ordered_intake
from streams.runtime.engine import JourneyEngine, tune_gc
from streams.runtime.handover import Turns
from streams.runtime.ingest import Ingest, key_partition, wall_clock_ms
from streams.runtime.intake import Intake, MessageHandler
from streams.runtime.outputs import Outputs
from streams.settings import Settings
from streams.web.metrics import Metrics

FETCH_RECORDS = 500  # per topic-partition per hand-over


class _Event:
    """What the agent gets from Faust: the message, and an ``ack``."""

    __slots__ = ("message",)

    def __init__(self, message: Any) -> None:
        self.message = message

    def ack(self) -> None:
        pass


class _Stream:
    """What ``Intake.take`` calls on the agent's stream (Faust's current event: not needed here)."""

    def _set_current_event(self, event: Any) -> None:
        pass


def fetched(settings: Settings, codec: Codec, events: int) -> tuple[list[_Event], dict[Any, int]]:
    """The workload's messages in fetch order, and each topic-partition's end offset."""
    now = wall_clock_ms()
    config = SimulationConfig(
        seed=42, customers=100_000, start_ms=now - 86_400_000, arrival_window_ms=86_400_000,
        run_id="b42",
    )  # fmt: skip
    logs: dict[tuple[str, int], list[tuple[bytes, bytes]]] = defaultdict(list)
    for count, event in enumerate(generate(config)):
        if count == events:
            break
        key = event.key.encode()
        tp = (settings.topic(event.topic), key_partition(key, settings.partitions))
        logs[tp].append((key, codec.encode(event.record)))
    order: list[_Event] = []
    taken = dict.fromkeys(logs, 0)
    while any(taken[tp] < len(records) for tp, records in logs.items()):
        for tp in sorted(logs):
            start = taken[tp]
            for offset, (key, value) in enumerate(logs[tp][start : start + FETCH_RECORDS], start):
                message = SimpleNamespace(
                    topic=tp[0], partition=tp[1], offset=offset, key=key, value=value, headers=None
                )
                order.append(_Event(message))
            taken[tp] = min(len(logs[tp]), start + FETCH_RECORDS)
    return order, {tp: len(records) for tp, records in logs.items()}


async def run(events: int, profile: bool) -> None:
    tune_gc()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    codec = Codec.load()
    messages, ends = fetched(settings, codec, events)
    broker = InstantBroker()
    acks = Acks(interval=settings.ack_interval / 1000)
    outputs = Outputs(settings, broker.produce, acks)
    engine = JourneyEngine({}, outputs, codec, settings.journey, Clock())
    ingest = Ingest(settings, codec, outputs)
    offsets = SimpleNamespace(end_offset=lambda t, p: ends.get((t, p)), start_offset=lambda t, p: 0)
    ordering = ordered_intake(settings, offsets)  # type: ignore[arg-type]

    async def crash(exc: BaseException) -> None:
        raise exc

    apply = MessageHandler(ingest, engine, settings.topic("ticks"), crash)
    # What the worker's agent awaits per message (app.py), with its metrics' histogram.
    processing = Metrics().processing
    intake = Intake(ingest, ordering, apply, acks, settings.topic("ticks"), Turns(), {}, processing)
    stream = _Stream()
    acks.start()
    profiler = cProfile.Profile() if profile else None
    started = time.process_time()
    if profiler is not None:
        profiler.enable()
    time.thread_time()  # callgrind's mark for ``bench.instructions``: the messages start
    for index, event in enumerate(messages):
        if not await intake.take(event, stream):
            raise SystemExit("the intake stopped")
        if index % FETCH_RECORDS == 0:
            await asyncio.sleep(0)  # the flush runs in between, as in the worker
    for ready in ordering.drain():
        await intake.handle(ready)
    handled = sum(processing.counts)  # every input message handled (there are no ticks here)
    await acks.flush()
    time.thread_time()  # ... and end
    if profiler is not None:
        profiler.disable()
    cpu = time.process_time() - started
    await acks.stop()
    print(
        f"{handled:,} messages: {cpu / handled * 1e6:.1f} us CPU per message; records "
        f"{dict(broker.records)}; states written {engine.state_writes:,}, live states used "
        f"{engine.live_hits:,}; snapshots not encodable {outputs.unencodable_snapshots}"
    )
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("events", type=int, nargs="?", default=300_000)
    parser.add_argument("--profile", action="store_true", help="cProfile (inflates ~3 x)")
    args = parser.parse_args()
    asyncio.run(run(args.events, args.profile))


if __name__ == "__main__":
    main()
