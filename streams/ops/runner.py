"""Starting the pipeline's processes: a journey worker, the loader, or all of them.

* ``run_worker``: one journey worker (``journey worker``), Kafka in, Kafka out.
* ``run_loader``: the analytics loader (``journey loader``), the fact topics into ClickHouse; it
  owns the embedded ClickHouse, so it is the one that migrates it and answers ``/sql``.
* ``run_all``: what ``journey run``/``make run`` do: the loader and N workers as child processes
  (each prints its figures as JSON lines, which this process shows together), plus, in this
  process, the shop simulator and the reference email sender. Children share one journey clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import hashlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import faust

from schemas.codec import Codec
from sinks.clickhouse.client import ClickHouse
from sinks.clickhouse.migrations import apply_migrations
from streams.clock import Clock
from streams.journey.decisions import Status
from streams.journey.triggers import TriggerType
from streams.logs import logging_config
from streams.ops import simulator
from streams.ops.console import Progress, describe_trigger
from streams.ops.publish import Publisher
from streams.ops.serving import record_serving
from streams.ops.topics import create_topics, verify_layout, wait_for_group_coordinator
from streams.runtime.app import create_pipeline
from streams.runtime.engine import tune_gc
from streams.runtime.status import loader_status, stored_counts, worker_status
from streams.schema_registry import prepare_output_framing
from streams.settings import Settings

log = logging.getLogger(__name__)


def prepare_topics(settings: Settings, *, create_missing_topics: bool = True) -> int:
    """Topics exist and are co-partitioned. Returns the partition count."""

    async def topics() -> int:
        if create_missing_topics:
            await create_topics(settings)
        partitions = await verify_layout(settings)
        # The groups of this product: no GroupCoordinatorNotAvailable ERROR lines at start.
        await wait_for_group_coordinator(
            settings,
            [settings.app_id, f"{settings.app_id}-loader", f"{settings.app_id}-sender"],
        )
        return partitions

    return asyncio.run(topics())


def migrate(settings: Settings) -> None:
    applied = apply_migrations(ClickHouse.shared(settings))
    for migration in applied:
        log.info("applied migration %03d_%s", migration.version, migration.name)


@dataclass(frozen=True)
class SimulationOptions:
    seed: int = simulator.DEFAULT_SEED
    customers: int = simulator.DEFAULT_CUSTOMERS
    rate: float = simulator.DEFAULT_RATE
    speed: float = simulator.DEFAULT_SPEED
    bad_event_rate: float = simulator.DEFAULT_BAD_EVENT_RATE
    max_events: int | None = None
    run_id: str | None = None  # None: derived from the start time, so runs never collide


# A stop takes a second or two. One that still runs after this long says what it waits for, so
# that a hang at shutdown can be traced from its log (``journey run`` kills a child after 60 s).
STOP_REPORT_SECONDS = 25.0


class _Worker(faust.Worker):
    """Faust's worker, which reports what a slow stop waits for (``arm_stop_report``)."""

    def _schedule_shutdown(self, signal: signal.Signals) -> None:
        if not self._signal_stop_time:
            arm_stop_report(self.loop, STOP_REPORT_SECONDS)
        super()._schedule_shutdown(signal)


def arm_stop_report(
    loop: asyncio.AbstractEventLoop, seconds: float, *, threads_after: float = 5.0, file: Any = None
) -> None:
    """After ``seconds``, log where every task of ``loop`` waits; ``threads_after`` later, unless
    the process has exited, dump every thread's stack to stderr (from a C thread: it works even
    if the loop is blocked, or if a thread keeps the process from exiting after the loop closed).
    """
    loop.call_later(seconds, report_waiting_tasks, loop, seconds)
    faulthandler.dump_traceback_later(seconds + threads_after, file=file or sys.stderr)


