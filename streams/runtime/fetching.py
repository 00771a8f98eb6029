"""How the worker's consumer fetches: pausing one topic-partition for the event-time merge
(ordering.py), telling the merge where each topic-partition ends as of which fetch
(``FetchedEnds``), and pacing the fetches while records flow (``FetchPacing``, at the end).

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
from aiokafka.protocol.fetch import FetchRequest
from faust.transport.consumer import Consumer
from faust.types import TP


class FetchedEnds:
    """Where each topic-partition ends (its highwater), as the fetch responses said, and whether
    the latest fetch response from its leader said it.

    aiokafka's own highwater of a topic-partition (its partition state's) can be older than
    records the consumer hands over from another: its fetcher leaves a topic-partition out of
    its fetches while records fetched for it wait to be taken, and fetches the others meanwhile.
    Measured (the worker hand-over test, seed 4811, 1 run in 2): a poll took page_views p0's
    last fetched record with an order fetched by a later response that left page_views out; its
    highwater, 61, was older than the page views appended since (61-70, the same customer's,
    before the order). The merge took page_views for caught up and handled the order first, and
    the customer's browse-abandonment decisions came out otherwise than in order.

    So an end counts only while the latest fetch response from the topic-partition's leader
    carried it (``known_ends``; ``ConsumerOffsets.taken``): a topic-partition left out of it
    (records of it wait in the fetcher, or an error) has no known end until a response carries
    it again, and a failed fetch makes every end of that broker unknown. Live, every fetch
    carries every partition its broker leads, so nothing waits for it. Across brokers the ends
    are each broker's latest, as before: a record appended to one broker while the poll took a
    later one from another is missed only within a fetch's round trip and gather (10 ms).

    Written by the consumer's thread as responses arrive, read on the event loop
    (``known_ends`` copies the dicts first: a copy is atomic under the interpreter lock)."""

    __slots__ = ("ends", "latest", "responses")

    def __init__(self) -> None:
        self.responses = 0  # numbers the fetch responses (and failed fetches) as they come
        # (topic, partition) -> (highwater, number of the response that said it, its broker)
        self.ends: dict[tuple[str, int], tuple[int, int, int]] = {}
        # broker (node id) -> the number of its latest fetch response, or failed fetch
        self.latest: dict[int, int] = {}

    def record(self, node_id: int, response: Any) -> None:
        """A fetch response from ``node_id``: the highwater of each topic-partition it
        answered without error."""
        self.responses += 1
        number = self.responses
        ends = self.ends
        for topic, partitions in response.topics:
            for partition, error_code, highwater, *_ in partitions:
                if error_code == 0:
                    ends[(topic, partition)] = (highwater, number, node_id)
        self.latest[node_id] = number  # last: a reader in between sees these ends as older

    def failed(self, node_id: int) -> None:
        """A fetch from ``node_id`` failed: none of its ends is known to be current."""
        self.responses += 1
        self.latest[node_id] = self.responses

    def known_ends(self, tps: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        """The end of each of ``tps`` where the latest fetch response from its broker said it;
        None where it did not (left out, an error, a failed fetch) or none ever did."""
        ends = self.ends.copy()  # first: a response recorded in between makes them older
        latest = self.latest.copy()
        known: dict[tuple[str, int], int | None] = {}
        for tp in tps:
            end = ends.get(tp)
            known[tp] = end[0] if end is not None and latest.get(end[2]) == end[1] else None
        return known


def watch_fetches(consumer: Any, fetched: FetchedEnds) -> None:
    """Record every fetch response of an aiokafka consumer in ``fetched`` (its client's
    ``send``, which its fetcher awaits for each fetch; other requests pass untouched). The
    response's layout is aiokafka's, pinned (``commit_guard.PINNED_AIOKAFKA_VERSION``) and
    checked against the real broker (tests/integration/test_fetched_ends_broker.py)."""
    client = consumer._client
    send = client.send

    async def send_watched(node_id: int, request: Any, **kwargs: Any) -> Any:
        if not isinstance(request, FetchRequest):
            return await send(node_id, request, **kwargs)
        try:
            response = await send(node_id, request, **kwargs)
        except BaseException:
            fetched.failed(node_id)
            raise
        fetched.record(node_id, response)
        return response

    client.send = send_watched


class FetchControl(Consumer):
    """Mixin for a concrete Faust consumer class (see ``install_fetch_control``)."""

    _merge_paused: set[TP]
    # Called each time the consumer has taken records from aiokafka's fetcher (a poll), on the
    # event loop, before Faust hands any of them over (``ConsumerOffsets.taken``).
    after_poll: list[Callable[[], object]]
    # What the fetch responses said (``FetchedEnds``), for the merge.
    fetched_ends: FetchedEnds

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._merge_paused = set()
        self.after_poll = []
        self.fetched_ends = FetchedEnds()
        super().__init__(*args, **kwargs)

    def _new_consumer_thread(self) -> Any:
        thread = super()._new_consumer_thread()  # type: ignore[misc]
        create = thread._create_worker_consumer
        fetched = self.fetched_ends

        def create_worker_consumer(transport: Any) -> Any:
            consumer = create(transport)
            watch_fetches(consumer, fetched)
            return consumer

        thread._create_worker_consumer = create_worker_consumer
        return thread

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
