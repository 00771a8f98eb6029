"""Shared helpers of the journey model tests: a fake clock, event builders and a tiny worker.

Times are epoch milliseconds. ``BASE`` is Tuesday 2024-06-04 10:00 Europe/Amsterdam (CEST), so
the default delays (1 h, 2 h, 3 d, 7 d, 14 d, 21 d, 90 d) land outside quiet hours.

Builders return records with an empty ``event_id``; :class:`Sim` numbers them ``e1``, ``e2``, ...
in the order they are applied unless the builder was given an explicit ``event_id``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from schemas.records import (
    CartChanged,
    CustomerChanged,
    FeedbackGiven,
    InputEvent,
    MessageEngagement,
    OrderChanged,
    OrderItem,
    PageViewed,
    ShipmentChanged,
    Trigger,
)
from streams.journey.config import JourneyConfig
from streams.journey.decisions import Decision, Drop, Emit
from streams.journey.model import fire_due, new_state, step
from streams.journey.state import JourneyState

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR

AMS = ZoneInfo("Europe/Amsterdam")
NYC = ZoneInfo("America/New_York")


def local(zone: ZoneInfo, *args: int) -> int:
    """Epoch ms of a wall-clock time: ``local(AMS, 2024, 6, 4, 10)``."""
    return int(datetime(*args, tzinfo=zone).timestamp() * 1000)  # type: ignore[misc]


def hour_in(zone: ZoneInfo, at: int) -> float:
    d = datetime.fromtimestamp(at / 1000, zone)
    return d.hour + d.minute / 60


BASE = local(AMS, 2024, 6, 4, 10)  # Tuesday 10:00 CEST
assert BASE == 1_717_488_000_000

# Consent granted by default, so that the trigger tests see marketing triggers go out; the
# consent rules are tested with the contract's default (False) in test_rules.
CONFIG = JourneyConfig(marketing_consent_default=True)
CUSTOMER = "c1"


# --- event builders ---------------------------------------------------------------------------
def view(
    at: int,
    product: str | None = "p1",
    *,
    page_type: str = "PRODUCT",
    category: str | None = "shoes",
    event_id: str = "",
    customer: str = CUSTOMER,
) -> PageViewed:
    return PageViewed(
        event_id=event_id,
        customer_id=customer,
        occurred_at=at,
        session_id="s",
        page_type=page_type,
        url=f"https://shop.example/{product or page_type.lower()}",
        product_id=product if page_type == "PRODUCT" else None,
        category=category if page_type == "PRODUCT" else None,
    )


def cart_add(
    at: int,
    product: str = "p1",
    *,
    cart: str = "k1",
    qty: int = 1,
    price: int = 1_000,
    category: str | None = "shoes",
    event_id: str = "",
    customer: str = CUSTOMER,
) -> CartChanged:
    return CartChanged(
        event_id=event_id,
        customer_id=customer,
        occurred_at=at,
        cart_id=cart,
        action="PRODUCT_ADDED",
        product_id=product,
        category=category,
        quantity=qty,
        unit_price_minor=price,
        currency="EUR",
    )


def cart_remove(
    at: int,
    product: str = "p1",
    *,
    cart: str = "k1",
    qty: int | None = None,
    event_id: str = "",
    customer: str = CUSTOMER,
) -> CartChanged:
    return CartChanged(
        event_id=event_id,
        customer_id=customer,
        occurred_at=at,
        cart_id=cart,
        action="PRODUCT_REMOVED",
        product_id=product,
        quantity=qty,
    )


def placed(
    at: int,
    order: str = "o1",
    *,
    total: int = 5_000,
    cart: str | None = None,
    categories: tuple[str, ...] = ("shoes", "socks"),
    coupon: str | None = None,
    event_id: str = "",
    customer: str = CUSTOMER,
) -> OrderChanged:
    items = [
        OrderItem(product_id=f"p{i}", quantity=1, unit_price_minor=total // max(len(categories), 1),
                  category=c)
        for i, c in enumerate(categories, start=1)
    ]  # fmt: skip
    return OrderChanged(
        event_id=event_id,
        customer_id=customer,
        occurred_at=at,
        order_id=order,
        status="PLACED",
        total_minor=total,
        currency="EUR",
        items=items,
        cart_id=cart,
        coupon=coupon,
    )


def order_status(
    at: int,
    status: str,
    order: str = "o1",
    *,
    amount: int = 5_000,
    event_id: str = "",
    customer: str = CUSTOMER,
) -> OrderChanged:
    return OrderChanged(
        event_id=event_id,
        customer_id=customer,
        occurred_at=at,
        order_id=order,
        status=status,
        total_minor=amount,
        currency="EUR",
    )


def cancelled(at: int, order: str = "o1", **kw: Any) -> OrderChanged:
    return order_status(at, "CANCELLED", order, **kw)


def refunded(at: int, order: str = "o1", amount: int = 5_000, **kw: Any) -> OrderChanged:
    return order_status(at, "REFUNDED", order, amount=amount, **kw)


def shipment(
    at: int,
    status: str,
    order: str = "o1",
    *,
    shipment_id: str | None = None,
    carrier: str | None = "DHL",
    tracking_code: str | None = "JD0001",
    tracking_url: str | None = "https://track.example/JD0001",
    event_id: str = "",
    customer: str = CUSTOMER,
) -> ShipmentChanged:
    return ShipmentChanged(
        event_id=event_id,
        customer_id=customer,
        occurred_at=at,
        order_id=order,
        shipment_id=shipment_id or f"s-{order}",
        status=status,
        carrier=carrier if status == "SHIPPED" else None,
        tracking_code=tracking_code if status == "SHIPPED" else None,
        tracking_url=tracking_url if status == "SHIPPED" else None,
    )


def shipped(at: int, order: str = "o1", **kw: Any) -> ShipmentChanged:
    return shipment(at, "SHIPPED", order, **kw)


def delivered(at: int, order: str = "o1", **kw: Any) -> ShipmentChanged:
    return shipment(at, "DELIVERED", order, **kw)


def returned(at: int, order: str = "o1", **kw: Any) -> ShipmentChanged:
    return shipment(at, "RETURNED", order, **kw)


def nps(at: int, score: int, *, event_id: str = "", customer: str = CUSTOMER) -> FeedbackGiven:
    return FeedbackGiven(
        event_id=event_id, customer_id=customer, occurred_at=at, kind="NPS", score=score
    )


def review(
    at: int,
    score: int,
    order: str | None = "o1",
    *,
    event_id: str = "",
    customer: str = CUSTOMER,
) -> FeedbackGiven:
    return FeedbackGiven(
        event_id=event_id,
        customer_id=customer,
        occurred_at=at,
        kind="REVIEW",
        score=score,
        order_id=order,
        product_id="p1",
    )


def engaged(
    at: int, action: str, *, event_id: str = "", customer: str = CUSTOMER
) -> MessageEngagement:
    return MessageEngagement(
        event_id=event_id, customer_id=customer, occurred_at=at, action=action, channel="EMAIL"
    )


def customer(
    at: int,
    *,
    consent: bool | None = None,
    time_zone: str | None = None,
    birthday: date | None = None,
    action: str = "UPDATED",
    event_id: str = "",
    customer: str = CUSTOMER,
) -> CustomerChanged:
    return CustomerChanged(
        event_id=event_id,
        customer_id=customer,
        occurred_at=at,
        action=action,
        marketing_consent=consent,
        time_zone=time_zone,
        birthday=(birthday - date(1970, 1, 1)).days if birthday is not None else None,
    )


def erased(at: int, **kw: Any) -> CustomerChanged:
    return customer(at, action="ERASED", **kw)


# --- the fake worker --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Scheduled:
    """Seen by the fake worker (not a decision of the model): a timer was set, replaced or
    moved in the state; the trigger is evaluated at ``fire_at``."""

    key: str
    trigger_id: str
    trigger_type: str
    fire_at: int


Logged = Decision | Scheduled


def timers_of(state: JourneyState) -> dict[str, tuple[str, int]]:
    return {key: (t.trigger_id, t.fire_at) for key, t in state.timers.items()}


def timer_changes(before: dict[str, tuple[str, int]], state: JourneyState) -> list[Scheduled]:
    return [
        Scheduled(key, t.trigger_id, t.trigger_type, t.fire_at)
        for key, t in state.timers.items()
        if before.get(key) != (t.trigger_id, t.fire_at)
    ]


def advance(
    state: JourneyState, t: int, t2: int, config: JourneyConfig
) -> tuple[JourneyState, list[tuple[int, Logged]]]:
    """A worker's timer wheel from ``t`` to ``t2``: ``fire_due`` at each timer's fire time (so
    deferrals are honoured), then once at ``t2``. Returns the decisions with their clock."""
    out: list[tuple[int, Logged]] = []
    now = t
    while True:
        nxt = state.next_fire_at()
        if nxt is None or nxt > t2:
            break
        now = max(now, nxt)
        before = timers_of(state)
        state, decisions = fire_due(state, now, config)
        out += [(now, d) for d in [*decisions, *timer_changes(before, state)]]
        following = state.next_fire_at()
        assert following is None or following > now, "fire_due left a timer due behind"
    before = timers_of(state)
    state, decisions = fire_due(state, max(now, t2), config)
    out += [(max(now, t2), d) for d in [*decisions, *timer_changes(before, state)]]
    return state, out


class Sim:
    """One customer's journey on a fake clock: events are delivered at ``now`` (by default their
    own time) after the worker has fired the timers due until then."""

    def __init__(
        self,
        config: JourneyConfig = CONFIG,
        *,
        start: int = BASE,
        customer_id: str = CUSTOMER,
    ) -> None:
        self.config = config
        self.now = start
        self.state = new_state(customer_id)
        self.log: list[tuple[int, Logged]] = []
        self._n = 0

    def _id(self, event: InputEvent) -> InputEvent:
        self._n += 1
        if event.event_id:
            return event
        return dataclasses.replace(event, event_id=f"e{self._n}")

    def run(self, until: int) -> list[Logged]:
        """Advance the clock to ``until`` firing timers on the way."""
        until = max(until, self.now)
        self.state, got = advance(self.state, self.now, until, self.config)
        self.now = until
        self.log += got
        return [d for _, d in got]

    def send(
        self, event: InputEvent, *, now: int | None = None, worker: bool = True
    ) -> list[Decision]:
        """Deliver ``event`` at ``now`` (default: its occurred_at, or the clock if that is later).
        The worker first fires what was due until then, unless ``worker`` is False (it was down:
        only ``step`` itself sees the timers due)."""
        at = max(self.now, event.occurred_at) if now is None else now
        if worker and at > self.now:
            self.run(at)
        self.now = max(self.now, at)
        before = timers_of(self.state)
        self.state, decisions = step(self.state, self._id(event), self.now, self.config)
        self.log += [(self.now, d) for d in [*decisions, *timer_changes(before, self.state)]]
        return decisions

    def play(self, events: Iterable[InputEvent], until: int | None = None) -> Sim:
        for event in events:
            self.send(event)
        if until is not None:
            self.run(until)
        return self

    # views of the log
    @property
    def decisions(self) -> list[Logged]:
        return [d for _, d in self.log]

    def emitted(self, trigger_type: str | None = None) -> list[Trigger]:
        return emits(self.decisions, trigger_type)

    def dropped(self, trigger_type: str | None = None) -> list[Drop]:
        return drops(self.decisions, trigger_type)

    def schedules(self, trigger_type: str | None = None) -> list[Scheduled]:
        return [
            d
            for d in self.decisions
            if isinstance(d, Scheduled) and trigger_type in (None, d.trigger_type)
        ]


def emits(decisions: Iterable[Decision], trigger_type: str | None = None) -> list[Trigger]:
    return [
        d.trigger
        for d in decisions
        if isinstance(d, Emit) and trigger_type in (None, d.trigger.trigger_type)
    ]


def drops(decisions: Iterable[Decision], trigger_type: str | None = None) -> list[Drop]:
    return [d for d in decisions if isinstance(d, Drop) and trigger_type in (None, d.trigger_type)]


def fate(sim: Sim, key: str) -> tuple[str, int | str]:
    """What became of the last trigger scheduled under timer ``key``: ("EMITTED", emitted_at),
    (status, reason) for a Drop, or ("PENDING", "")."""
    ids = [d.trigger_id for d in sim.decisions if isinstance(d, Scheduled) and d.key == key]
    if not ids:  # set and decided within one step (due at once): the decision names its key
        trigger_type, _, subject = key.partition(":")
        ids = [
            d.trigger_id if isinstance(d, Drop) else d.trigger.trigger_id
            for d in sim.decisions
            if isinstance(d, Emit | Drop) and _key_of(d) == (trigger_type, subject)
        ]
    assert ids, f"{key} was never scheduled"
    wanted = ids[-1]
    for d in sim.decisions:
        if isinstance(d, Emit) and d.trigger.trigger_id == wanted:
            return ("EMITTED", d.trigger.emitted_at)
        if isinstance(d, Drop) and d.trigger_id == wanted:
            return (d.status, d.reason)
    return ("PENDING", "")


def _key_of(decision: Emit | Drop) -> tuple[str, str]:
    if isinstance(decision, Emit):
        t = decision.trigger
        return t.trigger_type, t.order_id or t.cart_id or t.shipment_id or ""
    return decision.trigger_type, decision.order_id or decision.cart_id or ""


def json_v3_row(state: JourneyState) -> list[Any]:
    """The state as version 3 wrote it (a positional JSON array, before MessagePack): states of
    older releases must still decode."""
    s = state
    orders = [
        [o.order_id, o.placed_at, o.total_minor, o.currency, o.categories, o.cart_id,
         o.cancelled, o.refunded_minor, o.refunded, o.returned, o.delivered_at, o.reviewed,
         o.confirmed, o.post_delivery_scheduled, o.shipments_notified, o.refund_ids]
        for o in s.orders.values()
    ]  # fmt: skip
    carts = [
        [c.cart_id, c.lines, c.categories, c.value_minor, c.currency, c.last_change_at,
         c.reminders_emitted, c.ordered]
        for c in s.carts.values()
    ]  # fmt: skip
    timers = [
        [t.trigger_id, t.trigger_type, t.due_at, t.fire_at, t.source_event_id, t.order_id,
         t.cart_id, t.shipment_id, t.attributes]
        for t in s.timers.values()
    ]  # fmt: skip
    return [
        3, s.customer_id, s.stage, s.erased, s.first_seen_at, s.consent, s.blocked, s.time_zone,
        orders, carts, s.first_order_at, s.last_order_at, s.last_order_id, s.orders_count,
        s.revenue_minor, s.last_nps, None, s.last_cart_add_at, s.last_marketing_at, s.unengaged,
        s.last_emitted, s.win_back_order, s.seen, timers, None, [*s.timers],
        s.outbox, s.outbox_seq, s.feedback_seen, s.prediction,
    ]  # fmt: skip
