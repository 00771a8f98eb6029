"""The sink's guarantees, against a stand-in ClickHouse that can fail on purpose."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sinks.clickhouse.sink import ClickHouseSink
from streams.settings import Settings
from tests.unit.loops import assert_stop_ends_when_a_wake_up_races_it


class FakeClient:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.inserts: list[tuple[str, list[Any], str]] = []
        self.attempts: list[str] = []

    def insert(
        self, table: str, rows: list[Any], column_names: list[str], settings: dict[str, str]
    ) -> None:
        token = settings["insert_deduplication_token"]
        self.attempts.append(token)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("ClickHouse is down")
        self.inserts.append((table, list(rows), token))

    def query(self, sql: str, parameters: dict[str, Any]) -> Any:
        """The key lookup of unique tables: the stored rows whose key columns match."""
        wanted = list(parameters.values())
        stored = [row for _, rows, _ in self.inserts for row in rows]
        found = [
            (row[0], row[1])
            for row in stored
            if str(row[0]) in wanted[0] and (len(wanted) < 2 or str(row[1]) in wanted[1])
        ]
        return type("Result", (), {"result_rows": found})()


class FakeClickHouse:
    database = "journey"

    def __init__(self, client: FakeClient) -> None:
        self.client = client

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


def make_sink(client: FakeClient) -> ClickHouseSink:
    settings = Settings(_env_file=None, sink_retry_backoff="1ms", sink_batch_rows=3)  # type: ignore[call-arg]
    sink = ClickHouseSink(settings, clickhouse=lambda s: FakeClickHouse(client))  # type: ignore[arg-type,return-value]
    sink.register_table("events", ("a",))
    sink.setup()
    return sink


async def test_messages_are_acked_only_after_their_rows_are_stored() -> None:
    client = FakeClient(failures=2)
    sink = make_sink(client)
    acked: list[int] = []
    for offset in range(3):
        sink.add("events", (offset,), "shop.orders", 0, offset)
        sink.after_flush(lambda o=offset: acked.append(o))
    assert acked == []
    await sink.flush()
    assert acked == [0, 1, 2]
    # Two failed attempts, then success, all with one token: ClickHouse drops a retried
    # insert that had in fact landed.
    assert len(client.attempts) == 3 and len(set(client.attempts)) == 1
    assert [rows for _, rows, _ in client.inserts] == [[(0,), (1,), (2,)]]


async def test_token_names_the_rows_source_messages() -> None:
    client = FakeClient()
    for _ in range(2):  # a worker, then the next one redelivered the same messages
        sink = make_sink(client)
        sink.add("events", ("x",), "shop.orders", 0, 10)
        sink.add("events", ("y",), "shop.orders", 0, 12)
        await sink.flush()
    # The same offset range with another message in it (11, dropped the first time and
    # delivered again after a seek back): not a retry, so not the same token.
    sink.add("events", ("x",), "shop.orders", 0, 10)
    sink.add("events", ("lost?",), "shop.orders", 0, 11)
    sink.add("events", ("y",), "shop.orders", 0, 12)
    await sink.flush()
    tokens = [token for *_, token in client.inserts]
    assert tokens[0] == tokens[1] != tokens[2]


async def test_a_seek_back_within_a_process_still_stores_the_earlier_offsets() -> None:
    client = FakeClient()
    sink = make_sink(client)
    sink.add("events", ("later",), "shop.orders", 0, 16)  # delivered first
    await sink.flush()
    sink.add("events", ("earlier",), "shop.orders", 0, 7)  # then Faust seeks back
    await sink.flush()
    assert [rows for _, rows, _ in client.inserts] == [[("later",)], [("earlier",)]]


async def test_a_fact_published_twice_is_stored_once() -> None:
    """A crashed worker publishes some facts again, at new offsets: one physical row per key."""
    client = FakeClient()
    sink = make_sink(client)
    sink.register_table(
        "keyed", ("customer_id", "event_id", "n"), unique=("customer_id", "event_id")
    )
    sink.add("keyed", ("c1", "e1", 1), "journey.events", 0, 10)
    sink.add("keyed", ("c1", "e1", 2), "journey.events", 0, 11)  # within one batch
    sink.add("keyed", ("c1", "e2", 3), "journey.events", 0, 12)
    await sink.flush()
    sink.add("keyed", ("c1", "e2", 4), "journey.events", 0, 20)  # after it was stored
    sink.add("keyed", ("c2", "e2", 5), "journey.events", 0, 21)  # another customer's e2
    await sink.flush()
    stored = [row for table, rows, _ in client.inserts if "keyed" in table for row in rows]
    assert stored == [("c1", "e1", 1), ("c1", "e2", 3), ("c2", "e2", 5)]
    assert sink.stats.duplicate_rows == 2


class PickyClient(FakeClient):
    """Refuses (as clickhouse-connect does, client side) any batch holding a value > Int64."""

    def insert(
        self, table: str, rows: list[Any], column_names: list[str], settings: dict[str, str]
    ) -> None:
        self.attempts.append(settings["insert_deduplication_token"])
        if any(isinstance(v, int) and v > 2**63 - 1 for row in rows for v in row):
            from clickhouse_connect.driver.exceptions import DataError

            raise DataError("Unable to create native array for column `a`: error")
        self.inserts.append((table, list(rows), settings["insert_deduplication_token"]))


async def test_a_row_that_cannot_be_inserted_is_isolated_and_dead_lettered() -> None:
    client = PickyClient()
    sink = make_sink(client)
    sink.register_table("deadletters", ("id",))
    letters: list[tuple[str, Any, str]] = []

    async def on_bad_row(table: str, row: Any, exc: BaseException) -> Any:
        letters.append((table, row, type(exc).__name__))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done  # the dead letter's delivery; the loader stores it when it reads it back

    sink.on_bad_row = on_bad_row
    acked: list[int] = []
    rows = [(i,) for i in range(7)] + [(2**63,)] + [(i,) for i in range(8, 10)]
    for offset, row in enumerate(rows):
        sink.add("events", row, "shop.orders", 0, offset)
        sink.after_flush(lambda offset=offset: acked.append(offset))  # type: ignore[misc]
    await sink.flush()
    stored = sorted(
        r for table, batch, _ in client.inserts if table.endswith("events") for r in batch
    )
    assert stored == sorted(r for r in rows if r != (2**63,))
    assert letters == [("events", (2**63,), "DataError")]
    assert acked == list(range(len(rows)))  # nothing blocks: every message is acked
    assert sink.stats.bad_rows == 1 and sink.reachable


class RefusingClickHouse(FakeClient):
    """ClickHouse itself (a server, or chdb) refuses any batch holding a negative value, with the
    error clickhouse-connect raises for it: a DatabaseError carrying the code."""

    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code

    def insert(
        self, table: str, rows: list[Any], column_names: list[str], settings: dict[str, str]
    ) -> None:
        self.attempts.append(settings["insert_deduplication_token"])
        if any(isinstance(v, int) and v < 0 for row in rows for v in row):
            from clickhouse_connect.driver.exceptions import DatabaseError

            raise DatabaseError(
                f"Code: {self.code}. DB::Exception: Value in column Int64 cannot be safely "
                "converted into type UInt8",
                code=self.code,
            )
        self.inserts.append((table, list(rows), settings["insert_deduplication_token"]))


def collect_letters(sink: ClickHouseSink) -> list[tuple[str, Any, str]]:
    letters: list[tuple[str, Any, str]] = []

    async def on_bad_row(table: str, row: Any, exc: BaseException) -> Any:
        letters.append((table, row, str(exc)))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    sink.on_bad_row = on_bad_row
    return letters


# CANNOT_PARSE_TEXT, TYPE_MISMATCH, CANNOT_CONVERT_TYPE, VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
@pytest.mark.parametrize("code", [6, 53, 70, 321])
async def test_a_row_clickhouse_itself_refuses_is_isolated_and_dead_lettered(code: int) -> None:
    client = RefusingClickHouse(code)
    sink = make_sink(client)
    letters = collect_letters(sink)
    acked: list[int] = []
    rows = [(i,) for i in range(5)] + [(-1,)] + [(i,) for i in range(6, 9)]
    for offset, row in enumerate(rows):
        sink.add("events", row, "shop.orders", 0, offset)
        sink.after_flush(lambda offset=offset: acked.append(offset))  # type: ignore[misc]
    await asyncio.wait_for(sink.flush(), 5)
    stored = sorted(r for _, batch, _ in client.inserts for r in batch)
    assert stored == sorted(r for r in rows if r != (-1,))
    assert [(table, row) for table, row, _ in letters] == [("events", (-1,))]
    assert letters[0][2].startswith(f"Code: {code}.")
    assert acked == list(range(len(rows)))
    assert sink.stats.bad_rows == 1 and sink.stats.failures == 0 and sink.reachable


# Run in a process of its own: chdb opens one data path per process, for the life of it.
REAL_CHDB = """
import asyncio, json, sys
from sinks.clickhouse.sink import ClickHouseSink
from streams.settings import Settings

