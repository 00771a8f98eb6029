"""The ClickHouse server path (http/https URL), tested as far as this machine allows.

No ClickHouse server runs here (Debian's 18.16 is too old for clickhouse-connect), so these
tests check what our code sends to clickhouse-connect's HTTP client: the URL, the credentials,
the migrations and the read-only guard. The embedded engine runs the same SQL in the
integration tests.
"""

from __future__ import annotations

from typing import Any

import clickhouse_connect
import pytest

from sinks.clickhouse.client import (
    ClickHouse,
    ClickHouseUnavailable,
    NotReadOnly,
    check_ast,
    open_client,
    read_only_statement,
)
from sinks.clickhouse.migrations import apply_migrations, discover, repeatable
from streams.settings import Settings
from streams.web import query as query_module


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


def test_analyst_queries_to_a_server_are_read_only_and_bounded(server: dict[str, Any]) -> None:
    s = settings(
        clickhouse_url="http://ch:8123",
        clickhouse_username="journey",
        clickhouse_password="sink-secret",
        clickhouse_query_username="journey_analyst",
        clickhouse_query_password="analyst-secret",
        query_max_execution_time="10s",
    )
    fake = server["client"]
    answers = iter(
        [
            [("SELECT 1 AS n",)],  # formatQuerySingleLine
            [("SelectWithUnionQuery (children 1)",), (" ExpressionList (children 1)",)],
            [(1,)],
        ]
    )

    def query(sql: str, **kwargs: Any) -> Any:
        fake.queries.append((sql, kwargs))
        result = FakeResult()
        result.result_rows = next(answers)
        return result

    fake.query = query
    result = query_module.run_query(s, "SELECT 1 AS n;")
    assert result.rows == [[1]]
    # The analysts' own user, and readonly=1 with the limits on every request.
    assert server["kwargs"]["username"] == "journey_analyst"
    assert server["kwargs"]["password"] == "analyst-secret"
    assert server["kwargs"]["settings"]["readonly"] == 1
    assert server["kwargs"]["settings"]["max_execution_time"] == 10
    assert server["kwargs"]["settings"]["max_result_rows"] == s.query_max_result_rows
    assert server["kwargs"]["settings"]["max_memory_usage"] == s.query_max_memory_usage
    (_, format_kwargs), (explain, _), (ran, _) = fake.queries
    assert format_kwargs["parameters"] == {"sql": "SELECT 1 AS n"}  # bound, never run
    assert explain == "EXPLAIN AST SELECT 1 AS n"
    assert ran.startswith("SELECT 1 AS n\n/* journey-analyst ")


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO journey.events VALUES (1)",
        "DROP TABLE journey.events",
        "ALTER TABLE journey.events DELETE WHERE 1",
        "SYSTEM SHUTDOWN",
        "-- SELECT\nDROP TABLE journey.events",
        "/* SELECT */ INSERT INTO journey.events VALUES (1)",
        "-- only a comment",
        "",
    ],
)
def test_other_statements_get_a_friendly_refusal(statement: str) -> None:
    with pytest.raises(NotReadOnly):
        read_only_statement(statement)


@pytest.mark.parametrize(
    "statement", ["-- why\nSELECT 1", "/* a\nb */ -- c\n  with 1 AS x SELECT x"]
)
def test_a_query_may_start_with_comments(statement: str) -> None:
    assert read_only_statement(statement + ";") == statement


# EXPLAIN AST output of chdb 4.4 (engine 26.9), as returned line by line.
AST_OUTFILE = """SelectWithUnionQuery (children 3)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    Literal 'x'
 Literal '/tmp/x'
 Identifier Native"""
AST_SCALAR_FILE = """SelectWithUnionQuery (children 2)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    Function file (children 1)
     ExpressionList (children 1)
      Literal '/etc/hostname'
 Identifier Native"""
AST_TABLE_FUNCTION = """SelectWithUnionQuery (children 2)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Asterisk
   TablesInSelectQuery (children 1)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      Function {name} (alias u) (children 1)
       ExpressionList (children 1)
        Literal 'http://127.0.0.1:1/'
 Identifier Native"""
AST_INSERT = """InsertQuery   (children 2)
 Function file (children 1)
  ExpressionList (children 2)
   Literal '/tmp/a'"""


@pytest.mark.parametrize(
    ("ast", "why"),
    [
        (AST_OUTFILE, "INTO OUTFILE"),
        (AST_SCALAR_FILE, "reads files"),
        (AST_TABLE_FUNCTION.format(name="url"), "url"),
        (AST_TABLE_FUNCTION.format(name="sqlite"), "sqlite"),
        (AST_TABLE_FUNCTION.format(name="python"), "python"),
        (AST_INSERT, "only SELECT"),
    ],
)
def test_the_engines_parse_refuses_what_readonly_lets_through(ast: str, why: str) -> None:
    with pytest.raises(NotReadOnly, match=why):
        check_ast(ast.splitlines())


def test_the_engines_parse_lets_analyst_queries_through() -> None:
    check_ast(AST_TABLE_FUNCTION.format(name="numbers").splitlines())
    check_ast(AST_SCALAR_FILE.replace("Function file", "Function count").splitlines())
