"""``/ready`` of the loader and of a journey worker says 503 while the Kafka broker is down and
200 again once it is back; ``/health`` stays 200 throughout (the process is alive and catches up
by itself).

The test kills a broker, so it starts one of its own (``deploy/local/kafka.sh`` on a free port
pair, its state under ``.local/kafka-<port>``, removed afterwards): the shared test broker and
the other tests never notice.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.ops.runner import port_is_free
from tests.integration.conftest import Env, own_slice
from tests.integration.support import get

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "deploy" / "local" / "kafka.sh"


def free_port_pair() -> int:
    """A port whose successor is free too (kafka.sh puts the controller on port + 1), outside
    the ephemeral range and the ports the project's brokers use."""
    rng = random.Random()
    pairs = own_slice(range(20_000, 29_998, 2))  # tests side by side: a slice each
    for _ in range(200):
        port = rng.choice(pairs)
        if port_is_free("127.0.0.1", port) and port_is_free("127.0.0.1", port + 1):
            return port
    raise AssertionError("no free port pair for a broker of the test's own")


class OwnBroker:
    def __init__(self, port: int) -> None:
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self.state = REPO / ".local" / f"kafka-{port}"
        self.pid_file = self.state / "kafka.pid"

    def _kafka_sh(self, command: str) -> None:
        done = subprocess.run(
            [str(KAFKA_SH), command],
            env={**os.environ, "KAFKA_PORT": str(self.port)},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, f"kafka.sh {command}:\n{done.stdout}\n{done.stderr}"

    def up(self) -> None:
        self._kafka_sh("up")

    def kill(self) -> None:
        """SIGKILL, as a crashed broker or host: nothing is shut down cleanly."""
        pid = int(self.pid_file.read_text().strip())
        subprocess.run(["kill", f"-{signal.SIGKILL.value}", str(pid)], check=True)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    def remove(self) -> None:
        self._kafka_sh("down")
        shutil.rmtree(self.state, ignore_errors=True)


@pytest.fixture
def own_broker() -> Iterator[OwnBroker]:
    broker = OwnBroker(free_port_pair())
    try:
        broker.up()
        yield broker
    finally:
        broker.remove()


def wait_for(what: str, condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``condition`` held; fails after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")


def test_ready_is_503_while_the_broker_is_down_and_200_when_it_is_back(
    env: Env, start_worker: Any, own_broker: OwnBroker
) -> None:
    """Both processes of `journey run`: the loader (JOURNEY_WEB_PORT) and its one journey worker
    (JOURNEY_WORKER_WEB_PORT: the runner gives its first worker that port)."""
    env.vars["JOURNEY_KAFKA_BOOTSTRAP"] = own_broker.bootstrap
    endpoints = {
        "loader": f"http://127.0.0.1:{env.vars['JOURNEY_WEB_PORT']}",
        "worker": f"http://127.0.0.1:{env.vars['JOURNEY_WORKER_WEB_PORT']}",
    }

    def ready(base: str) -> tuple[int, str]:
        try:
            return get(f"{base}/ready")
        except OSError:  # not listening yet
            return 0, ""

    def all_ready(status: int) -> Callable[[], bool]:
        return lambda: all(ready(base)[0] == status for base in endpoints.values())

    env.journey("topics", "create")
    worker = start_worker()
    wait_for("/ready 200 after the start", all_ready(200), 90)

    own_broker.kill()
    # The probe runs every 2 s with a 3 s connect timeout; a refused connection is immediate.
    wait_for("/ready 503 after the broker was killed", all_ready(503), 15)
    for _ in range(3):  # and it stays so while the broker is away; the processes stay healthy
        for role, base in endpoints.items():
            status, text = ready(base)
            assert status == 503 and "broker is unreachable" in text, (role, status, text)
            assert get(f"{base}/health") == (200, "ok\n"), role
        time.sleep(1)
    assert worker.process.poll() is None, "the pipeline exited while the broker was down"

    own_broker.up()
    wait_for("/ready 200 after the broker came back", all_ready(200), 60)
    for role, base in endpoints.items():
        assert get(f"{base}/health") == (200, "ok\n"), role
