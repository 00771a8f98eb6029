"""A stand-in ClickHouse for the sink's tests (``test_sink.py``, the loader's acks in
``test_acks.py``): it stores inserts in memory and can fail on purpose."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sinks.clickhouse.sink import ClickHouseSink
from streams.settings import Settings


class FakeClient:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.inserts: list[tuple[str, list[Any], str]] = []
        self.attempts: list[str] = []
        self.commands: list[tuple[str, dict[str, Any]]] = []

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
            tuple(row[: len(wanted)])
            for row in stored
            if len(row) >= len(wanted) and all(str(row[n]) in keys for n, keys in enumerate(wanted))
        ]
        return type("Result", (), {"result_rows": found})()

    def command(self, sql: str, parameters: dict[str, Any]) -> None:
        """An erasure (``DELETE``)."""
        self.commands.append((sql, parameters))


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
