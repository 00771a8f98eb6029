"""The Kafka side of the benchmark: publishing the simulated shop, the raw consumer ceiling,
and the append-to-append latency probe."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.common import log, percentile, process_cpu_s
from schemas.codec import Codec
from schemas.records import CartChanged, OrderChanged, OrderItem, Trigger
from streams.journey.config import JourneyConfig
from streams.journey.model import fire_due, new_state, step
from streams.journey.state import JourneyState
from streams.ops.publish import Publisher
from streams.ops.simulator import SimulationConfig, generate
from streams.runtime.engine import pack
from streams.runtime.ingest import wall_clock_ms
from streams.settings import Settings

LOG_APPEND_TIME = 1  # aiokafka's timestamp_type of broker-side timestamps


# --- 1 (preparation) and 5: the simulated shop, published and replayed through the model ------
@dataclass
class Published:
    events: int = 0
    customers: int = 0
    seconds: float = 0.0
    start_ms: int = 0
    first_at_ms: int = 0
    last_at_ms: int = 0
    by_topic: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    state_sizes: dict[str, Any] = field(default_factory=dict)


async def publish_simulation(
    settings: Settings,
    codec: Codec,
    *,
    customers: int,
    events: int,
    arrival_window_ms: int,
    seed: int,
    replay_states: bool,
) -> Published:
    """Publish the first ``events`` simulator events (``0``: until every customer has shown up)
    and, when asked, replay them through the pure model to measure the state sizes."""
    now = wall_clock_ms()
    # The shop's day ends now: the worker sees a day of events that already happened (as a
    # consumer catching up would), so timers that came due meanwhile fire while it runs.
    config = SimulationConfig(
        seed=seed,
        customers=customers,
        start_ms=now - arrival_window_ms,
        arrival_window_ms=arrival_window_ms,
        bad_event_rate=0.0,
        run_id=f"b{seed}",
    )
    out = Published(start_ms=config.start_ms)
    model_config = settings.journey
    states: dict[str, JourneyState] = {}
    seen: set[str] = set()
    publisher = Publisher(settings, codec)
    await publisher.start()
    started = time.monotonic()
    next_report = 100_000
    try:
        for event in generate(config):
            if events and out.events >= events:
                break
            if not events and len(seen) >= customers:
                break
            record = event.record
            assert record is not None  # bad_event_rate is 0
            await publisher.send_record(event.topic, event.key, record)
            out.events += 1
            out.by_topic[event.topic] += 1
            out.by_kind[event.kind] += 1
            out.last_at_ms = event.at_ms
            if out.events == 1:
                out.first_at_ms = event.at_ms
            seen.add(event.key)
            if replay_states:
                state = states.get(event.key) or new_state(event.key)
                states[event.key], _ = step(state, record, now, model_config)
            if out.events >= next_report:
                next_report += 100_000
                rate = out.events / (time.monotonic() - started)
                log(f"  published {out.events:,} events, {len(seen):,} customers ({rate:,.0f}/s)")
    finally:
        await publisher.close()
    out.seconds = time.monotonic() - started
    out.customers = len(seen)
    log(
        f"published {out.events:,} events of {out.customers:,} customers in {out.seconds:.1f}s "
        f"(not timed as part of any figure)"
    )
    if replay_states:
        out.state_sizes = state_sizes(states, now, model_config, settings.partitions)
    return out


def state_sizes(
    states: dict[str, JourneyState], now: int, config: JourneyConfig, partitions: int
) -> dict[str, Any]:
    """``len(pack(partition, state))``: the value stored per customer in the journeys table.

    Timers that are due by ``now`` are fired first (``fire_due``), as the worker's ticks do
    while it catches up, so these are the states the worker's table holds at the end."""
    sizes: list[int] = []
    ordered: list[int] = []
    timers: list[int] = []
    for index, state in enumerate(states.values()):
        if not state.erased:
            state, _ = fire_due(state, now, config)
        size = len(pack(index % partitions, state))
        sizes.append(size)
        timers.append(len(state.timers))
        if state.orders_count > 0 or state.orders:
            ordered.append(size)
    return {
        "customers": len(sizes),
        "mean_bytes": round(statistics.fmean(sizes), 1) if sizes else None,
        "p50_bytes": percentile(sizes, 0.50),
        "p99_bytes": percentile(sizes, 0.99),
        "max_bytes": max(sizes, default=None),
        "customers_that_ordered": len(ordered),
        "mean_bytes_ordered": round(statistics.fmean(ordered), 1) if ordered else None,
        "p99_bytes_ordered": percentile(ordered, 0.99),
        "mean_pending_timers": round(statistics.fmean(timers), 2) if timers else None,
        "total_mb": round(sum(sizes) / 1e6, 1),
    }


