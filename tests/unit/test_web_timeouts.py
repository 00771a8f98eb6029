"""Slow and idle HTTP connections are cut after JOURNEY_WEB_HEADER_TIMEOUT while the worker's
endpoint keeps answering everyone else (slowloris)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from streams.settings import Settings
from streams.web.metrics import LoaderMetrics
from streams.web.server import CLIENT_HEADER, STOP_GRACE_SECONDS, LoaderWeb

HEADER_TIMEOUT = 1.0
REQUEST_TIMEOUT = 1.5
# Generous: 5 other engineers' test suites share 2 cores. A connection that is never cut fails
# the test anyway (the slow client below sends for far longer than this).
SLACK = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def loader_web(tmp_path: Path) -> LoaderWeb:
    """The loader's HTTP endpoint with these tests' timeouts, on a free port, not started."""
    overrides: dict[str, Any] = {
        "web_port": free_port(),
        "web_header_timeout": f"{HEADER_TIMEOUT}s",
        "web_request_timeout": f"{REQUEST_TIMEOUT}s",
        "data_dir": tmp_path,
    }
    settings = Settings(_env_file=None, **overrides)
    loader: Any = SimpleNamespace(
        settings=settings, metrics=LoaderMetrics(), stats=SimpleNamespace(consumed={})
    )
    return LoaderWeb(loader)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LoaderWeb]:
    web = loader_web(tmp_path)
    await web.start()
    try:
        yield web
    finally:
        await web.stop()


async def health(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def closed_after(reader: asyncio.StreamReader, started: float, limit: float) -> float:
    """Seconds from ``started`` until the server closed the connection (EOF), failing past limit."""
    data = await asyncio.wait_for(reader.read(), limit)
    assert data == b"", data  # closed without an answer: no request head ever arrived
    return time.monotonic() - started


async def trickle(writer: asyncio.StreamWriter, head: bytes, seconds: float) -> None:
    """Send a request head one byte every 0.1 s for ``seconds``, never finishing it."""
    writer.write(head)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        try:
            writer.write(b"a")
            await writer.drain()
        except ConnectionError:
            return


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"", id="connects and sends nothing"),
        pytest.param(b"GET /heal", id="partial request line, then one byte every 0.1 s"),
        pytest.param(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", id="slow headers"),
    ],
)
async def test_slow_or_idle_connection_is_cut_while_health_answers(
    server: LoaderWeb, head: bytes
) -> None:
    port = server.settings.web_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    sender = asyncio.create_task(trickle(writer, head, HEADER_TIMEOUT + SLACK) if head else _idle())
    cut = asyncio.create_task(closed_after(reader, started, HEADER_TIMEOUT + SLACK))
    answered = 0
    while not cut.done():
        assert (await health(port)).endswith(b"\r\n\r\nok\n")  # others are served meanwhile
        answered += 1
        await asyncio.sleep(0.1)
    elapsed = await cut
    sender.cancel()
    writer.close()
    assert answered >= 3
    assert HEADER_TIMEOUT * 0.9 <= elapsed < HEADER_TIMEOUT + SLACK


async def _idle() -> None:
    await asyncio.sleep(3600)


async def test_idle_keep_alive_connection_is_cut_after_its_response(server: LoaderWeb) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.settings.web_port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" not in head
    assert await asyncio.wait_for(reader.readexactly(3), 5) == b"ok\n"
    started = time.monotonic()
    elapsed = await closed_after(reader, started, HEADER_TIMEOUT + SLACK)
    writer.close()
    assert elapsed >= HEADER_TIMEOUT * 0.9


async def test_a_prompt_request_is_answered(server: LoaderWeb) -> None:
    """The timeout bounds the request head only: a normal client is not affected by it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.settings.web_port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"ok\n"), 5)
    await asyncio.sleep(HEADER_TIMEOUT / 2)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # reuses the connection
    assert (await asyncio.wait_for(reader.readuntil(b"ok\n"), 5)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_a_query_whose_body_trickles_in_is_refused_after_the_request_timeout(
    server: LoaderWeb,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.settings.web_port)
    head = (
        "POST /sql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n"
        f"{CLIENT_HEADER[0]}: {CLIENT_HEADER[1]}\r\nConnection: close\r\n\r\nSELECT "
    ).encode()
    started = time.monotonic()
    sender = asyncio.create_task(trickle(writer, head, REQUEST_TIMEOUT + SLACK))
    answer = await asyncio.wait_for(reader.readuntil(b"too slow"), REQUEST_TIMEOUT + SLACK)
    elapsed = time.monotonic() - started
    sender.cancel()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert REQUEST_TIMEOUT * 0.9 <= elapsed < REQUEST_TIMEOUT + SLACK


async def test_a_request_in_progress_does_not_hold_the_stop(tmp_path: Path) -> None:
    """A client whose request runs long (an analyst query, a trickling body) gets the stop's
    grace, then its handler is cancelled: aiohttp's default waited 60 s, past `journey run`'s
    kill of the process."""
    web = loader_web(tmp_path)
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow(request: Any) -> Any:
        started.set()
        try:
            await asyncio.sleep(120)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    web.app.router.add_get("/slow", slow)
    await web.start()
    _reader, writer = await asyncio.open_connection("127.0.0.1", web.settings.web_port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await asyncio.wait_for(started.wait(), 5)
    stopping = time.monotonic()
    await asyncio.wait_for(web.stop(), STOP_GRACE_SECONDS + SLACK)
    assert time.monotonic() - stopping >= STOP_GRACE_SECONDS * 0.9
    assert cancelled.is_set()
    writer.close()
