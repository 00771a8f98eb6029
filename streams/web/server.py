"""The HTTP endpoints (aiohttp, which Faust already brings) of a worker and of the loader.

Both serve ``/health`` (the process is alive), ``/ready`` and ``/metrics`` (Prometheus).

* A **worker** (``WorkerWeb``, ``JOURNEY_WORKER_WEB_PORT``): ``/ready`` when its partitions are
  assigned, the journey table is recovered (timers indexed) and the broker answers; ``/status``:
  its figures as JSON (what the console and the dashboard show per worker).
* The **loader** (``LoaderWeb``, ``JOURNEY_WEB_PORT``): ``/ready`` when its partitions are
  assigned (and the erasures loaded), broker and ClickHouse answer; ``/sql?query=...``: one
  read-only statement against the loader's ClickHouse, as JSON
  (the embedded ClickHouse can be opened by one process only, so while the loader runs,
  ``journey sql`` and ``journey report`` ask it here); ``/``: the dashboard
  (``streams/web/dashboard.py``).

``/sql`` and the dashboard read customer data: they need the bearer token ``JOURNEY_WEB_TOKEN``
(the dashboard also takes it as the password of HTTP basic auth, for browsers) or, without a
token, a loopback bind; they answer only to known ``Host`` names and refuse cross-site requests
(``Origin``, ``Sec-Fetch-Site``). ``/health``, ``/ready`` and ``/metrics`` stay open. Analyst
queries run on their own read-only ClickHouse sessions (``AnalystQueries``), never the sink's,
and are cancelled when the client goes away. See docs/security.md.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
import itertools
import json
import logging
import time
import urllib.parse
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sinks.clickhouse.client import AnalystQueries, NotReadOnly, QueryError, redact_url
from streams.runtime.status import loader_status, worker_status
from streams.runtime.tasks import cancel_and_wait
from streams.settings import Settings
from streams.web import reports
from streams.web.query import to_json

if TYPE_CHECKING:
    from streams.runtime.app import Pipeline
    from streams.runtime.loader import Loader

log = logging.getLogger(__name__)

# Without a token, /sql also wants this header: a page in a browser cannot send a custom header
# to another origin without a CORS preflight, which this server never grants.
CLIENT_HEADER = ("X-Requested-By", "journey")
STOP_GRACE_SECONDS = 3.0  # for requests in progress when the process stops
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, default=to_json), status=status, content_type="application/json"
    )


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Gate:
    """Who may read customer data over HTTP: token, bind, Host and Origin (docs/security.md)."""

    def __init__(self, settings: Settings) -> None:
        self.token = settings.web_token.get_secret_value() if settings.web_token else None
        self.loopback_bind = is_loopback(settings.web_host)
        names = {n.strip().lower() for n in settings.web_allowed_hosts.split(",") if n.strip()}
        if settings.web_host not in ("0.0.0.0", "::", ""):
            names.add(settings.web_host.lower())
        self.hosts = {n for n in names if not n.startswith(".")} | LOOPBACK_NAMES
        self.suffixes = tuple(n for n in names if n.startswith("."))

    def host_allowed(self, hostname: str) -> bool:
        name = hostname.lower().strip("[]")
        return name in self.hosts or is_loopback(name) or name.endswith(self.suffixes or ("\0",))

    def refuse(self, request: web.Request, *, browser: bool) -> web.Response | None:
        """None if the request may read customer data, else the response that says why not."""
        hostname = urllib.parse.urlsplit("//" + request.host).hostname or ""
        if not self.host_allowed(hostname):
            return web.Response(
                status=403,
                text=f"unknown Host {request.host!r}: add it to JOURNEY_WEB_ALLOWED_HOSTS\n",
            )
        origin = request.headers.get("Origin")
        if origin is not None and urllib.parse.urlsplit(origin).netloc != request.host:
            return web.Response(status=403, text="cross-origin requests are refused\n")
        if request.headers.get("Sec-Fetch-Site", "none") not in ("none", "same-origin"):
            return web.Response(status=403, text="cross-site requests are refused\n")
        if self.token is None:
            if not self.loopback_bind:
                return web.Response(
                    status=403,
                    text="set JOURNEY_WEB_TOKEN to serve this on a non-loopback address\n",
                )
            if not browser and request.headers.get(CLIENT_HEADER[0]) != CLIENT_HEADER[1]:
                return web.Response(
                    status=403, text=f"send the header {CLIENT_HEADER[0]}: {CLIENT_HEADER[1]}\n"
                )
            return None
        if hmac.compare_digest(self._credential(request, browser).encode(), self.token.encode()):
            return None
        headers = {"WWW-Authenticate": 'Basic realm="journey"'} if browser else {}
        return web.Response(
            status=401, text="a valid JOURNEY_WEB_TOKEN is required\n", headers=headers
        )

    @staticmethod
    def _credential(request: web.Request, browser: bool) -> str:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
        if browser and scheme.lower() == "basic":
            # Browsers send basic credentials by themselves only to the origin they were given
            # for; /sql never accepts them, so a cross-site <img> cannot ride on them.
            try:
                return base64.b64decode(value.strip()).decode().partition(":")[2]
            except ValueError:
                return ""
        return ""


class _Server:
    """What both roles serve: ``/health``, ``/metrics``, and the ``/ready`` of the subclass."""

    def __init__(self, settings: Settings, registry: Any, host: str, port: int) -> None:
        self.settings = settings
        self.registry = registry
        self.host, self.port = host, port
        self.app = web.Application(client_max_size=256 * 1024)
        self.app.add_routes(
            [
                web.get("/health", self.health),
                web.get("/ready", self.ready),
                web.get("/metrics", self.prometheus),
            ]
        )
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        # handler_cancellation: a client that goes away cancels its handler, and so its query.
        # keepalive_timeout: aiohttp arms it when a connection opens and after each response, and
        # closes the connection if no whole request head has arrived by then (bytes trickling in
        # do not re-arm it): the bound on slow (slowloris) and idle connections.
        # shutdown_timeout: at a stop, a request in progress (a long analyst query, a body that
        # trickles in) has this long to finish before it is cancelled; aiohttp's default, 60 s,
        # let any client hold the process's stop past `journey run`'s kill.
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handler_cancellation=True,
            keepalive_timeout=self.settings.web_header_timeout / 1000,
            shutdown_timeout=STOP_GRACE_SECONDS,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            raise RuntimeError(
                f"cannot serve HTTP on {self.url} ({exc.strerror}): another process uses the port. "
                f"Set {self.port_setting} to a free port (0 turns the endpoint off)."
            ) from exc
        log.info("serving %s on %s", ", ".join(sorted(self.routes())), self.url)

    port_setting = "JOURNEY_WEB_PORT"

    def routes(self) -> set[str]:
        return {r.resource.canonical for r in self.app.router.routes() if r.resource is not None}

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def ready(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    async def prometheus(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _assigned(app: Any) -> bool:
    try:
        return bool(app.consumer.assignment()) and not app.rebalancing
    except Exception:
        return False


class WorkerWeb(_Server):
    """A journey worker's endpoint: ``/health``, ``/ready``, ``/metrics``, ``/status``."""

    port_setting = "JOURNEY_WORKER_WEB_PORT"

    def __init__(self, pipeline: Pipeline) -> None:
        settings = pipeline.settings
        super().__init__(
            settings, pipeline.metrics.registry, settings.web_host, settings.worker_web_port
        )
        self.pipeline = pipeline
        self.app.add_routes([web.get("/status", self.status)])

    def is_ready(self) -> bool:
        return _assigned(self.pipeline.app) and self.pipeline.engine.rebuilds > 0

    async def ready(self, request: web.Request) -> web.Response:
        problem = self.pipeline.health.problem()  # the broker unreachable
        if problem is None and self.is_ready():
            return web.Response(text="ready\n")
        why = problem or "partitions not assigned or recovering"
        return web.Response(text=f"not ready: {why}\n", status=503)

    async def status(self, request: web.Request) -> web.Response:
        # Figures only (counts, no customer data), like /metrics: open as /metrics is.
        return json_response(worker_status(self.pipeline))


