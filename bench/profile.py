"""Where the worker's CPU goes: py-spy (the ``bench`` extra) attached to a running worker.

``python -m bench.run --profile 60`` samples the last round's e2e worker for 60 s with
``py-spy record --nonblocking`` (the worker is never paused, so its measured CPU is not
disturbed much; py-spy's own CPU is another process) in py-spy's collapsed-stack format, and
summarizes it by layer. ``python -m bench.profile FILE`` summarizes such a file again.

Two views by layer of the event loop's thread: by the innermost Python frame (C code such as
RocksDB in rocksdict, fastavro, orjson and the socket calls counts for the Python frame that
called it, so the table store's frames, ``faust/stores/rocksdb.py``, stand for RocksDB), and by
the caller (standard-library frames, e.g. ``asyncio`` transports, futures and ``wait``, charged
to the innermost library or our code that called them; only the bare event loop stays
``asyncio``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# First match wins: the file path of a frame -> its layer.
LAYERS = (
    ("rocksdb", ("faust/stores/rocksdb", "rocksdict")),
    ("aiokafka", ("aiokafka/",)),
    ("faust", ("faust/",)),
    ("mode", ("mode/",)),
    ("asyncio", ("asyncio/", "selectors.py", "uvloop")),
    ("ours: model", ("streams/journey/",)),
    ("ours: engine + agent", ("streams/", "schemas/", "sinks/")),
    ("chdb / clickhouse", ("chdb", "clickhouse_connect")),
    ("fastavro", ("fastavro",)),
    # The codecs' writers and checks, compiled from the schemas at start (schemas/codec).
    ("ours: compiled codecs", ("<string>",)),
    ("logging, gc, other stdlib", ("/lib/python3",)),
)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::\d+)?\)$")


PY_SPY = REPO / ".local" / "bench-venv" / "bin" / "py-spy"  # the bench extra's venv


def start_py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        str(PY_SPY), "record", "--nonblocking", "--threads", "--rate", "200",
        "--duration", str(int(seconds)), "--format", "raw", "--pid", str(pid),
        "--output", str(out.with_suffix(".txt")),
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish_py_spy(process: subprocess.Popen[bytes], out: Path | None) -> dict[str, Any]:
    """Wait for py-spy (it stops at its duration or when the worker exits); summarize."""
    try:
        _, err = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    assert out is not None
    path = out.with_suffix(".txt")
    if not path.exists():
        return {"error": err.decode(errors="replace")[-2000:]}
    return summarize(path)


def layer_of(frame: str) -> str:
    m = _FRAME.match(frame)
    file = m.group("file") if m else frame
    for layer, needles in LAYERS:
        if any(n in file for n in needles):
            return layer
    return "other"


_ENTRY = re.compile(
    r"\((click/|mode/worker\.py|asyncio/(base_events|events|runners)\.py|streams/(ops/)?(cli|runner)"
    r"\.py|journey:|<frozen runpy>)"
    r"|^<module>|^main \(bench/"
)
_STDLIB = ("asyncio", "logging, gc, other stdlib", "other")


def caller_layer(frames: list[str]) -> str:
    for frame in reversed(frames):
        layer = layer_of(frame)
        if layer not in _STDLIB:
            return layer
    return layer_of(frames[-1])


def summarize(path: Path, top: int = 25) -> dict[str, Any]:
    """Samples by thread; for the busiest thread (the event loop's): by layer (innermost
    frame, and by caller), the top innermost functions (self time) and the top functions
    anywhere in the stack (inclusive time; the entry point's and the event loop's own, which
    are in nearly every sample, left out)."""
    threads: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    callers: Counter[str] = Counter()
    self_frames: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    stacks: list[tuple[str, list[str], int]] = []
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        frames = stack.split(";")
        threads[frames[0]] += int(samples)
        stacks.append((frames[0], frames[1:], int(samples)))
    if not stacks:
        return {"samples": 0}
    main, main_samples = threads.most_common(1)[0]
    for thread, frames, count in stacks:
        if thread != main or not frames:
            continue
        layers[layer_of(frames[-1])] += count
        callers[caller_layer(frames)] += count
        self_frames[_function(frames[-1])] += count
        for function in {_function(frame) for frame in frames}:
            inclusive[function] += count

    def pct(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(k, round(100 * v / main_samples, 1)) for k, v in counter.most_common(n)]

    return {
        "file": str(path),
        "samples": sum(threads.values()),
        "threads": {k: v for k, v in threads.most_common()},
        "main_thread": main,
        "main_thread_by_layer_pct": pct(layers, len(layers)),
        "main_thread_by_caller_layer_pct": pct(callers, len(callers)),
        "main_thread_self_top_pct": pct(self_frames, top),
        "main_thread_inclusive_top_pct": [
            (k, v) for k, v in pct(inclusive, top + 40) if not _ENTRY.search(k)
        ][:top],
    }


def _short(frame: str) -> str:
    """``func (/long/path/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py:12)``."""
    frame = frame.replace(f"{REPO}/", "")
    return re.sub(r"\([^()]*?(?:site-packages|lib/python3\.\d+)/", "(", frame)


def _function(frame: str) -> str:
    """A frame without its line number: a function's samples counted together."""
    return re.sub(r":\d+\)$", ")", _short(frame))


def main(argv: list[str]) -> int:
    import json

    print(json.dumps(summarize(Path(argv[0])), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
