"""Where a consumed message is acknowledged, in both roles: here, and nowhere else.

A message is acknowledged (so Faust may commit its offset) once what it caused is durable. Its
agent hands the message's ``ack`` to ``Acks.after`` (the worker: the event to ``Acks.after_event``,
acknowledged in bulk), and every record it caused on Kafka to ``Acks.wait_for`` (the producer's
delivery future), in that order. A background loop, every
``interval`` or as soon as it is woken (``max_pending`` deliveries wait, or ``wake()``), runs the
``before_flush`` hooks (what was coalesced or buffered until now goes out), awaits the deliveries
registered so far, runs the ``Acks.durable`` callbacks registered before them (bookkeeping of
what is now known durable), then the ``after_deliveries`` hooks (what may be written only once
those records are durable) and awaits the deliveries they registered, and then runs the
callbacks registered before them, in order. A crash before that redelivers the message.

* **Worker** (``app.py``): the records are triggers, decisions, canonical events, dead letters
  and re-routed events (``outputs.py``); the hooks write the engine's states behind
  (``engine.py``, an ``after_deliveries`` hook: a state is written once the records it caused are
  durable, with their outbox entries already dropped; its outbox re-sends what a recovered state
  had decided) and send the coalesced snapshots (``outputs.py``, a ``before_flush`` hook).
* **Loader** (``loader.py``): the hook is the ClickHouse sink's ``flush()``
  (``sinks/clickhouse/sink.py``), which stores the rows buffered so far; the records are dead
  letters (a fact that does not decode, a row ClickHouse refused). A fact is acknowledged after
  its row is stored and, for a refused row, after its dead letter is on the broker.

A hook that fails (ClickHouse or a state write) acknowledges nothing: its callbacks wait for a
later flush that succeeds, retried every ``interval`` (``failing`` meanwhile, which ``/ready``
reports). A delivery that fails (the broker refused the record for good) stops the process:
acknowledging the messages behind it would lose the record; not acknowledging them would stall
their partitions silently. The restarted process sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from streams.runtime.tasks import cancel_and_wait

log = logging.getLogger(__name__)

STOP_SECONDS = 10.0


def _each_ack(events: list[Any]) -> None:
    for event in events:
        event.ack()


class Acks:
    def __init__(
        self,
        *,
        interval: float = 0.05,
        max_pending: int = 10_000,
        on_fatal: Callable[[BaseException], object] | None = None,
    ) -> None:
        self.interval = interval
        self.max_pending = max_pending
        self.on_fatal = on_fatal
        # Run by every flush as it takes the callbacks, in the same step (nothing is handled in
        # between): the worker's engine takes its dirty states then, and the flush writes those
        # (the states of exactly the messages it acknowledges, or of more), not the ones made
        # while it waits for the broker.
        self.on_take: list[Callable[[], object]] = []
        # Run first by every flush: what was coalesced until now goes out (the worker: the
        # outputs' snapshots; the loader: the sink's rows), before the callbacks that depend on
        # it.
        self.before_flush: list[Callable[[], Awaitable[object]]] = []
        # Run by every flush once the deliveries it took are acknowledged, after the ``durable``
        # callbacks and before the others (the worker: the engine's states, written behind once
        # what they caused is durable, so without those outbox entries).
        self.after_deliveries: list[Callable[[], Awaitable[object]]] = []
        # Deliveries to await, each once (a dict: ordered, and a batch's records share one).
        self._pending: dict[Awaitable[Any], None] = {}
        self._records = 0  # records registered since the last flush took them
        self._callbacks: list[Callable[[], object]] = []
        # Consumed events to acknowledge (``after_event``), and how, all at once: the consumer's
        # ``ack_events`` (``commit_guard.py``), or each ``event.ack()``.
        self._events: list[Any] = []
        self.ack_events: Callable[[list[Any]], object] = _each_ack
        self._durable: list[Callable[[], object]] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._stopping = False
        self.acked = 0  # callbacks run (messages acknowledged, outbox entries made durable)

    def wait_for(self, delivery: Awaitable[Any]) -> None:
        """A record on its way: what is registered after this waits for its acknowledgement.
        Records of one batch share its delivery (``batching.py``): it is kept once."""
        self._records += 1
        self._pending[delivery] = None
        if self._records >= self.max_pending:
            self._wake.set()
            self._room.clear()

    def after(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` once every record registered so far is acknowledged by the broker
        (and the hooks of a flush that took it succeeded)."""
        self._callbacks.append(callback)

    def after_event(self, event: Any) -> None:
        """``after(event.ack)`` for a consumed Faust event, acknowledged with the others of the
        same flush in one ``ack_events`` call, after the callbacks registered with it."""
        self._events.append(event)

    def durable(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` as soon as every record registered so far is acknowledged by the
        broker: before the ``after_deliveries`` hooks of that flush, and even if they fail (it
        states a fact about the broker, it acknowledges no message)."""
        self._durable.append(callback)

    def wake(self) -> None:
        """Flush now rather than at the next interval (the loader's sink has a full batch)."""
        self._wake.set()

    @property
    def failing(self) -> bool:
        """The last flush failed (a hook or a delivery): nothing is acknowledged."""
        return self._failing

    @property
    def pending(self) -> int:
        """Records registered and not yet taken by a flush."""
        return self._records

    async def wait_for_room(self) -> None:
        """Backpressure: wait while ``max_pending`` deliveries are outstanding."""
        if not self._room.is_set():
            self._wake.set()
            await self._room.wait()

    async def flush(self) -> int:
        """Await the deliveries registered so far, then run the callbacks registered before them.
        Returns the callbacks run and events acknowledged."""
        async with self._lock:
            # The callbacks of the messages handled so far, taken before the hooks run: their
            # states and snapshots are queued already, so the hooks send them in this flush.
            callbacks, self._callbacks = self._callbacks, []
            events, self._events = self._events, []
            durable, self._durable = self._durable, []
            for take in self.on_take:
                take()
            try:
                for hook in self.before_flush:
                    await hook()
            except BaseException:
                self._callbacks[:0] = callbacks  # acknowledged by a later flush that succeeds
                self._events[:0] = events
                self._durable[:0] = durable
                raise
            await self._deliveries()
            for callback in durable:
                callback()
            if durable and self.after_deliveries:
                # Let the loop turn between the bookkeeping and the hooks: each holds it for a
                # while (a worker at 2,300 orders/s: 7,000 callbacks in 20 ms, then its states
                # written in 40-60 ms, once a second); messages that arrive meanwhile wait for
                # the longer of the two, not for both. (The states of messages handled in
                # between are the next flush's: this one writes what it took, ``on_take``.)
                await asyncio.sleep(0)
            try:
                for hook in self.after_deliveries:
                    await hook()
            except BaseException:
                self._callbacks[:0] = callbacks
                self._events[:0] = events
                raise
            if self.after_deliveries:
                # What those hooks sent (the worker: the states' changelog records) is on the
                # broker before the messages behind it are acknowledged.
                await self._deliveries()
            for callback in callbacks:
                callback()
            if events:
                self.ack_events(events)
            self.acked += len(callbacks) + len(events)
            self._room.set()
            return len(callbacks) + len(events)

    async def _deliveries(self) -> None:
        """Await every delivery registered so far."""
        pending, self._pending = self._pending, {}
        self._records = 0
        for delivery in pending:
            try:
                await delivery
            except Exception as exc:
                log.error("the broker refused a record sent: %r; stopping", exc)
                if self.on_fatal is not None:
                    self.on_fatal(exc)
                raise

    def start(self) -> None:
        self._stopping = False
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="acks")

    async def _run(self) -> None:
        # asyncio.timeout, not asyncio.wait_for: on Python 3.11 wait_for swallows a cancellation
        # that arrives as the event is set, and this loop then never ended (stop hung).
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            if self._stopping:
                return
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # the loop that acks every message must not stop
                if not self._failing:
                    log.error("acknowledging failed (retried every %.2fs): %r", self.interval, exc,
                              exc_info=exc)  # fmt: skip
                self._failing = True
                await asyncio.sleep(self.interval)
            else:
                if self._failing:
                    log.warning("acknowledging works again")
                self._failing = False

    async def stop(self) -> None:
        """One last flush, within ``STOP_SECONDS`` (even while ClickHouse or the broker refuses
        everything): what it does not acknowledge is redelivered."""
        self._stopping = True
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        try:
            async with asyncio.timeout(STOP_SECONDS):
                await self.flush()
        except Exception as exc:
            log.warning("stopping before everything was stored or acknowledged by the broker "
                        "(%r): the messages not acknowledged are redelivered", exc)  # fmt: skip
