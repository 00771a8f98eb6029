"""What every benchmark step shares: a bench world (topic prefix, app id, data dirs), the
``journey worker`` subprocesses and their JSON status lines, the ``journey loader`` subprocess
and its ``/metrics``, and the admin client.

The approach is the integration tests' (``tests/integration/conftest.py``): every run gets its
own topic prefix, consumer group and data paths, and workers are real subprocesses.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.ops.topics import TICKS_RETENTION_MS
from streams.settings import Settings

JOURNEY = str(Path(sys.executable).parent / "journey")
# Short names (``Settings.topic``) of the topics a worker writes, besides its table changelog.
OUTPUT_TOPICS = (
    "triggers", "decisions", "journey_events", "snapshots", "deadletter", "repartition", "ticks",
)  # fmt: skip


def log(message: str) -> None:
    """Progress, with the wall time, so a long run shows that it moves."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentile(samples: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (the worker's status uses the same rule)."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _default_topic(short: str) -> str:
    return str(Settings.model_fields[f"topic_{short}"].default)


@dataclass
class World:
    """One benchmark world: topics under one prefix, one consumer group, its own chdb."""

    name: str
    bootstrap: str
    root: Path
    partitions: int
    extra_env: dict[str, str] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    # Another app (consumer group, table changelog, chdb, data dirs) on the same input topics.
    app_suffix: str = ""
    # The tag of the output topics (triggers, facts, ticks, repartition) this world's workers
    # write and its loader reads; None: the app suffix's, so that every worker run publishes
    # to topics of its own (records per topic count one run; a loader reads one run's facts).
    outputs: str | None = None

    @property
    def prefix(self) -> str:
        return f"bench-{self.tag}-{self.name}."

    @property
    def app_id(self) -> str:
        return f"journey-bench-{self.tag}-{self.name}{self.app_suffix}"

    @property
    def chdb_path(self) -> Path:
        return self.root / f"{self.name}{self.app_suffix}-chdb"

    @property
    def output_tag(self) -> str:
        return self.app_suffix.lstrip("-") if self.outputs is None else self.outputs

    def output_vars(self) -> dict[str, str]:
        """Topic names (after the prefix) of this world's outputs, when they have a tag."""
        tag = self.output_tag
        if not tag:
            return {}
        return {
            f"JOURNEY_TOPIC_{short.upper()}": f"{tag}.{_default_topic(short)}"
            for short in OUTPUT_TOPICS
        }

    def data_dir(self, label: str) -> Path:
        """A fresh (empty) JOURNEY_DATA_DIR per worker ``label``."""
        return self.root / f"{self.name}{self.app_suffix}-data-{label}"

    def vars(self, data_label: str = "1") -> dict[str, str]:
        return {
            "JOURNEY_KAFKA_BOOTSTRAP": self.bootstrap,
            "JOURNEY_TOPIC_PREFIX": self.prefix,
            "JOURNEY_APP_ID": self.app_id,
            "JOURNEY_PARTITIONS": str(self.partitions),
            "JOURNEY_DATA_DIR": str(self.data_dir(data_label)),
            "JOURNEY_CLICKHOUSE_URL": f"chdb://{self.chdb_path}",
            **self.output_vars(),
            **self.extra_env,
        }

    def settings(self, data_label: str = "1") -> Settings:
        env = {k.removeprefix("JOURNEY_").lower(): v for k, v in self.vars(data_label).items()}
        return Settings(_env_file=None, **env)  # type: ignore[call-arg]

    def environ(self, data_label: str = "1") -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEY_")}
        return {**base, **self.vars(data_label)}


# --- workers -----------------------------------------------------------------------------------
_LIVE: list[subprocess.Popen[str]] = []


def kill_all() -> None:
    """Kill every worker this bench started that still runs."""
    for process in _LIVE:
        if process.poll() is None:
            process.kill()
            with contextlib.suppress(Exception):
                process.wait(10)


atexit.register(kill_all)


