"""How the worker's consumer fetches: pausing one topic-partition for the event-time merge
(ordering.py), and pacing the fetches while records flow (``FetchPacing``, at the end).

The merge pauses a topic-partition that holds its share of its buffer, so that in a catch-up
the topic behind fetches its next batch while the others wait (``pause_fetching``,
``resume_fetching``, on Faust's consumer class: ``install_fetch_control``, next to the commit
guard). It is Faust's own mechanism for a full stream buffer (``on_buffer_full``): the
partition leaves the set Faust asks aiokafka for, so what aiokafka already fetched for it stays
there and is handed over at once on resume (no refetch), and Faust still hands over the rest of
a batch it is in the middle of (the partition is in ``_buffered_partitions``: nothing is
skipped).

* Faust lifts its own buffer pauses when its queue drains (``on_buffer_drop``); that does not
  lift one of the merge's.
* Faust's pauses around rebalances and recovery (``pause_partitions``) win over a resume.
* A new assignment ends every pause of the merge (``_set_active_tps``), as the merge forgets
  them when a rebalance begins; ``reconcile`` resumes any the merge no longer holds.
* Not aiokafka's ``pause``: it drops the fetched batch, and the refetch can wait behind a fetch
  in flight for up to Faust's long poll (1.5 s), past the merge's idle wait: the backlog test
  gave up order 2 runs in 4 that way.

Everything here runs on the worker's event loop (Faust's active set is read by the consumer
thread when it fetches, as it is when Faust changes it itself).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

import faust
from faust.transport.consumer import Consumer
from faust.types import TP


class FetchControl(Consumer):
    """Mixin for a concrete Faust consumer class (see ``with_fetch_control``)."""

    _merge_paused: set[TP]
    # Called each time the consumer has taken records from aiokafka's fetcher (a poll), on the
    # event loop, before Faust hands any of them over (``ConsumerOffsets.taken``).
    after_poll: list[Callable[[], object]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._merge_paused = set()
        self.after_poll = []
        super().__init__(*args, **kwargs)

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        records = await super()._getmany(active_partitions, timeout)  # type: ignore[safe-super]
        for listener in self.after_poll:
            listener()
        return records

    @property
    def merge_paused(self) -> frozenset[TP]:
        return frozenset(self._merge_paused)

    def pause_fetching(self, tp: TP) -> None:
        self._merge_paused.add(tp)
        self._get_active_partitions().discard(tp)
        self._buffered_partitions.add(tp)  # Faust still hands over a batch it is in

    def resume_fetching(self, tp: TP) -> None:
        if tp not in self._merge_paused:
            return
        self._merge_paused.discard(tp)
        self._buffered_partitions.discard(tp)
        if tp in self._paused_partitions:  # paused by Faust itself (a rebalance, recovery)
            return
        if tp in self.assignment():
            self._get_active_partitions().add(tp)

    def reconcile(self, wanted: Iterable[TP]) -> None:
        """Resume what the merge no longer holds paused (a pause it forgot at a rebalance)."""
        keep = set(wanted)
        for tp in [tp for tp in self._merge_paused if tp not in keep]:
            self.resume_fetching(tp)

    def on_buffer_drop(self, tp: TP) -> None:
        if tp in self._merge_paused:
            return  # the merge's pause: lifted by resume_fetching
        super().on_buffer_drop(tp)

    def _set_active_tps(self, tps: set[TP]) -> set[TP]:
        self._merge_paused.clear()  # a new assignment: fetching starts afresh
        return super()._set_active_tps(tps)


def install_consumer_mixin(app: faust.App, mixin: type, prefix: str) -> type:
    """Put ``mixin`` in front of ``app``'s consumer class (once). Call before the consumer
    exists: Faust creates it from ``app.transport.Consumer``."""
    if getattr(app, "_consumer", None) is not None:
        raise RuntimeError(f"{mixin.__name__} must be installed before the app's consumer exists")
    transport: Any = app.transport
    base = transport.Consumer
    if not issubclass(base, mixin):
        base = type(f"{prefix}{base.__name__}", (mixin, base), {})
    transport.Consumer = base
    return cast(type, base)


def install_fetch_control(app: faust.App) -> None:
    """Give ``app``'s consumer the merge's pauses. Call before the consumer exists, after
    ``install_commit_guard`` (it wraps that class)."""
    install_consumer_mixin(app, FetchControl, "FetchControlled")


# What the broker gathers for a fetch while records keep coming, at most (a fetch returns at
# once when it has this much): more than any moderate rate brings in ``gather`` milliseconds.
GATHER_BYTES = 1 << 20


class FetchPacing(Consumer):
    """Mixin for a concrete Faust consumer class (see ``install_fetch_pacing``).

    aiokafka asks the broker for records with ``fetch_min_bytes=1``: a fetch returns as soon as
    one record is there. At a moderate rate that is a fetch round trip for a handful of records
    each (1,000 orders/s over 12 partitions, measured in session 12: the consumer's thread spent
    a fifth of its time writing fetch requests, and the worker used 0.76 cores). Paced, the
    fetch after one that brought records asks the broker to gather up to ``GATHER_BYTES`` for at
    most ``gather_ms``, and the fetch after one that brought nothing is a long poll again
    (``long_poll_ms``, returning at the first record): an idle worker waits as before and the
    first record after a pause is fetched at once; a busy one makes at most one fetch per
    ``gather_ms`` and partition leader, with more records each."""

    #: aiokafka's fetch long poll (ms) when the last fetch brought nothing; None: Faust's 1500.
    long_poll_ms: int | None = None
    #: How long the broker may gather records after a fetch that brought some (ms); 0: no pacing.
    gather_ms: int = 0

    def _new_consumer_thread(self) -> Any:
        thread = super()._new_consumer_thread()  # type: ignore[misc]
        create = thread._create_worker_consumer
        long_poll_ms, gather_ms = self.long_poll_ms, self.gather_ms

        def create_worker_consumer(transport: Any) -> Any:
            consumer = create(transport)
            if long_poll_ms is not None:
                consumer._fetch_max_wait_ms = long_poll_ms  # read by its Fetcher, made at start()
            if gather_ms > 0:
                pace_fetches(consumer, gather_ms)
            return consumer

        thread._create_worker_consumer = create_worker_consumer
        return thread


def pace_fetches(consumer: Any, gather_ms: int) -> None:
    """Pace the fetches of an aiokafka consumer (``FetchPacing``), from its ``start`` on: each
    fetch response sets the next request's ``min_bytes`` and ``max_wait_ms``, which aiokafka's
    fetcher reads from itself as it builds each request."""
    start = consumer.start

    async def start_paced() -> None:
        await start()
        fetcher = consumer._fetcher
        long_poll = (1, fetcher._fetch_max_wait_ms)
        gather = (GATHER_BYTES, gather_ms)
        fetch = fetcher._proc_fetch_request

        async def paced(assignment: Any, node_id: int, request: Any) -> bool:
            found: bool = await fetch(assignment, node_id, request)
            fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = gather if found else long_poll
            return found

        fetcher._proc_fetch_request = paced

    consumer.start = start_paced


def install_fetch_pacing(app: faust.App, long_poll_ms: int | None, gather_ms: int) -> None:
    """Pace ``app``'s consumer's fetches (``FetchPacing``). Call before the consumer exists."""
    base = install_consumer_mixin(app, FetchPacing, "Paced")
    transport: Any = app.transport
    transport.Consumer = type(
        base.__name__, (base,), {"long_poll_ms": long_poll_ms, "gather_ms": gather_ms}
    )
