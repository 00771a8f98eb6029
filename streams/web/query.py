"""Read-only SQL for analysts, wherever the data is.

The embedded ClickHouse (chdb) can be opened by one process only. While a worker runs, it owns
the data path and answers read-only SQL on its HTTP endpoint (``/sql``, with the bearer token
``JOURNEY_WEB_TOKEN``); otherwise the data path is opened directly. Either way the statement runs
on an analyst session (``AnalystQueries``): read-only by ClickHouse's ``readonly=1`` and bounded
by the ``JOURNEY_QUERY_*`` limits; against a ClickHouse server every query carries ``readonly=1``.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sinks.clickhouse.client import AnalystQueries, QueryError, read_only_statement, redact_url
from streams.ops.serving import find_serving, process_alive
from streams.settings import Settings


def to_json(value: Any) -> Any:
    """JSON for what ClickHouse returns: times as ISO-8601, decimals as numbers."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class QueryFailed(RuntimeError):
    pass


@dataclass
class Result:
    columns: list[str]
    rows: list[list[Any]]
    source: str


# ClickHouse output formats a `journey sql` query may end with (as analysts type them), and the
# rendering of `journey sql` that gives the same output.
FORMATS = {
    "jsoneachrow": "jsonl",
    "jsonlines": "jsonl",
    "ndjson": "jsonl",
    "json": "json",
    "jsoncompact": "json",
    "tabseparated": "tsv",
    "tsv": "tsv",
    "tabseparatedwithnames": "tsv",
    "tsvwithnames": "tsv",
    "csv": "csv",
    "csvwithnames": "csv",
    "pretty": "table",
    "prettycompact": "table",
    "prettycompactmonoblock": "table",
}
_FORMAT_CLAUSE = re.compile(r"\s+FORMAT\s+([A-Za-z]+)\s*;?\s*$", re.IGNORECASE)


def split_format(sql: str) -> tuple[str, str | None]:
    """``"SELECT 1 FORMAT JSONEachRow"`` -> ``("SELECT 1", "jsonl")``; the statement then runs
    without it (rows come back as values and are rendered here)."""
    match = _FORMAT_CLAUSE.search(sql)
    if match is None:
        return sql, None
    name = match.group(1)
    rendering = FORMATS.get(name.lower())
    if rendering is None:
        known = ", ".join(sorted({"JSONEachRow", "JSON", "TSV", "TSVWithNames", "CSV",
                                  "CSVWithNames", "PrettyCompact"}))  # fmt: skip
        raise QueryFailed(f"FORMAT {name} is not supported by journey sql; use one of {known}")
    return sql[: match.start()], rendering


def run_query(settings: Settings, sql: str) -> Result:
    statement = read_only_statement(sql)
    url = settings.resolved_clickhouse_url()
    if url.startswith("chdb://"):
        via_worker = _ask_worker(settings, statement, url)
        if via_worker is not None:
            return via_worker
    analyst = AnalystQueries(settings)
    try:
        columns, rows = analyst.query_sync(statement)
    except QueryError as exc:
        message = str(exc)
        if "Cannot lock file" in message or "already running" in message:
            message = (
                f"the embedded ClickHouse at {redact_url(url)} is open in another process (a "
                "worker or `make run` of this data directory, serving on a port this command "
                "does not know): set JOURNEY_WEB_PORT to that worker's port, or stop it"
            )
        raise QueryFailed(message) from exc
    finally:
        analyst.close()
    return Result(columns, rows, redact_url(url))


def worker_headers(settings: Settings) -> dict[str, str]:
    """What ``journey sql``/``report`` send to a worker's ``/sql`` (docs/security.md)."""
    headers = {"Content-Type": "text/plain", "X-Requested-By": "journey"}
    if settings.web_token is not None:
        headers["Authorization"] = f"Bearer {settings.web_token.get_secret_value()}"
    return headers


# How long `journey sql` waits for the loader that owns the data path to start answering: it
# records itself (serving.json) before its HTTP server is up, a few seconds after it starts.
OWNER_START_WAIT_S = 20.0


def _post(request: urllib.request.Request, timeout: float, wait_while_starting: int | None) -> Any:
    """The JSON answer to ``request``. ``wait_while_starting``: the pid of the process recorded
    as the owner; while it lives and refuses connections (its server is not listening yet), ask
    again for up to ``OWNER_START_WAIT_S``."""
    deadline = time.monotonic() + OWNER_START_WAIT_S
    while True:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.URLError as exc:  # urlopen wraps a refused connection in one
            if (
                not isinstance(exc.reason, ConnectionRefusedError)
                or wait_while_starting is None
                or time.monotonic() >= deadline
                or not process_alive(wait_while_starting)
            ):
                raise
        time.sleep(0.25)


def _ask_worker(settings: Settings, statement: str, url: str) -> Result | None:
    """Ask the worker that owns *our* data path: the one recorded in ``serving.json``, else the
    one on the configured port."""
    serving = find_serving(settings)
    if serving is not None and serving.clickhouse == url and serving.url:
        base = serving.url
    elif settings.web_port:
        host = "127.0.0.1" if settings.web_host in ("0.0.0.0", "::", "") else settings.web_host
        base = f"http://{host}:{settings.web_port}"
    else:
        return None
    endpoint = f"{base}/sql"
    request = urllib.request.Request(
        endpoint, data=statement.encode(), method="POST", headers=worker_headers(settings)
    )
    timeout = settings.query_max_execution_time / 1000 + 30
    owner = serving if serving is not None and serving.clickhouse == url and serving.url else None
    asked = time.monotonic()
    try:
        body = _post(request, timeout, wait_while_starting=owner.pid if owner else None)
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        try:
            message = json.loads(text).get("error", str(exc))
        except ValueError:
            message = f"{exc.code} from the worker at {endpoint}: {text.strip()}"
        raise QueryFailed(message) from exc
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        if owner is not None:
            raise QueryFailed(
                f"the loader (pid {owner.pid}) that owns {url} does not answer at {endpoint}: "
                f"{exc} (asked for {time.monotonic() - asked:.0f}s: still starting, or gone)"
            ) from exc
        return None  # no worker here: open the data path directly
    if body.get("clickhouse") != redact_url(url):
        return None  # a worker of another installation: not our data
    return Result(body["columns"], body["rows"], f"the running loader at {endpoint}")