def install_signal_handlers() -> None:
    """SIGTERM (e.g. from ``with-kafka.sh``) unwinds like Ctrl-C, so cleanup code runs."""

    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _raise)


# --- CPU accounting ------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (all its threads) so far."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_cpu_s() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine, all cores, since boot."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    values = [int(v) for v in first[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / _TICK, sum(values) / _TICK


def broker_pid(bootstrap: str) -> int | None:
    """The local broker of ``deploy/local/kafka.sh`` on the bootstrap's port, if it is ours."""
    port = bootstrap.split(",")[0].rsplit(":", 1)[-1]
    try:
        return int((REPO / ".local" / f"kafka-{port}" / "kafka.pid").read_text().strip())
    except (OSError, ValueError):
        return None


@dataclass
class CpuSample:
    at: float
    worker: float | None
    broker: float | None
    machine: tuple[float, float] | None

    @classmethod
    def take(cls, worker_pid: int | None, broker: int | None) -> CpuSample:
        now = time.monotonic()
        return cls(now, process_cpu_s(worker_pid), process_cpu_s(broker), machine_cpu_s())


def cpu_between(a: CpuSample, b: CpuSample) -> dict[str, float | None]:
    """Cores used on average between two samples: the worker, the broker, everything."""
    wall = b.at - a.at
    if wall <= 0:
        return {}

    def cores(x: float | None, y: float | None) -> float | None:
        return round((y - x) / wall, 2) if x is not None and y is not None else None

    machine = cores(a.machine[0], b.machine[0]) if a.machine is not None and b.machine else None
    worker, broker = cores(a.worker, b.worker), cores(a.broker, b.broker)
    rest = None
    if machine is not None and worker is not None and broker is not None:
        rest = round(max(0.0, machine - worker - broker), 2)
    return {"worker": worker, "broker": broker, "machine_busy": machine, "everything_else": rest}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Status:
    at: float  # time.monotonic() when the bench read the line
    data: dict[str, Any]
    cpu: CpuSample | None = None


