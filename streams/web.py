"""The worker's HTTP endpoint (aiohttp, which Faust already brings).

* ``/health``: the process is alive.
* ``/ready``: partitions are assigned and the journey table is recovered (timers indexed).
* ``/metrics``: Prometheus text format.
* ``/sql?query=...``: one read-only statement against this worker's ClickHouse, as JSON. The
  embedded ClickHouse can be opened by one process only, so while a worker runs, ``journey sql``
  and ``journey report`` ask it here instead of opening the data path themselves.
* ``/`` and ``/api/...``: the dashboard (see ``streams/dashboard.py``).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sinks.clickhouse.client import NotReadOnly, read_only_statement
from streams.metrics import Metrics
from streams.query import to_json

if TYPE_CHECKING:
    from streams.app import Pipeline

log = logging.getLogger(__name__)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, default=to_json), status=status, content_type="application/json"
    )


class WebServer:
    def __init__(self, pipeline: Pipeline, metrics: Metrics) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.settings = pipeline.settings
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/health", self.health),
                web.get("/ready", self.ready),
                web.get("/metrics", self.prometheus),
                web.get("/sql", self.sql),
                web.post("/sql", self.sql),
            ]
        )
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.web_host, self.settings.web_port)
        try:
            await site.start()
        except OSError as exc:
            raise RuntimeError(
                f"cannot serve HTTP on {self.url} ({exc.strerror}): another process uses the port. "
                "Set JOURNEY_WEB_PORT to a free port (0 turns the endpoint off)."
            ) from exc
        log.info("serving /health, /ready, /metrics, /sql and the dashboard on %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- handlers ------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    def is_ready(self) -> bool:
        app = self.pipeline.app
        try:
            assigned = bool(app.consumer.assignment())
        except Exception:
            return False
        return assigned and self.pipeline.engine.rebuilds > 0 and not app.rebalancing

    async def ready(self, request: web.Request) -> web.Response:
        if self.is_ready():
            return web.Response(text="ready\n")
        return web.Response(text="not ready: partitions not assigned or recovering\n", status=503)

    async def prometheus(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def sql(self, request: web.Request) -> web.Response:
        query = request.query.get("query")
        if query is None and request.method == "POST":
            query = await request.text()
        try:
            statement = read_only_statement(query or "")
        except NotReadOnly as exc:
            return json_response({"error": str(exc)}, status=400)
        columns, rows = await self.query(statement)
        if columns is None:
            return json_response({"error": rows}, status=400)
        return json_response({"columns": columns, "rows": rows})

    async def query(self, statement: str) -> tuple[Any, Any]:
        ch = self.pipeline.sink.clickhouse
        try:
            result = await ch.run(ch.client.query, statement)
        except Exception as exc:
            return None, str(exc).splitlines()[0] if str(exc) else repr(exc)
        return list(result.column_names), [list(row) for row in result.result_rows]
