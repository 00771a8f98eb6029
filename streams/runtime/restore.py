"""Changelog records applied a poll at a time, not a message at a time: a table restored before
its partitions become active, and the standby partitions kept.

Faust's recovery (``faust/tables/recovery.py``) hands every changelog record through the
per-message path of the consumer: a ``Message``, two tasks in ``_drain_messages``
(``wait_first(callback(message), ...)``), the conductor, the table's changelog queue, then
``Recovery._slurp_changelogs``, which takes it with ``asyncio.wait_for`` (one more task), formats
two debug lines and checks every partition's remaining count, and writes its buffer of 1,000 to
RocksDB. A fresh worker restored about 9,000 records per CPU-second that way (bench/README.md,
"Session 7: recovery").

``BulkRestore`` takes the records of the changelog partitions being restored (``Recovery``'s
``active_tps`` while it is ``in_recovery``) and of the standby partitions (``standby_tps``) out
of each fetched batch (``_getmany``, before Faust turns them into messages) and applies them at
once, as ``_slurp_changelogs`` would:

* only records above the offset Faust has for the partition (``active_offsets`` or
  ``standby_offsets``: where it started reading, the offset stored in RocksDB, or the last
  record applied), in offset order;
* after the records Faust's ``_slurp_changelogs`` has buffered and not applied yet (it may have
  taken some from its queue: a standby partition that became active). Those are older, and
  Faust applies its buffer only when it is full or recovery ends: applied after ours, an older
  state of a customer overwrote the newer one (the multi-worker kill test, session 17);
* written with the store's own ``apply_changelog_batch`` (one RocksDB write batch per partition,
  then the persisted offset: what a crash later restarts from), and the offset advanced;
* when no active partition has anything left (``need_recovery()``), the end is signalled the way
  ``_slurp_changelogs`` does it (flush its buffers, ``_set_recovery_ended``,
  ``signal_recovery_end``), and Faust goes on: ``on_recovery_completed``, our rebuild, the
  streams resume.

**Standby records never wait in Faust's changelog queue.** That queue is a
``FlowControlQueue(clear_on_resume=True)``: every ``flow_control.resume()`` empties it, and
Faust's recovery calls it after the standby partitions were resumed, in
``on_recovery_completed``, after awaiting the rebalance hooks and the seek of the input
partitions. Standby records fetched meanwhile and not yet taken from the queue were dropped,
with the consumer's position already past them and ``standby_offsets`` soon past them too: the
standby's RocksDB never had them, and when the partition became its active one, nothing was left
to restore. A customer whose newest state was among them would be decided on from an older
state, or from none. (Found reading Faust's code while tracing a lost decision of the
multi-worker kill test, session 17; that loss had another cause, the changelog left out of the
assignments, see ``streams/ops/topics.py``. Instrumented runs did not catch the queue dropping
a record; the window is a few awaits long.)

Nothing else changes: records of active partitions fetched outside a recovery and every input
topic go through Faust as before. A fetch during which the generation changed or the flow
stopped (a rebalance began) is left to Faust, which drops it; the next recovery seeks every
changelog partition to its offset again. While only changelog partitions are fetched (recovery
pauses every other one), a poll may hand over ``RESTORE_POLL_RECORDS`` records instead of the
worker's ``JOURNEY_CONSUMER_MAX_POLL_RECORDS`` (a bound meant for the event-time merge's pauses
of input partitions): the limit goes back as soon as any other partition is fetched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import faust
from faust.tables import TableManager
from faust.transport.consumer import Consumer
from faust.types import TP

from streams.runtime.fetching import install_consumer_mixin

log = logging.getLogger(__name__)

# Records one poll may hand over while only changelog partitions are fetched.
RESTORE_POLL_RECORDS = 50_000


class _Change:
    """A changelog record as ``Store.apply_changelog_batch`` reads it (``event.message.*``)."""

    __slots__ = ("key", "offset", "partition", "tp", "value")

    def __init__(self, tp: TP, offset: int, key: bytes | None, value: bytes | None) -> None:
        self.tp = tp
        self.partition = tp.partition
        self.offset = offset
        self.key = key
        self.value = value

    @property
    def message(self) -> _Change:
        return self


class BulkRestore(Consumer):
    """Mixin for a concrete Faust consumer class (see ``install_bulk_restore``)."""

    restored_records: int = 0  # of partitions restored before they became active
    standby_records: int = 0  # of standby partitions, applied as they arrive
    _restore_poll_default: int | None = None

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        app: Any = self.app
        recovery = app.tables.recovery
        restoring = recovery.in_recovery and bool(recovery.active_tps)
        self._set_poll_records(
            restoring
            and bool(active_partitions)
            and all(tp in recovery.active_tps or tp in recovery.standby_tps
                    for tp in active_partitions or ())
        )  # fmt: skip
        generation = app.consumer_generation_id
        # a dict from aiokafka's fetcher, made for this call
        records: dict[TP, list[Any]] = await super()._getmany(  # type: ignore[safe-super,assignment]
            active_partitions, timeout
        )
        if not records:
            return records
        if app.consumer_generation_id != generation or not self.flow_active:
            return records  # a rebalance began: Faust drops the batch
        restoring = restoring and recovery.in_recovery
        active_tps, standby_tps = recovery.active_tps, recovery.standby_tps
        actives = [tp for tp in records if tp in active_tps] if restoring else []
        standbys = [tp for tp in records if tp in standby_tps] if standby_tps else []
        if not (actives or standbys):
            return records
        if any(recovery.buffers.values()):
            # Records Faust's ``_slurp_changelogs`` buffered are older than these (it advanced
            # the offsets past them, and these are above them): applied first, as Faust would
            # apply them, never over a newer state of the same key.
            recovery.flush_buffers()
        for tp in actives:
            self.restored_records += _apply(recovery, tp, records.pop(tp), recovery.active_offsets)
        for tp in standbys:
            self.standby_records += _apply(recovery, tp, records.pop(tp), recovery.standby_offsets)
        if actives and not recovery.need_recovery():
            log.info("restored %d changelog records in bulk", self.restored_records)
            # as _slurp_changelogs' _maybe_signal_recovery_end
            recovery.flush_buffers()
            recovery._set_recovery_ended()
            recovery.signal_recovery_end.set()
        return records

    def _set_poll_records(self, restoring: bool) -> None:
        consumer = getattr(getattr(self, "_thread", None), "_consumer", None)
        if consumer is None or not hasattr(consumer, "_max_poll_records"):
            return
        if self._restore_poll_default is None:
            self._restore_poll_default = consumer._max_poll_records
        wanted = RESTORE_POLL_RECORDS if restoring else self._restore_poll_default
        if consumer._max_poll_records != wanted:
            consumer._max_poll_records = wanted


def _apply(recovery: Any, tp: TP, batch: Iterable[Any], offsets: Any) -> int:
    """Apply the records of ``batch`` above the offset ``offsets`` has for ``tp`` (Faust's
    ``active_offsets`` or ``standby_offsets``), in offset order, with the table's own
    ``apply_changelog_batch``; returns how many."""
    seen = offsets.get(tp)
    changes = [
        _Change(tp, record.offset, record.key, record.value)
        for record in batch
        if seen is None or record.offset > seen
    ]
    if changes:
        recovery.tp_to_table[tp].apply_changelog_batch(changes)
        offsets[tp] = changes[-1].offset
    return len(changes)


def install_bulk_restore(app: faust.App) -> None:
    """Make ``app``'s consumer restore tables a poll at a time. Call before the consumer exists
    (with the commit guard and the fetch control: it wraps whichever class is there)."""
    install_consumer_mixin(app, BulkRestore, "BulkRestoring")


class PromptTableManager(TableManager):
    """Faust's table manager without the second it waits when it starts.

    ``TableManager.on_start`` (pinned faust-streaming) sleeps a second before it subscribes to
    the changelog topics and starts the recovery, room for tables an agent would still define
    while the app starts. Every table of ours is defined with its app, before the app starts,
    and one defined later fails loudly ("Too late to add tables at this point", once
    ``_update_channels`` has run). So the second was only a wait: every start of a worker or a
    loader (a restart after a crash, a deploy, a rebalance's new member) was a second later.
    ``app.conf.TableManager`` of both roles."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()