class WorkerProcess:
    """A ``journey worker`` subprocess and the JSON status lines it prints. ``elapsed_s`` of a
    line: seconds from the process start to when the bench read it."""

    def __init__(
        self,
        world: World,
        data_label: str,
        *,
        status_every: float = 1.0,
        loglevel: str = "warning",
        name: str | None = None,
    ) -> None:
        self.world = world
        self.data_label = data_label
        # Its own HTTP port (as the integration tests do), so that workers never clash; a name
        # when several run in one group (the worker's own RocksDB directory).
        self.env = {**world.vars(data_label), "JOURNEY_WORKER_WEB_PORT": str(free_port())}
        if name is not None:
            self.env["JOURNEY_WORKER_NAME"] = name
        self.broker_pid = broker_pid(world.bootstrap)
        self.argv = [
            JOURNEY, "--log-level", loglevel, "worker", "--status-every", str(status_every),
            "--status-format", "json",
        ]  # fmt: skip
        cwd = world.root / f"{world.name}-cwd-{data_label}"  # no stray .env is read
        cwd.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            self.argv,
            env={**world.environ(data_label), **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
        )
        _LIVE.append(self.process)
        self.cpu_start = CpuSample.take(self.process.pid, self.broker_pid)
        self.statuses: queue.Queue[Status] = queue.Queue()
        self.history: list[Status] = []
        self.output: list[str] = []
        self.last: Status | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            at = time.monotonic()
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    data = json.loads(line)
                    cpu = CpuSample.take(self.process.pid, self.broker_pid)
                    data.setdefault("elapsed_s", round(at - self.started, 3))
                    self.statuses.put(Status(at, data, cpu))
                    continue
            self.output.append(line)
            del self.output[:-200]

    def tail(self, lines: int = 30) -> str:
        return "".join(self.output[-lines:])

    def wait_until(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float,
        on_status: Callable[[Status], None] | None = None,
    ) -> Status:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None and self.statuses.empty():
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.tail()}")
            try:
                status = self.statuses.get(timeout=0.2)
            except queue.Empty:
                continue
            self.last = status
            self.history.append(status)
            if on_status is not None:
                on_status(status)
            if predicate(status.data):
                return status
        last = self.last.data if self.last else None
        raise TimeoutError(f"worker: timed out after {timeout:.0f}s; last status {last}")

    def drain(self) -> list[Status]:
        """Status lines read since the last look."""
        got: list[Status] = []
        while True:
            try:
                status = self.statuses.get_nowait()
            except queue.Empty:
                break
            self.last = status
            self.history.append(status)
            got.append(status)
        return got

    def stop(self, timeout: float = 60) -> float:
        """SIGTERM, as an operator would. Returns how long the shutdown took."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"worker {self.world.name}/{self.data_label} ignored SIGTERM for {timeout}s: kill")
            self.process.kill()
            self.process.wait(30)
        self.drain()
        return time.monotonic() - started

    def metrics(self, timeout: float = 5.0) -> str | None:
        """The worker's Prometheus ``/metrics`` text (None if it does not answer)."""
        url = f"http://127.0.0.1:{self.env['JOURNEY_WORKER_WEB_PORT']}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return str(response.read().decode())
        except OSError:
            return None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def counter_by_label(text: str, family: str, label: str) -> dict[str, float] | None:
    """A Prometheus counter's samples by the value of one label, from /metrics text:
    ``family_total{label="x"} 3.0`` -> ``{"x": 3.0}`` (other labels ignored); ``{}`` when the
    counter has no samples yet, None when the worker does not export it at all."""
    # (prometheus_client's text format names the family with _total, OpenMetrics without.)
    if not any(f"# TYPE {name} counter" in text for name in (family, f"{family}_total")):
        return None
    sample = f"{family}_total{{"
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(sample):
            continue
        labels, _, value = line.rpartition(" ")
        for pair in labels[len(sample) : labels.rfind("}")].split(","):
            key, _, quoted = pair.partition("=")
            if key.strip() == label:
                out[quoted.strip().strip('"')] = float(value)
    return out


def metric_total(text: str, family: str) -> float | None:
    """The sum of a metric's samples over all its labels, from /metrics text (a counter's
    ``family_total`` samples, or a gauge's ``family``); None when no sample has that name."""
    names = (f"{family}_total", family)
    values = [
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if not line.startswith("#") and line.split("{", 1)[0].split(" ", 1)[0] in names
    ]
    return sum(values) if values else None


class LoaderProcess:
    """A ``journey loader`` subprocess, watched through its ``/metrics`` and ``/ready``.

    Not through ``--status-every`` lines: each of those runs four ``count() ... FINAL`` queries
    in the loader, which would be counted as the CPU of loading. ``sample()`` reads the counters
    (facts read, rows stored, duplicates, lag) and the process's CPU at the same moment."""

    def __init__(self, world: World, data_label: str = "loader", loglevel: str = "warning") -> None:
        self.world = world
        self.env = {
            **world.vars(data_label),
            "JOURNEY_WEB_PORT": str(free_port()),
            "JOURNEY_WORKER_URLS": "",
        }
        self.broker_pid = broker_pid(world.bootstrap)
        self.argv = [JOURNEY, "--log-level", loglevel, "loader"]
        self.cwd = world.root / f"{world.name}{world.app_suffix}-cwd-{data_label}"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            self.argv,
            env={**world.environ(data_label), **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.cwd,
        )
        _LIVE.append(self.process)
        self.cpu_start = CpuSample.take(self.process.pid, self.broker_pid)
        self.history: list[Status] = []
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            del self.output[:-200]

    def _get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.env['JOURNEY_WEB_PORT']}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status), str(response.read().decode())
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError:
            return 0, ""

    def sample(self) -> Status | None:
        """The loader's counters now (None while its web server does not answer yet)."""
        code, text = self._get("/metrics")
        if code != 200:
            return None
        cpu = CpuSample.take(self.process.pid, self.broker_pid)
        at = time.monotonic()
        ready, _ = self._get("/ready")
        data = loader_figures(text)
        data["ready"] = ready == 200
        data["elapsed_s"] = round(at - self.started, 3)
        status = Status(at, data, cpu)
        self.history.append(status)
        return status

    def wait_until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, every: float = 0.5
    ) -> Status:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = "".join(self.output[-30:])
                raise RuntimeError(f"loader exited with {self.process.returncode}:\n{tail}")
            status = self.sample()
            if status is not None and predicate(status.data):
                return status
            time.sleep(every)
        last = self.history[-1].data if self.history else None
        raise TimeoutError(f"loader: timed out after {timeout:.0f}s; last figures {last}")

    def sql(self, query: str) -> list[dict[str, Any]]:
        """A read-only query through the running loader (``journey sql``, as a user would)."""
        done = subprocess.run(
            [JOURNEY, "sql", query, "--format", "json"],
            env={**self.world.environ("loader"), **self.env},
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"journey sql failed: {done.stderr[-2000:]}")
        rows: list[dict[str, Any]] = json.loads(done.stdout)
        return rows

    def stop(self, timeout: float = 60) -> float:
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"loader {self.world.app_id} ignored SIGTERM for {timeout}s: kill")
            self.process.kill()
            self.process.wait(30)
        return time.monotonic() - started


