"""The journey model: ``step(state, event, now)`` and ``fire_due(state, now)``, with no I/O.

``now`` is the pipeline's clock (epoch ms), ``event.occurred_at`` the shop's. Timers are set in
shop time (an abandoned-cart reminder is due one hour after the last cart change) and fire when
the clock reaches them. Both functions take ownership of the state they are given and return it
updated, with the decisions taken:

* every trigger is first a :class:`Timer`, set by ``schedule`` from its entry in
  ``triggers.SPECS`` (immediate ones are due at their event's time), then ``_evaluate``
  decides: CANCELLED (an exit condition), EXPIRED (replay guard), SUPPRESSED (consent, bounce
  or complaint, sunset, a once-per-window rule, the frequency cap beyond 72 h), deferred (quiet
  hours, frequency cap), or EMITTED;
* exit conditions are checked when a trigger is scheduled, after every event of the customer,
  and when its timer fires.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from itertools import count
from typing import TypeVar
from zoneinfo import ZoneInfo

from schemas.records import (
    CartChanged,
    CustomerChanged,
    CustomerPrediction,
    FeedbackGiven,
    InputEvent,
    MessageEngagement,
    OrderChanged,
    PageViewed,
    ShipmentChanged,
    Trigger,
)
from streams.journey import triggers
from streams.journey.config import JourneyConfig
from streams.journey.decisions import (
    ADVOCACY,
    AWARENESS,
    BOUNCED,
    CANCELLED,
    COMPLAINED,
    CONSIDERATION,
    EXPIRED,
    FREQUENCY_CAP,
    LAPSED,
    MARKETING,
    NEW,
    NO_CONSENT,
    PROSPECT,
    PURCHASE,
    REPEAT,
    REPLAY_GUARD,
    SERVICE,
    SUPPRESSED,
    UNENGAGED,
    Decision,
    Drop,
    Emit,
    Erase,
    Reason,
    Segment,
    Status,
    trigger_id,
)
from streams.journey.state import Cart, JourneyState, Order, Timer
from streams.journey.triggers import SPECS, TriggerSpec
from streams.journey.triggers import TriggerType as T

_T = TypeVar("_T")
DAY = 86_400_000
_EPOCH = date(1970, 1, 1)


def new_state(customer_id: str) -> JourneyState:
    return JourneyState(customer_id=customer_id)


# Feedback answers remembered per customer (a few a year each): bounded, but not by page views.
FEEDBACK_IDS_KEPT = 32


# --- entry points ----------------------------------------------------------------------------
def predicted(state: JourneyState, prediction: CustomerPrediction) -> JourneyState:
    """Keep the newest lifetime-value prediction (an older fit delivered late changes nothing).
    It decides nothing by itself: WIN_BACK and CROSS_SELL carry it when they go out."""
    if state.erased:
        return state
    if state.prediction is None or prediction.occurred_at >= state.prediction[0]:
        state.prediction = [
            prediction.occurred_at, prediction.probability_alive,
            prediction.expected_orders_90d, prediction.predicted_clv_minor,
            prediction.expected_next_order_at,
        ]  # fmt: skip
    return state


# The triggers an email about coming back or buying more can time and word by the prediction.
PREDICTION_TRIGGERS = frozenset({T.WIN_BACK, T.CROSS_SELL})


def prediction_attributes(state: JourneyState) -> dict[str, str]:
    """The newest prediction as trigger attributes (empty when there is none)."""
    if state.prediction is None:
        return {}
    fitted_at, alive, orders_90d, clv, next_order_at = state.prediction
    attributes = {
        "probability_alive": f"{alive:.3f}",
        "expected_orders_90d": f"{orders_90d:.3f}",
        "predicted_clv_minor": str(int(clv)),
        "predicted_at": str(fitted_at),
    }
    if next_order_at is not None:
        attributes["expected_next_order_at"] = str(next_order_at)
    return attributes


def step(
    state: JourneyState, event: InputEvent, now: int, config: JourneyConfig
) -> tuple[JourneyState, list[Decision]]:
    """Apply one event. A repeated ``event_id`` (within the recent ones kept) changes nothing."""
    out: list[Decision] = []
    if state.erased or event.event_id in state.seen:
        return state, out
    if isinstance(event, CustomerChanged) and event.action == "ERASED":
        # Before the timers due before it: the customer asked for erasure, so nothing more is
        # sent or recorded for them, not even what a worker running late would have sent first.
        return _erase(state, out)
    state.seen.append(event.event_id)
    if len(state.seen) > config.seen_event_ids_per_customer:
        del state.seen[: len(state.seen) - config.seen_event_ids_per_customer]
    if state.first_seen_at is None or event.occurred_at < state.first_seen_at:
        state.first_seen_at = event.occurred_at
    # Timers that were due before this event happened fire first: the customer had not
    # acted by then (this matters when a backlog is processed late).
    _fire(state, min(now, event.occurred_at), now, config, out)

    match event:
        case PageViewed():
            _page_viewed(state, event, config, out)
        case CartChanged():
            _cart_changed(state, event, config, out)
        case OrderChanged():
            _order_changed(state, event, config, out)
        case ShipmentChanged():
            _shipment_changed(state, event, config, out)
        case FeedbackGiven():
            _feedback_given(state, event, config, out)
        case MessageEngagement():
            _engagement(state, event)
        case CustomerChanged():
            _customer_changed(state, event, config, out)

    _cancel_exited(state, now, out)
    # Triggers caused by this event itself (confirmations, follow-ups) are decided at once.
    for key, timer in list(state.timers.items()):
        if timer.source_event_id == event.event_id and SPECS[timer.trigger_type].immediate:
            _evaluate(state, key, timer, now, config, out)
    return state, out


def fire_due(
    state: JourneyState, now: int, config: JourneyConfig
) -> tuple[JourneyState, list[Decision]]:
    """Evaluate every timer whose time has come (called by the worker's timer wheel)."""
    out: list[Decision] = []
    if not state.erased:
        _fire(state, now, now, config, out)
    return state, out


def segment(state: JourneyState, now: int, config: JourneyConfig) -> Segment:
    if state.orders_count == 0 or state.last_order_at is None:
        return PROSPECT
    if now - state.last_order_at >= config.win_back_delay:
        return LAPSED
    return NEW if state.orders_count == 1 else REPEAT


def marketing_block(state: JourneyState, config: JourneyConfig) -> Reason | None:
    """The consent rule: why marketing may not reach this customer (None: it may). Their last
    word (consent given, refused, unsubscribed, resubscribed) or else the default; a bounce or
    complaint stops marketing too."""
    consent = state.consent if state.consent is not None else config.marketing_consent_default
    if not consent:
        return NO_CONSENT
    return state.blocked


# --- events ----------------------------------------------------------------------------------
def _page_viewed(
    state: JourneyState, event: PageViewed, config: JourneyConfig, out: list[Decision]
) -> None:
    if event.page_type in ("PRODUCT", "CART", "CHECKOUT") and state.stage == AWARENESS:
        state.stage = CONSIDERATION
    if event.page_type != "PRODUCT" or not event.product_id:
        return
    attributes = {"product_id": event.product_id, "viewed_at": str(event.occurred_at)}
    if event.category:
        attributes["category"] = event.category
    schedule(
        SPECS[T.BROWSE_ABANDONMENT],
        state,
        event,
        config,
        out,
        about=event.product_id,
        attributes=attributes,
    )


def _cart_changed(
    state: JourneyState, event: CartChanged, config: JourneyConfig, out: list[Decision]
) -> None:
    cart = state.carts.get(event.cart_id)
    if cart is None:
        cart = state.carts[event.cart_id] = Cart(cart_id=event.cart_id)
        _trim(state.carts, config.max_carts_kept)
    if event.action == "PRODUCT_ADDED":
        state.last_cart_add_at = max(state.last_cart_add_at or 0, event.occurred_at)
    # A change older than the last order belongs to history: it does not reopen the cart.
    stale = state.last_order_at is not None and event.occurred_at <= state.last_order_at
    if event.product_id:
        quantity = event.quantity if event.quantity is not None else 1
        current = cart.lines.get(event.product_id, 0)
        if event.action == "PRODUCT_ADDED":
            cart.lines[event.product_id] = current + max(quantity, 1)
            if event.category:
                cart.categories[event.product_id] = event.category
        elif event.action == "PRODUCT_REMOVED":
            left = current - (quantity if event.quantity is not None else current)
            if left > 0:
                cart.lines[event.product_id] = left
            else:
                cart.lines.pop(event.product_id, None)
                cart.categories.pop(event.product_id, None)
        if event.unit_price_minor is not None:
            sign = -1 if event.action == "PRODUCT_REMOVED" else 1
            cart.value_minor = max(0, cart.value_minor + sign * event.unit_price_minor * quantity)
            cart.currency = event.currency or cart.currency
    if stale or cart.ordered:
        return
    if event.occurred_at >= cart.last_change_at:
        cart.last_change_at = event.occurred_at
    if state.stage != PURCHASE:
        state.stage = CONSIDERATION
    if not cart.lines:
        return  # _cancel_exited records the pending reminders as CANCELLED (cart_emptied)
    schedule(
        SPECS[T.ABANDONED_CART],
        state,
        event,
        config,
        out,
        about=cart.cart_id,
        since=cart.last_change_at,
        sent=cart.reminders_emitted,
        cart_id=cart.cart_id,
        attributes=_cart_attributes(cart),
    )


def _cart_attributes(cart: Cart) -> dict[str, str]:
    attributes = {
        "cart_lines": ",".join(f"{p}x{q}" for p, q in sorted(cart.lines.items())),
        "items": str(sum(cart.lines.values())),
    }
    if cart.value_minor:
        attributes["cart_value_minor"] = str(cart.value_minor)
        attributes["currency"] = cart.currency
    categories = sorted(set(cart.categories.values()))
    if categories:
        attributes["categories"] = ",".join(categories)
    return attributes


def _order_changed(
    state: JourneyState, event: OrderChanged, config: JourneyConfig, out: list[Decision]
) -> None:
    order = state.orders.get(event.order_id)
    if order is None:
        order = state.orders[event.order_id] = Order(order_id=event.order_id)
        _trim(state.orders, config.max_orders_kept)
    counted_before, revenue_before = order.counts, _revenue(order)
    if event.status == "PLACED" and order.placed_at is not None:
        return  # a known order placed again (a replay, a producer's retry) changes nothing
    if event.status == "REFUNDED" and event.event_id in order.refund_ids:
        return  # this refund is already subtracted
    if event.status == "PLACED":
        if order.placed_at is None:
            order.placed_at = event.occurred_at
            order.total_minor = event.total_minor
            order.currency = event.currency
            order.cart_id = event.cart_id
            order.categories = sorted({i.category for i in event.items if i.category})
            if order.refunded:  # refunds that arrived before their order: now comparable
                order.refunded = order.refunded_minor >= order.total_minor
        if event.cart_id and event.cart_id in state.carts:
            state.carts[event.cart_id].ordered = True
        state.unengaged = 0  # ordering is engagement: it lifts a sunset
        if state.last_order_at is None or event.occurred_at >= state.last_order_at:
            state.stage = PURCHASE
        if not order.cancelled and not order.confirmed:
            order.confirmed = True
            _confirm(state, order, event, config, first=state.orders_count == 0, out=out)
    elif event.status == "CANCELLED":
        order.cancelled = True
    elif event.status == "REFUNDED":
        order.refund_ids.append(event.event_id)
        order.refunded_minor += event.total_minor
        if order.placed_at is None or order.refunded_minor >= order.total_minor:
            order.refunded = True
    # Cancelled and refunded orders are neither purchases nor revenue.
    state.orders_count += int(order.counts) - int(counted_before)
    state.revenue_minor += _revenue(order) - revenue_before
    _follow_last_order(state, event, config, out)


def _revenue(order: Order) -> int:
    return order.total_minor - order.refunded_minor if order.counts else 0


def _confirm(
    state: JourneyState,
    order: Order,
    event: OrderChanged,
    config: JourneyConfig,
    *,
    first: bool,
    out: list[Decision],
) -> None:
    attributes = {
        "first_order": "true" if first else "false",
        "total_minor": str(event.total_minor),
        "currency": event.currency,
        "items": str(sum(i.quantity for i in event.items)),
    }
    if order.categories:
        attributes["categories"] = ",".join(order.categories)
    if event.coupon:
        attributes["coupon"] = event.coupon
    schedule(
        SPECS[T.ORDER_CONFIRMATION],
        state,
        event,
        config,
        out,
        about=order.order_id,
        order_id=order.order_id,
        cart_id=event.cart_id,
        attributes=attributes,
    )


def _follow_last_order(
    state: JourneyState, event: InputEvent, config: JourneyConfig, out: list[Decision]
) -> None:
    """The last order that counts, and the win-back timer of the lapse after it."""
    counted = [o for o in state.orders.values() if o.counts]
    if counted:
        last = max(counted, key=lambda o: (o.placed_at or 0, o.order_id))
        state.last_order_at, state.last_order_id = last.placed_at, last.order_id
        first = min(o.placed_at or 0 for o in counted)
        forgotten = _forgotten(state)
        state.first_order_at = min(first, state.first_order_at or first) if forgotten else first
    else:
        state.last_order_at = state.last_order_id = None
        if not _forgotten(state):
            state.first_order_at = None  # the first order was cancelled or refunded
    if state.last_order_id is None or state.last_order_at is None:
        return
    if state.win_back_order == state.last_order_id:
        return  # once per lapse: this lapse has its win-back (pending or decided)
    sent = state.last_emitted.get(T.WIN_BACK)
    if sent is not None and sent >= state.last_order_at:
        return  # sent after this order already (a newer order was cancelled): same lapse
    state.win_back_order = state.last_order_id
    attributes = {"last_order_at": str(state.last_order_at), "orders": str(state.orders_count)}
    schedule(
        SPECS[T.WIN_BACK],
        state,
        event,
        config,
        out,
        about=state.last_order_id,
        since=state.last_order_at,
        order_id=state.last_order_id,
        attributes=attributes,
    )


def _forgotten(state: JourneyState) -> bool:
    """The first purchase is no longer among the orders kept (``max_orders_kept``): keep its
    time, as nothing can cancel it any more. Otherwise it is recomputed from the orders, so a
    cancelled or refunded first order stops being the first purchase."""
    first = state.first_order_at
    return first is not None and all(o.placed_at != first for o in state.orders.values())


def _shipment_changed(
    state: JourneyState, event: ShipmentChanged, config: JourneyConfig, out: list[Decision]
) -> None:
    order = state.orders.get(event.order_id)
    if order is None:
        # A shipment of an order from before this customer's history: it still counts.
        order = state.orders[event.order_id] = Order(order_id=event.order_id)
        _trim(state.orders, config.max_orders_kept)
    if (event.status == "SHIPPED" and event.shipment_id in order.shipments_notified) or (
        event.status == "DELIVERED" and order.post_delivery_scheduled
    ):
        # Known already (delivered again, or another parcel): only an earlier delivery time.
        if event.status == "DELIVERED" and order.delivered_at is not None:
            order.delivered_at = min(order.delivered_at, event.occurred_at)
        return
    if (
        event.status in ("SHIPPED", "OUT_FOR_DELIVERY", "DELIVERED", "DELIVERY_FAILED")
        and state.last_order_id in (None, order.order_id)
        and state.stage != ADVOCACY
    ):
        state.stage = SERVICE
    if event.status == "SHIPPED" and event.shipment_id not in order.shipments_notified:
        order.shipments_notified.append(event.shipment_id)
        attributes = {}
        for name in ("carrier", "tracking_code", "tracking_url"):
            value = getattr(event, name)
            if value:
                attributes[name] = value
        schedule(
            SPECS[T.SHIPPING_CONFIRMATION],
            state,
            event,
            config,
            out,
            about=event.shipment_id,
            order_id=order.order_id,
            shipment_id=event.shipment_id,
            attributes=attributes,
        )
    elif event.status == "DELIVERED":
        # Counts even when its SHIPPED has not arrived (yet).
        if order.delivered_at is None or event.occurred_at < order.delivered_at:
            order.delivered_at = event.occurred_at
        if not order.post_delivery_scheduled:
            order.post_delivery_scheduled = True
            _schedule_post_delivery(state, order, event, config, out)
    elif event.status == "RETURNED":
        order.returned = True


def _schedule_post_delivery(
    state: JourneyState,
    order: Order,
    event: ShipmentChanged,
    config: JourneyConfig,
    out: list[Decision],
) -> None:
    attributes = {"delivered_at": str(event.occurred_at)}
    if order.categories:
        attributes["categories"] = ",".join(order.categories)
    for trigger_type in (
        T.DELIVERY_CHECK_IN,
        T.NPS_SURVEY,
        T.REVIEW_REQUEST,
        T.CROSS_SELL,
    ):
        schedule(
            SPECS[trigger_type],
            state,
            event,
            config,
            out,
            about=order.order_id,
            order_id=order.order_id,
            shipment_id=event.shipment_id,
            attributes=attributes,
        )


def _feedback_given(
    state: JourneyState, event: FeedbackGiven, config: JourneyConfig, out: list[Decision]
) -> None:
    if event.event_id in state.feedback_seen:
        return
    state.feedback_seen.append(event.event_id)
    del state.feedback_seen[:-FEEDBACK_IDS_KEPT]
    if event.kind == "NPS":
        state.last_nps = event.score
        promoter, detractor = event.score >= 9, event.score <= 6
    else:
        if event.order_id:
            order = state.orders.get(event.order_id)
            if order is None:  # reviewed before its order's events reached us: remember it
                order = state.orders[event.order_id] = Order(order_id=event.order_id)
                _trim(state.orders, config.max_orders_kept)
            order.reviewed = True
        promoter, detractor = event.score == 5, event.score <= 2
    attributes = {"kind": event.kind, "score": str(event.score)}
    if event.product_id:
        attributes["product_id"] = event.product_id
    if promoter:
        state.stage = ADVOCACY
        trigger_type = T.REFERRAL_INVITE
    elif detractor:
        if state.stage == ADVOCACY:
            state.stage = SERVICE
        trigger_type = T.DETRACTOR_FOLLOW_UP
    else:
        return
    schedule(
        SPECS[trigger_type],
        state,
        event,
        config,
        out,
        about=event.event_id,
        order_id=event.order_id,
        attributes=attributes,
    )


def _engagement(state: JourneyState, event: MessageEngagement) -> None:
    match event.action:
        case "OPENED" | "CLICKED":
            state.unengaged = 0
        case "UNSUBSCRIBED":
            state.consent = False
        case "RESUBSCRIBED":
            state.consent = True
            state.blocked = None
        case "BOUNCED":
            state.blocked = BOUNCED
        case "COMPLAINED":
            state.blocked = COMPLAINED


def _customer_changed(
    state: JourneyState, event: CustomerChanged, config: JourneyConfig, out: list[Decision]
) -> None:
    if event.marketing_consent is not None:
        state.consent = event.marketing_consent
        if event.marketing_consent:
            state.blocked = None if state.blocked == BOUNCED else state.blocked
    if event.time_zone and _zone(event.time_zone) is not None:  # an unknown zone is no zone
        state.time_zone = event.time_zone
    born = _avro_date(event.birthday)
    if born is not None:
        schedule(SPECS[T.BIRTHDAY], state, event, config, out, on=born)


def _avro_date(days: int | None) -> date | None:
    """Days since 1970-01-01; one beyond the calendar (year 10000) is no date at all."""
    try:
        return _EPOCH + timedelta(days=days) if days is not None else None
    except OverflowError:
        return None


def _erase(state: JourneyState, out: list[Decision]) -> tuple[JourneyState, list[Decision]]:
    # Only a tombstone stays, so that nothing is ever sent to this customer again.
    out.append(Erase(state.customer_id))
    tombstone = JourneyState(customer_id=state.customer_id, erased=True)
    return tombstone, out


# --- timers ----------------------------------------------------------------------------------
def schedule(
    spec: TriggerSpec,
    state: JourneyState,
    event: InputEvent,
    config: JourneyConfig,
    out: list[Decision],
    *,
    about: str = "",
    since: int | None = None,
    sent: int = 0,
    on: date | None = None,
    order_id: str | None = None,
    cart_id: str | None = None,
    shipment_id: str | None = None,
    attributes: dict[str, str] | None = None,
) -> None:
    """Set (or replace) the timer of ``spec`` about ``about`` (its order, cart, shipment, event
    or product), due the spec's delay after ``since`` (default: the event's time). A spec with
    several delays gets one numbered reminder per delay, from reminder ``sent + 1`` on; a yearly
    spec is due on the date ``on``, the first time it comes at or after ``since``'s day."""
    since = event.occurred_at if since is None else since
    if spec.yearly is not None:
        if on is None:
            raise ValueError(f"{spec.type} is yearly: schedule it with its date (on=...)")
        return _schedule_yearly(spec, state, config, out, on, since, event.event_id)
    attributes = attributes or {}
    trigger_type = spec.type.value  # a plain str: the state is encoded with it as a dict key
    reminders = range(sent + 1, len(spec.delays) + 1) if len(spec.delays) > 1 else (0,)
    for reminder in reminders:
        if reminder:  # numbered: one timer per reminder
            key, subject = f"{trigger_type}:{about}:{reminder}", f"{about}#{reminder}"
            extra = {"reminder": str(reminder), **attributes}
        else:
            key = trigger_type if spec.one_per_customer else f"{trigger_type}:{about}"
            subject, extra = about, dict(attributes)
        due_at = since + spec.delay(config, reminder or 1)
        timer = Timer(
            trigger_id(state.customer_id, trigger_type, subject, event.event_id),
            trigger_type,
            due_at,
            due_at,  # fire_at
            event.event_id,
            order_id,
            cart_id,
            shipment_id,
            extra,
        )
        _set_timer(state, out, key, timer)


def _schedule_yearly(
    spec: TriggerSpec,
    state: JourneyState,
    config: JourneyConfig,
    out: list[Decision],
    on: date,
    since: int,
    source_event_id: str,
) -> None:
    """The first occurrence of ``on`` whose local day has not ended at ``since`` (so a date
    learned on the day itself still counts) and that the spec's window allows."""
    assert spec.yearly is not None
    zone = _customer_zone(state, config)
    hour = time(getattr(config, spec.yearly.hour))
    today = datetime.fromtimestamp(since / 1000, zone).date()
    last = state.last_emitted.get(spec.type)
    window = spec.window_ms(config) or 0
    for year in count(today.year):
        day = _in_year(on, year)
        due_at = int(datetime.combine(day, hour, zone).timestamp() * 1000)
        if day >= today and (last is None or due_at - last >= window):
            break
    attributes = {
        spec.yearly.date_attribute: on.isoformat(),
        spec.yearly.years_attribute: str(year - on.year),
    }
    previous = state.timers.get(spec.type)
    if previous is not None and (previous.due_at, previous.attributes) == (due_at, attributes):
        return  # the same occurrence, told again: keep its id
    timer = Timer(
        trigger_id=trigger_id(state.customer_id, spec.type, str(year), source_event_id),
        trigger_type=spec.type.value,
        due_at=due_at,
        fire_at=due_at,
        source_event_id=source_event_id,
        attributes=attributes,
    )
    _set_timer(state, out, spec.type.value, timer)


def _in_year(day: date, year: int) -> date:
    try:
        return day.replace(year=year)
    except ValueError:  # 29 February in a common year
        return date(year, 2, 28)


def _set_timer(state: JourneyState, out: list[Decision], key: str, timer: Timer) -> None:
    """Its id names the event that caused it: the same event sets the same timer once."""
    previous = state.timers.get(key)
    if previous is not None and previous.trigger_id == timer.trigger_id:
        return
    state.timers[key] = timer  # a newer trigger for the same key replaces the older one


def _cancel_exited(state: JourneyState, now: int, out: list[Decision]) -> None:
    for key, timer in list(state.timers.items()):
        reason = triggers.exit_reason(state, timer)
        if reason is not None:
            del state.timers[key]
            out.append(_drop(state, timer, CANCELLED, reason, now))


def _fire(
    state: JourneyState, until: int, now: int, config: JourneyConfig, out: list[Decision]
) -> None:
    """Evaluate timers with ``fire_at <= until``, earliest first. Each evaluation removes its
    timer or defers it beyond ``now`` (>= ``until``), so this ends."""
    while True:
        due = [(t.fire_at, key) for key, t in state.timers.items() if t.fire_at <= until]
        if not due:
            return
        _, key = min(due)
        _evaluate(state, key, state.timers[key], now, config, out)


def _evaluate(
    state: JourneyState,
    key: str,
    timer: Timer,
    now: int,
    config: JourneyConfig,
    out: list[Decision],
) -> None:
    spec = SPECS[timer.trigger_type]

    def finish(status: Status, reason: Reason) -> None:
        del state.timers[key]
        out.append(_drop(state, timer, status, reason, now))
        _next_year(spec, state, timer, now, config, out)

    reason = triggers.exit_reason(state, timer)
    if reason is not None:
        return finish(CANCELLED, reason)
    # The deferred time counts as the due time for the replay guard.
    if now - timer.fire_at > config.replay_guard:
        return finish(EXPIRED, REPLAY_GUARD)
    if spec.category == MARKETING:
        reason = marketing_block(state, config)
        if reason is not None:
            return finish(SUPPRESSED, reason)
        if state.unengaged >= config.sunset_after:
            return finish(SUPPRESSED, UNENGAGED)
        reason = triggers.window_reason(state, timer, now, config)
        if reason is not None:
            return finish(SUPPRESSED, reason)
        at = max(now, timer.fire_at)
        last = state.last_marketing_at
        capped = last is not None and at < last + config.frequency_cap
        send_at = _allowed_time(state, at, config)
        # The original due time decides the drop, however often the trigger was deferred.
        if capped and send_at > timer.due_at + config.frequency_cap_drop_after:
            return finish(SUPPRESSED, FREQUENCY_CAP)
        if send_at > now:
            timer.fire_at = send_at  # deferred: evaluated again then
            return None
    del state.timers[key]
    out.append(Emit(_trigger(state, timer, now)))
    if spec.on_emit is not None:
        spec.on_emit(state, timer)
    if spec.category == MARKETING:
        state.last_marketing_at = now
        state.unengaged += 1
        state.last_emitted[timer.trigger_type] = now
    _next_year(spec, state, timer, now, config, out)
    return None


def _next_year(
    spec: TriggerSpec,
    state: JourneyState,
    timer: Timer,
    now: int,
    config: JourneyConfig,
    out: list[Decision],
) -> None:
    """A yearly trigger, once decided, is set for its next occurrence: a day after this one at
    the earliest, or from now when decided long after (a replay does not walk every year)."""
    if spec.yearly is None:
        return
    on = date.fromisoformat(timer.attributes[spec.yearly.date_attribute])
    since = max(now, timer.due_at + DAY)
    _schedule_yearly(spec, state, config, out, on, since, timer.source_event_id)


def _allowed_time(state: JourneyState, at: int, config: JourneyConfig) -> int:
    """The first moment at or after ``at`` outside the frequency cap and quiet hours."""
    zone = _customer_zone(state, config)
    for _ in range(4):
        moved = at
        last = state.last_marketing_at
        if last is not None and moved < last + config.frequency_cap:
            moved = last + config.frequency_cap
        moved = _after_quiet_hours(moved, zone, config)
        if moved == at:
            return at
        at = moved
    return at


def _customer_zone(state: JourneyState, config: JourneyConfig) -> ZoneInfo:
    return (
        (_zone(state.time_zone) if state.time_zone else None)
        or _zone(config.default_time_zone)
        or ZoneInfo("UTC")
    )


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # OSError: "Europe" is a directory, too long, ...
        return None


def _after_quiet_hours(at: int, zone: ZoneInfo, config: JourneyConfig) -> int:
    start, end = config.quiet_hours_start, config.quiet_hours_end
    if start == end:
        return at
    local = datetime.fromtimestamp(at / 1000, zone)
    hour = local.hour
    quiet = (hour >= start or hour < end) if start > end else (start <= hour < end)
    if not quiet:
        return at
    day = local.date() + timedelta(days=1) if start > end and hour >= start else local.date()
    morning = datetime.combine(day, time(end), zone)
    return int(morning.timestamp() * 1000)


def _drop(state: JourneyState, timer: Timer, status: Status, reason: Reason, now: int) -> Drop:
    return Drop(
        timer.trigger_id,
        timer.trigger_type,
        SPECS[timer.trigger_type].category,
        state.customer_id,
        status,
        reason,
        timer.due_at,
        now,  # decided_at
        timer.order_id,
        timer.cart_id,
    )


def _trigger(state: JourneyState, timer: Timer, now: int) -> Trigger:
    # Positional, in Trigger's field order, here and in ``_drop`` and ``_schedule``: a call with
    # keywords builds a dict for the dataclass's __init__ (2.5 x the call; the trigger tests
    # check every field).
    return Trigger(
        timer.trigger_id,
        timer.trigger_type,
        SPECS[timer.trigger_type].category,
        state.customer_id,
        timer.fire_at,  # due_at: when it goes out, deferred or not
        now,  # emitted_at
        timer.source_event_id,
        state.stage,
        timer.order_id,
        timer.cart_id,
        timer.shipment_id,
        (
            {**timer.attributes, **prediction_attributes(state)}
            if timer.trigger_type in PREDICTION_TRIGGERS
            else timer.attributes
        ),
    )


def _trim(items: dict[str, _T], limit: int) -> None:
    """Bounded memory per customer: forget the orders or carts first seen longest ago."""
    while len(items) > limit:
        del items[next(iter(items))]
