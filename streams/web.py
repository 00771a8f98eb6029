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

import asyncio
import itertools
import json
import logging
import time
from collections import deque
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
                web.get("/", self.dashboard),
            ]
        )
        self._runner: web.AppRunner | None = None
        # (wall time, events consumed) every few seconds, for the live throughput chart.
        self.history: deque[tuple[float, int]] = deque(maxlen=90)
        self._sampler: asyncio.Task[None] | None = None

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
        self._sampler = asyncio.get_running_loop().create_task(self._sample())

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _sample(self) -> None:
        while True:
            self.history.append((time.time(), sum(self.pipeline.ingest.consumed.values())))
            await asyncio.sleep(2)

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
        problem = self.pipeline.health.problem()  # broker or ClickHouse unreachable
        if problem is None and self.is_ready():
            return web.Response(text="ready\n")
        why = problem or "partitions not assigned or recovering"
        return web.Response(text=f"not ready: {why}\n", status=503)

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
        return json_response(
            {"columns": columns, "rows": rows, "clickhouse": self.pipeline.sink.clickhouse.url}
        )

    async def query(self, statement: str) -> tuple[Any, Any]:
        ch = self.pipeline.sink.clickhouse
        try:
            result = await ch.run(ch.client.query, statement)
        except Exception as exc:
            return None, str(exc).splitlines()[0] if str(exc) else repr(exc)
        return list(result.column_names), [list(row) for row in result.result_rows]

    # --- the dashboard -------------------------------------------------------------------------
    async def dashboard(self, request: web.Request) -> web.Response:
        return web.Response(text=await self.render_dashboard(), content_type="text/html")

    async def _rows(self, sql: str) -> list[list[Any]]:
        columns, rows = await self.query(sql.format(db=self.settings.clickhouse_database))
        if columns is None:
            log.warning("dashboard query failed: %s", rows)
            return []
        return list(rows)

    async def render_dashboard(self) -> str:
        from streams import dashboard as d

        ingest, engine = self.pipeline.ingest, self.pipeline.engine
        consumed = sum(ingest.consumed.values())
        emitted = sum(n for (_, status), n in engine.decisions.items() if status == "EMITTED")
        samples = list(self.history)
        rates = [
            (later[1] - earlier[1]) / max(later[0] - earlier[0], 1e-9)
            for earlier, later in itertools.pairwise(samples)
        ]
        rate_labels = [time.strftime("%H:%M:%S", time.localtime(t)) for t, _ in samples[1:]]
        sections = [
            d.section(
                "Live",
                d.kpis(
                    [
                        ("events consumed", f"{consumed:,}"),
                        ("events/s now", f"{rates[-1]:,.0f}" if rates else "-"),
                        ("triggers emitted", f"{emitted:,}"),
                        ("dead letters", f"{sum(ingest.dead.values()):,}"),
                        ("pending timers", f"{len(engine.index):,}"),
                    ]
                )
                + d.line_chart(
                    rate_labels,
                    [d.Series("events/s", rates, d.PALETTE[0])],
                    "Throughput",
                    height=200,
                ),
                "Throughput of this worker, sampled every 2 s.",
            )
        ]
        dead = sorted(ingest.dead.items(), key=lambda kv: -kv[1])
        sections.append(
            d.section(
                "Dead letters by reason",
                d.bar_chart(
                    [reason for reason, _ in dead],
                    [d.Series("dead letters", [n for _, n in dead], d.PALETTE[3])],
                    "Dead letters",
                    height=200,
                )
                if dead
                else d.empty("Dead letters"),
                "Inputs that could not be used; see `journey dlq list`.",
            )
        )
        funnel = await self._rows(
            "SELECT sum(visitors), sum(product_viewers), sum(cart_adders), "
            "sum(checkout_starters), sum(purchasers) FROM {db}.funnel_daily"
        )
        steps = ("visitors", "product viewers", "cart adders", "checkout starters", "purchasers")
        sections.append(
            d.section(
                "Funnel",
                d.funnel_chart(
                    list(zip(steps, funnel[0] if funnel else [], strict=False)), "Funnel"
                ),
                "Distinct customers per day, summed over all days.",
            )
        )
        recovery = await self._rows(
            "SELECT toString(day), carts_abandoned, reminders_emitted, carts_recovered "
            "FROM (SELECT * FROM {db}.cart_recovery_daily ORDER BY day DESC LIMIT 21) ORDER BY day"
        )
        sections.append(
            d.section(
                "Cart recovery",
                d.bar_chart(
                    [r[0][5:] for r in recovery],
                    [
                        d.Series("abandoned", [r[1] for r in recovery], d.PALETTE[9]),
                        d.Series("reminded", [r[2] for r in recovery], d.PALETTE[2]),
                        d.Series("recovered", [r[3] for r in recovery], d.PALETTE[1]),
                    ],
                    "Cart recovery",
                ),
                "Per day: carts left, abandoned-cart reminders sent, carts ordered after one.",
            )
        )
        cohorts = await self._rows(
            "SELECT toString(cohort_month), customers, repeat_rate "
            "FROM {db}.repeat_purchase_cohorts"
        )
        sections.append(
            d.section(
                "Repeat purchase by cohort",
                d.bar_chart(
                    [r[0][:7] for r in cohorts],
                    [d.Series("repeat rate %", [100 * float(r[2]) for r in cohorts], d.PALETTE[4])],
                    "Repeat purchase",
                ),
                "Share of each first-order month's customers who ordered again.",
            )
        )
        nps = await self._rows(
            "SELECT toString(day), nps, responses FROM "
            "(SELECT * FROM {db}.nps_daily ORDER BY day DESC LIMIT 30) ORDER BY day"
        )
        sections.append(
            d.section(
                "NPS trend",
                d.line_chart(
                    [r[0][5:] for r in nps],
                    [d.Series("NPS", [float(r[1]) for r in nps], d.PALETTE[5])],
                    "NPS",
                    floor=-100,
                    ceiling=100,
                ),
                "% promoters (9-10) minus % detractors (0-6), per day.",
            )
        )
        by_day = await self._rows(
            "SELECT toString(toDate(decided_at)) AS day, status, count() FROM {db}.triggers FINAL "
            "WHERE decided_at >= (SELECT max(decided_at) FROM {db}.triggers) - INTERVAL 21 DAY "
            "GROUP BY day, status ORDER BY day"
        )
        days = sorted({r[0] for r in by_day})
        statuses = [s for s in d.STATUS_COLOURS if any(r[1] == s for r in by_day)]
        counts = {(r[0], r[1]): r[2] for r in by_day}
        by_type = await self._rows(
            "SELECT trigger_type, countIf(status = 'EMITTED'), countIf(status = 'SUPPRESSED'), "
            "countIf(status = 'EXPIRED'), countIf(status = 'CANCELLED') FROM {db}.triggers FINAL "
            "GROUP BY trigger_type ORDER BY trigger_type"
        )
        sections.append(
            d.section(
                "Triggers by status over time",
                d.bar_chart(
                    [day[5:] for day in days],
                    [
                        d.Series(s, [counts.get((day, s), 0) for day in days], d.STATUS_COLOURS[s])
                        for s in statuses
                    ],
                    "Triggers",
                    stacked=True,
                )
                + d.table(
                    ["trigger type", "emitted", "suppressed", "expired", "cancelled"], by_type
                ),
                "Decisions per day (journey time) and per trigger type.",
            )
        )
        delivery = await self._rows(
            "SELECT toString(day), shipped, delivered, median_hours_to_deliver FROM "
            "(SELECT * FROM {db}.delivery_daily WHERE median_hours_to_deliver IS NOT NULL "
            "ORDER BY day DESC LIMIT 21) ORDER BY day"
        )
        sections.append(
            d.section(
                "Delivery time",
                d.line_chart(
                    [r[0][5:] for r in delivery],
                    [
                        d.Series(
                            "median hours to deliver", [float(r[3]) for r in delivery], d.PALETTE[8]
                        )
                    ],
                    "Delivery",
                ),
                "Median hours from SHIPPED to DELIVERED, per day of delivery.",
            )
        )
        return d.page(
            "journey",
            f"{self.settings.kafka_bootstrap} · {self.pipeline.sink.clickhouse.url}",
            sections,
        )
