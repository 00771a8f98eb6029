"""The sink's guarantees, against a stand-in ClickHouse that can fail on purpose. The sink only
stores rows; acknowledging the messages after them is ``Acks``'s (``test_acks.py``)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sinks.clickhouse.sink import ClickHouseSink
from tests.unit.fake_clickhouse import FakeClient, RefusingClickHouse, make_sink


async def test_a_retried_insert_carries_one_token() -> None:
    client = FakeClient(failures=2)
    sink = make_sink(client)
    for offset in range(3):
        sink.add("events", (offset,), "shop.orders", 0, offset)
    assert await sink.flush() == 3
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

    async def on_bad_row(table: str, row: Any, exc: BaseException) -> None:
        letters.append((table, row, type(exc).__name__))

    sink.on_bad_row = on_bad_row
    rows = [(i,) for i in range(7)] + [(2**63,)] + [(i,) for i in range(8, 10)]
    for offset, row in enumerate(rows):
        sink.add("events", row, "shop.orders", 0, offset)
    assert await sink.flush() == len(rows) - 1  # nothing blocks: the flush is done
    stored = sorted(
        r for table, batch, _ in client.inserts if table.endswith("events") for r in batch
    )
    assert stored == sorted(r for r in rows if r != (2**63,))
    assert letters == [("events", (2**63,), "DataError")]
    assert sink.stats.bad_rows == 1 and sink.reachable


def collect_letters(sink: ClickHouseSink) -> list[tuple[str, Any, str]]:
    letters: list[tuple[str, Any, str]] = []

    async def on_bad_row(table: str, row: Any, exc: BaseException) -> None:
        letters.append((table, row, str(exc)))

    sink.on_bad_row = on_bad_row
    return letters


# CANNOT_PARSE_TEXT, TYPE_MISMATCH, CANNOT_CONVERT_TYPE, VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
@pytest.mark.parametrize("code", [6, 53, 70, 321])
async def test_a_row_clickhouse_itself_refuses_is_isolated_and_dead_lettered(code: int) -> None:
    client = RefusingClickHouse(code)
    sink = make_sink(client)
    letters = collect_letters(sink)
    rows = [(i,) for i in range(5)] + [(-1,)] + [(i,) for i in range(6, 9)]
    for offset, row in enumerate(rows):
        sink.add("events", row, "shop.orders", 0, offset)
    assert await asyncio.wait_for(sink.flush(), 5) == len(rows) - 1
    stored = sorted(r for _, batch, _ in client.inserts for r in batch)
    assert stored == sorted(r for r in rows if r != (-1,))
    assert [(table, row) for table, row, _ in letters] == [("events", (-1,))]
    assert letters[0][2].startswith(f"Code: {code}.")
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
    for offset in range(3):
        sink.add("events", (offset,), "shop.orders", 0, offset)
    assert await asyncio.wait_for(sink.flush(), 5) == 3
    assert letters == [] and sink.stats.bad_rows == 0
    assert sink.stats.failures == 3 and len(set(client.attempts)) == 1  # the whole batch, again
    assert [rows for _, rows, _ in client.inserts] == [[(0,), (1,), (2,)]]


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


async def test_backpressure_waits_while_two_batches_are_buffered() -> None:
    client = FakeClient()
    sink = make_sink(client)  # batch of 3 rows
    full: list[int] = []
    sink.on_batch_full = lambda: full.append(len(client.inserts))
    for offset in range(6):
        sink.add("events", (offset,), "t", 0, offset)
    assert full  # whoever flushes is asked to do it now
    waiting = asyncio.create_task(sink.wait_for_room())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await sink.flush()
    await asyncio.wait_for(waiting, 1)


class DeadLetterRefused(Exception):
    pass


async def test_a_failed_flush_buffers_its_rows_again() -> None:
    """A flush that raises (here: the dead letter of a refused row cannot be sent) stored some
    rows and not others; it keeps nothing back: the next flush stores everything it took."""
    client = RefusingClickHouse(code=53)
    sink = make_sink(client)
    sink.register_table("customers", ("customer_id", "n"))
    sink.register_table("keyed", ("id", "n"), unique=("id",))
    failures = [DeadLetterRefused("the broker is gone")]
    letters: list[Any] = []

    async def on_bad_row(table: str, row: Any, exc: BaseException) -> None:
        if failures:
            raise failures.pop()
        letters.append(row)

    sink.on_bad_row = on_bad_row
    sink.add("keyed", ("k1", 1), "t", 0, 1)
    sink.add("events", (-1,), "t", 0, 2)
    sink.add_latest("customers", "c1", ("c1", 1), "t", 0, 3)
    sink.erase("customer_id", "c9", ("customers",))
    with pytest.raises(DeadLetterRefused):
        await sink.flush()
    assert client.commands == []  # the erasure was not run: it is run by the next flush
    sink.add_latest("customers", "c1", ("c1", 2), "t", 0, 4)  # newer than the one put back
    sink.add("events", (5,), "t", 0, 5)
    assert await sink.flush() == 2
    assert letters == [(-1,)] and len(client.commands) == 1
    stored = [(table.split(".")[-1], rows) for table, rows, _ in client.inserts]
    assert stored.count(("keyed", [("k1", 1)])) == 1
    assert stored[-2:] == [("events", [(5,)]), ("customers", [("c1", 2)])]
    assert sink.stats.duplicate_rows == 1  # k1, stored by the failed flush, not again