def loader_figures(metrics: str) -> dict[str, Any]:
    """The loader's counters from its /metrics text, named as its status line names them."""
    per_table = counter_by_label(metrics, "journey_sink_rows", "table") or {}
    per_topic = counter_by_label(metrics, "journey_facts_consumed", "topic") or {}
    return {
        "loaded": int(sum(per_topic.values())),
        "loaded_per_topic": {k: int(v) for k, v in per_topic.items()},
        "sink_rows": int(sum(per_table.values())),
        "sink_rows_per_table": {k: int(v) for k, v in per_table.items()},
        "duplicate_rows": int(metric_total(metrics, "journey_sink_duplicate_rows") or 0),
        "sink_batches": int(metric_total(metrics, "journey_sink_batches") or 0),
        "sink_failures": int(metric_total(metrics, "journey_sink_failures") or 0),
        "undecodable_facts": int(metric_total(metrics, "journey_facts_undecodable") or 0),
        "loader_lag": metric_total(metrics, "journey_loader_lag"),
    }


# --- admin ---------------------------------------------------------------------------------
async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="journey-bench-admin", request_timeout_ms=30_000
    )
    await admin.start()
    return admin


async def create_topics(settings: Settings) -> list[str]:
    """Every contract topic of the world, with broker-side (LogAppendTime) message timestamps,
    so that latencies are measured between the broker's own append times."""
    admin = await _admin(settings.kafka_bootstrap)
    created = []
    try:
        for topic in settings.all_topics():
            config = {"message.timestamp.type": "LogAppendTime"}
            if topic == settings.topic("ticks"):
                config["retention.ms"] = config["segment.ms"] = str(TICKS_RETENTION_MS)
            elif topic == settings.topic("snapshots"):
                config["cleanup.policy"] = "compact"  # as streams/ops/topics.py creates it
            new = NewTopic(
                topic, settings.partitions, settings.replication_factor, topic_configs=config
            )
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([new])
                created.append(topic)
        deadline = time.monotonic() + 30
        while not set(settings.all_topics()) <= set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise RuntimeError("bench topics did not appear in the metadata within 30 s")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    return created


async def delete_topics(bootstrap: str, starts: Iterable[str]) -> list[str]:
    """Delete every topic whose name starts with one of ``starts`` (prefixes and app ids)."""
    starts = tuple(starts)
    admin = await _admin(bootstrap)
    try:
        doomed = sorted(t for t in await admin.list_topics() if t.startswith(starts))
        for chunk in range(0, len(doomed), 20):
            await admin.delete_topics(doomed[chunk : chunk + 20], timeout_ms=30_000)
    finally:
        await admin.close()
    return doomed
