"""`journey run`'s supervisor: what each child process is started with."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streams.clock import Clock
from streams.ops.runner import Child, Supervisor, arm_stop_report, worker_instance_ids
from streams.settings import Settings


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, worker_web_port=0, **values)  # type: ignore[call-arg]


def started_workers(config: Settings, workers: int) -> dict[str, dict[str, str]]:
    supervisor = Supervisor(config, workers, Clock(), "warning")
    spawned: dict[str, dict[str, str]] = {}
    supervisor._spawn = lambda name, args, env: spawned.__setitem__(name, env)  # type: ignore[method-assign]
    supervisor.start(1.0)
    return {name: env for name, env in spawned.items() if name != "loader"}


def test_each_worker_has_a_static_membership_id_that_a_rerun_keeps(tmp_path: Path) -> None:
    config = settings(app_id="journey", data_dir=tmp_path)
    first = started_workers(config, 3)
    ids = [env["JOURNEY_GROUP_INSTANCE_ID"] for env in first.values()]
    assert len(set(ids)) == 3  # one id shared by two live members would fence one of them
    assert ids[0].startswith("journey.") and ids[0].endswith(".worker-1")
    again = started_workers(config, 3)  # `journey run` again, after a crash
    assert [env["JOURNEY_GROUP_INSTANCE_ID"] for env in again.values()] == ids
    # Another data directory (another pipeline of the same app on this host): other ids.
    other = worker_instance_ids(settings(app_id="journey", data_dir=tmp_path / "b"), ["worker-1"])
    assert other["worker-1"] != ids[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_user_set_id_is_the_base_of_every_worker_s_id(workers: int) -> None:
    config = settings(group_instance_id="shop host/1")
    ids = [env["JOURNEY_GROUP_INSTANCE_ID"] for env in started_workers(config, workers).values()]
    assert ids == [f"shop-host-1.worker-{n + 1}" for n in range(workers)]


def test_none_turns_static_membership_off() -> None:
    from streams.runtime.app import group_instance_id

    config = settings(group_instance_id="none")
    assert {env["JOURNEY_GROUP_INSTANCE_ID"] for env in started_workers(config, 2).values()} == {
        "none"
    }
    assert group_instance_id(config) is None
    assert group_instance_id(settings()) is None
    assert group_instance_id(settings(group_instance_id="pod-0")) == "pod-0"


def test_a_child_that_ignores_sigterm_is_named_and_killed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hang at shutdown (session 10 saw one, and no log said which process it was)."""
    supervisor = Supervisor(settings(data_dir=tmp_path), 1, Clock(), "warning")
    ignoring = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ok', flush=True); time.sleep(60)"
    )
    process = subprocess.Popen([sys.executable, "-c", ignoring], stdout=subprocess.PIPE, text=True)
    supervisor.children.append(Child("worker-1", process))
    assert process.stdout is not None and process.stdout.readline() == "ok\n"
    supervisor.stop(timeout=0.5)
    assert process.returncode == -signal.SIGKILL
    assert "worker-1 did not stop within 0.5 s of SIGTERM; killed it" in capsys.readouterr().err
    process.stdout.close()


def test_a_slow_stop_reports_where_each_task_waits_and_every_threads_stack(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The hang at a stop seen in CI (sessions 10 and 14) left no trace of what it waited for."""
    dump = tmp_path / "threads.txt"

    async def flush_forever(never: asyncio.Event) -> None:
        await never.wait()

    async def stopping() -> None:
        await flush_forever(asyncio.Event())

    async def main() -> None:
        task = asyncio.create_task(stopping(), name="the-stuck-stop")
        with dump.open("w") as file:
            arm_stop_report(asyncio.get_running_loop(), 0.2, threads_after=0.2, file=file)
            try:
                await asyncio.sleep(1.5)  # the thread dump is due at 0.4 s
            finally:
                faulthandler.cancel_dump_traceback_later()
        task.cancel()

    with caplog.at_level(logging.WARNING, logger="streams.ops.runner"):
        asyncio.run(main())
    report = caplog.text
    assert "still stopping 0.2 s after the signal" in report
    assert "the-stuck-stop: stopping (test_runner.py:" in report
    assert "> flush_forever (test_runner.py:" in report
    assert "> wait (locks.py:" in report
    threads = dump.read_text()  # the loop's thread, where it waits for the next event
    assert "Thread 0x" in threads and "in run_until_complete" in threads
