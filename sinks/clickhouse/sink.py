"""The ClickHouse sink: buffer rows, insert them in batches. It only stores rows.

Shape after quix-streams' sinks: ``__init__`` stores config, ``setup()`` connects, ``add()``
buffers, ``flush()`` writes one batch per table; a failing insert is retried with backoff and
holds the stream back (backpressure), it never crashes the loader.

The sink knows nothing of Kafka: it neither acknowledges messages nor sends records. Messages
are acknowledged in ``streams/runtime/acks.py``: the loader (``streams/runtime/loader.py``) runs
this ``flush()`` as the hook before each round of acknowledgements, and a row ClickHouse refuses
goes to ``on_bad_row``, which the loader makes a dead letter.

Delivery guarantees, and what provides each:

* **Nothing lost.** ``flush()`` returns only after every row buffered before it is in ClickHouse
  (or, refused, handed to ``on_bad_row``); a failed call leaves them buffered. The loader
  acknowledges a message only after that (and after the refused rows' dead letters are
  acknowledged by the broker), so a crash before it redelivers the message.
* **Nothing doubled by a retry.** Each insert carries an ``insert_deduplication_token`` derived
  from the table and the exact source messages (topic, partition, offset) of the rows it holds,
  and every table has ``non_replicated_deduplication_window`` set, so ClickHouse drops a retried
  insert that had in fact succeeded. The token names the rows, not a range of offsets: a later
  insert of other rows from the same range (a message redelivered after a seek back) is never
  taken for a retry.
* **Nothing doubled by a crash between insert and commit.** A table registered with ``unique``
  key columns drops, before each insert, the rows whose key the batch already holds or ClickHouse
  already stores. A redelivered message (its offset not committed yet) and a fact a journey
  worker published twice (a redelivered input, a re-sent outbox; new offsets of the fact topic)
  are stored once: one physical row per event, not only one after ``FINAL``. Tables without a key
  (snapshots) may get a physical duplicate that ``FINAL`` collapses.
* **Nothing skipped by a guess.** The sink never skips a row because of offsets it has seen
  stored: Faust can hand a partition's messages over out of order (a message its stream dropped
  during a rebalance comes back after later ones were stored), so "the highest stored offset"
  does not mean "everything below is stored". What is done is what the broker's committed offset
  says (``streams/runtime/commit_guard.py``); above it, the keys decide.
* **No row blocks the others.** An insert that fails because of its data (a value the client
  cannot encode, or one ClickHouse refuses with an error code about values, ``refuses_data``)
  is bisected until the failing rows are isolated; each becomes a dead letter (``insert_failed``,
  through ``on_bad_row``) and the rest is stored. Failures of ClickHouse itself (down, hanging,
  disk full, a missing table or column) are retried with backoff: that is backpressure, not
  data.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError, DataError, ProgrammingError

from sinks.clickhouse.client import ClickHouse
from sinks.clickhouse.config import ClickHouseConfig

log = logging.getLogger(__name__)

Source = tuple[str, int, int]  # the message a row came from: (topic, partition, offset)
# (table, row, exception): a row ClickHouse refuses. The loader sends it as a dead letter and
# makes the acknowledgements wait for its delivery.
OnBadRow = Callable[[str, Sequence[Any], BaseException], Awaitable[object]]
# Raised while building the insert from the rows (client side): the data is wrong, not ClickHouse.
DATA_ERRORS = (
    DataError, ProgrammingError, TypeError, ValueError, AttributeError, OverflowError,
    struct.error,
)  # fmt: skip
# Error codes with which ClickHouse itself (a server, or chdb: clickhouse-connect's
# DatabaseError.code) refuses the values of an insert: a row is wrong, retrying cannot help.
# Not here, so retried: the schema's errors (an unknown table or column: a migration is missing,
# and every row would be refused) and the engine's (memory, too many parts, timeouts, read-only,
# disk), like every connection error.
REFUSED_DATA_CODES = frozenset({
    6,    # CANNOT_PARSE_TEXT
    25,   # CANNOT_PARSE_ESCAPE_SEQUENCE
    26,   # CANNOT_PARSE_QUOTED_STRING
    27,   # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,   # CANNOT_PARSE_DATE
    41,   # CANNOT_PARSE_DATETIME
    53,   # TYPE_MISMATCH
    69,   # ARGUMENT_OUT_OF_BOUND
    70,   # CANNOT_CONVERT_TYPE
    72,   # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    128,  # TOO_LARGE_ARRAY_SIZE
    131,  # TOO_LARGE_STRING_SIZE
    153,  # ILLEGAL_DIVISION
    190,  # SIZES_OF_ARRAYS_DONT_MATCH
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
    376,  # CANNOT_PARSE_UUID
    395,  # FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
    407,  # DECIMAL_OVERFLOW
    467,  # CANNOT_PARSE_BOOL
    469,  # VIOLATED_CONSTRAINT
    691,  # UNKNOWN_ELEMENT_OF_ENUM
})  # fmt: skip
# ClickHouse counts as unreachable while one call has been running this long.
STALLED_SECONDS = 10.0
# While idle, ClickHouse is asked whether it is there when nothing succeeded for this long.
PROBE_AFTER_SECONDS = 5.0


@dataclass
class _TableBuffer:
    columns: Sequence[str]
    # (row, the message it came from), in arrival order.
    rows: list[tuple[Sequence[Any], Source]] = field(default_factory=list)
    # Snapshot tables keep only the newest row per key between flushes.
    latest: dict[str, tuple[Sequence[Any], Source]] = field(default_factory=dict)
    # Positions of the key columns of a table whose rows are stored once per key.
    unique: tuple[int, ...] = ()


@dataclass
class FlushStats:
    rows: int = 0
    batches: int = 0
    failures: int = 0
    duplicate_rows: int = 0  # rows of a unique key already in the batch or in ClickHouse
    bad_rows: int = 0
    last_flush_seconds: float = 0.0
    rows_per_table: dict[str, int] = field(default_factory=dict)


class ClickHouseSink:
    def __init__(
        self,
        settings: ClickHouseConfig,
        *,
        clickhouse: Callable[[ClickHouseConfig], ClickHouse] = ClickHouse.shared,
        on_flush: Callable[[float], object] | None = None,
        on_bad_row: OnBadRow | None = None,
        on_batch_full: Callable[[], object] | None = None,
    ) -> None:
        """``on_batch_full``: a batch (``sink_batch_rows``) is buffered; whoever calls
        ``flush()`` should do it now rather than at its next interval."""
        self.settings = settings
        self.on_bad_row = on_bad_row
        self.on_batch_full = on_batch_full
        self._on_flush = on_flush
        self._open = clickhouse
        self._clickhouse: ClickHouse | None = None
        self._tables: dict[str, _TableBuffer] = {}
        self._erasures: dict[str, dict[str, set[str]]] = {}
        self._buffered = 0
        self._flush_lock = asyncio.Lock()
        self._room = asyncio.Event()
        self._room.set()
        self.stats = FlushStats()
        # Readiness: the last call to ClickHouse failed (not because of data), or one is stuck.
        self._failing = False
        self._busy_since: float | None = None
        self._last_ok = time.monotonic()

    @property
    def reachable(self) -> bool:
        """ClickHouse answers: the last call did not fail for ClickHouse's sake, and none has
        been hanging for ``STALLED_SECONDS``."""
        busy = self._busy_since
        return not self._failing and (busy is None or time.monotonic() - busy < STALLED_SECONDS)

    # --- set-up ------------------------------------------------------------------------------
    def register_table(
        self, table: str, columns: Sequence[str], unique: Sequence[str] = ()
    ) -> None:
        """``unique``: key columns; a row whose key is stored already is not inserted again."""
        self._tables[table] = _TableBuffer(
            columns=tuple(columns), unique=tuple(columns.index(c) for c in unique)
        )

    def setup(self) -> None:
        self._clickhouse = self._open(self.settings)

    @property
    def clickhouse(self) -> ClickHouse:
        if self._clickhouse is None:
            raise RuntimeError("ClickHouseSink.setup() was not called")
        return self._clickhouse

    # --- the hot path ------------------------------------------------------------------------
    def add(self, table: str, row: Sequence[Any], topic: str, partition: int, offset: int) -> None:
        """Buffer one row produced by the message at ``topic``/``partition``/``offset``."""
        self._tables[table].rows.append((row, (topic, partition, offset)))
        self._count()

    def add_latest(
        self, table: str, key: str, row: Sequence[Any], topic: str, partition: int, offset: int
    ) -> None:
        """Like ``add``, for snapshots: only the newest row per ``key`` is written per batch."""
        buffer = self._tables[table]
        if key not in buffer.latest:
            self._count()
        buffer.latest[key] = (row, (topic, partition, offset))

    def erase(self, column: str, value: str, tables: Sequence[str]) -> None:
        """Delete rows where ``column = value`` from ``tables`` once the current batch is in."""
        for table in tables:
            self._erasures.setdefault(table, {}).setdefault(column, set()).add(value)

    def _count(self) -> None:
        self._buffered += 1
        if self._buffered >= self.settings.sink_batch_rows:
            self._batch_full()
            self._room.clear()

    def _batch_full(self) -> None:
        if self.on_batch_full is not None:
            self.on_batch_full()

    async def wait_for_room(self) -> None:
        """Backpressure: wait while twice a batch is buffered (ClickHouse is slow or down)."""
        if self._buffered >= 2 * self.settings.sink_batch_rows:
            self._batch_full()
            await self._room.wait()

    # --- writing -----------------------------------------------------------------------------
    async def flush(self) -> int:
        """Write every buffered row (and the erasures), retrying until ClickHouse takes them;
        refused rows go to ``on_bad_row``. Returns the rows written. If it raises (or is
        cancelled), what it took is buffered again for the next flush."""
        async with self._flush_lock:
            taken = [(table, buffer) for table, buffer in self._tables.items()
                     if buffer.rows or buffer.latest]  # fmt: skip
            for table, buffer in taken:
                self._tables[table] = _TableBuffer(columns=buffer.columns, unique=buffer.unique)
            erasures, self._erasures = self._erasures, {}
            self._buffered = 0
            try:
                written = await self._write(taken, erasures)
            except BaseException:
                self._put_back(taken, erasures)
                raise
            self._room.set()
            return written

    async def _write(
        self, taken: list[tuple[str, _TableBuffer]], erasures: dict[str, dict[str, set[str]]]
    ) -> int:
        started = time.perf_counter()
        written = 0
        bad: list[tuple[str, Sequence[Any], BaseException]] = []
        for table, buffer in taken:
            sourced = buffer.rows + list(buffer.latest.values())
            if buffer.unique:
                sourced = await self._new_keys_only(table, buffer, sourced)
            if not sourced:
                continue
            rows = [row for row, _ in sourced]
            written += await self._insert_isolating(
                table, buffer.columns, rows, _token(table, [source for _, source in sourced]), bad
            )
            self.stats.rows_per_table[table] = self.stats.rows_per_table.get(table, 0) + len(rows)
        if bad and self.on_bad_row is not None:
            for table, row, exc in bad:
                await self.on_bad_row(table, row, exc)
        for table, by_column in erasures.items():
            for column, values in by_column.items():
                await self._delete_with_retry(table, column, sorted(values))
        if taken:
            self.stats.rows += written
            self.stats.batches += len(taken)
            self.stats.last_flush_seconds = time.perf_counter() - started
            if self._on_flush is not None:
                self._on_flush(self.stats.last_flush_seconds)
        return written

    def _put_back(
        self, taken: list[tuple[str, _TableBuffer]], erasures: dict[str, dict[str, set[str]]]
    ) -> None:
        """A failed flush: its rows go before those buffered since, its erasures with theirs.
        Rows it did store are stored again at most once per unique key (``unique``); a snapshot
        may get a physical duplicate that ``FINAL`` collapses."""
        for table, old in taken:
            buffer = self._tables[table]
            buffer.rows[:0] = old.rows
            self._buffered += len(old.rows)
            for key, row in old.latest.items():
                if key not in buffer.latest:  # a snapshot buffered since is newer
                    buffer.latest[key] = row
                    self._buffered += 1
        for table, by_column in erasures.items():
            for column, values in by_column.items():
                self._erasures.setdefault(table, {}).setdefault(column, set()).update(values)

    async def _insert_isolating(
        self,
        table: str,
        columns: Sequence[str],
        rows: list[Sequence[Any]],
        token: str,
        bad: list[tuple[str, Sequence[Any], BaseException]],
    ) -> int:
        """Insert ``rows``; if their data is refused, bisect until the refused rows are alone
        (collected in ``bad``) and the others are stored. Returns the rows stored."""
        try:
            await self._insert_with_retry(table, columns, rows, token)
            return len(rows)
        except Exception as exc:
            if not refuses_data(exc):
                raise
            if len(rows) == 1:
                self.stats.bad_rows += 1
                log.error(
                    "a row for %s cannot be inserted (%s): it becomes a dead letter",
                    table,
                    _summary(exc),
                )
                bad.append((table, rows[0], exc))
                return 0
            half = len(rows) // 2
            return await self._insert_isolating(
                table, columns, rows[:half], token + ":a", bad
            ) + await self._insert_isolating(table, columns, rows[half:], token + ":b", bad)

    async def _new_keys_only(
        self, table: str, buffer: _TableBuffer, rows: list[tuple[Sequence[Any], Source]]
    ) -> list[tuple[Sequence[Any], Source]]:
        """The rows whose key is neither earlier in the batch nor stored in ClickHouse."""
        positions = buffer.unique
        fresh: dict[tuple[Any, ...], tuple[Sequence[Any], Source]] = {}
        for row, source in rows:
            fresh.setdefault(tuple(row[i] for i in positions), (row, source))
        names = [buffer.columns[i] for i in positions]
        where = " AND ".join(f"{name} IN {{k{n}:Array(String)}}" for n, name in enumerate(names))
        ch = self.clickhouse
        stored = await self._query_with_retry(
            f"lookup of {len(fresh)} keys in {table}",
            f"SELECT {', '.join(names)} FROM {ch.database}.{table} WHERE {where}",
            {f"k{n}": sorted({str(key[n]) for key in fresh}) for n in range(len(names))},
        )
        for key in stored:
            fresh.pop(tuple(key), None)
        self.stats.duplicate_rows += len(rows) - len(fresh)
        return list(fresh.values())

    async def _query_with_retry(
        self, what: str, sql: str, parameters: dict[str, Any]
    ) -> list[Sequence[Any]]:
        result: list[Sequence[Any]] = []

        def run() -> None:
            result[:] = self.clickhouse.client.query(sql, parameters=parameters).result_rows

        await self._with_retry(what, run)
        return result

    async def _insert_with_retry(
        self, table: str, columns: Sequence[str], rows: list[Sequence[Any]], token: str
    ) -> None:
        ch = self.clickhouse
        await self._with_retry(
            f"insert of {len(rows)} rows into {table}",
            ch.client.insert,
            f"{ch.database}.{table}",
            rows,
            column_names=list(columns),
            settings={"insert_deduplication_token": token},
        )

    async def _delete_with_retry(self, table: str, column: str, values: list[str]) -> None:
        ch = self.clickhouse
        await self._with_retry(
            f"erasure of {len(values)} {column}s in {table}",
            ch.client.command,
            f"DELETE FROM {ch.database}.{table} WHERE {column} IN {{values:Array(String)}}",
            parameters={"values": values},
        )

    async def _with_retry(
        self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        """Retry until ClickHouse takes it: the stream waits meanwhile (backpressure). Inserts
        are safe to retry thanks to their deduplication token, deletes by nature. A refusal of
        the data itself (``refuses_data``) is raised at once: retrying cannot fix it."""
        backoff = self.settings.sink_retry_backoff / 1000
        while True:
            self._busy_since = time.monotonic()
            try:
                await self.clickhouse.run(fn, *args, **kwargs)
                self._failing = False
                self._last_ok = time.monotonic()
                return
            except Exception as exc:
                if refuses_data(exc):
                    self._failing = False  # ClickHouse answered
                    raise
                self.stats.failures += 1
                if not self._failing:
                    log.warning(
                        "%s failed (%s); retrying every %.1fs at most until it works",
                        what,
                        _summary(exc),
                        self.settings.sink_retry_backoff_max / 1000,
                    )
                self._failing = True
            finally:
                self._busy_since = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.sink_retry_backoff_max / 1000)

    async def probe_when_idle(self) -> None:
        """While idle, ask ClickHouse whether it is there, so that readiness stays honest (run
        after each ``flush()``; nothing is asked while calls succeed)."""
        if time.monotonic() - self._last_ok <= PROBE_AFTER_SECONDS:
            return
        self._busy_since = time.monotonic()
        try:
            await self.clickhouse.run(self.clickhouse.client.query, "SELECT 1")
            if self._failing:
                log.warning("ClickHouse answers again")
            self._failing = False
            self._last_ok = time.monotonic()
        except Exception as exc:
            if not self._failing:
                log.warning("ClickHouse does not answer: %s", _summary(exc))
            self._failing = True
        finally:
            self._busy_since = None


def refuses_data(exc: BaseException) -> bool:
    """The call failed because of the rows' values: found while the client built the insert
    (``DATA_ERRORS``), or reported by ClickHouse with a code of ``REFUSED_DATA_CODES``."""
    if isinstance(exc, DATA_ERRORS):
        return True
    return isinstance(exc, DatabaseError) and exc.code in REFUSED_DATA_CODES


def _summary(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:500]


def _token(table: str, sources: Iterable[Source]) -> str:
    """The insert's deduplication token: the table and the exact messages its rows came from."""
    digest = hashlib.sha1()
    for topic, partition, offset in sorted(sources):
        digest.update(f"{topic}:{partition}:{offset}|".encode())
    return f"{table}:{digest.hexdigest()}"
