"""Where the running worker serves, recorded so that `journey sql` and `journey report` in
another terminal find it whatever its port.

The embedded ClickHouse can be opened by one process only: while `make run` runs, its worker
owns the data path and answers read-only SQL over HTTP. It writes ``<data dir>/serving.json``
(its URL, pid, data path and journey clock) when it starts and removes it when it stops; a
record whose process is gone is ignored. ``journey publish`` stamps events with that clock.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from streams.clock import Clock
from streams.settings import Settings


@dataclass(frozen=True)
class Serving:
    url: str
    pid: int
    clickhouse: str
    clock_speed: float = 1.0  # a demo (`make run`) runs the journey clock faster
    clock_epoch_ms: int = 0

    def clock(self) -> Clock:
        """The running process's journey clock (the same ``now`` as the worker's)."""
        return Clock(self.clock_speed, self.clock_epoch_ms or None)


def record_path(settings: Settings) -> Path:
    return settings.data_dir / "serving.json"


def record_serving(settings: Settings, clock: Clock) -> None:
    path = record_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    host = settings.web_host if settings.web_host not in ("0.0.0.0", "::") else "127.0.0.1"
    record = {
        "url": f"http://{host}:{settings.web_port}" if settings.web_port else "",
        "pid": os.getpid(),
        "clickhouse": settings.resolved_clickhouse_url(),
        "clock_speed": clock.speed,
        "clock_epoch_ms": clock.epoch_ms,
    }
    path.write_text(json.dumps(record))

    def forget() -> None:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()

    atexit.register(forget)


def find_serving(settings: Settings) -> Serving | None:
    """The live worker recorded for this data path, if any."""
    try:
        record = json.loads(record_path(settings).read_text())
        serving = Serving(
            str(record["url"]),
            int(record["pid"]),
            str(record["clickhouse"]),
            float(record.get("clock_speed", 1.0)),
            int(record.get("clock_epoch_ms", 0)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not process_alive(serving.pid):
        return None  # it crashed or was killed: the record is stale
    return serving


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    return True
