"""Read-only SQL for analysts, wherever the data is.

The embedded ClickHouse (chdb) can be opened by one process only. While a worker runs, it owns
the data path and answers read-only SQL on its HTTP endpoint (``/sql``); otherwise the data path
is opened directly. Against a ClickHouse server every query is sent with ``readonly=1`` as well.
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

from sinks.clickhouse.client import ClickHouse, read_only_statement
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
    ch = ClickHouse.shared(settings)
    options = {} if url.startswith("chdb://") else {"settings": {"readonly": 1}}
    try:
        result = ch.call(ch.client.query, statement, **options)
    except Exception as exc:
        raise QueryFailed(str(exc).splitlines()[0] if str(exc) else repr(exc)) from exc
    return Result(list(result.column_names), [list(r) for r in result.result_rows], url)


def _ask_worker(settings: Settings, statement: str, url: str) -> Result | None:
    """Ask the worker serving on the configured port, if it owns *our* data path."""
    endpoint = f"http://{settings.web_host}:{settings.web_port}/sql"
    request = urllib.request.Request(
        endpoint, data=statement.encode(), method="POST", headers={"Content-Type": "text/plain"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", str(exc))
        except ValueError:
            message = str(exc)
        raise QueryFailed(message) from exc
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None  # no worker here: open the data path directly
    if body.get("clickhouse") != url:
        return None  # a worker of another installation: not our data
    return Result(body["columns"], body["rows"], f"the running worker at {endpoint}")
