"""The dashboard, looked at in a real headless Chromium (installed by `make test`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from tests.integration.conftest import Env, publish
from tests.integration.support import as_messages, valid_events

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
SECTIONS = (
    "Live", "Dead letters by reason", "Funnel", "Cart recovery", "Repeat purchase by cohort",
    "NPS trend", "Triggers by status over time", "Engagement by trigger type",
    "Engagement per day", "Customer lifetime value", "Stage transitions", "Delivery time",
)  # fmt: skip


def chromium() -> str:
    path = (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    assert path, "Chromium is missing: `make test` installs it (deploy/local/chromium.sh)"
    return path


def test_dashboard_renders_charts_in_a_browser(env: Env, start_worker: Any, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{env.vars['JOURNEY_WEB_PORT']}/"
    env.journey("topics", "create")
    events = valid_events(30)
    publish(env, [*as_messages(events), ("orders", b"c-x", b"not an event")])
    worker = start_worker()
    worker.wait_until(
        lambda s: s.get("events_rows", 0) >= len(events) and s.get("deadletter_rows", 0) >= 1
    )

    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        page = response.read().decode()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page, title
    assert page.count("<svg") >= 8  # every chart section; engagement, value, stages are tables
    assert 'http-equiv="refresh"' in page  # live: the page reloads itself
    assert "no data yet" not in page.split("<h2>Funnel</h2>")[1].split("</section>")[0]

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    done = subprocess.run(
        [
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chrome'}",
            "--window-size=1400,1900", f"--screenshot={shot}", url,
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1400, 1900)
    assert len(data) > 50_000  # a page of charts, not a blank one
    assert worker.stop() == 0
