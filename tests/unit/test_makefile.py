"""The Makefile: `make help` lists every target; the ports come from one place."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([a-z][a-z-]*):", text, re.M)}


def test_help_lists_every_target() -> None:
    shown = subprocess.run(
        ["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    listed = {m.group(1) for m in re.finditer(r"^\s+make ([a-z-]+)\s", shown, re.M)}
    assert listed == targets()
    assert len(listed) >= 17


def test_kafka_port_sets_the_bootstrap_of_every_command() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOURNEY_", "KAFKA_"))}
    printed = subprocess.run(
        ["make", "-s", "--no-print-directory", "-f", "Makefile", "-f", "-", "show"],
        cwd=ROOT, input="show:\n\t@echo $$JOURNEY_KAFKA_BOOTSTRAP\n", capture_output=True,
        text=True, env={**env, "KAFKA_PORT": "19260"},
    ).stdout  # fmt: skip
    assert printed.strip() == "127.0.0.1:19260"


def test_run_script_derives_the_bootstrap_from_kafka_port() -> None:
    text = (ROOT / "deploy/local/run.sh").read_text()
    assert 'JOURNEY_KAFKA_BOOTSTRAP="${JOURNEY_KAFKA_BOOTSTRAP:-127.0.0.1:$KAFKA_PORT}"' in text
