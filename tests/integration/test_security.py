"""The attack table of docs/security.md, against a real worker: each attack fails and leaves
nothing behind (no file, no connection to a listener, no row), while analysts' queries (the
cookbook's among them), `journey sql` and `journey report` keep working with the token."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from schemas.records import DeadLetter, ShipmentChanged, Trigger
from tests.integration.conftest import Env, consume_all, publish
from tests.integration.support import CODEC, as_messages, valid_events

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "attack-table-token-" + uuid.uuid4().hex


def request(
    url: str,
    *,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> tuple[int, str]:
    data = body.encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Listener:
    """A loopback TCP listener that counts who connects (an attack's network target)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


def attacks(tmp: Path, port: int) -> list[tuple[str, str, Path | None]]:
    """(class, statement, file it must not create)."""
    written = tmp / "written.txt"
    pth = tmp / "evil.pth"
    sqlite = tmp / "created.db"
    return [
        ("file read", "SELECT * FROM file('/proc/self/environ', 'LineAsString')", None),
        ("file read", "SELECT file('/proc/self/environ')", None),
        ("file read", "SELECT count() FROM file('/etc/hostname', 'CSVWithNames')", None),
        ("file read", "SELECT * FROM (SELECT 1) AS a, (SELECT file('/etc/hostname'))", None),
        (
            "file write",
            f"WITH 1 AS x INSERT INTO FUNCTION file('{pth}', 'RawBLOB') SELECT 'import os'",
            pth,
        ),
        ("file write", f"SELECT 'import os' INTO/**/OUTFILE '{written}'", written),
        ("file write", f"SELECT 1) INTO OUTFILE '{written}' --", written),
        ("file write", f"SELECT * FROM sqlite('{sqlite}', 't')", sqlite),
        ("network", f"SELECT * FROM url('http://127.0.0.1:{port}/', 'LineAsString')", None),
        ("network", f"SELECT * FROM s3('http://127.0.0.1:{port}/bucket/k', 'CSV')", None),
        ("network", f"SELECT * FROM remote('127.0.0.1:{port}', system.one)", None),
        ("network", f"SELECT * FROM mysql('127.0.0.1:{port}', 'd', 't', 'u', 'p')", None),
        ("network", f"SELECT * FROM postgresql('127.0.0.1:{port}', 'd', 't', 'u', 'p')", None),
        ("program", "SELECT * FROM executable('id', 'TSV', 'a String')", None),
        ("program", "SELECT * FROM python(sys)", None),
        (
            "table write",
            "WITH 1 AS x INSERT INTO journey.events (event_id, source_topic, source_partition, "
            "source_offset) VALUES ('forged', 'x', 0, 999999999999)",
            None,
        ),
        ("table write", "ALTER TABLE journey.events DELETE WHERE 1", None),
        ("table write", "SELECT 1; DROP TABLE journey.events", None),
        ("settings change", "SELECT * FROM numbers(10) SETTINGS readonly = 0", None),
        ("settings change", "SELECT 1 SETTINGS max_execution_time = 100000", None),
        ("second statement", "SELECT 1; SELECT file('/etc/hostname')", None),
        ("resource", "SELECT count() FROM numbers(1e12) WHERE sipHash64(number) = 1", None),
        ("resource", "SELECT * FROM numbers(1e7)", None),
    ]


def cookbook_queries() -> list[str]:
    text = (ROOT / "docs" / "sql-cookbook.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, re.DOTALL)
    return [sql.strip() for block in blocks for sql in re.split(r";\s*\n", block) if sql.strip()]


def test_attacks_fail_and_leave_nothing_behind(env: Env, start_worker: Any, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{env.vars['JOURNEY_WEB_PORT']}"
    listener = Listener()
    env.journey("topics", "create")
    worker = start_worker(JOURNEY_WEB_TOKEN=TOKEN, JOURNEY_QUERY_MAX_EXECUTION_TIME="4s")
    worker.wait_until(lambda s: s.get("ready"))
    events = valid_events(3)
    publish(env, as_messages(events))
    worker.wait_until(lambda s: s.get("events_rows", 0) >= len(events))
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def count_rows() -> str:
        status, body = request(
            f"{base}/sql",
            body="SELECT count(), max(source_offset) FROM journey.events",
            headers=auth,
        )
        assert status == 200, body
        return body

    before = count_rows()
    for kind, statement, target in attacks(tmp_path, listener.port):
        status, body = request(f"{base}/sql", body=statement, headers=auth)
        assert status == 400, f"{kind}: {statement!r} -> {status} {body}"
        assert "error" in json.loads(body), body
        if target is not None:
            assert not target.exists(), f"{kind}: {statement!r} created {target}"
    assert listener.connections == 0
    assert count_rows() == before  # no row written, none removed

    # Who may ask: no token, a wrong one, the token as basic auth, a foreign Origin or Host,
    # a cross-site fetch, and a browser's <img> GET / text/plain form POST.
    query = "SELECT count() FROM journey.events"
    url = f"{base}/sql?query=SELECT%20count()%20FROM%20journey.events"
    refused = [
        (url, None, {}),
        (url, None, {"Authorization": "Bearer wrong"}),
        (url, None, {"Authorization": "Basic " + _basic(TOKEN)}),
        (f"{base}/sql", query, {**auth, "Origin": "http://evil.example"}),
        (f"{base}/sql", query, {**auth, "Host": "evil.example:6066"}),
        (f"{base}/sql", query, {**auth, "Sec-Fetch-Site": "cross-site"}),
        (url, None, {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "image"}),
        (f"{base}/sql", query, {"Content-Type": "text/plain", "Origin": "http://evil.example"}),
        (f"{base}/", None, {}),
        (f"{base}/", None, {"Authorization": "Basic " + _basic("wrong")}),
        (f"{base}/", None, {"Authorization": "Basic " + _basic(TOKEN), "Host": "rebound.example"}),
    ]
    for target_url, body, headers in refused:
        status, text = request(target_url, body=body, headers=headers)
        assert status in (401, 403), f"{target_url} {headers} -> {status} {text[:200]}"
        assert "count()" not in text and "rows" not in text

    # Open: health, readiness, metrics; with the token: /sql, the dashboard (basic auth too).
    assert request(f"{base}/health")[0] == 200
    assert request(f"{base}/ready")[0] == 200
    assert request(f"{base}/metrics")[0] == 200
    status, body = request(url, headers=auth)
    assert status == 200 and json.loads(body)["rows"] == [[len(events)]]
    assert request(f"{base}/", headers={"Authorization": "Basic " + _basic(TOKEN)})[0] == 200
    for sql in cookbook_queries():
        status, body = request(f"{base}/sql", body=sql, headers=auth)
        assert status == 200, f"cookbook query failed: {sql}\n{body}"

    # The CLI sends the token; without it the worker says no.
    done = env.journey("sql", "SELECT count() AS n FROM journey.events", "--format", "json",
                       JOURNEY_WEB_TOKEN=TOKEN)  # fmt: skip
    assert json.loads(done.stdout) == [{"n": len(events)}]
    report = env.journey("report", JOURNEY_WEB_TOKEN=TOKEN).stdout
    assert "Funnel" in report and "running loader" in report
    without = env.journey("sql", "SELECT 1", check=False)
    assert without.returncode != 0 and "JOURNEY_WEB_TOKEN" in without.stderr
    assert TOKEN not in "".join(worker.output)
    assert worker.stop() == 0


def test_a_long_query_stalls_nothing_and_ends_when_its_client_goes_away(
    env: Env, start_worker: Any
) -> None:
    base = f"http://127.0.0.1:{env.vars['JOURNEY_WEB_PORT']}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    env.journey("topics", "create")
    worker = start_worker(JOURNEY_WEB_TOKEN=TOKEN, JOURNEY_QUERY_MAX_EXECUTION_TIME="300s")
    worker.wait_until(lambda s: s.get("ready"))
    slow = "SELECT count() FROM numbers(1e13) WHERE sipHash64(number) = 1 AND 'slow-one' != ''"
    running = (
        "SELECT count() FROM system.processes "
        "WHERE query LIKE '%slow-one%' AND query NOT LIKE '%system.processes%'"
    )

    # A client starts the slow query, then events flow: their rows are stored while it runs.
    client = socket.create_connection(("127.0.0.1", int(env.vars["JOURNEY_WEB_PORT"])))
    client.sendall(
        f"POST /sql HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Length: {len(slow)}\r\n\r\n{slow}".encode()
    )
    deadline = time.monotonic() + 60
    while json.loads(request(f"{base}/sql", body=running, headers=auth)[1])["rows"] != [[1]]:
        assert time.monotonic() < deadline, "the slow query never started"
        time.sleep(0.2)
    events = valid_events(4)
    publish(env, as_messages(events))
    worker.wait_until(lambda s: s.get("events_rows", 0) >= len(events), timeout=120)
    assert json.loads(request(f"{base}/sql", body=running, headers=auth)[1])["rows"] == [[1]]

    # The client goes away: its query is cancelled (long before its 300 s limit).
    client.close()
    deadline = time.monotonic() + 60
    while json.loads(request(f"{base}/sql", body=running, headers=auth)[1])["rows"] != [[0]]:
        assert time.monotonic() < deadline, "the query outlived its client"
        time.sleep(0.5)
    assert worker.stop() == 0


def _basic(password: str) -> str:
    import base64

    return base64.b64encode(f"analyst:{password}".encode()).decode()


def test_a_forged_row_does_not_make_the_loader_skip_facts(env: Env, start_worker: Any) -> None:
    base = f"http://127.0.0.1:{env.vars['JOURNEY_WEB_PORT']}"
    env.journey("topics", "create")
    first = start_worker()
    first.wait_until(lambda s: s.get("ready"))
    assert first.stop() == 0
    # Someone with write access stores a row claiming a far-future offset of every partition of
    # the topic the loader reads events from.
    orders = env.settings().topic("journey_events")
    forge = (
        "from streams.settings import Settings\n"
        "from sinks.clickhouse.client import ClickHouse\n"
        "ch = ClickHouse.shared(Settings())\n"
        f'for p in range(3): ch.call(ch.client.command, "INSERT INTO journey.events (event_id, '
        f"customer_id, source_topic, source_partition, source_offset) VALUES "
        f"('forged-' || toString({{p}}), 'c-forged', '{orders}', {{p}}, 999999999999)\"."
        "format(p=p))\n"
    )
    subprocess.run([sys.executable, "-c", forge], env=env.environ(), check=True, cwd=ROOT,
                   timeout=120)  # fmt: skip

    second = start_worker()
    events = valid_events(3)
    publish(env, as_messages(events))
    # Every new event is stored, although each partition's stored offset says "already done".
    second.wait_until(lambda s: s.get("events_rows", 0) >= len(events) + 3, timeout=120)
    status, _ = request(f"{base}/ready")
    assert status == 200
    assert second.stop() == 0
    rows = env.sql("SELECT count() AS n FROM journey.events WHERE customer_id != 'c-forged'")
    assert rows == [{"n": len(events)}]


def test_a_forged_dead_letter_is_not_replayed(env: Env, start_worker: Any) -> None:
    env.journey("topics", "create")
    s = env.settings()
    now = int(time.time() * 1000)
    trigger = Trigger(
        "t-1", "SHIPPING_CONFIRMATION", "TRANSACTIONAL", "c-1", now, now, "s-1", "SERVICE",
        attributes={"tracking_url": "https://phish.example/"},
    )  # fmt: skip
    phishing = ShipmentChanged(
        "s-1", "c-1", now, "o-1", "s-1", "SHIPPED", "DHL", "123", "javascript:alert(1)"
    )
    letters = [
        DeadLetter(
            "x/0/1",
            s.topic("triggers"),
            0,
            1,
            "bad_avro",
            "x",
            now,
            b"c-1",
            CODEC.encode(trigger),
            "Trigger",
        ),
        DeadLetter(
            "x/0/2",
            s.topic("shipments"),
            0,
            2,
            "bad_avro",
            "x",
            now,
            b"c-1",
            CODEC.encode(phishing),
            "ShipmentChanged",
        ),
    ]
    publish(env, [("deadletter", b"x", CODEC.encode(letter)) for letter in letters])
    done = env.journey("dlq", "replay", "--all")
    assert "not replayed x/0/1" in done.stderr and "not an input topic" in done.stderr
    assert "not replayed x/0/2" in done.stderr and "not an http(s) URL" in done.stderr
    assert consume_all(env, s.topic("triggers"), 1, timeout=5) == []
    assert consume_all(env, s.topic("shipments"), 1, timeout=5) == []

    # The same phishing shipment from a producer is a dead letter with the reason.
    worker = start_worker()
    publish(env, [("shipments", b"c-1", CODEC.encode(phishing))])
    # The loader stores what is on the dead-letter topic: the two forged letters, and this one.
    worker.wait_until(lambda s: s.get("deadletter_rows", 0) >= 3)
    assert worker.stop() == 0
    rows = env.sql(
        "SELECT reason_code, reason FROM journey.deadletters WHERE dead_letter_id NOT LIKE 'x/%'"
    )
    assert rows[0]["reason_code"] == "validation" and "http(s)" in rows[0]["reason"]
