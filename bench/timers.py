"""Timer lateness with a million pending timers: the engine in-process, without Kafka.

A ``JourneyEngine`` over a plain dict (instead of the Faust table) and the worker's ``Outputs``
and ``Acks`` over a broker that acknowledges every record at once (encoding the triggers,
decisions and snapshots, the outbox and the acknowledgements are included; Kafka is not).
Customers are built by the pure model (``step``): each gave marketing consent and added a
product to a cart, so each has an abandoned-cart timer; the first reminders come due over
``spread_s`` seconds of the real clock. The bench then calls
``on_tick`` for every partition every 250 ms, as the worker's ticker does, and records for every
fired timer how late the tick was (tick time - fire_at: what the worker's status reports) and how
late the end of that tick's work was (an upper bound of when its decision was out).

The Kafka round trip of the tick message, and the Faust table (RocksDB) reads and changelog
writes, are not part of this figure.

``make bench`` runs it in a process of its own (``python -m bench.timers``, the result as JSON
in ``--out``), as a worker is one: not in the bench's process after the other steps, whose objects
(every latency sample, the contest's results) a young collection would meet, nor in any heap
but the engine's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time
from collections import Counter, deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import log, percentile
from schemas.codec import Codec
from schemas.records import CartChanged, CustomerChanged
from streams.clock import Clock
from streams.journey.config import JourneyConfig
from streams.journey.model import new_state, step
from streams.runtime.acks import Acks
from streams.runtime.engine import JourneyEngine, pack, tune_gc
from streams.runtime.outputs import Outputs
from streams.settings import Settings


class InstantBroker:
    """What ``Outputs`` produces with: counts the records per topic; each is acknowledged at
    once (the engine still encodes every record and keeps its outbox until the acks run)."""

    def __init__(self) -> None:
        self.records: Counter[str] = Counter()

    def produce(self, topic: str, key: bytes, value: bytes | None, headers: Any) -> Any:
        self.records[topic] += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def daytime_zone(now_ms: int, config: JourneyConfig, minutes: int) -> str:
    """A fixed-offset zone in which the next ``minutes`` are outside quiet hours, so that every
    timer is EMITTED (the heaviest path) whatever the time of day the bench runs."""
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    end_hour = config.quiet_hours_start  # quiet from this hour ...
    start_hour = config.quiet_hours_end  # ... until this one
    for offset in range(-12, 15):
        local_start = now + timedelta(hours=offset)
        local_end = local_start + timedelta(minutes=minutes)
        if (
            local_start.date() == local_end.date()
            and start_hour + 1 <= local_start.hour
            and local_end.hour < end_hour - 1
        ):
            # POSIX sign: Etc/GMT-3 is UTC+3.
            return f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}" if offset else "Etc/UTC"
    return "Etc/UTC"


async def timer_lateness(
    *,
    customers: int,
    spread_s: float,
    lead_s: float,
    partitions: int,
    tick_ms: int = 250,
    profile_to: Path | None = None,
) -> dict[str, Any]:
    """``profile_to``: py-spy samples this process while the timers fire (not while they are
    built), the summary goes in the result's ``profile``."""
    tune_gc()  # as the worker does
    config = JourneyConfig()
    codec = Codec.load()
    clock = _ShiftedClock()
    broker = InstantBroker()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    acks = Acks(interval=settings.ack_interval / 1000)  # as the worker's
    outputs = Outputs(settings, broker.produce, acks)
    table: dict[bytes, bytes] = {}
    engine = JourneyEngine(table=table, outputs=outputs, codec=codec, config=config, clock=clock)
    # Keep every sample (the engine keeps a bounded window for its status).
    engine.timer_lateness_ms = deque()
    delay = config.abandoned_cart_first_delay
    build_started = time.monotonic()
    # Built at clock time `now`, due from now + 10 s on; once built, the clock is set back so
    # that the first timers are due lead_s after the ticker starts, however long the build took.
    now = clock.now_ms()
    first_due = now + 10_000
    zone = daytime_zone(now, config, minutes=30)
    log(f"  building {customers:,} customers with a pending timer (time zone {zone})")
    _build(engine, customers, now, first_due, delay, zone, config, partitions, spread_s)
    # The built states are written before the clock starts (and the table's size is taken): a
    # worker writes each state as the message that made it is acknowledged, long before its
    # timer is due. (Until session 8 the first flush wrote them inside the measured CPU: about
    # 0.9 us per fired timer.)
    await acks.flush()
    build_s = time.monotonic() - build_started
    pending = len(engine.index)
    table_mb = sum(len(k) + len(v) for k, v in table.items()) / 1e6
    log(f"  built: {pending:,} pending timers, {table_mb:,.0f} MB of state, in {build_s:.0f}s")
    gc.collect()
    gc.freeze()  # as the worker does after building its timer index
    clock.offset_ms = first_due - int(lead_s * 1000) - clock.wall_now_ms()
    built_writes = engine.state_writes
    acks.start()  # as the worker: flushes every JOURNEY_ACK_INTERVAL, then outboxes are trimmed

    # The ticker.
    tick_lateness: list[int] = []
    end_lateness: list[int] = []
    busy_s = 0.0
    ticks = 0
    first_fire: float | None = None
    last_fire = 0.0
    lateness = engine.timer_lateness_ms
    profiler = None
    if profile_to is not None:
        from bench.profile import start_py_spy

        profiler = start_py_spy(os.getpid(), lead_s + spread_s, profile_to)
    # The whole process's CPU while the timers fire: the acks task's flushes (snapshots sent,
    # states written, outboxes marked durable) run outside the ticks that ``busy_s`` times.
    cpu_started = time.process_time()
    next_tick = time.monotonic()
    deadline = next_tick + lead_s + spread_s + 600
    offset = 0
    while len(tick_lateness) < customers and time.monotonic() < deadline:
        for partition in range(partitions):
            started = time.perf_counter()
            before = len(lateness)
            await engine.on_tick(partition, "ticks", offset)
            offset += 1
            spent = time.perf_counter() - started
            busy_s += spent
            fired = len(lateness) - before
            if fired:
                done_ms = int(spent * 1000)
                for _ in range(fired):
                    sample_ms = lateness.popleft()
                    tick_lateness.append(sample_ms)
                    end_lateness.append(sample_ms + done_ms)
                last_fire = time.monotonic()
                if first_fire is None:
                    first_fire = last_fire - spent
        ticks += 1
        next_tick += tick_ms / 1000
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    await acks.stop()
    cpu_s = time.process_time() - cpu_started
    fire_s = (last_fire - first_fire) if first_fire is not None else 0.0
    fired_total = len(tick_lateness)
    profile = None
    if profiler is not None:
        from bench.profile import finish_py_spy

        profile = finish_py_spy(profiler, profile_to)
    return {
        "profile": profile,
        "customers": customers,
        "pending_timers_at_start": pending,
        "due_spread_s": spread_s,
        "partitions": partitions,
        "tick_interval_ms": tick_ms,
        "build_seconds": round(build_s, 1),
        "state_mb": round(table_mb, 1),
        "timers_fired": fired_total,
        "triggers_emitted": outputs.sent["triggers"],
        "records_produced": dict(broker.records),
        "fire_seconds": round(fire_s, 1),
        "timers_fired_per_s": round(fired_total / fire_s, 1) if fire_s else None,
        "cpu_us_per_timer": round(busy_s / fired_total * 1e6, 1) if fired_total else None,
        "capacity_timers_per_s": round(fired_total / busy_s, 1) if busy_s else None,
        "process_cpu_us_per_timer": round(cpu_s / fired_total * 1e6, 1) if fired_total else None,
        # Table writes (in the worker: a RocksDB write and a changelog record each) per fired
        # timer (the built customers were written before the first tick).
        "state_writes_per_timer": (
            round((engine.state_writes - built_writes) / fired_total, 2) if fired_total else None
        ),
        "timers_per_process_cpu_s": round(fired_total / cpu_s, 1) if cpu_s else None,
        "lateness_at_tick_p50_ms": percentile(tick_lateness, 0.50),
        "lateness_at_tick_p99_ms": percentile(tick_lateness, 0.99),
        "lateness_at_tick_max_ms": max(tick_lateness, default=None),
        "lateness_end_of_tick_p50_ms": percentile(end_lateness, 0.50),
        "lateness_end_of_tick_p99_ms": percentile(end_lateness, 0.99),
        "ticks": ticks,
        "time_zone": zone,
    }


