"""The analytics loader (``journey loader``): the workers' fact topics into ClickHouse.

It reads ``journey.events``, ``journey.decisions``, ``journey.customers`` and
``journey.deadletter`` (one Faust agent, one consumer group ``<app_id>-loader``) and stores each
record as a row of ``events``, ``triggers``, ``customers`` and ``deadletters``, with the
guarantees of ``sinks/clickhouse/sink.py``: every insert carries a deduplication token naming its
rows, and a fact stored already (a message redelivered after a crash, a fact a crashed worker
published twice) is not stored again: ``events``, ``triggers`` and ``deadletters`` have unique
keys.

Where a message is acknowledged: the agent (``load`` below) buffers the fact's row in the sink
and hands the message's ``ack`` to ``Acks.after`` (``acks.py``, the worker's acknowledgement
too). Each flush of ``Acks`` first runs the sink's ``flush()`` (the rows buffered so far into
ClickHouse, retried until stored), then awaits the dead letters' deliveries, then acks: a fact's
offset is committed only after its row is stored, and for a row ClickHouse refused after its
dead letter is on the broker. The sink stores rows and knows nothing of Kafka.

A tombstone on ``journey.customers`` (an erasure) deletes the customer's rows from every table
and is remembered in ``erasures``: facts of that customer read afterwards (on another topic, or
published before the erasure) are not stored.

The loader owns the embedded ClickHouse (chdb allows one process per data path) and serves the
dashboard, ``/sql`` and what ``journey sql``/``journey report`` ask, on analyst sessions of their
own (``AnalystQueries``), so a long query never stalls loading. Against a ClickHouse server,
several loaders split the partitions of the fact topics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import faust

from schemas.codec import Codec, DecodeError
from schemas.records import CustomerSnapshot, DeadLetter, Decision, JourneyEvent
from sinks.clickhouse.rows import (
    CUSTOMERS_COLUMNS,
    CUSTOMERS_TABLE,
    DEADLETTERS_COLUMNS,
    DEADLETTERS_TABLE,
    EVENTS_COLUMNS,
    EVENTS_TABLE,
    TRIGGERS_COLUMNS,
    TRIGGERS_TABLE,
    customer_row,
    deadletter_row,
    event_row,
    trigger_row,
)
from sinks.clickhouse.sink import ClickHouseSink
from streams.clock import Clock
from streams.runtime.acks import Acks
from streams.runtime.app import broker_credentials
from streams.runtime.commit_guard import install_commit_guard
from streams.runtime.health import BrokerProbe, Health
from streams.runtime.restore import PromptTableManager
from streams.schema_registry import resolver_for
from streams.settings import Settings
from streams.web.metrics import LoaderMetrics

log = logging.getLogger(__name__)

ERASURES_TABLE = "erasures"
ERASURES_COLUMNS = ("customer_id", "erased_at", "source_topic", "source_partition", "source_offset")
# Tables whose rows of an erased customer are deleted.
ERASE_TABLES = ("events", "triggers", "customers", "customer_stages", "customer_predictions")
DEADLETTER_VALUE_LIMIT = 512 * 1024
FACT_VALUE_LIMIT = 4 * 1024 * 1024


@dataclass
class LoaderStats:
    """What the loader has done, read by the console, ``/metrics`` and the dashboard."""

    consumed: dict[str, int] = field(default_factory=dict)  # per fact topic
    erased: int = 0
    undecodable: int = 0
    skipped_erased: int = 0  # facts of erased customers not stored


@dataclass
class Loader:
    settings: Settings
    app: faust.App
    sink: ClickHouseSink
    acks: Acks
    codec: Codec
    clock: Clock
    metrics: LoaderMetrics
    health: Health
    stats: LoaderStats
    erased: set[str]
    web: Any = None
    started: float = field(default_factory=time.monotonic)
    # Set once partitions were assigned and the erased customers read: facts may be stored.
    erasures_loaded: asyncio.Event = field(default_factory=asyncio.Event)
    # The highest offset stored per fact-topic partition, for the lag.
    positions: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def rebuilt(self) -> bool:
        """Partitions assigned and the erasures loaded (``/ready``, the status)."""
        return self.erasures_loaded.is_set()

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages not stored yet up to the end of each assigned fact-topic partition (the end
        as of the last fetch)."""
        behind: dict[tuple[str, int], int] = {}
        try:
            assignment = self.app.consumer.assignment()
        except Exception:  # not started
            return behind
        for tp in assignment:
            try:
                highwater = self.app.consumer.highwater(tp)
            except Exception:
                continue
            if highwater is None:
                continue
            # The next offset to store: after the highest one stored, or where the group
            # committed (a restarted loader may have nothing new to store on a partition).
            stored = self.positions.get((tp.topic, tp.partition))
            committed = getattr(self.app.consumer, "_committed_offset", {}).get(tp)
            following = max(stored + 1 if stored is not None else 0, int(committed or 0))
            behind[(tp.topic, tp.partition)] = max(0, int(highwater) - following)
        return behind


