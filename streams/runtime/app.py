"""The Faust application: one agent reads every input topic of the contract, plus ticks.

A single agent (concurrency 1: faust-streaming #606 commits past unprocessed messages above
that) owns each customer's partition across all inputs, so the journey state of a customer has
exactly one writer, and its timers fire in the same agent (on the ticks of its partition). The
agent is thin: messages pass the event-time merge (``ordering.py``: per partition number,
oldest ``occurred_at`` first across the input topics), then go to ``Ingest`` (decode, dead
letters, re-keying, the key's partition) and accepted events to the ``JourneyEngine``, which
publishes what they caused through ``Outputs``. A worker holds no database connection: the
loader (``loader.py``) stores the published facts in ClickHouse.

Where a message is acknowledged: the agent hands each message to ``Intake.take``
(``intake.py``), which applies it (``MessageHandler``) and hands it to ``Acks.after_event``
(``acks.py``), which acknowledges it once the broker has acknowledged every record the message
caused; only acked offsets are committed. No exception escapes a message: whatever fails while
handling one becomes a ``processing_error`` dead letter (the engine has left the customer's
state as it was) and the stream goes on.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import faust
from faust.stores.rocksdb import Store as RocksDBStore
from faust.streams import _current_event
from faust.types import TP
from rocksdict import WriteBatch

from schemas.codec import Codec
from streams.clock import Clock
from streams.runtime.acks import Acks
from streams.runtime.batching import BatchProducer
from streams.runtime.commit_guard import CommitGuard, install_commit_guard
from streams.runtime.engine import JourneyEngine
from streams.runtime.fetching import FetchControl, install_fetch_control, install_fetch_pacing
from streams.runtime.handover import Turns, install_handover, stream_events
from streams.runtime.health import BrokerProbe, Health
from streams.runtime.ingest import Ingest
from streams.runtime.intake import Intake, MessageHandler
from streams.runtime.ordering import EventTimeBuffer, tick_value
from streams.runtime.outputs import Outputs
from streams.runtime.restore import PromptTableManager, install_bulk_restore
from streams.runtime.status import RateMeter
from streams.settings import JOURNEY_TABLE, Settings
from streams.web.metrics import Metrics
from streams.web.server import WorkerWeb

log = logging.getLogger(__name__)

# How long records wait to fill a batch (Faust's producer, and the facts' BatchProducer).
PRODUCER_LINGER = 0.005


def broker_credentials(settings: Settings) -> Any:
    """Faust's spelling of the Kafka security options (aiokafka does the work underneath)."""
    options = settings.kafka_client_options()
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=options["sasl_plain_username"],
            password=options["sasl_plain_password"],
            mechanism=options["sasl_mechanism"],
            ssl_context=options.get("ssl_context"),
        )
    if protocol == "SSL":
        return faust.SSLCredentials(options["ssl_context"])
    return None