class _ShiftedClock(Clock):
    """The real clock (speed 1), shifted by ``offset_ms``."""

    def __init__(self) -> None:
        super().__init__(1.0)
        self.offset_ms = 0

    def wall_now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def now_ms(self) -> int:
        return self.wall_now_ms() + self.offset_ms


def _build(
    engine: JourneyEngine,
    count: int,
    now: int,
    first_due: int,
    delay: int,
    zone: str,
    config: JourneyConfig,
    partitions: int,
    spread_s: float,
) -> None:
    spread_ms = int(spread_s * 1000)
    for i in range(count):
        customer = f"tl-{i:07d}"
        due = first_due + (i * 7919) % count * spread_ms // max(count, 1)
        state = new_state(customer)
        state, _ = step(
            state,
            CustomerChanged(
                event_id=f"{customer}-c", customer_id=customer, occurred_at=now - 60_000,
                action="UPDATED", marketing_consent=True, time_zone=zone,
            ),
            now,
            config,
        )  # fmt: skip
        state, _ = step(
            state,
            CartChanged(
                event_id=f"{customer}-a", customer_id=customer, occurred_at=due - delay,
                cart_id=f"{customer}-k", action="PRODUCT_ADDED", product_id="sku-01001",
                category="shoes", quantity=1, unit_price_minor=4999, currency="EUR",
            ),
            now,
            config,
        )  # fmt: skip
        partition = i % partitions
        next_fire = state.next_fire_at()
        engine._store(partition, customer, pack(partition, state, next_fire), next_fire)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.timers", description=__doc__.split("\n")[0])
    p.add_argument("--customers", type=int, required=True)
    p.add_argument("--spread", type=float, required=True, help="seconds the timers come due over")
    p.add_argument("--lead", type=float, default=3.0, help="seconds before the first is due")
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help="where the result goes, as JSON")
    p.add_argument(
        "--profile-to", type=Path, help="py-spy's samples of the firing go here (bench extra)"
    )
    args = p.parse_args(argv)
    result = asyncio.run(
        timer_lateness(
            customers=args.customers,
            spread_s=args.spread,
            lead_s=args.lead,
            partitions=args.partitions,
            profile_to=args.profile_to,
        )
    )
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
