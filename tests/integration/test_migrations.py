"""The migration runner against the real engine: applies each file once and records it."""

from __future__ import annotations

from sinks.clickhouse.migrations import discover
from tests.integration.conftest import Env


def test_migrate_applies_once_and_records_what_it_applied(env: Env) -> None:
    migrations = discover()
    first = env.journey("migrate").stdout
    for migration in migrations:
        assert f"applied {migration.version:03d}_{migration.name}" in first
    second = env.journey("migrate").stdout
    assert "applied" not in second.replace("up to date", "")
    recorded = env.sql(
        "SELECT version, name, checksum FROM journey.schema_migrations ORDER BY version"
    )
    assert [(r["version"], r["name"], r["checksum"]) for r in recorded] == [
        (m.version, m.name, m.checksum) for m in migrations
    ]
    engines = env.sql(
        "SELECT name, engine, engine_full FROM system.tables WHERE database = 'journey' "
        "AND name IN ('events', 'deadletters')"
    )
    assert len(engines) == 2
    for table in engines:
        assert "non_replicated_deduplication_window" in table["engine_full"]


def test_sql_refuses_writes(env: Env) -> None:
    env.journey("migrate")
    for statement in (
        "INSERT INTO journey.events (event_id) VALUES ('x')",
        "DROP TABLE journey.events",
        "SELECT 1; DROP TABLE journey.events",
        "ALTER TABLE journey.events DELETE WHERE 1",
    ):
        done = env.journey("sql", statement, check=False)
        assert done.returncode != 0, statement
        assert "read-only" in done.stderr
    assert env.sql("SELECT count() AS n FROM journey.events") == [{"n": 0}]


def test_every_table_and_view_column_says_what_it_means(env: Env) -> None:
    """BI tools show system.columns.comment: none may be empty, views included."""
    env.journey("migrate")
    missing = env.sql(
        "SELECT table, name FROM system.columns WHERE database = 'journey' AND comment = '' "
        "ORDER BY table, name"
    )
    assert missing == [], missing
    views = {
        r["name"] for r in env.sql("SELECT name FROM system.tables WHERE database = 'journey'")
    }
    assert {"buyers", "order_attribution", "message_engagement", "engagement_daily",
            "trigger_engagement", "customer_value_cohorts", "funnel_totals",
            "stage_transitions_daily"} <= views  # fmt: skip