class QuietMonitor(faust.Monitor):
    """Faust's ``Monitor`` (the app's sensor) without its per-message and per-event statistics
    (rates, latencies, counts): nothing here reads them (the worker's metrics are
    ``streams/web/metrics.py``), and they were a call and a dict update per message and per event.
    It stays among the sensors: Faust warns at every rebalance when no sensor kept a state."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None


class _App(faust.App):
    """Before a rebalance goes on, and before a stop, Faust waits until every message it handed
    to the agent is acked (``_consumer_wait_empty``). Messages held by the event-time merge are
    not handled, so they never would be: they are dropped there (not acked, they are delivered
    again from the committed offset). There, not in ``on_rebalance_start``: that hook runs in the
    consumer's thread while the agent uses the merge on the event loop, and the agent could hold
    a message it received after it; at ``_consumer_wait_empty`` the flow is suspended (the
    stream hands the agent nothing more) and it runs on the event loop."""

    ordering: EventTimeBuffer | None = None

    def _new_producer(self) -> Any:
        """Faust's producer, whose buffer's ``wait_until_ebb`` is cheap while the buffer is not
        full. Faust's conductor awaits it for every message received, and it read the buffer's
        size through two settings lookups each time (about 1.5 % of the worker's CPU in issue
        13's profiles). The buffer holds what Faust's own table writes and ``send_soon``
        queue; the worker writes its table's changelog itself (``table_writer``), so it is
        nearly always empty. Full, Faust's own wait runs, as before."""
        producer = super()._new_producer()
        buffer = producer.buffer
        if not self.conf.producer_threaded:  # (its size is then another queue's)

            def ebbed() -> bool:
                return bool(buffer.pending.qsize() <= buffer.max_messages)

            async def wait_until_ebb() -> None:
                if not ebbed():
                    await type(buffer).wait_until_ebb(buffer)

            # the check alone, for a message put in its queue without the conductor (handover.py)
            wait_until_ebb.ebbed = ebbed  # type: ignore[attr-defined]
            buffer.wait_until_ebb = wait_until_ebb  # type: ignore[method-assign]
        return producer

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        self.drop_held()
        await super()._consumer_wait_empty(consumer, logger)

    def drop_held(self) -> None:
        """Empty the merge, and stop Faust waiting for what it held. Faust forgets a message it
        waits for only once it is acked or garbage-collected, and its stream keeps the last
        message it received referenced until the next one arrives (none does while partitions
        are paused): dropping it was not enough, a worker joined by another waited for it for
        ever and lost its partitions (tests/integration/test_multi_worker.py). Untracked and
        unacked, it is not committed: it is delivered again from the committed offset."""
        if self.ordering is not None:
            self.untrack(self.ordering.clear())

    def untrack(self, dropped: list[Any]) -> None:
        """Faust no longer waits for these events the merge dropped (see ``drop_held``)."""
        if dropped and self._consumer is not None:
            unacked = self._consumer.unacked
            for event in dropped:
                unacked.discard(event.message)


class RawSchema(faust.Schema[bytes, bytes]):
    """Faust's events of the input topics carry the message's own key and value (``Ingest``
    decodes them): no serializer call per message, as Faust's ``raw`` serializer made (it
    returns the same bytes)."""

    def compile(self, app: Any, **kwargs: Any) -> Any:
        event = app.conf.Event  # what app.create_event makes, without a settings lookup each

        def event_of(message: Any) -> Any:
            return event(app, message.key, message.value, message.headers, message)

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return event_of(message)

        # the plain call, for a message put in its queue without the conductor (handover.py)
        decode.event_of = event_of  # type: ignore[attr-defined]
        return decode


class _PartitionOf:
    """Stands for the event being handled where Faust's RocksDB store asks for one: it writes to
    the database of ``current_event().message.partition``."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


def table_writer(
    table: Any, batches: BatchProducer, acks: Acks
) -> Callable[[Sequence[tuple[int, bytes, bytes]]], None]:
    """``write(entries)``: states ``(partition, key, value)`` into a Faust table outside of the
    agent's handling of a message (the engine writes states behind, from the acks loop): what
    ``table[key] = value`` does in an agent, with the partition given instead of taken from the
    current event. The store gets the values, and the changelog records go into their
    partitions' record batches (``batching.py``, not one Faust send each); ``acks`` waits for
    them: the messages behind the states are acknowledged only once their changelog records are
    on the broker. When a batch is, its last offset becomes the store's persisted offset (what
    Faust does per record: a restarted worker reads the changelog from there). Faust's check
    that the event's topic has as many partitions as the changelog is left out: the worker
    checks the topic layout at start.

    In Faust's RocksDB store, one ``WriteBatch`` per partition per call, as Faust applies a
    changelog batch when it restores, instead of a ``put`` per state through the store's
    ``__setitem__`` and a context variable: 9.5 -> 3.8 us per state written, changelog record
    included (bench/README.md, "Session 12")."""
    events: dict[int, _PartitionOf] = {}
    topic = table.changelog_topic.get_topic_name()
    store = table.data

    def delivered(partition: int, offset: int) -> None:
        store.set_persisted_offset(TP(topic, partition), offset)

    batches.on_delivered[topic] = delivered

    def put_each(entries: Sequence[tuple[int, bytes, bytes]]) -> None:
        """Any other Faust store (``memory://``): through its own ``__setitem__``."""
        for partition, key, value in entries:
            event = events.get(partition)
            if event is None:
                event = events[partition] = _PartitionOf(partition)
            token = _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
            try:
                store[key] = value
            finally:
                _current_event.reset(token)

    def put_batches(entries: Sequence[tuple[int, bytes, bytes]]) -> None:
        """Faust's RocksDB store: what its ``_set`` does per key (the database of the
        partition, and its index of which partition holds a key), one write per partition."""
        by_partition: dict[int, Any] = {}
        key_index = store._key_index
        for partition, key, value in entries:
            batch = by_partition.get(partition)
            if batch is None:
                batch = by_partition[partition] = WriteBatch(raw_mode=True)
            batch.put(key, value)
        for partition, batch in by_partition.items():
            store._db_for_partition(partition).write(batch)
        for partition, key, _ in entries:
            key_index[key] = partition

    put = put_batches if isinstance(store, RocksDBStore) and store.use_rocksdict else put_each

    def write(entries: Sequence[tuple[int, bytes, bytes]]) -> None:
        put(entries)
        append = batches.append
        wait_for = acks.wait_for
        for partition, key, value in entries:
            wait_for(append(topic, partition, key, value, None))

    return write


def table_reader(table: Any) -> Callable[[int, bytes], bytes | None] | None:
    """``read(partition, key)``: the stored value of ``key`` in ``table``'s given partition
    (``None``: none). In Faust's RocksDB store, from that partition's database at once: what the
    store's ``_get`` does for the current event's partition, without Faust's and mode's mapping
    layers and the ``KeyError`` they raise for a key not stored (a new customer's first event:
    1.6 % of the worker's time under ``cProfile`` on the bench's workload). Other stores:
    ``None`` (the engine then reads ``table.get(key)``)."""
    store = table.data
    if not (isinstance(store, RocksDBStore) and store.use_rocksdict):
        return None
    key_index = store._key_index
    db_for_partition = store._db_for_partition

    def read(partition: int, key: bytes) -> bytes | None:
        value: bytes | None = db_for_partition(partition).get(key)
        if value is not None:
            key_index[key] = partition  # as the store's own read does
        return value

    return read


def unrestored(partitions: set[int], actives: Iterable[TP], changelog: str) -> set[int]:
    """Of the table partitions a worker owns (``partitions``), those whose changelog partition is
    not among its active assignments (``actives``, the assignor's): Faust neither restored their
    state nor keeps it. That happens when the group leader's metadata lacks the changelog topic
    (it logs "Ignoring missing topic"): missing, or not describable by the worker's user."""
    return partitions - {tp.partition for tp in actives if tp.topic == changelog}


def group_instance_id(settings: Settings) -> str | None:
    """Static membership id (one per worker, stable across its restarts), or None (dynamic:
    unset or ``none``)."""
    if settings.group_instance_id.lower() == "none":
        return None
    return settings.group_instance_id or None


@dataclass
class Pipeline:
    settings: Settings
    app: faust.App
    outputs: Outputs
    acks: Acks
    ingest: Ingest
    engine: JourneyEngine
    clock: Clock
    metrics: Metrics
    health: Health
    web: WorkerWeb | None = None
    ordering: EventTimeBuffer | None = None
    rate: RateMeter = field(default_factory=RateMeter)

    @property
    def unacknowledged(self) -> int:
        """Records not acknowledged by the broker yet: sent, or queued for the next flush."""
        return self.acks.pending + self.outputs.queued


def create_pipeline(
    settings: Settings,
    *,
    partitions: int | None = None,
    clock: Clock | None = None,
    codec: Codec | None = None,
) -> Pipeline:
    """``partitions``: the count the input topics really have (from the layout check)."""
    partitions = partitions or settings.partitions
    clock = clock or Clock(settings.clock_speed)
    codec = codec or Codec.load(max_value_bytes=settings.max_value_bytes)
    datadir = settings.data_dir / "faust" / settings.worker_name
    datadir.mkdir(parents=True, exist_ok=True)
    app = _App(
        settings.app_id,
        broker=[f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")],
        broker_credentials=broker_credentials(settings),
        store=settings.table_store,
        datadir=str(datadir),
        topic_partitions=partitions,
        topic_replication_factor=settings.replication_factor,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Table changelog and trigger records are small and many: batch them per request
        # instead of one produce round trip each (measured: 20x the throughput).
        producer_linger=PRODUCER_LINGER,
        producer_max_batch_size=512 * 1024,
        broker_max_poll_records=settings.consumer_max_poll_records,
        broker_commit_interval=settings.commit_interval / 1000,
        broker_commit_every=settings.commit_every,
        broker_session_timeout=settings.consumer_session_timeout / 1000,
        broker_heartbeat_interval=min(3.0, settings.consumer_session_timeout / 3000),
        # Opt-in static membership: a restarted worker gets its partitions back at once, not
        # after the session timeout; a worker that stops for good keeps them until it times out.
        consumer_group_instance_id=group_instance_id(settings),
        web_enabled=False,
        autodiscover=False,
        Monitor=QuietMonitor,
        TableManager=PromptTableManager,  # no second's wait when it starts (restore.py)
    )
    install_commit_guard(app)  # commit an offset only when every message below it was acked
    install_fetch_control(app)  # the event-time merge pauses what it has enough of
    install_handover(app)  # a fetched message reaches the agent without a loop turn (handover.py)
    # tables restored from their changelog a poll at a time
    install_bulk_restore(app)
    # Fewer fetch round trips at moderate rates, the same long poll when idle (fetching.py).
    install_fetch_pacing(app, settings.consumer_fetch_max_wait, settings.consumer_fetch_gather)
    metrics = Metrics()
    acks = Acks(
        interval=settings.ack_interval / 1000,
        max_pending=settings.max_pending_records,
        on_fatal=lambda exc: asyncio.ensure_future(app.crash(exc)),
    )
    # The handled messages, acknowledged together by the guarded consumer (commit_guard.py).
    acks.ack_events = lambda events: cast(CommitGuard, app.consumer).ack_events(events)

    # The facts and the table's changelog records go out in record batches, one per
    # topic-partition (batching.py), on Faust's aiokafka producer.
    batches = BatchProducer(
        lambda: cast(Any, app.producer)._ensure_producer(), linger=PRODUCER_LINGER
    )
    outputs = Outputs(settings, batches.produce, acks)
    ticks = app.topic(settings.topic("ticks"), key_serializer="raw", value_serializer="raw")
    ingest = Ingest(settings, codec, outputs, partitions=partitions)

    async def customer_failed(
        topic: str, partition: int, offset: int, customer_id: str, exc: BaseException
    ) -> None:
        await ingest.processing_error(
            topic, partition, offset, customer_id.encode(), None, exc, f"customer {customer_id}"
        )

    journeys = app.Table(
        JOURNEY_TABLE,
        default=None,
        key_type=bytes,  # bytes in and out: Faust then uses its "raw" serializer everywhere
        value_type=bytes,
        partitions=partitions,
        extra_topic_configs=settings.changelog_config(),
    )
    engine = JourneyEngine(
        journeys,
        outputs,
        codec,
        settings.journey,
        clock,
        observe_lateness=metrics.timer_lateness.observe,
        on_failure=customer_failed,
        write=table_writer(journeys, batches, acks),
        read=table_reader(journeys),
    )
    positions: dict[tuple[str, int], int] = {}  # last offset handled per partition, for lag
    processing = metrics.processing
    ticks_topic = settings.topic("ticks")
    inputs = app.topic(*settings.copartitioned_topics(), schema=RawSchema(), partitions=partitions)

    offsets = ConsumerOffsets(app)
    fetching = FetchSwitch(app)
    ordering = app.ordering = ordered_intake(settings, offsets, fetching)

    apply = MessageHandler(ingest, engine, ticks_topic, app.crash)

    @app.agent(inputs, name="journey", concurrency=1)
    async def journey(stream: Any) -> None:
        stream = stream.noack()
        turns = Turns()  # the loop turns every few ms of this agent's work (handover.py)
        intake = Intake(ingest, ordering, apply, acks, ticks_topic, turns, positions, processing)
        async for event in stream_events(stream, turns):  # Faust's iteration, leaner
            # The event-time merge, then each message it releases applied and acknowledged.
            if not await intake.take(event, stream):
                return
            # Hold no reference to a message the merge keeps: on a stop the merge is emptied
            # and Faust waits until every message still referenced (a weak set) is acked.
            event = None

    @app.timer(interval=settings.timer_tick_interval / 1000)  # type: ignore[untyped-decorator]
    async def _tick() -> None:
        # Every worker ticks the partitions it owns; the tick is handled by the agent.
        for tp in app.consumer.assignment():
            if tp.topic == ticks_topic:
                await ticks.send(value=tick_value(clock.now_ms()), partition=tp.partition)

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def _reconcile_pauses() -> None:
        fetching.reconcile(frozenset(ordering.paused))

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _forget_held(app: _App, revoked: Any, **kwargs: Any) -> None:
        app.drop_held()  # unhandled, so unacked: delivered again from the committed offset
        ingest.forget_decoded()

    changelog = settings.changelog_topic()

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def _rebuild_timers(app: _App, **kwargs: Any) -> None:
        mine = {tp.partition for tp in app.consumer.assignment() if tp.topic == ticks_topic}
        missing = unrestored(mine, app.assignor.assigned_actives(), changelog)
        if missing:
            log.error(
                "the state of partitions %s was not restored: the changelog %s is not in this "
                "worker's assignment (is it missing, or not describable by the worker's user?); "
                "decisions for their customers start from an empty journey. Check the topic and "
                "restart the workers (docs/runbook.md)",
                sorted(missing), changelog,
            )  # fmt: skip
        engine.rebuild(journeys.items(), mine)
        # The merge learns the new assignment (it was emptied when the rebalance began; what
        # arrived since is kept) and where each assigned input partition begins.
        assigned = [tp for tp in app.consumer.assignment() if tp.topic in ordering.rank]
        app.untrack(ordering.assign((tp.topic, tp.partition) for tp in assigned))
        await offsets.assigned(assigned)

    lag_topics = set(settings.copartitioned_topics()) - {ticks_topic}

    def lag() -> dict[tuple[str, int], int]:
        behind: dict[tuple[str, int], int] = {}
        for tp in app.consumer.assignment():
            try:
                highwater = app.consumer.highwater(tp)
            except Exception:  # not known yet for this partition
                continue
            if highwater is not None and tp.topic in lag_topics:
                behind[(tp.topic, tp.partition)] = max(
                    0, highwater - positions.get((tp.topic, tp.partition), -1) - 1
                )
        return behind

    pipeline = Pipeline(
        settings=settings,
        app=app,
        outputs=outputs,
        acks=acks,
        ingest=ingest,
        engine=engine,
        clock=clock,
        metrics=metrics,
        ordering=ordering,
        health=Health(
            BrokerProbe(settings.kafka_bootstrap), acknowledging=lambda: not acks.failing
        ),
    )
    metrics.attach(pipeline, lag)
    if settings.worker_web_port:
        pipeline.web = WorkerWeb(pipeline)

    @app.task  # type: ignore[untyped-decorator]
    async def _start() -> None:
        await batches.start(outputs.topics)
        acks.start()
        pipeline.health.broker.start()
        if pipeline.web is not None:
            await pipeline.web.start()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _stop(app: faust.App, **kwargs: Any) -> None:
        await pipeline.health.broker.stop()
        await acks.stop()
        await batches.stop()
        if pipeline.web is not None:
            await pipeline.web.stop()

    return pipeline


# --- the event-time merge's view of the consumer ------------------------------------------------
# Tie order: who sets consent and time zone first, the worker's ticks (timers) last.
ORDERING_TOPICS = (
    "predictions", "customers", "engagement", "page_views", "cart", "orders", "shipments",
    "feedback",
)  # fmt: skip


class ConsumerOffsets:
    """Where each assigned input partition ends, as the consumer knew it when it last polled
    (``taken``), and where consumption began."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self.earliest: dict[tuple[str, int], int] = {}
        self._ends: dict[tuple[str, int], int | None] = {}
        # Start offsets looked up since the last poll (``start_offset``).
        self._starts: dict[tuple[str, int], int | None] = {}
        self._listening = False

    def end_offset(self, topic: str, partition: int) -> int | None:
        """The highwater of the topic-partition when the consumer last took records from its
        fetcher (a poll; None: not known then, or left out of its broker's latest fetch
        response). An empty topic-partition below it has records on their way: taken
        by that poll and not handed to the agent yet, or fetched and left for the next one.
        What the fetcher learns after a poll waits for the next one, as the records it fetched
        do: the merge does not hold the events of a poll back for a record appended after them
        (the worker's own tick, a live event), which comes with a later poll (bench/README.md,
        session 10: that wait held an order up to 104 ms, p99 17 ms, at 1,000 orders/s; 2-3 ms
        since)."""
        return self._ends.get((topic, partition))

    def taken(self) -> None:
        """The consumer polled: remember where every topic-partition of the current assignment
        ends, as its broker's latest fetch response said (``fetching.FetchedEnds``). One that
        response left out has no known end (None): aiokafka leaves out a topic-partition whose
        fetched records it still holds, so records appended since may be missing from its
        older end while the response brought later ones of other topics."""
        self._starts = {}
        try:
            tps = self.app.consumer.assignment()
        except Exception:  # not started
            self._ends = {}
            return
        fetched = cast(FetchControl, self.app.consumer).fetched_ends
        self._ends = fetched.known_ends((tp.topic, tp.partition) for tp in tps)

    def start_offset(self, topic: str, partition: int) -> int | None:
        """Where consumption of the topic-partition began, as known at the last poll (like
        ``end_offset``: the merge asks about every empty topic-partition for nearly every
        message, and the lookup through Faust's committed offsets was half its cost)."""
        tp = (topic, partition)
        try:
            return self._starts[tp]
        except KeyError:
            start = self._starts[tp] = self._start_offset(topic, partition)
            return start

    def _start_offset(self, topic: str, partition: int) -> int | None:
        # Faust seeks every assigned partition to its committed offset after a rebalance and
        # keeps it there (None for 0 or none: consumption then starts at the earliest offset).
        # Below the earliest offset (retention deleted it), consumption starts at the earliest.
        committed = getattr(self.app.consumer, "_committed_offset", {}).get(TP(topic, partition))
        earliest = self.earliest.get((topic, partition))
        if committed is None or earliest is None:
            return earliest if committed is None else int(committed)
        return max(int(committed), earliest)

    async def assigned(self, tps: list[TP]) -> None:
        if not self._listening:
            cast(FetchControl, self.app.consumer).after_poll.append(self.taken)
            self._listening = True
        self.taken()  # the new assignment's: unknown (None) until fetched
        self.earliest.clear()
        try:
            found = await self.app.consumer.earliest_offsets(*tps)
        except Exception as exc:  # the merge then waits ordering_wait where it cannot tell
            log.warning("earliest offsets unknown after the rebalance: %s", exc)
            return
        self.earliest.update({(tp.topic, tp.partition): offset for tp, offset in found.items()})
        self._starts = {}


class FetchSwitch:
    """The merge's pauses, on the worker's consumer (``streams/runtime/fetching.py``)."""

    def __init__(self, app: faust.App) -> None:
        self.app = app

    @property
    def consumer(self) -> FetchControl:
        return cast(FetchControl, self.app.consumer)

    def pause(self, topic: str, partition: int) -> None:
        self.consumer.pause_fetching(TP(topic, partition))

    def resume(self, topic: str, partition: int) -> None:
        self.consumer.resume_fetching(TP(topic, partition))

    def reconcile(self, wanted: frozenset[tuple[str, int]]) -> None:
        self.consumer.reconcile(TP(topic, partition) for topic, partition in wanted)


def ordered_intake(
    settings: Settings, offsets: ConsumerOffsets, fetching: FetchSwitch | None = None
) -> EventTimeBuffer:
    topic_order = [
        *(settings.topic(name) for name in ORDERING_TOPICS),
        settings.topic("repartition"),
        settings.topic("ticks"),
    ]
    return EventTimeBuffer(
        topic_order,
        wait_ms=settings.ordering_wait,
        capacity=settings.ordering_buffer,
        end_offset=offsets.end_offset,
        start_offset=offsets.start_offset,
        idle_topics=[settings.topic("ticks")],
        pause=fetching.pause if fetching is not None else None,
        resume=fetching.resume if fetching is not None else None,
    )