def acks_after_storing(
    sink: ClickHouseSink,
    settings: Settings,
    *,
    on_fatal: Callable[[BaseException], object] | None = None,
) -> Acks:
    """The loader's acknowledgement: each flush first stores the rows the sink buffered (the
    hook), then awaits the dead letters' deliveries, then acks the messages handled before it.
    A full batch flushes at once; otherwise every ``JOURNEY_SINK_FLUSH_INTERVAL``."""
    acks = Acks(interval=settings.sink_flush_interval / 1000, on_fatal=on_fatal)
    acks.before_flush += [sink.flush, sink.probe_when_idle]
    sink.on_batch_full = acks.wake
    return acks


def create_loader(settings: Settings, *, clock: Clock | None = None) -> Loader:
    clock = clock or settings.clock()
    # The facts are the workers' own records (a dead letter carries up to 512 KiB of its input):
    # the input limit (JOURNEY_MAX_VALUE_BYTES) is not theirs.
    codec = Codec.load(max_value_bytes=max(settings.max_value_bytes, FACT_VALUE_LIMIT))
    datadir = settings.data_dir / "faust" / "loader"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.app_id}-loader",
        broker=[f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")],
        broker_credentials=broker_credentials(settings),
        datadir=str(datadir),
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_interval=settings.commit_interval / 1000,
        broker_commit_every=settings.commit_every,
        broker_session_timeout=settings.consumer_session_timeout / 1000,
        broker_heartbeat_interval=min(3.0, settings.consumer_session_timeout / 3000),
        web_enabled=False,
        autodiscover=False,
        TableManager=PromptTableManager,  # no second's wait when it starts (restore.py)
    )
    install_commit_guard(app)  # commit an offset only when every message below it was stored
    metrics = LoaderMetrics()
    deadletters = app.topic(
        settings.topic("deadletter"), key_serializer="raw", value_serializer="raw"
    )
    stats = LoaderStats()

    async def bad_row(table: str, row: Sequence[Any], exc: BaseException) -> None:
        """A row ClickHouse refused (its data): a dead letter naming the fact it came from, on
        the broker before the messages behind it are acked (stored when it is read back)."""
        topic, partition, offset = str(row[-3]), int(row[-2]), int(row[-1])
        summary = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        # json, not orjson: the refused value may be an integer beyond 64 bits.
        value = json.dumps(list(row), default=repr).encode()
        letter = DeadLetter(
            dead_letter_id=f"{topic}/{partition}/{offset}#{table}",
            topic=topic,
            partition=partition,
            offset=offset,
            reason_code="insert_failed",
            reason=f"its row for ClickHouse table {table} was refused: {summary[:1000]}",
            failed_at=time.time_ns() // 1_000_000,
            key=str(row[0]).encode()[:1024],
            value=value[:DEADLETTER_VALUE_LIMIT],
            record_type=f"row:{table}",
        )
        acks.wait_for(await deadletters.send(key=letter.key, value=codec.encode(letter)))

    sink = ClickHouseSink(settings, on_flush=metrics.sink_flush.observe, on_bad_row=bad_row)
    acks = acks_after_storing(
        sink, settings, on_fatal=lambda exc: asyncio.ensure_future(app.crash(exc))
    )
    sink.register_table(EVENTS_TABLE, EVENTS_COLUMNS, unique=("customer_id", "event_id"))
    sink.register_table(
        TRIGGERS_TABLE, TRIGGERS_COLUMNS, unique=("customer_id", "trigger_id", "status")
    )
    sink.register_table(CUSTOMERS_TABLE, CUSTOMERS_COLUMNS)
    sink.register_table(DEADLETTERS_TABLE, DEADLETTERS_COLUMNS, unique=("dead_letter_id",))
    sink.register_table(ERASURES_TABLE, ERASURES_COLUMNS)
    loader = Loader(
        settings=settings,
        app=app,
        sink=sink,
        acks=acks,
        codec=codec,
        clock=clock,
        metrics=metrics,
        health=Health(
            BrokerProbe(settings.kafka_bootstrap),
            clickhouse_reachable=lambda: sink.reachable,
            acknowledging=lambda: not acks.failing,
        ),
        stats=stats,
        erased=set(),
    )
    store = FactStore(loader, deadletters)
    facts = app.topic(*settings.fact_topics(), key_serializer="raw", value_serializer="raw")

    def stored(ack: Any, topic: str, partition: int, offset: int) -> None:
        ack()
        key = (topic, partition)
        if offset > loader.positions.get(key, -1):
            loader.positions[key] = offset

    @app.agent(facts, name="loader", concurrency=1)
    async def load(stream: Any) -> None:
        async for event in stream.noack().events():
            if not loader.erasures_loaded.is_set():
                await loader.erasures_loaded.wait()
            message = event.message
            try:
                await store.add(
                    message.topic, message.partition, message.offset, message.key, message.value
                )
            except Exception as exc:  # a bug must not stop loading: the fact becomes a letter
                log.exception("loading %s/%d/%d failed", message.topic, message.partition,
                              message.offset)  # fmt: skip
                summary = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                await store.dead_letter(
                    (message.topic, message.partition, message.offset), message.key,
                    message.value, "processing_error", summary[:1000],
                )  # fmt: skip
            # Acknowledged once its row is stored (and a refused row's dead letter is on Kafka).
            acks.after(partial(stored, event.ack, message.topic, message.partition,
                               message.offset))  # fmt: skip
            await sink.wait_for_room()  # rows buffered
            await acks.wait_for_room()  # dead letters not yet acknowledged by the broker

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        # The erased customers, before the first fact is stored (several loaders against a
        # server each read what the others erased). Added to what this loader knows: an erasure
        # it read may not be stored yet.
        rows = await sink.clickhouse.aquery_rows(
            f"SELECT customer_id FROM {sink.clickhouse.database}.{ERASURES_TABLE}"
        )
        loader.erased |= {str(row[0]) for row in rows}
        loader.erasures_loaded.set()

    metrics.attach(loader)
    if settings.web_port:
        from streams.web.server import LoaderWeb

        loader.web = LoaderWeb(loader)

    @app.task  # type: ignore[untyped-decorator]
    async def _start() -> None:
        acks.start()
        loader.health.broker.start()
        if loader.web is not None:
            await loader.web.start()

    if settings.prediction_interval:

        @app.task  # type: ignore[untyped-decorator]
        async def _predict() -> None:
            from streams.predictions import predict_every, publish_predictions

            await predict_every(
                lambda: sink.clickhouse,
                settings.prediction_interval,
                clock.now_ms,
                lambda fit: publish_predictions(settings, fit),
            )

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _stop(app: faust.App, **kwargs: Any) -> None:
        await loader.health.broker.stop()
        await acks.stop()  # the last rows, within STOP_SECONDS; the rest is redelivered
        if loader.web is not None:
            await loader.web.stop()

    return loader


