"""Applies ``migrations/NNN_name.sql`` in order and records each in ``schema_migrations``.

A migration file may hold several statements separated by ``;`` at the end of a line. These
placeholders are filled in: ``{db}`` (the database), ``{dedup_window}`` (how many recent insert
tokens each table remembers for idempotent retries) and ``{attribution_window_ms}``. A numbered
migration that was applied is never applied again; if its file changed since, the runner
refuses to go on rather than leave the schema and the files disagreeing. ``R_name.sql`` files
are repeatable: views, re-created (CREATE OR REPLACE) after the numbered ones on every run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from sinks.clickhouse.client import ClickHouse

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_REPEATABLE = re.compile(r"^R_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(
        self, database: str, dedup_window: int, attribution_window_ms: int = 0
    ) -> list[str]:
        text = (
            self.sql.replace("{db}", database)
            .replace("{dedup_window}", str(dedup_window))
            .replace("{attribution_window_ms}", str(attribution_window_ms))
        )
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        return [s.strip() for s in re.split(r";\s*$", body, flags=re.M) if s.strip()]


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        if _REPEATABLE.match(path.name):
            continue
        match = _FILE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a number in {directory}")
    return found


def repeatable(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    return [
        Migration(0, match[1], path.read_text())
        for path in sorted(directory.glob("R_*.sql"))
        if (match := _REPEATABLE.match(path.name))
    ]


def apply_migrations(clickhouse: ClickHouse, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply what is missing; return the migrations applied now (empty when up to date)."""
    db = clickhouse.database
    client = clickhouse.client
    settings = clickhouse.settings
    clickhouse.call(client.command, f"CREATE DATABASE IF NOT EXISTS {db}")
    clickhouse.call(
        client.command,
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
        "(version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') "
        "DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version",
    )
    applied = {
        int(version): checksum
        for version, checksum in clickhouse.query_rows(
            f"SELECT version, checksum FROM {db}.schema_migrations"
        )
    }
    done: list[Migration] = []
    for migration in discover(directory):
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:03d}_{migration.name} changed after it was "
                    "applied; add a new migration instead of editing an applied one"
                )
            continue
        for statement in migration.statements(
            db, settings.sink_dedup_window, settings.journey.attribution_window
        ):
            clickhouse.call(client.command, statement)
        clickhouse.call(
            client.insert,
            f"{db}.schema_migrations",
            [(migration.version, migration.name, migration.checksum)],
            column_names=["version", "name", "checksum"],
        )
        done.append(migration)
    for views in repeatable(directory):
        for statement in views.statements(
            db, settings.sink_dedup_window, settings.journey.attribution_window
        ):
            clickhouse.call(client.command, statement)
    return done
