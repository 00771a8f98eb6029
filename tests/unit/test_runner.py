"""`journey run`'s supervisor: what each child process is started with."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streams.clock import Clock
from streams.ops.runner import Child, Supervisor, worker_instance_ids
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