async def main() -> None:
    settings = Settings(_env_file=None, clickhouse_url="chdb://" + sys.argv[1])
    sink = ClickHouseSink(settings)
    sink.setup()
    ch = sink.clickhouse
    ch.call(ch.client.command, f"CREATE DATABASE IF NOT EXISTS {ch.database}")
    # ClickHouse computes the column while it inserts, and refuses a value that does not fit.
    ch.call(ch.client.command, f"CREATE TABLE {ch.database}.narrow (n Int64, "
            "small UInt8 MATERIALIZED accurateCast(n, 'UInt8')) ENGINE = MergeTree ORDER BY n")
    letters = []

    async def on_bad_row(table, row, exc):
        letters.append([table, list(row), str(exc)])
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    sink.on_bad_row = on_bad_row
    sink.register_table("narrow", ("n",))
    for offset, n in enumerate([1, 2, 1000, 3]):
        sink.add("narrow", (n,), "shop.orders", 0, offset)
    await asyncio.wait_for(sink.flush(), 30)
    stored = ch.call(ch.client.query, f"SELECT n FROM {ch.database}.narrow ORDER BY n")
    print(json.dumps({"stored": [r[0] for r in stored.result_rows], "letters": letters}))

asyncio.run(main())
"""


def test_a_row_chdb_refuses_is_dead_lettered_and_the_others_stored(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", REAL_CHDB, str(tmp_path / "chdb")],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["stored"] == [1, 2, 3]
    ((table, row, error),) = result["letters"]
    assert (table, row) == ("narrow", [1000])
    assert "Code: 70." in error and "CANNOT_CONVERT_TYPE" in error


class UnavailableClickHouse(FakeClient):
    """Fails the first ``failures`` inserts with ``error``, then takes everything."""

    def __init__(self, error: Exception, failures: int) -> None:
        super().__init__(failures)
        self.error = error

    def insert(
        self, table: str, rows: list[Any], column_names: list[str], settings: dict[str, str]
    ) -> None:
        if self.failures:
            self.failures -= 1
            self.attempts.append(settings["insert_deduplication_token"])
            raise self.error
        super().insert(table, rows, column_names, settings)


def _unavailable() -> list[Exception]:
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    return [
        OperationalError("Error HTTPConnectionPool: Connection refused executing HTTP request"),
        DatabaseError("Code: 241. DB::Exception: Memory limit exceeded", code=241),
        DatabaseError("Code: 252. DB::Exception: Too many parts", code=252),
        DatabaseError("Code: 60. DB::Exception: Table journey.events does not exist", code=60),
        DatabaseError("The ClickHouse server returned an error"),  # no code
    ]


@pytest.mark.parametrize("error", _unavailable(), ids=lambda e: str(getattr(e, "code", None)))
async def test_clickhouse_unavailable_is_retried_not_dead_lettered(error: Exception) -> None:
    client = UnavailableClickHouse(error, failures=3)
    sink = make_sink(client)
    letters = collect_letters(sink)
    acked: list[int] = []
    for offset in range(3):
        sink.add("events", (offset,), "shop.orders", 0, offset)
        sink.after_flush(lambda offset=offset: acked.append(offset))  # type: ignore[misc]
    await asyncio.wait_for(sink.flush(), 5)
    assert letters == [] and sink.stats.bad_rows == 0
    assert sink.stats.failures == 3 and len(set(client.attempts)) == 1  # the whole batch, again
    assert [rows for _, rows, _ in client.inserts] == [[(0,), (1,), (2,)]]
    assert acked == [0, 1, 2]


async def test_stop_returns_while_clickhouse_keeps_failing() -> None:
    import sinks.clickhouse.sink as sink_module

    client = FakeClient(failures=10**9)
    sink = make_sink(client)
    sink.add("events", ("x",), "shop.orders", 0, 1)
    acked: list[bool] = []
    sink.after_flush(lambda: acked.append(True))
    old = sink_module.STOP_FLUSH_SECONDS
    sink_module.STOP_FLUSH_SECONDS = 0.3
    try:
        await asyncio.wait_for(sink.stop(), timeout=5)
    finally:
        sink_module.STOP_FLUSH_SECONDS = old
    assert acked == [] and not sink.reachable


async def test_a_message_redelivered_below_stored_ones_is_stored() -> None:
    """Faust's stream drops a message that arrives during a rebalance (commit_guard.py): the
    later offsets are stored first, and it comes back after a seek. Nothing stored above it may
    make the sink skip it (the multi-worker test lost a customer's events that way)."""
    client = FakeClient()
    sink = make_sink(client)
    for offset in (40, 42, 43):
        sink.add("events", (offset,), "shop.orders", 0, offset)
    await sink.flush()
    restarted = make_sink(client)
    for offset in (41, 42, 43):  # from the committed offset, 41, again
        restarted.add("events", (offset,), "shop.orders", 0, offset)
    await restarted.flush()
    assert client.inserts[1][1] == [(41,), (42,), (43,)]


async def test_kafka_sends_are_awaited_before_acks() -> None:
    client = FakeClient()
    sink = make_sink(client)
    delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    acked: list[str] = []
    sink.wait_for(delivery)
    sink.after_flush(lambda: acked.append("dead letter source"))
    flushing = asyncio.create_task(sink.flush())
    await asyncio.sleep(0.01)
    assert acked == []
    delivery.set_result(None)
    await flushing
    assert acked == ["dead letter source"]


async def test_failed_kafka_send_keeps_messages_unacked_and_reports() -> None:
    client = FakeClient()
    fatal: list[BaseException] = []
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    sink = ClickHouseSink(
        settings,
        clickhouse=lambda s: FakeClickHouse(client),
        on_fatal=fatal.append,  # type: ignore[arg-type,return-value]
    )
    sink.setup()
    delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    delivery.set_exception(RuntimeError("broker gone"))
    acked: list[int] = []
    sink.wait_for(delivery)
    sink.after_flush(lambda: acked.append(1))
    with pytest.raises(RuntimeError):
        await sink.flush()
    assert acked == [] and len(fatal) == 1


async def test_backpressure_waits_while_two_batches_are_buffered() -> None:
    client = FakeClient()
    sink = make_sink(client)  # batch of 3 rows
    for offset in range(6):
        sink.add("events", (offset,), "t", 0, offset)
    waiting = asyncio.create_task(sink.wait_for_room())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await sink.flush()
    await asyncio.wait_for(waiting, 1)


@pytest.mark.parametrize("turns", range(4))
async def test_stop_ends_the_loop_even_when_a_wake_up_races_the_cancellation(turns: int) -> None:
    await assert_stop_ends_when_a_wake_up_races_it(make_sink(FakeClient()), turns)