def report_waiting_tasks(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    lines = [f"still stopping {seconds:g} s after the signal; what each task waits in:"]
    for task in sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name()):
        where = " > ".join(
            f"{frame.f_code.co_name} ({os.path.basename(frame.f_code.co_filename)}:"
            f"{frame.f_lineno})"
            for frame in awaiting_frames(task.get_coro())
        )
        lines.append(f"  {task.get_name()}: {where or '?'}")
    log.warning("\n".join(lines))


def awaiting_frames(coro: Any) -> list[Any]:
    """The frames of a suspended coroutine and of what it awaits, outermost first (a task's
    ``get_stack`` has only the outermost)."""
    frames = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames


def _faust_worker(app: faust.App, loglevel: str, log_format: str) -> None:
    worker = _Worker(
        app,
        loglevel=loglevel,
        quiet=True,
        redirect_stdouts=False,
        logging_config=logging_config(loglevel, log_format),
    )
    # No terminal spinner: at --log-level warning or above Faust's worker sets up one that turns
    # on every log call, by setting the root logger to DEBUG, for ever. Every debug call of
    # Faust and mode then built a record (11 % of a restoring worker's samples: two per changelog
    # record in Faust's recovery, bench/README.md "Session 7: recovery").
    worker.spinner = None
    worker.execute_from_commandline()


def _print_json(status: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(status, default=str) + "\n")
    sys.stdout.flush()


def run_worker(
    settings: Settings,
    *,
    status_every: float | None = None,
    status_json: bool = False,
    loglevel: str = "info",
    log_format: str = "text",
) -> None:
    """One journey worker, until Ctrl-C / SIGTERM (or, in tests, until killed)."""
    tune_gc()
    partitions = prepare_topics(settings)
    codec = Codec.load(max_value_bytes=settings.max_value_bytes)
    asyncio.run(prepare_output_framing(settings, codec))  # registry ids, if outputs use them
    pipeline = create_pipeline(settings, partitions=partitions, clock=settings.clock(), codec=codec)
    app = pipeline.app
    if status_every:

        @app.timer(interval=status_every)  # type: ignore[untyped-decorator]
        async def _status() -> None:
            status = worker_status(pipeline)
            if status_json:
                _print_json(status)
            else:
                sys.stdout.write(worker_lines(status) + "\n")
                for trigger in list(pipeline.engine.recent):
                    sys.stdout.write(f"  -> {describe_trigger(trigger)}\n")
                pipeline.engine.recent.clear()
                sys.stdout.flush()

    resolver = pipeline.ingest.schema_resolver
    if resolver is not None:

        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def _close_registry_client(app: faust.App, **kwargs: Any) -> None:
            await resolver.close()

    _faust_worker(app, loglevel, log_format)


def run_loader(
    settings: Settings,
    *,
    status_every: float | None = None,
    status_json: bool = False,
    loglevel: str = "info",
    log_format: str = "text",
) -> None:
    """The analytics loader, until Ctrl-C / SIGTERM."""
    from streams.runtime.loader import create_loader

    prepare_topics(settings)
    migrate(settings)
    loader = create_loader(settings)
    asyncio.run(prepare_output_framing(settings, loader.codec))  # its dead letters' framing
    loader.sink.setup()
    record_serving(settings, loader.clock)  # so that `journey sql`/`report` find the loader
    app = loader.app
    if status_every:

        @app.timer(interval=status_every)  # type: ignore[untyped-decorator]
        async def _status() -> None:
            status = {**loader_status(loader), **(await stored_counts(loader))}
            if status_json:
                _print_json(status)
            else:
                sys.stdout.write(loader_line(status) + "\n")
                sys.stdout.flush()

    _faust_worker(app, loglevel, log_format)


