"""Starting the pipeline: check the ground, then run the Faust worker (optionally with the
simulator and a live status display in the same process, which is what ``make run`` does).

The embedded ClickHouse can be opened by one process only, so the worker process is the one
that owns it; the status display queries it from inside that process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust

from schemas.codec import Codec
from sinks.clickhouse.client import ClickHouse
from sinks.clickhouse.migrations import apply_migrations
from streams import simulator
from streams.app import Pipeline, create_pipeline
from streams.clock import Clock
from streams.console import Progress, describe_trigger
from streams.engine import tune_gc
from streams.journey.decisions import Status
from streams.journey.triggers import TriggerType
from streams.logs import logging_config
from streams.publish import Publisher
from streams.schema_registry import prepare_output_framing
from streams.serving import record_serving
from streams.settings import Settings
from streams.topics import create_topics, verify_layout, wait_for_group_coordinator

log = logging.getLogger(__name__)


def prepare(settings: Settings, *, create_missing_topics: bool = True) -> int:
    """Topics exist and are co-partitioned, ClickHouse is migrated. Returns the partition count."""

    async def topics() -> int:
        if create_missing_topics:
            await create_topics(settings)
        partitions = await verify_layout(settings)
        # The worker's and the sender's groups: no GroupCoordinatorNotAvailable ERROR lines.
        await wait_for_group_coordinator(settings, [settings.app_id, f"{settings.app_id}-sender"])
        return partitions

    partitions = asyncio.run(topics())
    applied = apply_migrations(ClickHouse.shared(settings))
    for migration in applied:
        log.info("applied migration %03d_%s", migration.version, migration.name)
    return partitions


@dataclass(frozen=True)
class SimulationOptions:
    seed: int = simulator.DEFAULT_SEED
    customers: int = simulator.DEFAULT_CUSTOMERS
    rate: float = simulator.DEFAULT_RATE
    speed: float = simulator.DEFAULT_SPEED
    bad_event_rate: float = simulator.DEFAULT_BAD_EVENT_RATE
    max_events: int | None = None
    run_id: str | None = None  # None: derived from the start time, so runs never collide


class StatusDisplay:
    """Prints, every few seconds, what flows through the pipeline and what ClickHouse holds."""

    def __init__(
        self, pipeline: Pipeline, every: float, out: Any = None, json_lines: bool = False
    ) -> None:
        self.pipeline = pipeline
        self.json = json_lines
        self.max_triggers_shown = 12
        self.every = every
        self.out = out or sys.stdout
        self.started = time.monotonic()
        self._last_consumed = 0
        self._last_time = self.started
        self.simulated: str = ""
        self.sender: Any = None  # the local email sender of `make run`, when it runs
        self.recipients: Any = None  # and the simulated recipients behind its inbox

    async def snapshot(self) -> dict[str, Any]:
        """The numbers shown, also printed as JSON lines with ``--status-format json``."""
        ingest, sink, engine = self.pipeline.ingest, self.pipeline.sink, self.pipeline.engine
        consumed = sum(ingest.consumed.values())
        now = time.monotonic()
        rate = (consumed - self._last_consumed) / max(now - self._last_time, 1e-9)
        self._last_consumed, self._last_time = consumed, now
        ch = sink.clickhouse
        snapshot: dict[str, Any] = {
            "elapsed_s": round(now - self.started, 1),
            "consumed": consumed,
            "rate": round(rate, 1),
            "accepted": sum(ingest.accepted.values()),
            "per_topic": dict(ingest.consumed),
            "dead_letters": dict(ingest.dead),
            "repartitioned": ingest.repartitioned,
            "sink_rows": sink.stats.rows,
            "sink_batches": sink.stats.batches,
            "sink_failures": sink.stats.failures,
            "sink_skipped_rows": sink.stats.skipped_rows,
            "triggers": {f"{t}/{status}": n for (t, status), n in sorted(engine.decisions.items())},
            "emitted": sum(
                n for (_, status), n in engine.decisions.items() if status == Status.EMITTED
            ),
            "pending_timers": len(engine.index),
            "ready": engine.rebuilds > 0,
            "index_rebuild": engine.last_rebuild,
            "timer_lateness_p99_ms": _percentile(engine.timer_lateness_ms, 0.99),
            "clock": datetime.fromtimestamp(self.pipeline.clock.now_ms() / 1000, UTC).isoformat(
                timespec="minutes"
            ),
        }
        try:
            ((events_rows, dead_rows, trigger_rows, customer_rows),) = await ch.aquery_rows(
                f"SELECT (SELECT count() FROM {ch.database}.events FINAL), "
                f"(SELECT count() FROM {ch.database}.deadletters FINAL), "
                f"(SELECT count() FROM {ch.database}.triggers FINAL), "
                f"(SELECT count() FROM {ch.database}.customers FINAL)"
            )
            snapshot["events_rows"], snapshot["deadletter_rows"] = events_rows, dead_rows
            snapshot["trigger_rows"], snapshot["customer_rows"] = trigger_rows, customer_rows
        except Exception as exc:  # the display must never take the pipeline down
            snapshot["clickhouse_error"] = f"{exc.__class__.__name__}: {exc}"
        if self.simulated:
            snapshot["simulator"] = self.simulated
        return snapshot

    async def show(self) -> None:
        snap = await self.snapshot()
        recent, self.pipeline.engine.recent = self.pipeline.engine.recent, []
        if self.json:
            self.out.write(json.dumps(snap) + "\n")
            self.out.flush()
            return
        elapsed = int(snap["elapsed_s"])
        short = {full: name for name, full in self.pipeline.settings.input_topics().items()}
        per_topic = "  ".join(
            f"{short.get(topic, topic)}={count:,}"
            for topic, count in sorted(snap["per_topic"].items())
        )
        dead = ", ".join(
            f"{reason} {n}"
            for reason, n in sorted(snap["dead_letters"].items(), key=lambda x: -x[1])
        )
        stored = (
            f"events {snap['events_rows']:,}, triggers {snap['trigger_rows']:,}, customers "
            f"{snap['customer_rows']:,}, deadletters {snap['deadletter_rows']:,} rows"
            if "events_rows" in snap
            else f"unavailable ({snap['clickhouse_error']})"
        )
        shown = recent[: self.max_triggers_shown]
        for trigger in shown:
            self.out.write(f"  -> {describe_trigger(trigger)}\n")
        if len(recent) > len(shown):
            self.out.write(f"  -> ... and {len(recent) - len(shown):,} more triggers\n")
        emitted: dict[str, int] = {}
        for key, n in snap["triggers"].items():
            trigger_type, status = key.split("/")
            if status == Status.EMITTED:
                emitted[trigger_type] = n
        lines = [
            f"[{elapsed // 60:02d}:{elapsed % 60:02d}] consumed {snap['consumed']:,}"
            f" ({snap['rate']:,.0f}/s) | ClickHouse {stored}",
            f"    per topic: {per_topic or '-'}",
            f"    dead letters: {dead or 'none'}   re-keyed: {snap['repartitioned']:,}"
            f"   sink: {snap['sink_batches']:,} batches, {snap['sink_failures']} failed inserts",
            f"    triggers emitted {snap['emitted']:,} ({len(emitted)}/{len(TriggerType)} types): "
            + (", ".join(f"{t} {n:,}" for t, n in sorted(emitted.items())) or "-")
            + f"   pending timers {snap['pending_timers']:,}   journey clock {snap['clock']}",
        ]
        if self.simulated:
            lines.append(f"    simulator: {self.simulated}")
        if self.sender is not None:
            from streams.sender.service import describe

            lines.append(
                f"    email sender: {describe(self.sender.counts)} "
                f"(local SMTP server, mails in {self.pipeline.settings.data_dir / 'mail'})"
            )
            if self.recipients is not None:
                lines.append(f"    simulated recipients (demo): {describe(self.recipients.counts)}")
        settings = self.pipeline.settings
        if settings.web_port:
            lines.append(
                f"    dashboard: http://{settings.web_host}:{settings.web_port}/   "
                "analytics: journey report"
            )
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()


def _percentile(samples: Any, q: float) -> int | None:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def run_worker(
    settings: Settings,
    *,
    simulation: SimulationOptions | None = None,
    status_every: float | None = None,
    status_json: bool = False,
    loglevel: str = "info",
    log_format: str = "text",
    local_sender: bool = False,
) -> None:
    """Run until Ctrl-C / SIGTERM (or, in tests, until killed).

    ``local_sender``: also run the reference email sender in this process, against a local SMTP
    server that keeps every mail under ``<data dir>/mail`` (``make run``)."""
    tune_gc()
    partitions = prepare(settings)
    # With the simulator in the same process, the journey clock runs at the simulator's speed
    # from the same moment, so both agree on what time it is in the shop.
    clock = Clock(simulation.speed if simulation is not None else settings.clock_speed)
    codec = Codec.load(max_value_bytes=settings.max_value_bytes)
    asyncio.run(prepare_output_framing(settings, codec))  # registry ids, if outputs use them
    pipeline = create_pipeline(settings, partitions=partitions, clock=clock, codec=codec)
    pipeline.sink.setup()
    record_serving(
        settings, clock
    )  # so that `journey sql`/`report` find this worker, whatever its port
    app = pipeline.app
    display = (
        StatusDisplay(pipeline, status_every, json_lines=status_json) if status_every else None
    )

    if display is not None:

        @app.timer(interval=display.every)  # type: ignore[untyped-decorator]
        async def _status() -> None:
            await display.show()

    if simulation is not None:

        @app.task  # type: ignore[untyped-decorator]
        async def _simulate() -> None:
            await run_simulation(settings, simulation, display, clock=clock)

    if local_sender:
        _run_local_sender(app, settings, codec, clock, display)
    resolver = pipeline.ingest.schema_resolver
    if resolver is not None:

        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def _close_registry_client(app: faust.App, **kwargs: Any) -> None:
            await resolver.close()

    worker = faust.Worker(
        app,
        loglevel=loglevel,
        quiet=True,
        redirect_stdouts=False,
        logging_config=logging_config(loglevel, log_format),
    )
    worker.execute_from_commandline()


def _run_local_sender(
    app: faust.App, settings: Settings, codec: Codec, clock: Clock, display: StatusDisplay | None
) -> None:
    from streams.sender.local_smtp import LocalMailServer
    from streams.sender.recipients import SimulatedRecipients
    from streams.sender.service import EmailSender

    # Demo only: made-up people behind the local inbox open, click, unsubscribe and complain,
    # reported per message (trigger id) like an email service would, so the dashboard's
    # engagement rates are not empty. `journey sender` (real SMTP) never starts them.
    recipients = SimulatedRecipients(Publisher(settings, codec), clock)
    mail = LocalMailServer(settings.data_dir / "mail", recipients=recipients)
    local = settings.model_copy(
        update={
            "sender_smtp_host": "127.0.0.1",
            "sender_smtp_port": mail.port,
            "sender_smtp_starttls": False,
            "sender_smtp_username": None,
        }
    )

    @app.task  # type: ignore[untyped-decorator]
    async def _send_emails() -> None:
        mail.start()
        sender = EmailSender(local, clock_ms=clock.now_ms, codec=codec)
        if display is not None:
            display.sender, display.recipients = sender, recipients
        await recipients.publisher.start()
        # Either failing (Kafka gone, say) fails the task: no silently missing engagement.
        tasks = [asyncio.ensure_future(sender.run()), asyncio.ensure_future(recipients.run())]
        try:
            await asyncio.gather(*tasks)
        finally:
            mail.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await recipients.publisher.close()


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while number:
        number, digit = divmod(number, 36)
        text = digits[digit] + text
    return text or "0"


def simulation_line(stats: Any) -> str:
    reached = (
        datetime.fromtimestamp(stats.sim_reached_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        if stats.sim_reached_ms
        else "-"
    )
    return (
        f"{stats.events:,} events sent ({stats.bad:,} malformed), {stats.customers_started:,} "
        f"customers, {stats.orders:,} orders; simulated time {reached} UTC"
    )


async def run_simulation(
    settings: Settings,
    options: SimulationOptions,
    display: StatusDisplay | None = None,
    progress: Progress | None = None,
    clock: Clock | None = None,
) -> Any:

    # Shop time starts at the journey clock's "now" and runs at its speed: both agree.
    start_ms = clock.now_ms() if clock is not None else time.time_ns() // 1_000_000
    run_id = options.run_id if options.run_id is not None else _base36(start_ms // 1000)
    config = simulator.SimulationConfig(
        seed=options.seed,
        customers=options.customers,
        start_ms=start_ms,
        bad_event_rate=options.bad_event_rate,
        run_id=run_id,
    )
    publisher = Publisher(settings)
    await publisher.start()

    async def send(event: simulator.SimEvent) -> None:
        if event.record is not None:
            await publisher.send_record(event.topic, event.key, event.record)
        else:
            await publisher.send_raw(event.topic, event.key.encode(), event.raw or b"")

    def on_progress(stats: simulator.SimStats) -> None:
        if display is not None:
            display.simulated = simulation_line(stats)
        if progress is not None:
            progress.update(stats.events, simulation_line(stats))

    try:
        stats = await simulator.run(
            config,
            send,
            rate=options.rate,
            speed=options.speed,
            max_events=options.max_events,
            on_progress=on_progress,
        )
    finally:
        await publisher.close()
    if display is not None:
        display.simulated = "finished: " + simulation_line(stats)
    return stats
