"""Fetch pacing (streams/runtime/fetching.py, ``FetchPacing``): after a fetch that brought
records the broker gathers for ``gather_ms``; after one that brought nothing, a long poll."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from streams.runtime.fetching import GATHER_BYTES, install_fetch_pacing, pace_fetches
from tests.unit.faust_apps import app_with


def consumer_made(name: str, long_poll_ms: int, gather_ms: int) -> Any:
    """The aiokafka consumer Faust's consumer thread makes, with the pacing installed."""
    app = app_with(name, lambda app: install_fetch_pacing(app, long_poll_ms, gather_ms))
    thread: Any = app.consumer._thread  # type: ignore[attr-defined]

    async def made() -> Any:
        return thread._create_worker_consumer(app.transport)

    return asyncio.run(made())


def test_the_consumer_gets_the_long_poll_and_the_pacing_of_the_settings() -> None:
    consumer = consumer_made("test-pacing", 200, 10)
    assert consumer._fetch_max_wait_ms == 200
    assert consumer.start.__name__ == "start_paced"


def test_without_gather_the_consumer_is_not_paced() -> None:
    consumer = consumer_made("test-pacing-off", 200, 0)
    assert consumer._fetch_max_wait_ms == 200 and consumer.start.__name__ != "start_paced"


class FakeFetcher:
    """aiokafka's ``Fetcher`` as pacing sees it: the two request settings it reads for each
    request, and ``_proc_fetch_request`` (True: the response brought records)."""

    def __init__(self, responses: list[bool]) -> None:
        self._fetch_max_wait_ms = 200
        self._fetch_min_bytes = 1
        self.responses = responses
        self.asked: list[tuple[int, int]] = []  # (min_bytes, max_wait_ms) of each request

    async def _proc_fetch_request(self, assignment: Any, node_id: int, request: Any) -> bool:
        self.asked.append((self._fetch_min_bytes, self._fetch_max_wait_ms))
        return self.responses.pop(0)


def test_after_records_the_broker_gathers_and_after_nothing_it_long_polls() -> None:
    fetcher = FakeFetcher([True, True, False, False, True, False])

    async def start() -> None:
        consumer._fetcher = fetcher

    consumer: Any = SimpleNamespace(start=start)
    pace_fetches(consumer, gather_ms=10)

    async def run() -> None:
        await consumer.start()
        for _ in range(6):
            await consumer._fetcher._proc_fetch_request(None, 0, None)

    asyncio.run(run())
    long_poll, gather = (1, 200), (GATHER_BYTES, 10)
    assert fetcher.asked == [long_poll, gather, gather, long_poll, long_poll, gather]
    assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == long_poll
