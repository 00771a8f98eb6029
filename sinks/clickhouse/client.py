"""One ClickHouse client per process, embedded (chdb) or a server, from the settings' URL.

chdb lets exactly one process open a data path, and one path per process, so the client is
created once and shared; every blocking call goes through ``ClickHouse.run`` on a single
thread, which also keeps chdb away from the event loop. Analyst queries never use that client:
``AnalystQueries`` opens its own read-only, bounded ones (chdb allows several connections to the
one engine of a process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import urllib.parse
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from sinks.clickhouse.config import ClickHouseConfig

T = TypeVar("T")
log = logging.getLogger(__name__)


class ClickHouseUnavailable(RuntimeError):
    """ClickHouse cannot be opened; the message says what to do."""


def _embedded_path(url: str) -> Path | None:
    if url.startswith("chdb://") and url != "chdb://memory":
        return Path(url.removeprefix("chdb://"))
    return None


def open_client(
    settings: ClickHouseConfig, *, analyst: bool = False, session: dict[str, Any] | None = None
) -> Client:
    """A new client. ``analyst``: with the analysts' server user, if one is configured;
    ``session``: settings sent with every request (a server) or kept by the session."""
    url = settings.resolved_clickhouse_url()
    path = _embedded_path(url)
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {}
    username, password = settings.clickhouse_username, settings.clickhouse_password
    if analyst and settings.clickhouse_query_username:
        username, password = settings.clickhouse_query_username, settings.clickhouse_query_password
    if username:
        options["username"] = username
    if password:
        options["password"] = password.get_secret_value()
    if session:
        options["settings"] = session
    try:
        return clickhouse_connect.get_client(dsn=url, **options)
    except Exception as exc:
        text = str(exc)
        owner = _owner(path) if path is not None else None
        if path is not None and (owner is not None or "Cannot lock file" in text):
            raise ClickHouseUnavailable(
                f"the embedded ClickHouse at {path} is open in another process"
                f"{f' ({owner})' if owner else ''}: only one process may own a chdb data path. "
                "Stop that process (e.g. `make run`), or point JOURNEY_CLICKHOUSE_URL at another "
                "path or at a ClickHouse server."
            ) from exc
        raise ClickHouseUnavailable(
            f"cannot open ClickHouse at {redact_url(url)}: {_first_line(exc)}"
            " (check JOURNEY_CLICKHOUSE_URL, JOURNEY_CLICKHOUSE_USERNAME and _PASSWORD)"
        ) from exc


def redact_url(url: str) -> str:
    """The URL without its credentials (user:password@ and ?password=...), fit to print."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc and not re.search(r"pass|secret", parts.query, re.IGNORECASE):
        return url  # nothing to hide (urlunsplit would also turn chdb:///path into chdb:/path)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(
        f"{key}=***" if "pass" in key.lower() or "secret" in key.lower() else f"{key}={value}"
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _owner(path: Path) -> str | None:
    """The live process that holds the data path, from the ``status`` file ClickHouse keeps
    there (``PID: n``), as ``pid n: its command line``; ``None`` if no live process owns it."""
    try:
        first = (path / "status").read_text(errors="replace").splitlines()[0]
        pid = int(first.removeprefix("PID:").strip())
    except (OSError, ValueError, IndexError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # a stale status file: not the reason
    except PermissionError:
        pass  # alive, another user's
    try:
        command = " ".join(
            Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        )
        command = " ".join(command.split())
    except OSError:
        command = ""
    return f"pid {pid}" + (f": {command[:200]}" if command else "")


class _Engine:
    """A client and the single thread that calls it; one per ClickHouse URL per process."""

    def __init__(self, settings: ClickHouseConfig) -> None:
        self.url = settings.resolved_clickhouse_url()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        # Opened on the thread that will use it: the embedded engine is happiest that way.
        self.client = self.executor.submit(open_client, settings).result()


class ClickHouse:
    """The process's ClickHouse, seen from one database (the settings' ``clickhouse_database``)."""

    _engine: _Engine | None = None
    _lock = threading.Lock()

    def __init__(self, settings: ClickHouseConfig, engine: _Engine) -> None:
        self.settings = settings
        self.database = settings.clickhouse_database
        self.url = engine.url
        self.client = engine.client
        self._executor = engine.executor

    @classmethod
    def shared(cls, settings: ClickHouseConfig) -> ClickHouse:
        """chdb opens one data path per process: every caller shares the one engine."""
        with cls._lock:
            if cls._engine is None:
                cls._engine = _Engine(settings)
            elif cls._engine.url != settings.resolved_clickhouse_url():
                raise ClickHouseUnavailable(
                    f"this process already uses ClickHouse at {redact_url(cls._engine.url)}; "
                    "one process can use only one ClickHouse URL"
                )
            return cls(settings, cls._engine)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Blocking call on the ClickHouse thread, for code outside the event loop."""
        return self._executor.submit(fn, *args, **kwargs).result()

    def query_rows(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        result = self.call(self.client.query, sql, parameters=parameters)
        return [tuple(row) for row in result.result_rows]

    async def aquery_rows(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        result = await self.run(self.client.query, sql, parameters=parameters)
        return [tuple(row) for row in result.result_rows]


READ_ONLY_STATEMENTS = ("SELECT", "WITH")

# Table functions analysts may use: generators that touch nothing outside the query. Every other
# one (file, url, s3, remote*, mysql, postgresql, sqlite, hdfs, executable, python, view, merge,
# ...) is refused. readonly=1 already refuses most of them, but not all: measured in chdb 4.4,
# sqlite() creates its file and DESCRIBE file(...) reads one even with readonly=1.
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "generate_series", "generateSeries", "zeros", "zeros_mt", "values"}
)
# Functions that reach outside the database and that readonly=1 does not stop in chdb's local
# mode (measured: SELECT file('/etc/hostname') returns the file with readonly=1).
FORBIDDEN_FUNCTIONS = frozenset({"file"})


class NotReadOnly(ValueError):
    pass


_LEADING_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.DOTALL)


def read_only_statement(sql: str) -> str:
    """The statement without its trailing ``;``, or NotReadOnly with a friendly reason.

    Only a first, friendly filter: what the statement may do is decided by ClickHouse (the
    analyst session's ``readonly=1`` and limits) and by ``check_ast`` on the engine's own parse.
    """
    statement = sql.strip().rstrip(";").strip()
    # Analysts start queries with a comment; the word that counts is the first one after them.
    words = _LEADING_COMMENTS.sub("", statement).split(None, 1)
    first = words[0].upper() if words else ""
    if first not in READ_ONLY_STATEMENTS:
        raise NotReadOnly(
            f"only one read-only statement is allowed ({' or '.join(READ_ONLY_STATEMENTS)}; "
            f"system.tables and system.columns describe the tables); got {first or 'nothing'}"
        )
    return statement


def check_ast(lines: list[str]) -> None:
    """Refuse what ``readonly=1`` lets through, from ClickHouse's own ``EXPLAIN AST`` output.

    The engine parses the statement, so comments, quoting and odd spacing cannot hide anything:
    the root must be a SELECT; a literal right under the root is ``INTO OUTFILE``; table
    functions must be allow-listed; ``file()`` is refused anywhere. (An identifier right under
    the root is the ``FORMAT`` the client appends; a second one would be a syntax error.)
    """
    nodes: list[tuple[int, str, str]] = []  # (depth, kind, name)
    for line in lines:
        text = line.rstrip()
        if not text.strip():
            continue
        depth = len(text) - len(text.lstrip(" "))
        kind, _, rest = text.strip().partition(" ")
        nodes.append((depth, kind, rest.split(" ", 1)[0] if rest else ""))
    if not nodes or nodes[0][1] not in ("SelectWithUnionQuery", "SelectIntersectExceptQuery"):
        raise NotReadOnly("only SELECT statements are allowed")
    parents: list[str] = []
    for depth, kind, name in nodes:
        del parents[depth:]
        parent = parents[-1] if parents else ""
        if depth == 1 and kind == "Literal":
            raise NotReadOnly("INTO OUTFILE writes a file: not allowed here")
        if kind == "Function":
            if name in FORBIDDEN_FUNCTIONS or name.lower() in FORBIDDEN_FUNCTIONS:
                raise NotReadOnly(f"{name}() reads files: not allowed here")
            if parent == "TableExpression" and name not in ALLOWED_TABLE_FUNCTIONS:
                raise NotReadOnly(
                    f"table function {name}() is not allowed here; allowed: "
                    + ", ".join(sorted(ALLOWED_TABLE_FUNCTIONS))
                )
        parents.append(kind)


class AnalystQueries:
    """Analyst SQL (``/sql``, ``journey sql``, ``journey report``, the dashboard), on its own
    ClickHouse clients, never the sink's.

    Each of ``query_concurrency`` threads has its own ClickHouse client (chdb: its own connection
    to the process's engine, which runs them in parallel with the sink's inserts), so a slow
    analyst query never holds the sink's thread. The session is made read-only by the engine:
    the limits are set first, then ``readonly=1``, after which ClickHouse refuses any change of
    a setting, any write and any table function that needs more than reading (docs/security.md).
    """

    def __init__(self, settings: ClickHouseConfig) -> None:
        self.settings = settings
        self.url = settings.resolved_clickhouse_url()
        self.embedded = self.url.startswith("chdb://")
        self._executor = ThreadPoolExecutor(
            max_workers=settings.query_concurrency, thread_name_prefix="analyst-sql"
        )
        self._local = threading.local()
        self._control: Client | None = None
        self._control_lock = threading.Lock()

    def limits(self) -> dict[str, Any]:
        s = self.settings
        return {
            "max_execution_time": s.query_max_execution_time / 1000,
            "max_result_rows": s.query_max_result_rows,
            "max_result_bytes": s.query_max_result_bytes,
            "result_overflow_mode": "throw",
            "max_memory_usage": s.query_max_memory_usage,
            "max_threads": s.query_max_threads,
        }

    def _open(self) -> Client:
        if not self.embedded:
            # A server: readonly=1 and the limits ride on every request; the read-only user
            # (JOURNEY_CLICKHOUSE_QUERY_USERNAME) and its grants are the server's own defence.
            return open_client(
                self.settings, analyst=True, session={**self.limits(), "readonly": 1}
            )
        client = open_client(self.settings)
        for name, value in self.limits().items():
            client.command(f"SET {name} = {value!r}")
        client.command("SET readonly = 1")
        if str(client.command("SELECT getSetting('readonly')")) != "1":
            raise ClickHouseUnavailable("the analyst session did not become read-only")
        return client

    def _client(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._open()
        return client

    def _run(self, statement: str, marker: str) -> tuple[list[str], list[list[Any]]]:
        try:
            return self._run_on(self._client(), statement, marker)
        except Exception:
            # A query that failed mid-stream (a limit, a cancel) can leave its result unread on
            # the connection and garble the next one (measured): start the next on a new one.
            client, self._local.client = getattr(self._local, "client", None), None
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
            raise

    def _run_on(
        self, client: Client, statement: str, marker: str
    ) -> tuple[list[str], list[list[Any]]]:
        # The engine parses the text as one statement (a bound parameter, so nothing in it runs):
        # chdb would run every statement of a multi-statement text. Only that canonical single
        # statement is checked and run.
        try:
            canonical = str(
                client.query(
                    "SELECT formatQuerySingleLine({sql:String})", parameters={"sql": statement}
                ).result_rows[0][0]
            )
        except Exception as exc:
            raise NotReadOnly(
                f"one valid read-only statement at a time, please: {_first_line(exc)}"
            ) from exc
        explained = client.query(f"EXPLAIN AST {canonical}")
        check_ast([str(row[0]) for row in explained.result_rows])
        result = client.query(f"{canonical}\n/* {marker} */")
        return list(result.column_names), [list(row) for row in result.result_rows]

    def _kill(self, marker: str) -> None:
        """Cancel the query tagged ``marker`` (its client went away)."""
        try:
            with self._control_lock:
                if self._control is None:
                    self._control = open_client(self.settings, analyst=True)
                self._control.command(
                    "KILL QUERY WHERE position(query, {marker:String}) > 0 "
                    "AND NOT startsWith(query, 'KILL') ASYNC",
                    parameters={"marker": marker},
                )
            log.info("analyst query %s cancelled: its client went away", marker)
        except Exception as exc:  # it still ends at max_execution_time
            log.warning("could not cancel analyst query %s: %s", marker, _first_line(exc))

    async def query(self, sql: str) -> tuple[list[str], list[list[Any]]]:
        """Run one analyst statement; NotReadOnly or QueryError say why it was refused."""
        statement = read_only_statement(sql)
        marker = f"journey-analyst {uuid.uuid4()}"
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._run, statement, marker)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await loop.run_in_executor(None, self._kill, marker)
            raise
        except NotReadOnly:
            raise
        except Exception as exc:
            raise QueryError(_first_line(exc)) from exc

    def query_sync(self, sql: str) -> tuple[list[str], list[list[Any]]]:
        statement = read_only_statement(sql)
        marker = f"journey-analyst {uuid.uuid4()}"
        try:
            return self._executor.submit(self._run, statement, marker).result()
        except NotReadOnly:
            raise
        except KeyboardInterrupt:
            self._kill(marker)
            raise
        except Exception as exc:
            raise QueryError(_first_line(exc)) from exc

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class QueryError(RuntimeError):
    """ClickHouse refused or failed an analyst query (the message is ClickHouse's first line)."""


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else repr(exc)