async def topic_records(bootstrap: str, topic: str) -> int:
    """Records a topic holds (end - beginning offsets, over its partitions)."""
    return (await topics_records(bootstrap, [topic]))[topic]


async def topics_records(bootstrap: str, topics: list[str]) -> dict[str, int]:
    """Records each topic holds (end - beginning offsets, over its partitions; 0 for a topic
    that does not exist). A compacted topic's beginning stays at 0: every record produced."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        counts: dict[str, int] = {}
        for topic in topics:
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            if not tps:
                counts[topic] = 0
                continue
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            counts[topic] = sum(ends[tp] - starts[tp] for tp in tps)
        return counts
    finally:
        await consumer.stop()


# --- 3: append-to-append latency ---------------------------------------------------------------
async def read_from_the_end(consumer: AIOKafkaConsumer, topic: str) -> None:
    """Assign every partition of ``topic`` to ``consumer`` at its end offset, before the probe
    sends anything: only the probe's own triggers are read. From the beginning, the probe read and
    decoded every earlier trigger on the topic first (about 100,000 at the probe at half the
    maximum, after the first probe and the backlog), seconds of CPU on the 2 cores the worker
    shares, in the probe's first seconds."""
    await consumer._client.force_metadata_update()
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    if not tps:
        raise RuntimeError(f"{topic} has no partitions")
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)  # resolved now: a trigger appended later is read


