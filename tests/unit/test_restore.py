"""Tables restored a poll at a time (streams/runtime/restore.py), on Faust's own Recovery."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams.runtime.app import create_pipeline, unrestored
from streams.runtime.loader import create_loader
from streams.runtime.restore import (
    RESTORE_POLL_RECORDS,
    BulkRestore,
    PromptTableManager,
    install_bulk_restore,
)
from streams.settings import Settings
from tests.unit.faust_apps import app_with

C0, C1 = TP("app-journeys-changelog", 0), TP("app-journeys-changelog", 1)
INPUT = TP("shop.orders", 0)


class FakeTable:
    def __init__(self) -> None:
        self.written: list[tuple[int, int, bytes | None, bytes | None]] = []

    def apply_changelog_batch(self, batch: Any) -> None:
        for event in batch:
            m = event.message
            self.written.append((m.partition, m.offset, m.key, m.value))


class FakeThread:
    """Stands for Faust's consumer thread: hands over the queued fetches, remembers the limit."""

    def __init__(self, *fetches: dict[TP, list[Any]]) -> None:
        self.fetches = list(fetches)
        self._consumer = SimpleNamespace(_max_poll_records=500)
        self.limits: list[int] = []

    async def getmany(self, active: Any, timeout: float) -> dict[TP, list[Any]]:
        self.limits.append(self._consumer._max_poll_records)
        return self.fetches.pop(0)


def record(offset: int, key: bytes = b"k", value: bytes | None = b"v") -> Any:
    return SimpleNamespace(offset=offset, key=key, value=value)


def restoring(thread: FakeThread) -> tuple[Any, Any, FakeTable]:
    app = app_with("test-restore", install_bulk_restore)
    consumer: Any = app.consumer  # created, not started: no broker needed
    assert isinstance(consumer, BulkRestore)
    consumer._thread = thread
    consumer.flow_active = True
    table = FakeTable()
    recovery: Any = app.tables.recovery
    recovery.active_tps = {C0, C1}
    recovery.tp_to_table = {C0: table, C1: table}
    recovery.active_offsets.update({C0: -1, C1: 4})  # C1: offsets up to 4 already in RocksDB
    recovery.active_highwaters.update({C0: 2, C1: 6})  # Faust keeps highwater - 1
    recovery._set_recovery_started()
    return consumer, recovery, table


def test_changelog_records_are_applied_in_bulk_and_the_end_of_recovery_is_signalled() -> None:
    thread = FakeThread(
        {C0: [record(0), record(1, value=None)], C1: [record(3), record(4), record(5)]},
        {C0: [record(2, b"x")], C1: [record(6)]},
    )
    consumer, recovery, table = restoring(thread)
    left = asyncio.run(consumer._getmany({C0, C1}, 1.0))
    assert left == {}  # nothing for Faust's per-message path
    # Records at or below the offset Faust starts from are skipped (as _slurp_changelogs does).
    assert table.written == [(0, 0, b"k", b"v"), (0, 1, b"k", None), (1, 5, b"k", b"v")]
    assert recovery.active_offsets == {C0: 1, C1: 5}
    assert recovery.in_recovery and not recovery.signal_recovery_end.is_set()
    asyncio.run(consumer._getmany({C0, C1}, 1.0))
    assert recovery.active_offsets == {C0: 2, C1: 6}
    assert not recovery.in_recovery and recovery.signal_recovery_end.is_set()
    assert thread.limits == [RESTORE_POLL_RECORDS, RESTORE_POLL_RECORDS]
    assert consumer.restored_records == 5


def test_records_faust_buffered_are_applied_before_the_newer_ones_of_a_bulk_restore() -> None:
    """Faust's ``_slurp_changelogs`` may have buffered records of a partition that is being
    restored (fetched before the bulk path took over: a standby partition that became active,
    whose fetched records it took from its queue after the rebalance) and advanced the offset
    it has for the partition; it applies its buffer only when it is full or recovery ends.
    Those records are older than any the bulk path applies, so they are applied first: applied
    after, an older state of a customer overwrote the newer one the bulk path had written, and
    the worker decided on a state that had lost events (the multi-worker kill test, session 16:
    a review request never scheduled, as its delivery was lost)."""
    thread = FakeThread({C1: [record(5, value=b"old"), record(6, value=b"new")]})
    consumer, recovery, table = restoring(thread)
    buffered = SimpleNamespace(
        message=SimpleNamespace(tp=C1, partition=1, offset=5, key=b"k", value=b"old")
    )
    recovery.buffers[table].append(buffered)  # as _slurp_changelogs leaves it
    recovery.active_offsets[C1] = 5
    recovery.active_offsets[C0] = 2  # C0: nothing left to restore
    asyncio.run(consumer._getmany({C1}, 1.0))
    assert table.written == [(1, 5, b"k", b"old"), (1, 6, b"k", b"new")]
    assert not recovery.in_recovery and recovery.signal_recovery_end.is_set()


