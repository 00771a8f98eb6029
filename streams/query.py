"""Read-only SQL for analysts, wherever the data is.

The embedded ClickHouse (chdb) can be opened by one process only. While a worker runs, it owns
the data path and answers read-only SQL on its HTTP endpoint (``/sql``, with the bearer token
``JOURNEY_WEB_TOKEN``); otherwise the data path is opened directly. Either way the statement runs
on an analyst session (``AnalystQueries``): read-only by ClickHouse's ``readonly=1`` and bounded
by the ``JOURNEY_QUERY_*`` limits; against a ClickHouse server every query carries ``readonly=1``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sinks.clickhouse.client import AnalystQueries, QueryError, read_only_statement, redact_url
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


def run_query(settings: Settings, sql: str) -> Result:
    statement = read_only_statement(sql)
    url = settings.resolved_clickhouse_url()
    if url.startswith("chdb://") and settings.web_port:
        via_worker = _ask_worker(settings, statement, url)
        if via_worker is not None:
            return via_worker
    analyst = AnalystQueries(settings)
    try:
        columns, rows = analyst.query_sync(statement)
    except QueryError as exc:
        raise QueryFailed(str(exc)) from exc
    finally:
        analyst.close()
    return Result(columns, rows, redact_url(url))


def worker_headers(settings: Settings) -> dict[str, str]:
    """What ``journey sql``/``report`` send to a worker's ``/sql`` (docs/security.md)."""
    headers = {"Content-Type": "text/plain", "X-Requested-By": "journey"}
    if settings.web_token is not None:
        headers["Authorization"] = f"Bearer {settings.web_token.get_secret_value()}"
    return headers


def _ask_worker(settings: Settings, statement: str, url: str) -> Result | None:
    """Ask the worker serving on the configured port, if it owns *our* data path."""
    host = "127.0.0.1" if settings.web_host in ("0.0.0.0", "::", "") else settings.web_host
    endpoint = f"http://{host}:{settings.web_port}/sql"
    request = urllib.request.Request(
        endpoint, data=statement.encode(), method="POST", headers=worker_headers(settings)
    )
    timeout = settings.query_max_execution_time / 1000 + 30
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        try:
            message = json.loads(text).get("error", str(exc))
        except ValueError:
            message = f"{exc.code} from the worker at {endpoint}: {text.strip()}"
        raise QueryFailed(message) from exc
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None  # no worker here: open the data path directly
    if body.get("clickhouse") != redact_url(url):
        return None  # a worker of another installation: not our data
    return Result(body["columns"], body["rows"], f"the running worker at {endpoint}")