def worker_lines(snap: dict[str, Any]) -> str:
    emitted: dict[str, int] = {}
    for key, n in snap.get("triggers", {}).items():
        trigger_type, status = key.split("/")
        if status == Status.EMITTED:
            emitted[trigger_type] = n
    dead = ", ".join(
        f"{reason} {n}"
        for reason, n in sorted(snap.get("dead_letters", {}).items(), key=lambda x: -x[1])
    )
    return (
        f"{snap.get('name', 'worker')}: consumed {snap.get('consumed', 0):,} "
        f"({snap.get('rate', 0):,.0f}/s), partitions {snap.get('partitions', [])}, "
        f"emitted {snap.get('emitted', 0):,} ({len(emitted)}/{len(TriggerType)} types), "
        f"pending timers {snap.get('pending_timers', 0):,}, dead letters: {dead or 'none'}"
    )


def loader_line(snap: dict[str, Any]) -> str:
    stored = (
        f"events {snap['events_rows']:,}, triggers {snap['trigger_rows']:,}, customers "
        f"{snap['customer_rows']:,}, deadletters {snap['deadletter_rows']:,} rows"
        if "events_rows" in snap
        else f"unavailable ({snap.get('clickhouse_error', 'starting')})"
    )
    return (
        f"loader: {snap.get('loaded', 0):,} facts read, ClickHouse {stored}; "
        f"{snap.get('sink_batches', 0):,} batches, {snap.get('sink_failures', 0)} failed inserts, "
        f"{snap.get('duplicate_rows', 0):,} duplicates dropped"
    )


# --- journey run: the loader, N workers, the simulator and the sender ---------------------------
# Faust's worker hides and shows the terminal cursor even when its output is a pipe.
TERMINAL_CODES = re.compile(r"\x1b\[\?25[lh]")


@dataclass
class Child:
    """A process ``journey run`` started, and the last JSON status line it printed."""

    name: str
    process: subprocess.Popen[str]
    last: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = TERMINAL_CODES.sub("", raw)
            if not line.strip():
                continue
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    self.last = json.loads(line)
                    continue
            self.lines.append(line)
            del self.lines[:-50]
            sys.stderr.write(f"[{self.name}] {line}")


def journey_command() -> list[str]:
    """This installation's ``journey`` (the same interpreter and environment)."""
    return [sys.executable, "-m", "streams.ops.cli"]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def worker_instance_ids(settings: Settings, names: list[str]) -> dict[str, str]:
    """Static group membership ids for the workers of ``journey run``: a worker restarted after a
    crash (the run started again) gets its partitions back at once, instead of after the session
    timeout. Stable across runs: the base is ``JOURNEY_GROUP_INSTANCE_ID`` if set, else the app
    id, host and data directory; each worker adds its name (one id shared by two live members
    would make them fence each other). Kafka allows ``[a-zA-Z0-9._-]``, 249 characters.
    ``none``: no ids, dynamic membership."""
    base = settings.group_instance_id
    if base.lower() == "none":
        return {name: "none" for name in names}
    if not base:
        where = hashlib.sha1(str(settings.data_dir.resolve()).encode()).hexdigest()[:8]
        base = f"{settings.app_id}.{socket.gethostname()}.{where}"
    base = re.sub(r"[^a-zA-Z0-9._-]", "-", base)[:200]
    return {name: f"{base}.{name}" for name in names}


