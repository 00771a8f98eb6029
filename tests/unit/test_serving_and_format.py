"""`journey sql` / `report` find the running worker through its record; FORMAT clauses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from streams.clock import Clock
from streams.ops.cli import main
from streams.ops.serving import find_serving, record_path, record_serving
from streams.settings import Settings
from streams.web import query
from streams.web.query import QueryFailed, run_query, split_format


@pytest.mark.parametrize(
    ("sql", "statement", "rendering"),
    [
        ("SELECT 1 FORMAT JSONEachRow", "SELECT 1", "jsonl"),
        ("SELECT 1\nformat tsvwithnames;", "SELECT 1", "tsv"),
        ("SELECT 'FORMAT JSON' AS x", "SELECT 'FORMAT JSON' AS x", None),
        ("SELECT 1 FORMAT PrettyCompact ", "SELECT 1", "table"),
        ("SELECT 1", "SELECT 1", None),
    ],
)
def test_split_format(sql: str, statement: str, rendering: str | None) -> None:
    assert split_format(sql) == (statement, rendering)


def test_unknown_format_is_a_clear_error() -> None:
    with pytest.raises(QueryFailed, match="FORMAT Parquet is not supported"):
        split_format("SELECT 1 FORMAT Parquet")


def settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, **extra)  # type: ignore[call-arg]


def test_record_is_found_while_the_process_lives(tmp_path: Path) -> None:
    config = settings(tmp_path, web_port=7123)
    record_serving(config, Clock(20_000))
    found = find_serving(config)
    assert found is not None and found.url == "http://127.0.0.1:7123" and found.pid == os.getpid()
    assert found.clock_speed == 20_000 and found.clock().now_ms() >= found.clock_epoch_ms
    gone = subprocess.Popen(["true"])  # a pid that existed and is gone
    gone.wait()
    record = json.loads(record_path(config).read_text())
    record_path(config).write_text(json.dumps({**record, "pid": gone.pid}))
    assert find_serving(config) is None


class _Worker(BaseHTTPRequestHandler):
    clickhouse = ""

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        statement = self.rfile.read(int(self.headers["Content-Length"])).decode()
        body = json.dumps(
            {"columns": ["n", "q"], "rows": [[1, statement]], "clickhouse": self.clickhouse}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[tuple[Settings, int]]:
    """A stand-in for a running worker on a non-default port, recorded as a real one records."""
    served = settings(tmp_path)
    handler = type("H", (_Worker,), {"clickhouse": served.resolved_clickhouse_url()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port = int(server.server_address[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    record_serving(settings(tmp_path, web_port=port), Clock())
    try:
        yield served, port
    finally:
        server.shutdown()


def test_sql_finds_the_worker_on_another_port(worker: tuple[Settings, int]) -> None:
    served, port = worker
    assert served.web_port == 6066 and port != 6066  # the client does not know the port
    result = run_query(served, "SELECT 1")
    assert result.rows == [[1, "SELECT 1"]]
    assert result.source == f"the running loader at http://127.0.0.1:{port}/sql"


def test_cli_sql_with_format_clause(worker: tuple[Settings, int], tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(
        main, ["sql", "SELECT 1 AS n FORMAT JSONEachRow"], env={"JOURNEY_DATA_DIR": str(tmp_path)}
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.output.strip()) == {"n": 1, "q": "SELECT 1 AS n"}
    csv_out = runner.invoke(
        main, ["sql", "SELECT 1 FORMAT CSVWithNames"], env={"JOURNEY_DATA_DIR": str(tmp_path)}
    )
    assert csv_out.output.splitlines() == ["n,q", "1,SELECT 1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sql_waits_for_the_owner_that_is_still_starting(tmp_path: Path) -> None:
    """The loader records itself before its server listens (the window test_views once hit)."""
    served = settings(tmp_path)
    port = _free_port()
    record_serving(settings(tmp_path, web_port=port), Clock())  # this process: alive
    handler = type("H", (_Worker,), {"clickhouse": served.resolved_clickhouse_url()})
    servers: list[ThreadingHTTPServer] = []

    def start_late() -> None:
        time.sleep(1.0)
        servers.append(ThreadingHTTPServer(("127.0.0.1", port), handler))
        servers[0].serve_forever()

    threading.Thread(target=start_late, daemon=True).start()
    try:
        started = time.monotonic()
        result = run_query(served, "SELECT 1")
        assert result.rows == [[1, "SELECT 1"]]
        assert time.monotonic() - started >= 0.9  # it was refused, waited, and asked again
    finally:
        if servers:
            servers[0].shutdown()


def test_sql_gives_up_on_an_owner_that_never_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(query, "OWNER_START_WAIT_S", 0.6)
    port = _free_port()
    record_serving(settings(tmp_path, web_port=port), Clock())
    with pytest.raises(QueryFailed, match=r"does not answer .*asked for 1s: still starting"):
        run_query(settings(tmp_path), "SELECT 1")


def test_sql_stops_waiting_when_the_owner_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = subprocess.Popen(["sleep", "1"])
    threading.Thread(target=owner.wait, daemon=True).start()  # reaped as it exits, as a real one
    port = _free_port()
    record_serving(settings(tmp_path, web_port=port), Clock())
    record = json.loads(record_path(settings(tmp_path)).read_text())
    record_path(settings(tmp_path)).write_text(json.dumps({**record, "pid": owner.pid}))
    started = time.monotonic()
    with pytest.raises(QueryFailed, match="does not answer"):
        run_query(settings(tmp_path), "SELECT 1")
    assert time.monotonic() - started < query.OWNER_START_WAIT_S / 2