def test_other_partitions_and_fetches_outside_a_recovery_go_to_faust_with_the_usual_limit() -> None:
    standby = TP("app-journeys-changelog", 7)
    thread = FakeThread(
        {INPUT: [record(0)], C0: [record(0)]},
        {C0: [record(1)], INPUT: [record(1)]},
    )
    consumer, recovery, table = restoring(thread)
    recovery.standby_tps = {standby}
    left = asyncio.run(consumer._getmany({C0, INPUT}, 1.0))
    assert list(left) == [INPUT] and table.written == [(0, 0, b"k", b"v")]
    assert thread.limits == [500]  # an input partition is fetched: the merge's bound holds
    recovery._set_recovery_ended()
    left = asyncio.run(consumer._getmany({C0, standby}, 1.0))
    assert set(left) == {C0, INPUT} and len(table.written) == 1
    assert thread.limits == [500, 500]


def test_standby_records_are_applied_as_fetched_not_left_in_the_queue_a_resume_empties() -> None:
    """Faust's changelog queue is emptied by every ``flow_control.resume()``, and its recovery
    resumes the flow after the standby partitions were resumed (``on_recovery_completed``):
    standby records fetched meanwhile were lost to the standby's RocksDB for good (its
    position and offsets went past them). They are applied from the fetched batch instead."""
    standby = TP("app-journeys-changelog", 3)
    thread = FakeThread(
        {standby: [record(1), record(3, b"a"), record(4, b"b")], INPUT: [record(0)]},
        {standby: [record(5, b"a", None)]},
    )
    consumer, recovery, table = restoring(thread)
    recovery._set_recovery_ended()
    recovery.active_tps = set()
    recovery.standby_tps = {standby}
    recovery.tp_to_table[standby] = table
    recovery.standby_offsets[standby] = 2  # applied up to 2 (stored in RocksDB)
    left = asyncio.run(consumer._getmany({standby, INPUT}, 1.0))
    assert list(left) == [INPUT]
    consumer.app.flow_control.resume()  # empties Faust's queue: nothing of ours was there
    asyncio.run(consumer._getmany({standby, INPUT}, 1.0))
    assert table.written == [(3, 3, b"a", b"v"), (3, 4, b"b", b"v"), (3, 5, b"a", None)]
    assert recovery.standby_offsets[standby] == 5
    assert consumer.standby_records == 3 and consumer.restored_records == 0
    assert thread.limits == [500, 500]  # not a restore: the usual bound


def test_a_batch_fetched_across_a_rebalance_is_left_to_faust() -> None:
    standby = TP("app-journeys-changelog", 3)
    thread = FakeThread({C0: [record(0)]})
    consumer, recovery, table = restoring(thread)
    recovery.standby_tps = {standby}
    recovery.tp_to_table[standby] = table

    async def rebalance_meanwhile(active: Any, timeout: float) -> dict[TP, list[Any]]:
        consumer.app.consumer_generation_id += 1
        return {C0: [record(0)], standby: [record(0)]}

    thread.getmany = rebalance_meanwhile  # type: ignore[method-assign]
    left = asyncio.run(consumer._getmany({C0, standby}, 1.0))
    assert set(left) == {C0, standby} and table.written == []


@pytest.mark.parametrize("role", ["worker", "loader"])
async def test_tables_start_without_the_second_faust_waits(
    role: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path, clickhouse_url=f"chdb://{tmp_path / 'chdb'}"
    )
    app = create_pipeline(settings).app if role == "worker" else create_loader(settings).app
    tables: Any = app.tables
    assert isinstance(tables, PromptTableManager)
    started: list[str] = []

    async def sleep(seconds: float) -> None:
        raise AssertionError(f"the table manager slept {seconds}s as it started")

    async def step(name: str) -> None:
        started.append(name)

    monkeypatch.setattr(tables, "sleep", sleep)
    monkeypatch.setattr(tables, "_update_channels", partial(step, "channels"))
    monkeypatch.setattr(tables.recovery, "start", partial(step, "recovery"))
    await tables.on_start()
    assert started == ["channels", "recovery"]


def test_the_changelog_topics_create_makes_is_the_one_fausts_table_uses(tmp_path: Path) -> None:
    """``journey topics create`` makes ``Settings.changelog_topic()`` before any worker starts:
    it must be the topic the worker's table writes, with the config the table asks for."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path, clickhouse_url=f"chdb://{tmp_path / 'chdb'}",
        app_id="shop-7", changelog_segment_ms="5s",
    )  # fmt: skip
    app: Any = create_pipeline(settings).app
    (table,) = app.tables.values()
    topic = table.changelog_topic
    assert topic.get_topic_name() == settings.changelog_topic() == "shop-7-journeys-changelog"
    assert settings.changelog_config().items() <= topic.config.items()
    assert settings.changelog_config()["segment.ms"] == "5000"


def test_owned_partitions_without_their_changelog_partition_are_reported() -> None:
    """A leader whose metadata lacked the changelog left it out of the assignment: the worker
    owns input partitions whose state Faust neither restored nor keeps. ``unrestored`` names
    them (the worker logs an error at every such rebalance)."""
    changelog = "app-journeys-changelog"
    actives = {TP(changelog, 0), TP(changelog, 2), TP("shop.orders", 1), TP("other-changelog", 1)}
    assert unrestored({0, 1, 2}, actives, changelog) == {1}
    assert unrestored({0, 2}, actives, changelog) == set()
    assert unrestored({0, 1}, set(), changelog) == {0, 1}