async def latency_probe(
    settings: Settings,
    codec: Codec,
    *,
    rate: float,
    seconds: float,
    tag: str,
    timer_rate: float,
    timer_lead_s: float = 2.0,
    timer_spread_s: float = 10.0,
    worker_pid: int | None = None,
    wait_s: float = 30,
) -> dict[str, Any]:
    """Produce OrderChanged PLACED for new customers at ``rate``/s for ``seconds``; each gives an
    ORDER_CONFIRMATION at once. Latency = broker append time of the trigger - broker append time
    of the order (both topics have message.timestamp.type=LogAppendTime).

    Alongside, ``timer_rate``/s CartChanged PRODUCT_ADDED of other new customers, dated so that
    their first abandoned-cart timer comes due during the probe: the worker's own
    ``timer_lateness_p99_ms`` then has samples from this run.

    ``worker_pid``: the worker's CPU seconds are read when the first order is sent and when the
    last order's trigger is in: orders per worker CPU-second is what one core would sustain on
    this workload (its ticks and the cart timers count against it). ``wait_s``: how long the
    triggers may take after the last order was sent."""
    orders_topic = settings.topic("orders")
    cart_topic = settings.topic("cart")
    triggers_topic = settings.topic("triggers")
    delay = settings.journey.abandoned_cart_first_delay
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=1)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
    )
    await producer.start()
    await consumer.start()
    await read_from_the_end(consumer, triggers_topic)
    appended: dict[str, int] = {}  # order event_id -> broker append time
    trigger_at: dict[str, int] = {}  # source_event_id -> broker append time of its trigger
    timestamp_types: Counter[int] = Counter()
    stop_consuming = asyncio.Event()

    mine = f"lat-{tag}-"

    async def consume() -> None:
        while not stop_consuming.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=10_000)
            for messages in batch.values():
                for message in messages:
                    if not message.value:
                        continue
                    trigger = codec.decode(message.value, Trigger)
                    if trigger.source_event_id.startswith(mine):
                        trigger_at[trigger.source_event_id] = message.timestamp
                        timestamp_types[message.timestamp_type] += 1

    def on_sent(event_id: str) -> Any:
        def done(future: asyncio.Future[Any]) -> None:
            if not future.cancelled() and future.exception() is None:
                metadata = future.result()
                appended[event_id] = metadata.timestamp
                timestamp_types[metadata.timestamp_type] += 1

        return done

    reader = asyncio.ensure_future(consume())
    cpu_start = process_cpu_s(worker_pid)
    cpu_done: float | None = None
    sent = carts = 0
    last_due = 0
    started = time.monotonic()
    pending: list[asyncio.Future[Any]] = []
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            now = wall_clock_ms()
            while sent < rate * elapsed:
                event_id = f"lat-{tag}-{sent}"
                customer = f"lat-{tag}-c{sent}"
                order = OrderChanged(
                    event_id=event_id, customer_id=customer, occurred_at=now,
                    order_id=f"lat-{tag}-o{sent}", status="PLACED", total_minor=4999,
                    currency="EUR", items=[OrderItem("sku-01001", 1, 4999, "shoes")],
                )  # fmt: skip
                future = await producer.send(
                    orders_topic, codec.encode(order), key=customer.encode()
                )
                future.add_done_callback(on_sent(event_id))
                pending.append(future)
                sent += 1
            while carts < timer_rate * elapsed:
                customer = f"lat-{tag}-k{carts}"
                # Due timer_lead_s..+spread from now: dated `delay` earlier than that.
                due = now + int(1000 * (timer_lead_s + (carts % 100) / 100 * timer_spread_s))
                last_due = max(last_due, due)
                cart = CartChanged(
                    event_id=f"latcart-{tag}-{carts}", customer_id=customer,
                    occurred_at=due - delay, cart_id=f"lat-{tag}-cart{carts}",
                    action="PRODUCT_ADDED", product_id="sku-01001", category="shoes",
                    quantity=1, unit_price_minor=4999, currency="EUR",
                )  # fmt: skip
                pending.append(
                    await producer.send(cart_topic, codec.encode(cart), key=customer.encode())
                )
                carts += 1
            if len(pending) > 5000:
                await asyncio.gather(*pending)
                pending.clear()
            await asyncio.sleep(0.005)
        await producer.flush()
        await asyncio.gather(*pending)
        produced_s = time.monotonic() - started
        log(f"  latency probe: {sent:,} orders, {carts:,} carts sent in {produced_s:.1f}s")
        # Wait for the triggers, and until the last cart timer is due (and a tick later).
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and (
            len(trigger_at) < sent or wall_clock_ms() < last_due + 1000
        ):
            if cpu_done is None and len(trigger_at) >= sent:
                cpu_done = process_cpu_s(worker_pid)
            await asyncio.sleep(0.05 if cpu_done is None else 0.2)
        if cpu_done is None and len(trigger_at) >= sent:
            cpu_done = process_cpu_s(worker_pid)
    finally:
        stop_consuming.set()
        await reader
        await consumer.stop()
        await producer.stop()
    latencies = [trigger_at[e] - appended[e] for e in trigger_at if e in appended]
    # Where in the probe the slow ones were: p99 per second of the probe (by the order's append).
    first_append = min(appended.values(), default=0)
    by_second: dict[int, list[int]] = {}
    for e in trigger_at:
        if e in appended:
            second = (appended[e] - first_append) // 1000
            by_second.setdefault(second, []).append(trigger_at[e] - appended[e])
    # How fast the worker appended this probe's triggers: while it was behind the offered rate,
    # the most it sustains on this workload (orders of new customers, one trigger each).
    times = sorted(trigger_at.values())
    span_s = (times[-1] - times[0]) / 1000 if len(times) > 1 else 0.0
    cpu_s = cpu_done - cpu_start if cpu_done is not None and cpu_start is not None else None
    return {
        "triggers_per_s": round((len(times) - 1) / span_s, 1) if span_s > 0 else None,
        "worker_cpu_s": round(cpu_s, 2) if cpu_s is not None else None,
        "orders_per_worker_cpu_s": round(sent / cpu_s, 1) if cpu_s else None,
        "orders_sent": sent,
        "orders_per_s": round(sent / seconds, 1),
        "carts_sent": carts,
        "triggers_matched": len(latencies),
        "triggers_missing": sent - len(latencies),
        "p50_ms": percentile(latencies, 0.50),
        "p90_ms": percentile(latencies, 0.90),
        "p99_ms": percentile(latencies, 0.99),
        "p99_ms_by_second": [percentile(by_second[k], 0.99) for k in sorted(by_second)],
        "max_ms": max(latencies, default=None),
        "timestamp_types": {
            ("LogAppendTime" if k == LOG_APPEND_TIME else "CreateTime"): v
            for k, v in timestamp_types.items()
        },
    }
