"""Instructions per fired timer or per message, counted by valgrind: figures the host's load
does not move.

``python -m bench.instructions [--customers N] [--events N]`` (not part of ``make bench``;
needs valgrind).
On this shared 2-core host the CPU time of the same code moves by 10-30 % from run to run, too
much to judge a change of a few per cent. Instructions executed move by well under 1 %. It runs
itself under ``valgrind --tool=callgrind``, which counts only the firing: ``time.thread_time``
is called just before and just after it, and callgrind dumps its counts at each call
(``--dump-before=time_thread_time``), so the second part is the firing alone.

What fires is what ``bench.timers`` fires (the same customers, engine, outputs and acks over
``InstantBroker``): N customers with an abandoned-cart timer each, over 12 partitions, all due
at once, one tick per partition and an acknowledgement flush after every third, then a last
flush. Instructions are not time (a cache miss costs more than an add), so compare builds with
it, and take the time from ``bench.timers``. Callgrind runs about 50 times slower than the
process: 3,000 timers take about a minute.

``--events N``: also the worker's own per-message path over the first N events of the
``make bench`` workload, as ``python -m bench.own_path N`` runs it (which marks its messages
the same way).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PARTITIONS = 12
_INNER = "_BENCH_INSTRUCTIONS_INNER"


async def fire(customers: int) -> None:
    from bench.timers import InstantBroker, _build, _ShiftedClock, daytime_zone
    from schemas.codec import Codec
    from streams.journey.config import JourneyConfig
    from streams.runtime.acks import Acks
    from streams.runtime.engine import JourneyEngine, tune_gc
    from streams.runtime.outputs import Outputs
    from streams.settings import Settings

    tune_gc()
    config = JourneyConfig()
    clock = _ShiftedClock()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    acks = Acks(interval=settings.ack_interval / 1000)
    outputs = Outputs(settings, InstantBroker().produce, acks)
    engine = JourneyEngine(
        table={}, outputs=outputs, codec=Codec.load(), config=config, clock=clock
    )
    now = clock.now_ms()
    zone = daytime_zone(now, config, minutes=30)
    delay = config.abandoned_cart_first_delay
    _build(engine, customers, now, now + 10_000, delay, zone, config, PARTITIONS, 1.0)
    await acks.flush()
    gc.collect()
    gc.freeze()  # as bench.timers and the worker do
    clock.offset_ms = 60_000  # every timer is due
    time.thread_time()  # callgrind: the firing starts
    for partition in range(PARTITIONS):
        await engine.on_tick(partition, "ticks", partition)
        if partition % 3 == 2:
            await acks.flush()
    await acks.flush()
    time.thread_time()  # callgrind: the firing ends
    fired = engine.decisions.total()
    if fired != customers:
        raise SystemExit(f"{fired:,} decisions for {customers:,} timers")


def count(customers: int, events: int = 0) -> int:
    """Instructions of the firing of ``customers`` timers (or, ``events``: of that many
    messages through ``bench.own_path``), under callgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("bench.instructions needs valgrind (apt install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(
            [
                valgrind, "--tool=callgrind", "--dump-before=time_thread_time",
                f"--callgrind-out-file={out}", sys.executable, "-m", "bench.instructions",
                "--customers", str(customers), "--events", str(events),
            ],
            env={**os.environ, _INNER: "1"},
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        part = Path(f"{out}.2")  # .1: up to the firing; .2: the firing; the file itself: after
        found = re.search(r"^summary: (\d+)$", part.read_text(), re.MULTILINE)
        if found is None:
            raise SystemExit(f"no summary in {part}")
        return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.instructions", description=__doc__.split("\n")[0]
    )
    p.add_argument("--customers", type=int, default=3000, help="timers fired (default 3000)")
    p.add_argument("--events", type=int, default=0, help="also messages through bench.own_path")
    args = p.parse_args(argv)
    if os.environ.get(_INNER):
        if args.events:
            from bench import own_path

            asyncio.run(own_path.run(args.events, profile=False))
        else:
            asyncio.run(fire(args.customers))
        return 0
    total = count(args.customers)
    print(
        f"{total:,} instructions to fire {args.customers:,} timers: "
        f"{total / args.customers:,.0f} per timer"
    )
    if args.events:
        total = count(0, args.events)
        print(
            f"{total:,} instructions for {args.events:,} messages (bench.own_path): "
            f"{total / args.events:,.0f} per message"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
