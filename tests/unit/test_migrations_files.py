from __future__ import annotations

from pathlib import Path

import pytest

from sinks.clickhouse.migrations import Migration, MigrationError, discover


def test_migration_files_are_numbered_in_order() -> None:
    migrations = discover()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))


def test_statements_are_split_and_placeholders_filled() -> None:
    migration = Migration(
        1,
        "x",
        "-- a comment; not a statement\nCREATE TABLE {db}.a (x UInt8);\nSELECT {dedup_window};\n",
    )
    assert migration.statements("journey", 100) == [
        "CREATE TABLE journey.a (x UInt8)",
        "SELECT 100",
    ]


def test_badly_named_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "1_events.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match=r"NNN_name\.sql"):
        discover(tmp_path)