class Supervisor:
    """Starts and watches the children of ``journey run``; SIGTERM/Ctrl-C stops them all."""

    def __init__(self, settings: Settings, workers: int, clock: Clock, loglevel: str) -> None:
        self.settings = settings
        self.workers = workers
        self.clock = clock
        self.loglevel = loglevel
        self.children: list[Child] = []

    def worker_ports(self) -> list[int]:
        """One HTTP port per worker: JOURNEY_WORKER_WEB_PORT and up, skipping ports in use (the
        loader's, another program's); none when the setting is 0."""
        base = self.settings.worker_web_port
        if not base:
            return [0] * self.workers
        ports: list[int] = []
        candidate = base
        while len(ports) < self.workers:
            if candidate != self.settings.web_port and port_is_free(
                self.settings.web_host, candidate
            ):
                ports.append(candidate)
            candidate += 1
            if candidate > 65535:
                raise RuntimeError(f"no free port from {base} up for {self.workers} workers")
        return ports

    def start(self, status_every: float) -> None:
        common = {
            "JOURNEY_CLOCK_SPEED": repr(self.clock.speed),
            "JOURNEY_CLOCK_EPOCH_MS": str(self.clock.epoch_ms),
            "JOURNEY_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap,
        }
        status = ["--status-every", str(status_every), "--status-format", "json"]
        ports = self.worker_ports()
        urls = ",".join(f"http://127.0.0.1:{port}" for port in ports if port)
        self._spawn("loader", ["loader", *status], {**common, "JOURNEY_WORKER_URLS": urls})
        names = [f"worker-{number + 1}" for number in range(len(ports))]
        instance_ids = worker_instance_ids(self.settings, names)
        for name, port in zip(names, ports, strict=True):
            self._spawn(
                name,
                ["worker", *status],
                {
                    **common,
                    "JOURNEY_WORKER_NAME": name,
                    "JOURNEY_WORKER_WEB_PORT": str(port),
                    "JOURNEY_GROUP_INSTANCE_ID": instance_ids[name],
                },
            )

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        process = subprocess.Popen(
            [*journey_command(), "--log-level", self.loglevel, *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        child = Child(name, process)
        threading.Thread(target=child.read, daemon=True, name=f"read-{name}").start()
        self.children.append(child)

    def failed(self) -> Child | None:
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop(self, timeout: float = 60) -> None:
        for child in reversed(self.children):  # workers first, then the loader
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # Said, so that a hang at shutdown names its process (a kill is a crash: what
                # it had not acknowledged is delivered again).
                sys.stderr.write(
                    f"journey run: {child.name} did not stop within {timeout:g} s of SIGTERM; "
                    f"killed it\n"
                )
                child.process.kill()
                child.process.wait()

    def status(self) -> dict[str, Any]:
        """The children's figures as one: worker counts summed, per worker listed, the loader's."""
        workers = [c.last for c in self.children if c.name != "loader"]
        loader = next((c.last for c in self.children if c.name == "loader"), {})
        merged: dict[str, Any] = {"workers": workers, **loader}
        for key in ("consumed", "rate", "accepted", "repartitioned", "emitted", "pending_timers"):
            merged[key] = sum(w.get(key, 0) for w in workers)
        for key in ("triggers", "dead_letters", "per_topic"):
            total: dict[str, int] = {}
            for w in workers:
                for name, n in w.get(key, {}).items():
                    total[name] = total.get(name, 0) + n
            merged[key] = total
        # The pipeline is ready when every worker and the loader are.
        merged["ready"] = (
            bool(workers)
            and all(w.get("ready") for w in workers)
            and bool(loader.get("loader_ready"))
        )
        merged["clock"] = datetime.fromtimestamp(self.clock.now_ms() / 1000, UTC).isoformat(
            timespec="minutes"
        )
        return merged


def run_all(
    settings: Settings,
    *,
    workers: int,
    simulation: SimulationOptions | None,
    status_every: float,
    status_json: bool = False,
    loglevel: str = "warning",
    local_sender: bool = False,
) -> None:
    """``journey run``: the loader and ``workers`` journey workers as child processes, and here
    the simulator, the local email sender and the status display, until Ctrl-C / SIGTERM."""
    prepare_topics(settings)
    # One journey clock for every process: the simulator's speed, starting now.
    speed = simulation.speed if simulation is not None else settings.clock_speed
    clock = Clock(speed, settings.clock_epoch_ms or None)
    supervisor = Supervisor(settings, workers, clock, loglevel)
    display = StatusDisplay(supervisor, settings, status_every, json_lines=status_json)
    stop = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        supervisor.start(status_every)
        tasks = [asyncio.ensure_future(display.run(stop))]
        if simulation is not None:
            tasks.append(
                asyncio.ensure_future(run_simulation(settings, simulation, display, clock=clock))
            )
        if local_sender:
            tasks.append(asyncio.ensure_future(_run_local_sender(settings, clock, display)))
        try:
            while not stop.is_set():
                failed = supervisor.failed()
                if failed is not None:
                    raise RuntimeError(
                        f"{failed.name} exited with {failed.process.returncode}:\n"
                        + "".join(failed.lines[-20:])
                    )
                for task in tasks:
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):  # not wait_for: it may swallow a cancel
                        await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    try:
        asyncio.run(main())
    finally:
        supervisor.stop()


class StatusDisplay:
    """Prints, every few seconds, what flows through the workers and what ClickHouse holds."""

    def __init__(
        self,
        supervisor: Supervisor,
        settings: Settings,
        every: float,
        out: Any = None,
        json_lines: bool = False,
    ) -> None:
        self.supervisor = supervisor
        self.settings = settings
        self.json = json_lines
        self.every = every
        self.out = out or sys.stdout
        self.started = time.monotonic()
        self.simulated: str = ""
        self.sender: Any = None  # the local email sender of `make run`, when it runs
        self.recipients: Any = None  # and the simulated recipients behind its inbox

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.every):  # not wait_for: it may swallow a cancel
                    await stop.wait()
            self.show()

    def snapshot(self) -> dict[str, Any]:
        snap = self.supervisor.status()
        snap["elapsed_s"] = round(time.monotonic() - self.started, 1)
        if self.simulated:
            snap["simulator"] = self.simulated
        return snap

    def show(self) -> None:
        snap = self.snapshot()
        if self.json:
            self.out.write(json.dumps(snap, default=str) + "\n")
            self.out.flush()
            return
        elapsed = int(snap["elapsed_s"])
        lines = [
            f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {len(snap['workers'])} workers: consumed "
            f"{snap['consumed']:,} ({snap['rate']:,.0f}/s), triggers emitted {snap['emitted']:,}, "
            f"pending timers {snap['pending_timers']:,}   journey clock {snap['clock']}",
            *(f"    {worker_lines(w)}" for w in snap["workers"] if w),
            f"    {loader_line(snap)}",
        ]
        if self.simulated:
            lines.append(f"    simulator: {self.simulated}")
        if self.sender is not None:
            from streams.sender.service import describe

            lines.append(
                f"    email sender: {describe(self.sender.counts)} "
                f"(local SMTP server, mails in {self.settings.data_dir / 'mail'})"
            )
            if self.recipients is not None:
                lines.append(f"    simulated recipients (demo): {describe(self.recipients.counts)}")
        if self.settings.web_port:
            lines.append(
                f"    dashboard: http://{self.settings.web_host}:{self.settings.web_port}/   "
                "analytics: journey report"
            )
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()


async def _run_local_sender(settings: Settings, clock: Clock, display: StatusDisplay) -> None:
    from streams.sender.local_smtp import LocalMailServer
    from streams.sender.recipients import SimulatedRecipients
    from streams.sender.service import EmailSender

    codec = Codec.load(max_value_bytes=settings.max_value_bytes)
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
    mail.start()
    sender = EmailSender(local, clock_ms=clock.now_ms, codec=codec)
    display.sender, display.recipients = sender, recipients
    await recipients.publisher.start()
    # Either failing (Kafka gone, say) fails the task: no silently missing engagement.
    tasks = [asyncio.ensure_future(sender.run()), asyncio.ensure_future(recipients.run())]
    try:
        await asyncio.gather(*tasks)
    finally:
        mail.stop()
        for task in tasks:
            # Not twice: a task already being cancelled (the gather above passes a cancellation
            # on) is cleaning up, and a second cancel would cut its clean-up short.
            if not task.done() and not task.cancelling():
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
