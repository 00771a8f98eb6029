"""Integration tests run against the real broker that `make test` starts, and the real chdb.

A missing broker fails these tests; it never skips them. Every test gets its own topic prefix,
consumer group and chdb data path. Workers run as subprocesses (`journey worker`): chdb lets a
process open one data path only, and the crash tests need a process to kill. They report what
they do as JSON status lines; the tests read ClickHouse afterwards with `journey sql`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from streams.ops.publish import Publisher
from streams.ops.runner import port_is_free
from streams.settings import Settings

BOOTSTRAP = os.environ.get("JOURNEY_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
JOURNEY = str(Path(sys.executable).parent / "journey")

# A shell that starts `make test` in the background (`make test &`, a CI runner's script) hands
# every process SIGINT ignored, and an ignored signal stays ignored across exec: the shop
# simulator, which the tests stop with SIGINT as Ctrl-C would, then ran on until it was killed
# 30 s later (each multi-worker test took 30 s longer). A handled signal is reset to the default
# in a child, so handling it here gives every process the tests start its default Ctrl-C.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass
class Env:
    """One test's world: its settings, and the same as environment variables for subprocesses."""

    vars: dict[str, str]
    tmp: Path

    def settings(self, **overrides: Any) -> Settings:
        env = {k.removeprefix("JOURNEY_").lower(): v for k, v in self.vars.items()}
        env.update(overrides)
        return Settings(_env_file=None, **env)  # type: ignore[call-arg]

    def environ(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEY_")}
        return {**base, **self.vars, **extra}

    def journey(
        self, *args: str, check: bool = True, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [JOURNEY, *args],
            env=self.environ(**extra),
            capture_output=True,
            text=True,
            timeout=180,
            cwd=self.tmp,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"journey {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def sql(self, query: str) -> list[dict[str, Any]]:
        rows = json.loads(self.journey("sql", "--format", "json", query).stdout)
        assert isinstance(rows, list)
        return rows


# The HTTP ports of the processes the tests start: below the kernel's ephemeral range (32768 and
# up on Linux), so that no outgoing connection (a Kafka client's, say) is given one between the
# moment a port is found free and the moment the process binds it: a port the kernel had picked
# (``bind(0)``) was taken that way once, and the worker could not start ("address already in
# use"). Above the brokers' ports, and apart from ``test_ready_broker``'s own brokers (20000 to
# 29999). Each is handed out once per test run (worlds run side by side in threads).
def own_slice(ports: range) -> range:
    """This test process's share of ``ports``: under pytest-xdist the test processes (gw0, gw1,
    ...) run side by side, each drawing from its own slice; alone, the whole range."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    size = len(ports) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return ports[worker * size : (worker + 1) * size]


_PORTS = own_slice(range(30_000, 32_700))
_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def free_port(block: int = 1) -> int:
    """A port no other test of this process was given, free now; with ``block``, the ``block``
    ports from it up are (``journey run --workers N`` gives its workers
    JOURNEY_WORKER_WEB_PORT and the ports above it: two worlds side by side once drew a
    worker port one above the other's)."""
    rng = random.Random()
    with _ports_lock:
        for _ in range(500):
            port = rng.choice(_PORTS[: len(_PORTS) - block + 1])
            ports = range(port, port + block)
            if any(p in _handed_out for p in ports):
                continue
            if not all(port_is_free("127.0.0.1", p) for p in ports):
                continue
            _handed_out.update(ports)
            return port
    raise AssertionError(f"no {block} free port(s) in {_PORTS.start}-{_PORTS.stop - 1}")


# Ports for the workers of one world: ``journey run --workers N`` (N <= this) counts up from
# JOURNEY_WORKER_WEB_PORT.
WORKER_PORTS = 4


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return new_env(tmp_path)


def new_env(tmp_path: Path) -> Env:
    """A world of its own (topics, group, chdb path); a test may need two to compare them."""
    tag = uuid.uuid4().hex[:10]
    return Env(
        vars={
            "JOURNEY_KAFKA_BOOTSTRAP": BOOTSTRAP,
            "JOURNEY_TOPIC_PREFIX": f"it-{tag}.",
            "JOURNEY_APP_ID": f"journey-it-{tag}",
            "JOURNEY_PARTITIONS": "3",
            "JOURNEY_DATA_DIR": str(tmp_path / "data"),
            "JOURNEY_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",
            "JOURNEY_SINK_FLUSH_INTERVAL": "200ms",
            "JOURNEY_WEB_PORT": str(free_port()),
            "JOURNEY_WORKER_WEB_PORT": str(free_port(WORKER_PORTS)),
            # A killed worker's partitions move on after 6 s (the broker's minimum), not 45 s.
            "JOURNEY_CONSUMER_SESSION_TIMEOUT": "6s",
            # No scheduled lifetime-value fit unless a test asks for one (test_views does).
            "JOURNEY_PREDICTION_INTERVAL": "0",
        },
        tmp=tmp_path,
    )


@dataclass
class Worker:
    """A pipeline as `journey run` starts it (the loader and journey workers, each a process of
    the same process group), and the JSON status lines it prints (the workers' figures summed,
    the loader's, and ``workers``: each worker's)."""

    process: subprocess.Popen[str]
    statuses: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    output: list[str] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)
    read_all: threading.Event = field(default_factory=threading.Event)

    def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            for line in self.process.stdout:
                self.output.append(line)
                if line.startswith("{"):
                    with contextlib.suppress(json.JSONDecodeError):
                        self.statuses.put(json.loads(line))
        finally:
            self.read_all.set()

    def crashes(self) -> list[str]:
        """What the pipeline's processes logged of a crashed agent or service (Faust and mode
        log "Crashed reason=..."), once all it printed has been read."""
        self.read_all.wait(10)
        return [line for line in self.output if "Crashed reason=" in line]

    def wait_until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 90
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None and self.statuses.empty():
                raise AssertionError(
                    f"worker exited with {self.process.returncode}:\n{''.join(self.output[-40:])}"
                )
            try:
                self.last = self.statuses.get(timeout=0.5)
            except queue.Empty:
                continue
            if predicate(self.last):
                return self.last
        raise AssertionError(f"timed out; last status {self.last}\n{''.join(self.output[-8:])}")

    def wait_loaded(self, timeout: float = 120) -> dict[str, Any]:
        """Until the loader has stored everything the workers published: no record waits for the
        broker, and the loader's lag is 0 in two status lines a second apart."""

        def caught_up(s: dict[str, Any]) -> bool:
            workers = s.get("workers", [])
            return (
                bool(workers)
                and all(w.get("unacknowledged", 1) == 0 for w in workers)
                and s.get("loader_lag") == 0
            )

        self.wait_until(caught_up, timeout)
        time.sleep(1)
        return self.wait_until(caught_up, timeout)

    def stop(self, timeout: float = 75) -> int:
        """SIGTERM, as an operator would: the pipeline shuts down cleanly. Longer than
        ``journey run`` waits for its children (60 s), so that a hang is named in the output,
        after each slow process's report of what it waits for (``arm_stop_report``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"pipeline did not stop within {timeout:g} s of SIGTERM") from None
        self._kill_group()  # nothing may outlive it
        return code

    def kill(self) -> None:
        """SIGKILL to every process of the pipeline: a crash, nothing gets to clean up."""
        self._kill_group()
        self.process.wait(30)

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def launch_worker(env: Env, workers: int = 1, **extra: str) -> Worker:
    """Start the pipeline of ``env`` (the loader and ``workers`` journey workers, as
    `journey run --no-simulate --no-sender` does); the caller kills it (``start_worker`` does)."""
    return _launch(env, ["run", "--no-simulate", "--no-sender", "--workers", str(workers)], extra)


def launch_role(env: Env, role: str, **extra: str) -> Worker:
    """Start one process of the pipeline of ``env`` on its own: ``journey loader`` or ``journey
    worker`` (give each worker its own ``JOURNEY_WORKER_NAME`` and ``JOURNEY_WORKER_WEB_PORT``);
    its status lines are that process's figures. The caller kills it (``start_role`` does)."""
    assert role in ("loader", "worker"), role
    return _launch(env, [role], extra)


def _launch(env: Env, command: list[str], extra: dict[str, str]) -> Worker:
    process = subprocess.Popen(
        [
            JOURNEY,
            "--log-level",
            os.environ.get("JOURNEY_TEST_LOG_LEVEL", "warning"),
            *command,
            "--status-every",
            "0.3",
            "--status-format",
            "json",
        ],
        env=env.environ(**extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=env.tmp,
        start_new_session=True,  # its own process group: kill() reaches the children too
    )
    worker = Worker(process)
    threading.Thread(target=worker._read, daemon=True).start()
    return worker


@pytest.fixture
def start_worker(env: Env) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def start(**extra: str) -> Worker:
        worker = launch_worker(env, **extra)
        workers.append(worker)
        return worker

    yield start
    for number, worker in enumerate(workers):
        if worker.process.poll() is None:
            worker.kill()
        # What each worker said, for the post-mortem of a failed test (pytest shows the end of
        # it with a failure; CI keeps only that).
        (env.tmp / f"worker-{number}.log").write_text("".join(worker.output))
        said = [line for line in worker.output if not line.startswith("{")]
        print(f"--- pipeline {number}: last status {worker.last}\n{''.join(said[-150:])}")


@pytest.fixture
def start_role(env: Env) -> Iterator[Callable[..., Worker]]:
    """``start_role("worker", JOURNEY_WORKER_NAME=...)``: ``launch_role``, killed at the end."""
    started: list[tuple[str, Worker]] = []

    def start(role: str, **extra: str) -> Worker:
        process = launch_role(env, role, **extra)
        started.append((extra.get("JOURNEY_WORKER_NAME", role), process))
        return process

    yield start
    for number, (name, process) in enumerate(started):
        if process.process.poll() is None:
            process.kill()
        (env.tmp / f"{name}-{number}.log").write_text("".join(process.output))
    # A group leader whose metadata lacks a topic leaves it out of the assignment: for the
    # table's changelog, no partition was restored or kept as a standby, and a worker taking a
    # partition over started from an empty table (``journey topics create`` makes it first;
    # a worker owning a partition without its changelog partition logs "was not restored").
    left_out = [f"{name}: {line.strip()}" for name, process in started for line in process.output
                if "Ignoring missing topic" in line or "was not restored" in line]  # fmt: skip
    assert not left_out, f"assignments left topics out: {left_out}"


def separate_outputs(env: Env, name: str) -> dict[str, str]:
    """Overrides that give a second pipeline reading ``env``'s input topics a world of its own:
    its consumer groups, ClickHouse, state, web ports and every topic it writes (so that, say, a
    clean run and a crashed run of the same input can be compared)."""
    outputs = ("triggers", "deadletter", "decisions", "journey_events", "snapshots",
               "predictions", "repartition", "ticks")  # fmt: skip
    return {
        "JOURNEY_APP_ID": f"{env.vars['JOURNEY_APP_ID']}-{name}",
        "JOURNEY_CLICKHOUSE_URL": f"chdb://{env.tmp / f'chdb-{name}'}",
        "JOURNEY_DATA_DIR": str(env.tmp / f"data-{name}"),
        "JOURNEY_WEB_PORT": str(free_port()),
        "JOURNEY_WORKER_WEB_PORT": str(free_port(WORKER_PORTS)),
        **{f"JOURNEY_TOPIC_{topic.upper()}": f"{name}.{topic}" for topic in outputs},
    }


def publish(env: Env, messages: list[tuple[str, bytes | None, bytes]]) -> None:
    """Produce (short topic, key, value) messages as a shop would, and wait for the broker."""

    async def go() -> None:
        publisher = Publisher(env.settings())
        await publisher.start()
        try:
            for topic, key, value in messages:
                await publisher.send_raw(topic, key, value)
        finally:
            await publisher.close()

    asyncio.run(go())


def consume_all(env: Env, topic: str, expected: int, timeout: float = 60) -> list[Any]:
    """Read `expected` records of a topic from the beginning."""

    async def go() -> list[Any]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=BOOTSTRAP,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        records: list[Any] = []
        try:
            deadline = time.monotonic() + timeout
            while len(records) < expected and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    records.extend(messages)
        finally:
            await consumer.stop()
        return records

    return asyncio.run(go())
