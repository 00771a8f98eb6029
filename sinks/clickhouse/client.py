"""One ClickHouse client per process, embedded (chdb) or a server, from the settings' URL.

chdb lets exactly one process open a data path, and one path per process, so the client is
created once and shared; every blocking call goes through ``ClickHouse.run`` on a single
thread, which also keeps chdb away from the event loop.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from streams.settings import Settings

T = TypeVar("T")


class ClickHouseUnavailable(RuntimeError):
    """ClickHouse cannot be opened; the message says what to do."""


def _embedded_path(url: str) -> Path | None:
    if url.startswith("chdb://") and url != "chdb://memory":
        return Path(url.removeprefix("chdb://"))
    return None


def open_client(settings: Settings) -> Client:
    url = settings.resolved_clickhouse_url()
    path = _embedded_path(url)
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {}
    if settings.clickhouse_username:
        options["username"] = settings.clickhouse_username
    if settings.clickhouse_password:
        options["password"] = settings.clickhouse_password.get_secret_value()
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
            f"cannot open ClickHouse at {_redact(url)}: {text.splitlines()[0] if text else exc!r}"
            " (check JOURNEY_CLICKHOUSE_URL, JOURNEY_CLICKHOUSE_USERNAME and _PASSWORD)"
        ) from exc


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


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


class _Engine:
    """A client and the single thread that calls it; one per ClickHouse URL per process."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.resolved_clickhouse_url()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        # Opened on the thread that will use it: the embedded engine is happiest that way.
        self.client = self.executor.submit(open_client, settings).result()


class ClickHouse:
    """The process's ClickHouse, seen from one database (the settings' ``clickhouse_database``)."""

    _engine: _Engine | None = None
    _lock = threading.Lock()

    def __init__(self, settings: Settings, engine: _Engine) -> None:
        self.settings = settings
        self.database = settings.clickhouse_database
        self.url = engine.url
        self.client = engine.client
        self._executor = engine.executor

    @classmethod
    def shared(cls, settings: Settings) -> ClickHouse:
        """chdb opens one data path per process: every caller shares the one engine."""
        with cls._lock:
            if cls._engine is None:
                cls._engine = _Engine(settings)
            elif cls._engine.url != settings.resolved_clickhouse_url():
                raise ClickHouseUnavailable(
                    f"this process already uses ClickHouse at {_redact(cls._engine.url)}; "
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


READ_ONLY_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")


class NotReadOnly(ValueError):
    pass


def read_only_statement(sql: str) -> str:
    """The statement without its trailing ``;``, or NotReadOnly: one read-only statement only.

    A keyword check rather than ClickHouse's ``readonly`` setting: the embedded engine keeps
    settings for the whole session, which would make the pipeline's own writes fail.
    """
    statement = sql.strip().rstrip(";").strip()
    first = statement.split(None, 1)[0].upper() if statement else ""
    if first not in READ_ONLY_STATEMENTS:
        raise NotReadOnly(
            f"only one read-only statement is allowed ({', '.join(READ_ONLY_STATEMENTS)}); "
            f"got {first or 'nothing'}"
        )
    if ";" in statement:
        raise NotReadOnly("only one read-only statement at a time: remove the ';' in the middle")
    if re.search(r"\bINTO\s+OUTFILE\b", statement, re.IGNORECASE):
        raise NotReadOnly("INTO OUTFILE writes a file: not allowed here")
    return statement
