"""The worker's control over what its consumer fetches, for the event-time merge (ordering.py).

Two things, both on Faust's consumer class (``install_fetch_control``, next to the commit guard):

* **Pausing one topic-partition** (``pause_fetching``/``resume_fetching``): the merge pauses a
  topic-partition that holds its share of the buffer, so that in a catch-up the topic behind
  fetches its next batch while the others wait. It is Faust's own mechanism for a full stream
  buffer (``on_buffer_full``): the partition leaves the set Faust asks aiokafka for, so what
  aiokafka already fetched for it stays there and is handed over at once on resume (no refetch),
  and Faust still hands over the rest of a batch it is in the middle of (the partition is in
  ``_buffered_partitions``: nothing is skipped). Faust lifts its own buffer pauses when its queue
  drains (``on_buffer_drop``); that does not lift one of the merge's. Faust's pauses around
  rebalances and recovery (``pause_partitions``) win over a resume, and a new assignment ends
  every pause of the merge (``_set_active_tps``), as the merge forgets them when a rebalance
  begins. Not aiokafka's ``pause``: it drops the fetched batch, and the refetch waited behind
  Faust's long poll (measured: the backlog test gave up order after the idle wait ran out).
* **A short long-poll** (``fetch_max_wait_ms``): Faust creates aiokafka's consumer with
  ``fetch_max_wait_ms=1500``. A fetch for partitions at their end waits that long on the broker,
  and a partition whose batch was used up meanwhile is fetched again only after it returns. In
  a catch-up that partition is the one the merge waits for, and the merge gives up waiting after
  ``JOURNEY_ORDERING_WAIT`` (200 ms) of idle input. So the worker's long poll is shorter than
  that wait (half of it, at most 500 ms, at least 10 ms). Live, a fetch returns as soon as any
  of its partitions has a record, so latency does not change; an idle worker polls more often.

Everything here runs on the worker's event loop (Faust's active set is read by the consumer
thread when it fetches, as it is when Faust changes it itself).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust
from faust.transport.consumer import Consumer
from faust.types import TP


class FetchControl(Consumer):
    """Mixin for a concrete Faust consumer class (see ``with_fetch_control``)."""

    fetch_max_wait_ms: int | None = None  # set by install_fetch_control
    _merge_paused: set[TP]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._merge_paused = set()
        super().__init__(*args, **kwargs)

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

    def _new_consumer_thread(self) -> Any:
        thread = super()._new_consumer_thread()  # type: ignore[misc]
        wait_ms = self.fetch_max_wait_ms
        create = getattr(thread, "_create_worker_consumer", None)
        if wait_ms is None or create is None:
            return thread

        def create_worker_consumer(transport: Any) -> Any:
            consumer = create(transport)
            consumer._fetch_max_wait_ms = wait_ms  # read when aiokafka starts its fetcher
            return consumer

        thread._create_worker_consumer = create_worker_consumer
        return thread


def fetch_wait_ms(ordering_wait_ms: int) -> int:
    return max(10, min(500, ordering_wait_ms // 2))


def install_fetch_control(app: faust.App, *, ordering_wait_ms: int) -> None:
    """Give ``app``'s consumer the merge's pauses and a long poll shorter than the merge's wait.
    Call before the consumer exists, after ``install_commit_guard`` (it wraps that class)."""
    if getattr(app, "_consumer", None) is not None:
        raise RuntimeError("install_fetch_control must run before the app's consumer is created")
    transport: Any = app.transport
    base = transport.Consumer
    if not issubclass(base, FetchControl):
        base = type(f"FetchControlled{base.__name__}", (FetchControl, base), {})
    base.fetch_max_wait_ms = fetch_wait_ms(ordering_wait_ms)
    transport.Consumer = base
