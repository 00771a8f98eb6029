"""Demo only: simulated recipients behind the local SMTP server of ``make run``.

A real shop learns about opens, clicks, unsubscribes and spam complaints from its email service
(tracking pixel, tracked links, webhooks), each naming the message. The local server of
``make run`` has no people behind it, so without this the engagement views of the dashboard
(``message_engagement``, ``trigger_engagement``, ``engagement_daily``) would show only
delivered and bounced. Here every stored mail gets a recipient's reaction, decided by
:func:`outcome` from the mail's trigger id alone (a redelivered mail reacts the same, with the
same event ids ``<trigger_id>:opened`` ...), delayed in journey-clock time (the demo clock runs
fast), and published as ``MessageEngagement`` with the trigger id to ``shop.engagement``, keyed
by customer id like every producer of the contract.

Only ``journey run --sender`` (``make run``) starts it; ``journey sender``, which talks to a real
SMTP server, never does: these are made-up numbers.

The simulator keeps emitting its own engagement events without a trigger id for the
transactional mails of its world (and the click on the reminder that brings an abandoned cart
back): they are the behaviour of its customers (a click there is why the customer returns), and
they feed the journey's sunset and consent rules in standalone ``journey simulate`` runs that
have no sender. They cannot reach the per-message views, which join engagement to triggers by
trigger id, so nothing is counted twice there. In the journey's state the two sources overlap
harmlessly: an open or click only resets the "unengaged" count; to keep unsubscribes and
complaints from adding up, the recipients here never unsubscribe from a transactional mail
(it has no unsubscribe link) and complain about one only rarely.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import logging
import math
import queue
from collections import Counter
from dataclasses import dataclass
from random import Random

from schemas.records import MessageEngagement
from streams.clock import Clock
from streams.journey.decisions import Category
from streams.journey.triggers import SPECS
from streams.ops.publish import Publisher

log = logging.getLogger(__name__)

SECOND, MINUTE, HOUR, DAY = 1_000, 60_000, 3_600_000, 86_400_000


@dataclass(frozen=True)
class Rates:
    """Per delivered mail (``clicked``: of the opened ones; unsubscribing needs an open)."""

    opened: float
    clicked: float
    unsubscribed: float
    complained: float


# Typical published figures for retail email: transactional mails are read far more often and
# their links (tracking, order) clicked more than marketing ones.
RATES: dict[Category, Rates] = {
    Category.MARKETING: Rates(opened=0.45, clicked=0.25, unsubscribed=0.005, complained=0.001),
    Category.TRANSACTIONAL: Rates(opened=0.70, clicked=0.35, unsubscribed=0.0, complained=0.0002),
}


@dataclass(frozen=True)
class Reaction:
    action: str  # OPENED, CLICKED, UNSUBSCRIBED, COMPLAINED
    after_ms: int  # after the mail arrived, in journey time


def outcome(trigger_id: str, category: Category | str) -> list[Reaction]:
    """What the recipient of this message does, and when: the same trigger id, the same answer.

    The random stream is seeded by a hash of the trigger id (not Python's ``hash``, which is
    salted per process), so a restart or a redelivered mail decides alike."""
    rates = RATES[Category(category)]
    rng = Random(hashlib.sha256(trigger_id.encode()).digest())
    # Draw every number up front: each decision uses its own draw whatever the others were.
    complain, open_, click, unsubscribe = (rng.random() for _ in range(4))
    complained_after = rng.randint(HOUR, 3 * DAY)
    # Most opens come within hours, a long tail over the week (median 90 minutes).
    minutes = min(max(rng.lognormvariate(math.log(90.0), 1.2), 1.0), 7 * 24 * 60.0)
    opened_after = int(minutes * MINUTE)
    clicked_after = opened_after + rng.randint(5, 600) * SECOND
    unsubscribed_after = opened_after + rng.randint(10, 300) * SECOND
    if complain < rates.complained:
        return [Reaction("COMPLAINED", complained_after)]  # marked as spam unread
    if open_ >= rates.opened:
        return []
    reactions = [Reaction("OPENED", opened_after)]
    if click < rates.clicked:
        reactions.append(Reaction("CLICKED", clicked_after))
    if unsubscribe < rates.unsubscribed / rates.opened:
        reactions.append(Reaction("UNSUBSCRIBED", unsubscribed_after))
    return reactions


@dataclass(frozen=True)
class Received:
    """A mail the local server stored: whom it was for, which message, when (journey time)."""

    trigger_id: str
    trigger_type: str
    customer_id: str
    received_at: int


class SimulatedRecipients:
    """``receive()`` is called by the SMTP server's thread; ``run()`` publishes the reactions
    when they are due on the journey clock (in the pipeline's event loop)."""

    def __init__(self, publisher: Publisher, clock: Clock) -> None:
        self.publisher = publisher
        self.clock = clock
        self._inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()  # thread-safe
        self._due: list[tuple[int, str, str, str]] = []  # (at, event_id, customer, action)
        self.counts: Counter[str] = Counter()  # reactions published, by action

    def receive(self, mail: Received) -> None:
        self._inbox.put(mail)

    @property
    def pending(self) -> int:
        return len(self._due) + self._inbox.qsize()

    def _schedule(self, mail: Received) -> None:
        spec = SPECS.get(mail.trigger_type)
        if spec is None:  # not a trigger type of ours: nobody to simulate
            log.warning(
                "mail for trigger %s has unknown type %r", mail.trigger_id, mail.trigger_type
            )
            return
        for reaction in outcome(mail.trigger_id, spec.category):
            heapq.heappush(
                self._due,
                (
                    mail.received_at + reaction.after_ms,
                    f"{mail.trigger_id}:{reaction.action.lower()}",
                    mail.customer_id,
                    reaction.action,
                ),
            )

    async def run(self, stop: asyncio.Event | None = None, poll_s: float = 0.2) -> None:
        """Until ``stop``; the caller starts and closes the publisher. Reactions still in the
        future when it stops are not published (a demo's pending opens, nothing more)."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            while not self._inbox.empty():
                self._schedule(self._inbox.get_nowait())
            now = self.clock.now_ms()
            published = 0
            while self._due and self._due[0][0] <= now:
                at, event_id, customer_id, action = heapq.heappop(self._due)
                trigger_id = event_id.rpartition(":")[0]
                engagement = MessageEngagement(
                    event_id=event_id,
                    customer_id=customer_id,
                    occurred_at=at,
                    action=action,
                    channel="EMAIL",
                    trigger_id=trigger_id,
                )
                await self.publisher.send_record("engagement", customer_id, engagement)
                self.counts[action.lower()] += 1
                published += 1
            if published:
                await self.publisher.flush()
            with contextlib.suppress(TimeoutError):  # poll_s passed: look again
                async with asyncio.timeout(poll_s):  # not wait_for: it may swallow a cancel
                    await stop.wait()
