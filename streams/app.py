"""The Faust application: one agent reads every input topic of the contract.

A single agent (concurrency 1: faust-streaming #606 commits past unprocessed messages above
that) owns each customer's partition across all inputs, so the journey state of a customer has
exactly one writer. The agent is thin: it hands each message to ``Ingest`` and never acks it
itself; the ClickHouse sink acks messages once their rows are stored, and only acked offsets are
committed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import faust

from schemas.codec import Codec, register_faust_codecs
from sinks.clickhouse.sink import ClickHouseSink
from streams.ingest import Headers, Ingest
from streams.settings import Settings

log = logging.getLogger(__name__)


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


@dataclass
class Pipeline:
    settings: Settings
    app: faust.App
    sink: ClickHouseSink
    ingest: Ingest


def create_pipeline(settings: Settings, codec: Codec | None = None) -> Pipeline:
    codec = codec or Codec.load(max_value_bytes=settings.max_value_bytes)
    register_faust_codecs(codec)
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")],
        broker_credentials=broker_credentials(settings),
        store="memory://",
        datadir=str(settings.data_dir / "faust"),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_interval=settings.commit_interval / 1000,
        broker_commit_every=settings.commit_every,
        broker_session_timeout=settings.consumer_session_timeout / 1000,
        broker_heartbeat_interval=min(3.0, settings.consumer_session_timeout / 3000),
        web_enabled=False,
        autodiscover=False,
    )
    sink = ClickHouseSink(settings, on_fatal=lambda exc: asyncio.ensure_future(app.crash(exc)))
    deadletters = app.topic(
        settings.topic("deadletter"), key_serializer="raw", value_serializer="raw"
    )
    repartition = app.topic(
        settings.topic("repartition"), key_serializer="raw", value_serializer="raw"
    )

    async def send_deadletter(key: bytes, value: bytes, headers: Headers) -> Any:
        return await deadletters.send(key=key, value=value, headers=list(headers) or None)

    async def send_repartition(key: bytes, value: bytes, headers: Headers) -> Any:
        return await repartition.send(key=key, value=value, headers=list(headers))

    ingest = Ingest(
        settings,
        codec,
        sink,
        send_deadletter=send_deadletter,
        send_repartition=send_repartition,
    )
    inputs = app.topic(
        *settings.copartitioned_topics(),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    @app.agent(inputs, name="journey", concurrency=1)
    async def journey(stream: Any) -> None:
        async for event in stream.noack().events():
            message = event.message
            await ingest.handle(
                message.topic,
                message.partition,
                message.offset,
                message.key,
                message.value,
                message.headers,
                event.ack,
            )
            await sink.wait_for_room()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _load_watermarks(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        await sink.load_watermarks()

    @app.task  # type: ignore[untyped-decorator]
    async def _start_sink() -> None:
        sink.start()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _flush_sink(app: faust.App, **kwargs: Any) -> None:
        await sink.stop()

    return Pipeline(settings=settings, app=app, sink=sink, ingest=ingest)
