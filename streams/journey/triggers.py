"""The contract's trigger types: category, and when each one must not go out.

``exit_reason`` is asked when a trigger is scheduled, after every event of its customer, and
again when its timer fires: the contract's "exit conditions are checked again when a timer
fires". A reason means the trigger is CANCELLED. ``window_reason`` holds the "at most once per
N days" rules, checked when the trigger would be sent (SUPPRESSED).
"""

from __future__ import annotations

from collections.abc import Callable

from streams.journey.decisions import MARKETING, TRANSACTIONAL, JourneyConfig
from streams.journey.state import JourneyState, Timer

ORDER_CONFIRMATION = "ORDER_CONFIRMATION"
SHIPPING_CONFIRMATION = "SHIPPING_CONFIRMATION"
DELIVERY_CHECK_IN = "DELIVERY_CHECK_IN"
REVIEW_REQUEST = "REVIEW_REQUEST"
NPS_SURVEY = "NPS_SURVEY"
ABANDONED_CART = "ABANDONED_CART"
BROWSE_ABANDONMENT = "BROWSE_ABANDONMENT"
CROSS_SELL = "CROSS_SELL"
WIN_BACK = "WIN_BACK"
REFERRAL_INVITE = "REFERRAL_INVITE"
DETRACTOR_FOLLOW_UP = "DETRACTOR_FOLLOW_UP"

CATEGORY: dict[str, str] = {
    ORDER_CONFIRMATION: TRANSACTIONAL,
    SHIPPING_CONFIRMATION: TRANSACTIONAL,
    DELIVERY_CHECK_IN: MARKETING,
    REVIEW_REQUEST: MARKETING,
    NPS_SURVEY: MARKETING,
    ABANDONED_CART: MARKETING,
    BROWSE_ABANDONMENT: MARKETING,
    CROSS_SELL: MARKETING,
    WIN_BACK: MARKETING,
    REFERRAL_INVITE: MARKETING,
    DETRACTOR_FOLLOW_UP: TRANSACTIONAL,
}
TRIGGER_TYPES = tuple(CATEGORY)


def _order_problem(state: JourneyState, timer: Timer, *, returned: bool = True) -> str | None:
    order = state.orders.get(timer.order_id or "")
    if order is None:
        return None
    if order.cancelled:
        return "order_cancelled"
    if order.refunded or order.refunded_minor:
        return "order_refunded"
    if returned and order.returned:
        return "order_returned"
    return None


def shipping_confirmation_exit(state: JourneyState, timer: Timer) -> str | None:
    order = state.orders.get(timer.order_id or "")
    return "order_cancelled" if order is not None and order.cancelled else None


def delivery_check_in_exit(state: JourneyState, timer: Timer) -> str | None:
    return _order_problem(state, timer)


def review_request_exit(state: JourneyState, timer: Timer) -> str | None:
    order = state.orders.get(timer.order_id or "")
    if order is not None and order.reviewed:
        return "already_reviewed"
    return _order_problem(state, timer)


def nps_survey_exit(state: JourneyState, timer: Timer) -> str | None:
    return _order_problem(state, timer)


def abandoned_cart_exit(state: JourneyState, timer: Timer) -> str | None:
    cart = state.carts.get(timer.cart_id or "")
    if cart is None or cart.ordered:
        return "order_placed"
    if not cart.lines:
        return "cart_emptied"
    if state.last_order_at is not None and state.last_order_at >= cart.last_change_at:
        return "order_placed"
    return None


def browse_abandonment_exit(state: JourneyState, timer: Timer) -> str | None:
    viewed_at = int(timer.attributes.get("viewed_at", timer.due_at))
    if state.last_cart_add_at is not None and state.last_cart_add_at >= viewed_at:
        return "cart_add"
    if state.last_order_at is not None and state.last_order_at >= viewed_at:
        return "order_placed"
    return None


def cross_sell_exit(state: JourneyState, timer: Timer) -> str | None:
    order = state.orders.get(timer.order_id or "")
    placed_at = order.placed_at if order is not None and order.placed_at is not None else 0
    if (
        state.last_order_id != timer.order_id
        and state.last_order_at is not None
        and state.last_order_at > placed_at
    ):
        return "newer_order"
    return _order_problem(state, timer, returned=False)


def win_back_exit(state: JourneyState, timer: Timer) -> str | None:
    # The timer belongs to one lapse: the one after the order it names.
    return "new_order" if state.last_order_id != timer.order_id else None


def _never(state: JourneyState, timer: Timer) -> str | None:
    return None


EXIT: dict[str, Callable[[JourneyState, Timer], str | None]] = {
    ORDER_CONFIRMATION: _never,
    SHIPPING_CONFIRMATION: shipping_confirmation_exit,
    DELIVERY_CHECK_IN: delivery_check_in_exit,
    REVIEW_REQUEST: review_request_exit,
    NPS_SURVEY: nps_survey_exit,
    ABANDONED_CART: abandoned_cart_exit,
    BROWSE_ABANDONMENT: browse_abandonment_exit,
    CROSS_SELL: cross_sell_exit,
    WIN_BACK: win_back_exit,
    REFERRAL_INVITE: _never,
    DETRACTOR_FOLLOW_UP: _never,
}


def exit_reason(state: JourneyState, timer: Timer) -> str | None:
    return EXIT[timer.trigger_type](state, timer)


def window_reason(state: JourneyState, timer: Timer, now: int, config: JourneyConfig) -> str | None:
    """At most once per window per customer (NPS 90 d, referral 180 d, browse 7 d)."""
    window = {
        NPS_SURVEY: config.nps_survey_window,
        REFERRAL_INVITE: config.referral_window,
        BROWSE_ABANDONMENT: config.browse_abandonment_window,
    }.get(timer.trigger_type)
    if window is None:
        return None
    last = state.last_emitted.get(timer.trigger_type)
    if last is not None and now - last < window:
        return f"{timer.trigger_type.lower()}_window"
    return None
