"""A second process on the same chdb path is told which process owns it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from sinks.clickhouse.client import _owner


def test_the_owner_is_named_from_the_status_file(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    cmdline = Path(f"/proc/{holder.pid}/cmdline")
    deadline = time.monotonic() + 10
    while b"sleep" not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)  # until the child has exec'd
    try:
        (tmp_path / "status").write_text(f"PID: {holder.pid}\nStarted at: now\n")
        owner = _owner(tmp_path)
        assert owner is not None and owner.startswith(f"pid {holder.pid}: ")
        assert "time.sleep(30)" in owner
    finally:
        holder.kill()
        holder.wait()
    assert _owner(tmp_path) is None  # a stale status file names nobody


def test_no_status_file_or_our_own_pid_names_nobody(tmp_path: Path) -> None:
    assert _owner(tmp_path) is None
    (tmp_path / "status").write_text(f"PID: {os.getpid()}\n")
    assert _owner(tmp_path) is None
