"""What the worker's agent does with each message Faust hands it, and where it is acknowledged.

The agent itself (``app.py``'s ``journey``) stays Python, since Faust drives it; for each
message it awaits ``Intake.take``, which runs the event-time merge (``ordering.py``) and then,
for every message the merge releases, ``Intake.handle``:

* ``MessageHandler`` applies it: a tick fires the engine's due timers, an input goes through
  ``Ingest`` (decode, dead letters, re-keying) to the ``JourneyEngine``. No exception escapes a
  message: whatever fails becomes a ``processing_error`` dead letter (the engine has left the
  customer's state as it was) and the stream goes on.
* **Where a message is acknowledged**: then it goes to ``Acks.after_event`` (``acks.py``), which
  acknowledges it once the broker has acknowledged every record it caused; only acknowledged
  offsets are committed (``commit_guard.py``).

A compiled module (``streams/compiled.py``): run interpreted in the agent, this per-message
work was five coroutine frames and about 5 % of a worker's CPU (session 27).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from time import monotonic, perf_counter
from typing import Any

from streams.runtime.acks import Acks
from streams.runtime.engine import JourneyEngine
from streams.runtime.ingest import Ingest
from streams.runtime.ordering import EventTimeBuffer, tick_time

log = logging.getLogger(__name__)


class MessageHandler:
    """Applies one message: a tick to the engine's timers, an input through ``Ingest`` to the
    engine. No exception escapes it: whatever fails becomes a ``processing_error`` dead letter
    with the exception's summary (the engine left the customer's state as it was)."""

    def __init__(
        self,
        ingest: Ingest,
        engine: JourneyEngine,
        ticks_topic: str,
        crash: Callable[[BaseException], Awaitable[Any]],
    ) -> None:
        self.ingest = ingest
        self.engine = engine
        self.ticks_topic = ticks_topic
        self.crash = crash

    async def __call__(self, message: Any) -> bool:
        """False if even the dead letter failed: then the worker stops (``crash``), and the
        message, unacknowledged, is redelivered to the next one."""
        try:
            await self.apply(message)
        except Exception as exc:
            return await self.dead_letter(message, exc)
        return True

    async def apply(self, message: Any) -> None:
        if message.topic == self.ticks_topic:
            await self.engine.on_tick(message.partition, message.topic, message.offset)
            return
        record = await self.ingest.handle(
            message.topic,
            message.partition,
            message.offset,
            message.key,
            message.value,
            message.headers,
        )
        if record is not None:
            await self.engine.on_event(record, message.topic, message.partition, message.offset)

    async def dead_letter(self, message: Any, exc: Exception) -> bool:
        log.error(
            "handling %s/%d/%d failed: %r",
            message.topic,
            message.partition,
            message.offset,
            exc,
            exc_info=exc,
        )
        try:
            await self.ingest.processing_error(
                message.topic, message.partition, message.offset, message.key, message.value, exc
            )
        except Exception as fatal:
            log.critical("cannot write the dead letter either: %r; stopping", fatal)
            await self.crash(fatal)
            return False
        return True


class Intake:
    """One agent's per-message work (see the module's docstring).

    ``turns``: the agent's ``handover.Turns`` (the loop turns every few ms of its work);
    ``positions``: the last offset handled per topic-partition (the worker's lag); ``processing``:
    the histogram of each input message's handling time."""

    def __init__(
        self,
        ingest: Ingest,
        ordering: EventTimeBuffer,
        apply: MessageHandler,
        acks: Acks,
        ticks_topic: str,
        turns: Any,
        positions: dict[tuple[str, int], int],
        processing: Any,
    ) -> None:
        self.ingest = ingest
        self.ordering = ordering
        self.apply = apply
        self.acks = acks
        self.ticks_topic = ticks_topic
        self.turns = turns
        self.positions = positions
        self.processing = processing

    async def take(self, event: Any, stream: Any) -> bool:
        """The event-time merge takes ``event``; every message it releases is handled. False
        when the worker must stop (``MessageHandler.dead_letter``)."""
        message = event.message
        topic = message.topic
        try:
            time_ms = (
                tick_time(message.value, int(message.timestamp * 1000))
                if topic == self.ticks_topic
                else self.ingest.event_time(
                    topic, message.value, message.headers, message.partition, message.offset
                )
            )
        except Exception:  # undecodable: it goes first and becomes a dead letter in apply()
            time_ms = None
        # It is re-checked on every message; the worker's own ticks arrive every
        # timer_tick_interval, so an idle wait is noticed within about that much.
        now = monotonic() * 1000
        ordering = self.ordering
        ordering.push(event, topic, message.partition, message.offset, time_ms, now)
        turns = self.turns
        for ready in ordering.pop_ready(now, message.partition):
            # Hundreds can come at once (a backlog held until a tick). A turn of the loop in
            # between is safe: each is tracked, so a rebalance or a stop waits until the agent
            # has handled and acknowledged it (as when wait_for_room waits).
            if turns.due():
                await turns.turn()
            # Faust's table writes go to the partition of the "current" event: make it the one
            # handled (released events can come from another partition).
            stream._set_current_event(ready)
            if not await self.handle(ready):
                return False
        # Hold no reference to a message the merge keeps: on a stop the merge is emptied and
        # Faust waits until every message still referenced (a weak set) is acked.
        stream._set_current_event(None)
        return True

    async def handle(self, event: Any) -> bool:
        """Apply one released message, then hand it to ``Acks``; False when the worker must stop
        (see ``MessageHandler.dead_letter``)."""
        message = event.message
        self.positions[(message.topic, message.partition)] = message.offset
        started = perf_counter()
        if not await self.apply(message):
            return False
        # Only now, after the table write (changelog) and every send it caused are registered:
        # acked once the broker has them all (acks.py).
        self.acks.after_event(event)
        if message.topic != self.ticks_topic:
            self.processing.observe(perf_counter() - started)
        await self.acks.wait_for_room()
        return True
