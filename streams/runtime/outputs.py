"""What a journey worker publishes: every output is a Kafka record, keyed by customer_id.

* ``journey.triggers``: ``Trigger``, a message to send (the email sender reads it);
* ``journey.decisions``: ``Decision``, every trigger decision whatever its status;
* ``journey.events``: ``JourneyEvent``, every accepted event in canonical form;
* ``journey.customers`` (compacted): ``CustomerSnapshot``; a tombstone on erasure;
* ``journey.deadletter``: ``DeadLetter``, what could not be used, and why;
* ``journey.repartition``: an input record re-routed to its customer's partition.

Every send is registered with ``Acks``, so the message that caused it is acknowledged only after
the broker has it (``acks.wait_for(produce(...))`` in each method). ``produce`` is a plain call
that returns the delivery to await (``batching.BatchProducer.produce``: its batch's future), and
so is every method here but ``send_snapshots``: no coroutine per record (a fired timer made
four, session 25). Snapshots are coalesced: only the newest per customer is sent, just before
the acknowledgements that depend on it (a backlog of one customer's events gives one record,
not one per event). The loader (``loader.py``) stores
the first four fact topics in ClickHouse.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from streams.runtime.acks import Acks
from streams.settings import Settings

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]
# (topic, key, value or None for a tombstone, headers) -> the broker's delivery, to await
Produce = Callable[[str, bytes, bytes | None, Headers | None], Awaitable[Any]]


class Outputs:
    def __init__(self, settings: Settings, produce: Produce, acks: Acks) -> None:
        self.produce = produce
        self.acks = acks
        acks.before_flush.append(self.send_snapshots)
        self.triggers = settings.topic("triggers")
        self.decisions = settings.topic("decisions")
        self.events = settings.topic("journey_events")
        self.snapshots = settings.topic("snapshots")
        self.deadletters = settings.topic("deadletter")
        self.repartition_topic = settings.topic("repartition")
        # Per customer, the newest snapshot not sent yet: its row, encoded when it is sent (a
        # customer's snapshots replaced within a flush are never encoded), or its value. A row
        # holds scalars copied out of the state (``facts.snapshot_row``): the engine stepping
        # the same state object again later cannot change a queued row.
        self._snapshots: dict[bytes, Any] = {}
        # A queued snapshot -> the record's value (the engine's encoder of snapshot rows).
        self.encode_snapshot: Callable[[Any], bytes] = _as_is
        self.unencodable_snapshots = 0
        self.sent: dict[str, int] = dict.fromkeys(
            ("triggers", "decisions", "events", "snapshots", "tombstones", "deadletters",
             "repartitioned"), 0,
        )  # fmt: skip

    def trigger(self, key: bytes, value: bytes) -> None:
        self.acks.wait_for(self.produce(self.triggers, key, value, None))
        self.sent["triggers"] += 1

    def decision(self, key: bytes, value: bytes) -> None:
        self.acks.wait_for(self.produce(self.decisions, key, value, None))
        self.sent["decisions"] += 1

    def event(self, key: bytes, value: bytes) -> None:
        self.acks.wait_for(self.produce(self.events, key, value, None))
        self.sent["events"] += 1

    def snapshot(self, key: bytes, snapshot: Any) -> None:
        """The customer's newest snapshot (for ``encode_snapshot``): sent before the next
        acknowledgements."""
        self._snapshots[key] = snapshot

    def erased(self, key: bytes) -> None:
        """A tombstone on the compacted snapshot topic: consumers delete the customer."""
        self._snapshots.pop(key, None)
        self.acks.wait_for(self.produce(self.snapshots, key, None, None))
        self.sent["tombstones"] += 1

    def dead_letter(self, key: bytes, value: bytes) -> None:
        self.acks.wait_for(self.produce(self.deadletters, key, value, None))
        self.sent["deadletters"] += 1

    def repartition(self, key: bytes, value: bytes, headers: Headers) -> None:
        self.acks.wait_for(self.produce(self.repartition_topic, key, value, headers))
        self.sent["repartitioned"] += 1

    @property
    def topics(self) -> list[str]:
        """Every topic this publishes to."""
        return [self.triggers, self.decisions, self.events, self.snapshots, self.deadletters,
                self.repartition_topic]  # fmt: skip

    @property
    def queued(self) -> int:
        """Snapshots waiting for the next flush (coalesced: not sent yet)."""
        return len(self._snapshots)

    async def send_snapshots(self) -> None:
        """Send the coalesced snapshots (``Acks.before_flush``), each taken off the queue once
        handed to the producer. If a send fails, the rest stay queued and the flush fails:
        nothing behind them is acknowledged. Nothing in here awaits (``produce`` is a plain
        call), so no snapshot is queued or erased while they are sent."""
        queue = self._snapshots
        for key, snapshot in list(queue.items()):
            try:
                value = self.encode_snapshot(snapshot)
            except Exception as exc:
                # Not the input's fault (the events were accepted and applied): a bug, or a value
                # outside the snapshot's schema. This snapshot is not sent, nothing else is held
                # back; the customer's next snapshot replaces it.
                self.unencodable_snapshots += 1
                log.error("the snapshot of customer %r cannot be encoded and is not sent: %r",
                          key, exc, exc_info=exc)  # fmt: skip
                del queue[key]
                continue
            self.acks.wait_for(self.produce(self.snapshots, key, value, None))
            self.sent["snapshots"] += 1
            del queue[key]


def _as_is(value: Any) -> bytes:
    """A snapshot queued as its record's value already."""
    return bytes(value)