class LoaderWeb(_Server):
    """The loader's endpoint: ``/health``, ``/ready``, ``/metrics``, ``/sql`` and the dashboard."""

    def __init__(self, loader: Loader) -> None:
        settings = loader.settings
        super().__init__(settings, loader.metrics.registry, settings.web_host, settings.web_port)
        self.loader = loader
        self.gate = Gate(settings)
        self.analyst = AnalystQueries(settings)
        self.app.add_routes(
            [web.get("/sql", self.sql), web.post("/sql", self.sql), web.get("/", self.dashboard)]
        )
        # (wall time, events loaded) every few seconds, for the live throughput chart.
        self.history: deque[tuple[float, int]] = deque(maxlen=90)
        self._sampler: asyncio.Task[None] | None = None
        self.worker_urls = [u.strip() for u in settings.worker_urls.split(",") if u.strip()]

    async def start(self) -> None:
        await super().start()
        self._sampler = asyncio.get_running_loop().create_task(self._sample())

    async def stop(self) -> None:
        if self._sampler is not None:
            await cancel_and_wait(self._sampler)
            self._sampler = None
        await super().stop()
        self.analyst.close()

    async def _sample(self) -> None:
        events = self.settings.topic("journey_events")
        while True:
            self.history.append((time.time(), self.loader.stats.consumed.get(events, 0)))
            await asyncio.sleep(2)

    async def ready(self, request: web.Request) -> web.Response:
        problem = self.loader.health.problem()  # broker or ClickHouse unreachable
        if problem is None and _assigned(self.loader.app) and self.loader.rebuilt:
            return web.Response(text="ready\n")
        why = problem or "partitions not assigned or erasures not loaded"
        return web.Response(text=f"not ready: {why}\n", status=503)

    async def workers(self) -> list[dict[str, Any]]:
        """Each worker's /status (``JOURNEY_WORKER_URLS``); an error entry if it does not answer."""
        found: list[dict[str, Any]] = []
        timeout = aiohttp.ClientTimeout(total=1.5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for url in self.worker_urls:
                try:
                    async with session.get(url.rstrip("/") + "/status") as response:
                        found.append({"url": url, **(await response.json())})
                except Exception as exc:
                    found.append({"url": url, "error": f"{type(exc).__name__}"})
        return found

    async def sql(self, request: web.Request) -> web.Response:
        refused = self.gate.refuse(request, browser=False)
        if refused is not None:
            return refused
        query = request.query.get("query")
        if query is None and request.method == "POST":
            try:
                async with asyncio.timeout(self.settings.web_request_timeout / 1000):
                    query = await request.text()
            except TimeoutError:
                return json_response({"error": "request body too slow"}, status=408)
        try:
            columns, rows = await self.analyst.query(query or "")
        except NotReadOnly as exc:
            return json_response({"error": str(exc)}, status=400)
        except QueryError as exc:
            return json_response({"error": str(exc)}, status=400)
        return json_response(
            {"columns": columns, "rows": rows, "clickhouse": redact_url(self.analyst.url)}
        )

    # --- the dashboard -------------------------------------------------------------------------
    async def dashboard(self, request: web.Request) -> web.Response:
        refused = self.gate.refuse(request, browser=True)
        if refused is not None:
            return refused
        return web.Response(text=await self.render_dashboard(), content_type="text/html")

    async def _rows(self, sql: str) -> list[list[Any]]:
        try:
            _, rows = await self.analyst.query(
                reports.in_database(sql, self.settings.clickhouse_database)
            )
        except (NotReadOnly, QueryError) as exc:
            log.warning("dashboard query failed: %s", exc)
            return []
        return rows

    async def render_dashboard(self) -> str:
        from streams.web import dashboard as d

        status = loader_status(self.loader)
        workers = await self.workers()
        samples = list(self.history)
        rates = [
            (later[1] - earlier[1]) / max(later[0] - earlier[0], 1e-9)
            for earlier, later in itertools.pairwise(samples)
        ]
        rate_labels = [time.strftime("%H:%M:%S", time.localtime(t)) for t, _ in samples[1:]]
        totals = await self._rows(reports.LIVE_TOTALS)
        stored, emitted, dead_total = totals[0] if totals else (0, 0, 0)
        per_worker = [
            [
                w.get("name", w["url"]),
                "answers" if "error" not in w else f"not answering ({w['error']})",
                f"{w.get('consumed', 0):,}",
                f"{w.get('rate', 0):,.0f}",
                f"{w.get('emitted', 0):,}",
                f"{w.get('pending_timers', 0):,}",
                ", ".join(str(p) for p in w.get("partitions", [])) or "-",
            ]
            for w in workers
        ]
        sections = [
            d.section(
                "Live",
                d.kpis(
                    [
                        ("events stored", f"{stored:,}"),
                        ("events/s loaded now", f"{rates[-1]:,.0f}" if rates else "-"),
                        ("triggers emitted", f"{emitted:,}"),
                        ("dead letters", f"{dead_total:,}"),
                        ("workers", f"{len(workers)}" if workers else "-"),
                    ]
                )
                + d.line_chart(
                    rate_labels,
                    [d.Series("events/s", rates, d.PALETTE[0])],
                    "Throughput",
                    height=200,
                )
                + (
                    d.table(
                        [
                            "worker",
                            "state",
                            "consumed",
                            "events/s",
                            "emitted",
                            "pending timers",
                            "partitions",
                        ],
                        per_worker,
                    )
                    if per_worker
                    else ""
                ),
                "Events loaded into ClickHouse per second (sampled every 2 s), and each journey "
                f"worker's own figures. Loader: {status['loaded']:,} facts read, "
                f"{status['sink_rows']:,} rows stored, {status['duplicate_rows']:,} duplicates "
                "dropped.",
            )
        ]
        dead = await self._rows(reports.DEAD_LETTERS_BY_REASON)
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
        sections.append(await self._funnel_section())
        recovery = await self._rows(reports.CART_RECOVERY_BY_DAY)
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
        cohorts = await self._rows(reports.REPEAT_PURCHASE_BY_COHORT)
        sections.append(
            d.section(
                "Repeat purchase by cohort",
                d.bar_chart(
                    [r[0][:7] for r in cohorts],
                    [d.Series("repeat rate %", [100 * float(r[2]) for r in cohorts], d.PALETTE[4])],
                    "Repeat purchase",
                ),
                repeat_note(cohorts),
            )
        )
        nps = await self._rows(reports.NPS_BY_DAY)
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
        by_day = await self._rows(reports.TRIGGERS_BY_DAY_AND_STATUS)
        days = sorted({r[0] for r in by_day})
        statuses = [s for s in d.STATUS_COLOURS if any(r[1] == s for r in by_day)]
        counts = {(r[0], r[1]): r[2] for r in by_day}
        by_type = await self._rows(reports.TRIGGERS_BY_TYPE_AND_STATUS)
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
        sections += await self._engagement_value_stage_sections()
        delivery = await self._rows(reports.DELIVERY_TIME_BY_DAY)
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
        from streams.sender.outbox import latest_emails, outbox_path

        sections.append(d.emails_section(latest_emails(outbox_path(self.settings.data_dir), 8)))
        return d.page(
            "journey",
            f"{self.settings.kafka_bootstrap} · {redact_url(self.analyst.url)}",
            sections,
        )

    # --- funnel, engagement, lifetime value, stages (the analytics of issue 14) -----------------
    async def _funnel_section(self) -> str:
        """Distinct customers over the last 30 days of data: a customer who visited on three days
        is one visitor (a sum of the daily funnel would count them three times)."""
        from streams.web import dashboard as d

        funnel = await self._rows(reports.FUNNEL_LAST_30_DAYS)
        steps = ("visitors", "product viewers", "cart adders", "checkout starters", "purchasers")
        row = funnel[0] if funnel and funnel[0][0] else None
        return d.section(
            "Funnel",
            d.funnel_chart(list(zip(steps, row[:5], strict=True)), "Funnel")
            if row
            else d.empty("Funnel"),
            f"Distinct customers who took each step from {row[5]} to {row[6]} (the last 30 days "
            "of data); each customer counts once."
            if row
            else "Distinct customers per step over the last 30 days of data.",
        )

    async def _engagement_value_stage_sections(self) -> list[str]:
        from streams.web import dashboard as d

        engagement = await self._rows(reports.ENGAGEMENT_BY_TRIGGER_TYPE)

        def pct(value: Any) -> str:
            return "-" if value is None else f"{100 * float(value):.1f}%"

        shown = [[r[0], r[1], r[2], *(pct(v) for v in r[3:8]), r[8]] for r in engagement]
        sections = [
            d.section(
                "Engagement by trigger type",
                d.table(
                    [
                        "trigger type",
                        "sent",
                        "delivered",
                        "open",
                        "click",
                        "bounce",
                        "unsub",
                        "converted",
                        "revenue",
                    ],
                    shown,
                )
                if shown
                else d.empty("Engagement"),
                "What the sender reported per message (open, click, unsubscribe per delivered; "
                "bounce, conversion per sent); conversions are last-touch purchases.",
            )
        ]
        daily = await self._rows(reports.ENGAGEMENT_BY_DAY)
        opens = [100 * float(r[2]) / float(r[1]) for r in daily]
        clicks = [100 * float(r[3]) / float(r[1]) for r in daily]
        sections.append(
            d.section(
                "Engagement per day",
                d.line_chart(
                    [r[0][5:] for r in daily],
                    [
                        d.Series("open rate %", opens, d.PALETTE[1]),
                        d.Series("click rate %", clicks, d.PALETTE[2]),
                    ],
                    "Engagement per day",
                    ceiling=100,
                ),
                "Opened and clicked per delivered message, all trigger types, by the day the "
                "messages were sent (days with nothing reported delivered are left out).",
            )
        )
        matrix = await self._rows(reports.VALUE_BY_COHORT_MONTH)
        cohorts = sorted({r[0] for r in matrix})
        cell = {(r[0], r[1]): r for r in matrix}
        months = range(7)
        rows = [
            [
                c[:7],
                next(r[2] for r in matrix if r[0] == c),
                *(
                    f"{100 * float(cell[(c, m)][3]):.0f}% · {float(cell[(c, m)][4]) / 100:,.0f}"
                    if (c, m) in cell
                    else ""
                    for m in months
                ),
            ]
            for c in cohorts
        ]
        predicted = await self._rows(reports.PREDICTED_VALUE)
        kpi_items = []
        if predicted and predicted[0][0]:
            n, clv, alive = predicted[0]
            kpi_items = [
                ("customers predicted", f"{n:,}"),
                ("avg predicted 1-year CLV", f"{float(clv) / 100:,.2f}"),
                ("avg P(alive)", f"{100 * float(alive):.0f}%"),
            ]
        sections.append(
            d.section(
                "Customer lifetime value",
                (d.kpis(kpi_items) if kpi_items else "")
                + (
                    d.table(["cohort", "buyers", *(f"month {m}" for m in months)], rows)
                    if rows
                    else d.empty("Lifetime value")
                ),
                "Per first-purchase month: share of the cohort buying in each month since, and "
                "revenue so far per cohort customer (major units). Predictions: journey predict.",
            )
        )
        transitions = await self._rows(reports.STAGE_TRANSITIONS_LAST_7_DAYS)
        sections.append(
            d.section(
                "Stage transitions",
                d.table(["from", "to", "transitions"], transitions)
                if transitions
                else d.empty("Stage transitions"),
                "Journey stage changes over the last 7 days of data.",
            )
        )
        return sections


def repeat_note(cohorts: Sequence[Sequence[Any]]) -> str:
    """The note under "Repeat purchase by cohort": an all-zero chart says why it is empty."""
    note = "Share of each first-order month's customers who ordered again."
    if not cohorts:
        return f"{note} No orders yet."
    if all(float(row[2]) == 0 for row in cohorts):
        return f"{note} No customer has ordered a second time yet."
    return note
