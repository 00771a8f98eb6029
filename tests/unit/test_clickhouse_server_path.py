"""The ClickHouse server path (http/https URL), tested as far as this machine allows.

No ClickHouse server runs here (Debian's 18.16 is too old for clickhouse-connect), so these
tests check what our code sends to clickhouse-connect's HTTP client: the URL, the credentials,
the migrations and the read-only guard. The embedded engine runs the same SQL in the
integration tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from sinks.clickhouse import client as client_module
from sinks.clickhouse.client import (
    ClickHouse,
    ClickHouseUnavailable,
    NotReadOnly,
    open_client,
    read_only_statement,
)
from sinks.clickhouse.migrations import apply_migrations, discover, repeatable
from streams import query
from streams.settings import Settings


class FakeResult:
    column_names = ("n",)
    result_rows = [(1,)]


class FakeServerClient:
    def __init__(self) -> None:
        self.commands: list[str] = []
        self.queries: list[tuple[str, dict[str, Any]]] = []
        self.inserts: list[str] = []

    def command(self, sql: str, **kwargs: Any) -> None:
        self.commands.append(sql)

    def query(self, sql: str, **kwargs: Any) -> Any:
        self.queries.append((sql, kwargs))
        result = FakeResult()
        if "schema_migrations" in sql:
            result.result_rows = []
        return result

    def insert(self, table: str, rows: Any, **kwargs: Any) -> None:
        self.inserts.append(table)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {"client": FakeServerClient()}

    def get_client(**kwargs: Any) -> FakeServerClient:
        seen["kwargs"] = kwargs
        return seen["client"]  # type: ignore[no-any-return]

    monkeypatch.setattr(clickhouse_connect, "get_client", get_client)
    monkeypatch.setattr(ClickHouse, "_engine", None)
    return seen


def settings(**kwargs: Any) -> Settings:
    return Settings(_env_file=None, **kwargs)  # type: ignore[arg-type]


def test_server_url_and_credentials_reach_the_http_client(server: dict[str, Any]) -> None:
    s = settings(
        clickhouse_url="https://ch.example:8443",
        clickhouse_username="journey",
        clickhouse_password="s3cret",
    )
    open_client(s)
    assert server["kwargs"] == {
        "dsn": "https://ch.example:8443",
        "username": "journey",
        "password": "s3cret",
    }


def test_connection_failure_says_what_to_check(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**kwargs: Any) -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(clickhouse_connect, "get_client", refuse)
    with pytest.raises(ClickHouseUnavailable, match="JOURNEY_CLICKHOUSE_URL") as info:
        open_client(settings(clickhouse_url="http://user:pw@ch:8123"))
    assert "pw" not in str(info.value)  # credentials in the URL are not echoed


def test_migrations_run_the_same_statements_on_a_server(server: dict[str, Any]) -> None:
    s = settings(clickhouse_url="http://ch:8123", clickhouse_database="shop_journey")
    applied = apply_migrations(ClickHouse.shared(s))
    assert [m.version for m in applied] == [m.version for m in discover()]
    commands = server["client"].commands
    assert commands[0] == "CREATE DATABASE IF NOT EXISTS shop_journey"
    expected = [
        statement
        for migration in [*discover(), *repeatable()]
        for statement in migration.statements(
            "shop_journey", s.sink_dedup_window, s.journey.attribution_window
        )
    ]
    assert commands[2:] == expected
    assert all(
        "{db}" not in c and "journey." not in c.replace("shop_journey.", "") for c in commands
    )
    assert server["client"].inserts.count("shop_journey.schema_migrations") == len(applied)


def test_queries_to_a_server_are_read_only_twice(server: dict[str, Any]) -> None:
    s = settings(clickhouse_url="http://ch:8123")
    result = query.run_query(s, "SELECT 1 AS n;")
    assert result.rows == [[1]]
    sql, kwargs = server["client"].queries[-1]
    assert sql == "SELECT 1 AS n"
    assert kwargs["settings"] == {"readonly": 1}  # the server refuses writes too


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO journey.events VALUES (1)",
        "DROP TABLE journey.events",
        "SELECT 1; DROP TABLE journey.events",
        "ALTER TABLE journey.events DELETE WHERE 1",
        "SELECT * FROM journey.events INTO OUTFILE '/tmp/x'",
        "",
    ],
)
def test_writes_are_refused_before_reaching_clickhouse(statement: str) -> None:
    with pytest.raises(NotReadOnly):
        read_only_statement(statement)


def test_embedded_default_path_is_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(clickhouse_connect, "get_client", lambda **kw: seen.update(kw))
    open_client(settings(data_dir=tmp_path / "state"))
    assert seen["dsn"] == f"chdb://{(tmp_path / 'state' / 'chdb').resolve()}"
    assert (tmp_path / "state" / "chdb").is_dir()
    assert client_module._embedded_path("chdb://memory") is None
