"""Is the worker's world there? The broker and ClickHouse, for ``/ready`` and for the logs.

* ``BrokerProbe`` opens a TCP connection to the bootstrap servers every few seconds: the broker
  is reachable when one of them accepts. It logs one line when the broker goes away and one when
  it is back, with how long it was away.
* ``QuietKafkaLogs`` is a logging filter for aiokafka (and Faust's consumer): while the broker is
  away, aiokafka logs each failed reconnect and metadata refresh (measured: 3,200 ERROR lines a
  second, 30 MB during one broker stop). Each distinct message is let through once per
  ``every`` seconds; the lines held back are counted and reported with the next one let through.
  aiokafka itself keeps reconnecting with its backoff; the probe's lines say what changed.
* ``Health.problem()`` is what ``/ready`` answers 503 with: the broker or ClickHouse is
  unreachable (``/health`` stays 200: the process is alive and will catch up by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from streams.runtime.tasks import cancel_and_wait

log = logging.getLogger(__name__)

PROBE_INTERVAL = 2.0
# The chatty loggers: aiokafka's client and consumer, and Faust's consumer on top of it.
NOISY_LOGGERS = ("aiokafka", "faust.transport")
# What aiokafka logs as a warning although it is routine: every worker that joins or leaves the
# group makes the others' next heartbeat say so (``make run`` showed it as its two workers
# started). Logged at INFO instead (``--log-level info`` shows it).
ROUTINE_WARNINGS = {
    (
        "aiokafka.consumer.group_coordinator",
        "Heartbeat failed for group %s because it is rebalancing",
    ),
}
PROBE_TIMEOUT = 3.0


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.strip().rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port or 9092)


class BrokerProbe:
    def __init__(self, bootstrap: str) -> None:
        self.servers = [_host_port(s) for s in bootstrap.split(",") if s.strip()]
        self.reachable = True  # until a probe says otherwise: the worker got this far
        self.down_since: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def probe_once(self) -> bool:
        for host, port in self.servers:
            try:
                # Not asyncio.wait_for: it forgets a cancel (a stop) that comes as the
                # connection opens, and the probe went on for ever (streams/runtime/tasks.py).
                async with asyncio.timeout(PROBE_TIMEOUT):
                    _, writer = await asyncio.open_connection(host, port)
            except (OSError, TimeoutError):
                continue
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return True
        return False

    def observe(self, reachable: bool) -> None:
        if reachable == self.reachable:
            return
        self.reachable = reachable
        if not reachable:
            self.down_since = time.monotonic()
            log.error(
                "Kafka broker unreachable (%s); reconnecting in the background",
                ",".join(f"{h}:{p}" for h, p in self.servers),
            )
        else:
            away = time.monotonic() - (self.down_since or time.monotonic())
            self.down_since = None
            log.warning("Kafka broker reachable again after %.0fs", away)

    async def run(self) -> None:
        while True:
            self.observe(await self.probe_once())
            await asyncio.sleep(PROBE_INTERVAL)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="broker-probe")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None


@dataclass
class QuietKafkaLogs(logging.Filter):
    """Lets each distinct message (logger + format string) of ``NOISY_LOGGERS`` through once per
    ``every`` seconds. Installed on the log handler (``streams/logs.py``), so it sees the records
    of every child logger and survives Faust re-applying the logging configuration."""

    every: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _last: dict[tuple[str, str], float] = field(default_factory=dict)
    _held: dict[tuple[str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith(NOISY_LOGGERS):
            return True
        key = (record.name, str(record.msg))
        if key in ROUTINE_WARNINGS:
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last {self.every:.0f}s)"
        if len(self._last) > 10_000:  # messages with ever-new text must not grow this forever
            self._last.clear()
        return True


class Health:
    def __init__(
        self,
        broker: BrokerProbe,
        clickhouse_reachable: Callable[[], bool] = lambda: True,
        acknowledging: Callable[[], bool] = lambda: True,
    ) -> None:
        """``clickhouse_reachable``: the loader's; a worker holds no ClickHouse connection.
        ``acknowledging``: the worker's acknowledgement loop works (``Acks.failing``)."""
        self.broker = broker
        self._clickhouse_reachable = clickhouse_reachable
        self._acknowledging = acknowledging

    def problem(self) -> str | None:
        """Why the worker cannot do its work right now, or ``None``."""
        if not self.broker.reachable:
            return "the Kafka broker is unreachable"
        if not self._clickhouse_reachable():
            return "ClickHouse is unreachable or not answering"
        if not self._acknowledging():
            return "acknowledging fails (states or records cannot be written: see the log)"
        return None