class FactStore:
    """One fact-topic record into its row (or an erasure)."""

    def __init__(self, loader: Loader, deadletters: Any) -> None:
        self.loader = loader
        self.deadletters = deadletters
        self.sink = loader.sink
        self.acks = loader.acks
        self.codec = loader.codec
        settings = loader.settings
        # Facts written in the registry framing (JOURNEY_OUTPUT_FRAMING=confluent): their writer
        # schemas are fetched before decoding, as the workers' ingest does.
        self.resolver = resolver_for(settings, loader.codec)
        self.events = settings.topic("journey_events")
        self.decisions = settings.topic("decisions")
        self.snapshots = settings.topic("snapshots")
        self.letters = settings.topic("deadletter")

    async def add(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        stats = self.loader.stats
        stats.consumed[topic] = stats.consumed.get(topic, 0) + 1
        lineage = (topic, partition, offset)
        if topic == self.snapshots and value is None:
            self._erase(key, lineage)
            return
        if self.resolver is not None and value:
            await self.resolver.ensure(value)
        try:
            if topic == self.events:
                event: JourneyEvent = self.codec.decode(value, JourneyEvent)
                if self._kept(event.customer_id):
                    self.sink.add(EVENTS_TABLE, event_row(event, lineage), *lineage)
            elif topic == self.decisions:
                decision: Decision = self.codec.decode(value, Decision)
                if self._kept(decision.customer_id):
                    self.sink.add(TRIGGERS_TABLE, trigger_row(decision, lineage), *lineage)
            elif topic == self.snapshots:
                customer: CustomerSnapshot = self.codec.decode(value, CustomerSnapshot)
                if self._kept(customer.customer_id):
                    self.sink.add_latest(
                        CUSTOMERS_TABLE, customer.customer_id, customer_row(customer, lineage),
                        *lineage,
                    )  # fmt: skip
            elif topic == self.letters:
                letter: DeadLetter = self.codec.decode(value, DeadLetter)
                self.sink.add(DEADLETTERS_TABLE, deadletter_row(letter, lineage), *lineage)
        except DecodeError as exc:
            # Only journey workers write these topics: a record that does not decode was written
            # by something else. A dead letter (stored when it is read back), logged, counted.
            stats.undecodable += 1
            log.error("%s/%d/%d is not a record of this topic: %s", *lineage, exc.reason)
            await self.dead_letter(
                lineage,
                key,
                value,
                exc.reason_code,
                f"not a record of this fact topic: {exc.reason}",
            )

    async def dead_letter(
        self,
        lineage: tuple[str, int, int],
        key: bytes | None,
        value: bytes | None,
        reason_code: str,
        reason: str,
    ) -> None:
        """A fact the loader cannot store: on the dead-letter topic before its message is acked."""
        topic, partition, offset = lineage
        letter = DeadLetter(
            dead_letter_id=f"{topic}/{partition}/{offset}",
            topic=topic,
            partition=partition,
            offset=offset,
            reason_code=reason_code,
            reason=reason,
            failed_at=time.time_ns() // 1_000_000,
            key=key,
            value=(value or b"")[:DEADLETTER_VALUE_LIMIT],
        )
        delivery = await self.deadletters.send(
            key=key or letter.dead_letter_id.encode(), value=self.codec.encode(letter)
        )
        self.acks.wait_for(delivery)

    def _kept(self, customer_id: str) -> bool:
        if customer_id in self.loader.erased:
            self.loader.stats.skipped_erased += 1
            return False
        return True

    def _erase(self, key: bytes | None, lineage: tuple[str, int, int]) -> None:
        if not key:
            return
        customer_id = key.decode("utf-8", "replace")
        self.loader.erased.add(customer_id)
        self.loader.stats.erased += 1
        self.sink.erase("customer_id", customer_id, ERASE_TABLES)
        row = (customer_id, time.time_ns() // 1_000_000, *lineage)
        self.sink.add(ERASURES_TABLE, row, *lineage)
