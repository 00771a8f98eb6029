"""The trigger specification table: everything about each trigger type, in one entry.

An entry (:class:`TriggerSpec`) says the type's category, what schedules it and after which
delay setting (or that it goes out at once), its window ("at most once per ..."), its exit
rule, what it does to the state when emitted, and the attributes it carries with their meaning.
The model's event handlers only update the state and call ``model.schedule(SPECS[TYPE], ...)``;
timing, windows, exits and categories are read from here, and the delivery rules every
marketing trigger obeys (consent, bounces, cap, quiet hours, sunset, replay guard) live in one
function, ``model._evaluate``. ``docs/triggers.md`` is generated from this table
(``python -m streams.journey.triggers > docs/triggers.md``; a unit test compares them).

Exit rules are asked when a trigger is scheduled, after every event of its customer, and again
when its timer fires (the contract's "exit conditions are checked again when a timer fires"):
a reason means the trigger is CANCELLED.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum

from streams.durations import format_duration_ms
from streams.journey.config import JourneyConfig
from streams.journey.decisions import (
    ALREADY_REVIEWED,
    CART_ADD,
    CART_EMPTIED,
    MARKETING,
    NEW_ORDER,
    NEWER_ORDER,
    ORDER_CANCELLED,
    ORDER_PLACED,
    ORDER_REFUNDED,
    ORDER_RETURNED,
    TRANSACTIONAL,
    Category,
    Reason,
)
from streams.journey.state import JourneyState, Timer


class TriggerType(StrEnum):
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
    BIRTHDAY = "BIRTHDAY"


ExitRule = Callable[[JourneyState, Timer], Reason | None]
_SETTINGS = frozenset(f.name for f in fields(JourneyConfig))


@dataclass(frozen=True, slots=True)
class Yearly:
    """Due every year on a date (given by its handler), at a local hour of the customer's zone.
    When one year's trigger is decided, the next year's is scheduled."""

    hour: str  # a JourneyConfig setting
    date_attribute: str  # the attribute holding the date, YYYY-MM-DD: next year is set from it
    years_attribute: str  # the attribute holding the years since the date's year


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    type: TriggerType
    category: Category
    fires: str  # what schedules it, in words
    # JourneyConfig settings: the delay after its event, one per reminder. None: at once,
    # unless it is yearly.
    delays: tuple[str, ...] = ()
    yearly: Yearly | None = None
    # A JourneyConfig setting: emitted at most once per this time per customer.
    window: str | None = None
    exit: ExitRule | None = None  # None: nothing cancels it
    # The one pending trigger of the type is per customer (a newer one replaces it), not per
    # order, cart, shipment or event.
    one_per_customer: bool = False
    # What emitting it changes in the state, beyond the delivery rules' bookkeeping.
    on_emit: Callable[[JourneyState, Timer], None] | None = None
    # Every attribute the sender may rely on, and its meaning (values are strings).
    attributes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        hour = self.yearly.hour if self.yearly is not None else None
        named = (*self.delays, self.window, hour)
        unknown = [s for s in named if s is not None and s not in _SETTINGS]
        if unknown:
            raise ValueError(f"{self.type}: {unknown} are not JourneyConfig settings")
        if self.yearly is not None and not self.one_per_customer:
            raise ValueError(f"{self.type}: a yearly trigger is one per customer")
        if self.window is not None:
            _ = self.window_reason  # a window needs its Reason: ValueError if missing

    @property
    def immediate(self) -> bool:
        """Decided in the same step as its event (no timer wheel round trip)."""
        return not self.delays and self.yearly is None

    @property
    def window_reason(self) -> Reason:
        return Reason(f"{self.type.lower()}_window")

    def delay(self, config: JourneyConfig, reminder: int = 1) -> int:
        return getattr(config, self.delays[reminder - 1]) if self.delays else 0

    def window_ms(self, config: JourneyConfig) -> int | None:
        return getattr(config, self.window) if self.window is not None else None


# --- exit rules ------------------------------------------------------------------------------
def _order_problem(state: JourneyState, timer: Timer, *, returned: bool = True) -> Reason | None:
    order = state.orders.get(timer.order_id or "")
    if order is None:
        return None
    if order.cancelled:
        return ORDER_CANCELLED
    if order.refunded or order.refunded_minor:
        return ORDER_REFUNDED
    if returned and order.returned:
        return ORDER_RETURNED
    return None


def order_cancelled(state: JourneyState, timer: Timer) -> Reason | None:
    """its order is cancelled"""
    order = state.orders.get(timer.order_id or "")
    return ORDER_CANCELLED if order is not None and order.cancelled else None


def order_undone(state: JourneyState, timer: Timer) -> Reason | None:
    """its order is cancelled, refunded (even partly) or returned"""
    return _order_problem(state, timer)


def order_undone_or_reviewed(state: JourneyState, timer: Timer) -> Reason | None:
    """the customer reviewed that order, or it is cancelled, refunded or returned"""
    order = state.orders.get(timer.order_id or "")
    if order is not None and order.reviewed:
        return ALREADY_REVIEWED
    return _order_problem(state, timer)


def cart_ordered_or_emptied(state: JourneyState, timer: Timer) -> Reason | None:
    """an order is placed after the cart's last change, or the cart becomes empty"""
    cart = state.carts.get(timer.cart_id or "")
    if cart is None or cart.ordered:
        return ORDER_PLACED
    if not cart.lines:
        return CART_EMPTIED
    if state.last_order_at is not None and state.last_order_at >= cart.last_change_at:
        return ORDER_PLACED
    return None


def cart_add_or_order(state: JourneyState, timer: Timer) -> Reason | None:
    """a product is added to a cart, or an order is placed, after the view"""
    viewed_at = int(timer.attributes.get("viewed_at", timer.due_at))
    if state.last_cart_add_at is not None and state.last_cart_add_at >= viewed_at:
        return CART_ADD
    if state.last_order_at is not None and state.last_order_at >= viewed_at:
        return ORDER_PLACED
    return None


def newer_order(state: JourneyState, timer: Timer) -> Reason | None:
    """a newer order exists, or its order is cancelled or refunded"""
    order = state.orders.get(timer.order_id or "")
    placed_at = order.placed_at if order is not None and order.placed_at is not None else 0
    if (
        state.last_order_id != timer.order_id
        and state.last_order_at is not None
        and state.last_order_at > placed_at
    ):
        return NEWER_ORDER
    return _order_problem(state, timer, returned=False)


def new_order(state: JourneyState, timer: Timer) -> Reason | None:
    """any new order (the timer belongs to the lapse after the order it names)"""
    return NEW_ORDER if state.last_order_id != timer.order_id else None


def _count_cart_reminder(state: JourneyState, timer: Timer) -> None:
    # A cart change reschedules only the reminders not sent yet.
    cart = state.carts.get(timer.cart_id or "")
    if cart is not None:
        cart.reminders_emitted = max(cart.reminders_emitted, int(timer.attributes["reminder"]))


# --- the table -------------------------------------------------------------------------------
_DELIVERED = {
    "delivered_at": "when the order was delivered (epoch ms)",
    "categories": "comma-separated categories of the order (absent if none known)",
}
# The newest lifetime-value prediction (journey.predictions); absent until the first fit.
_PREDICTION = {
    "probability_alive": "predicted probability that the customer still buys, 0-1 (BG/NBD)",
    "expected_orders_90d": "predicted purchases in the next 90 days",
    "predicted_clv_minor": "predicted revenue in the next 365 days, minor units",
    "expected_next_order_at": "median time of the next purchase if still a customer (epoch ms)",
    "predicted_at": "when the prediction was fitted (epoch ms)",
}
_FEEDBACK = {
    "kind": "NPS or REVIEW",
    "score": "the score given (NPS 0-10, review 1-5)",
    "product_id": "the product reviewed (absent for NPS)",
}

# Keyed by the type's string: a Timer or a Trigger record holds it as a plain str.
SPECS: Mapping[str, TriggerSpec] = {
    spec.type: spec
    for spec in (
        TriggerSpec(
            type=TriggerType.ORDER_CONFIRMATION,
            category=TRANSACTIONAL,
            fires="order PLACED (once per order)",
            attributes={
                "first_order": "true for the customer's first order that counts, else false",
                "total_minor": "order total in minor units",
                "currency": "ISO 4217 code",
                "items": "number of items",
                "categories": "comma-separated categories bought (absent if none known)",
                "coupon": "the coupon code used (absent if none)",
            },
        ),
        TriggerSpec(
            type=TriggerType.SHIPPING_CONFIRMATION,
            category=TRANSACTIONAL,
            fires="shipment SHIPPED (once per shipment)",
            exit=order_cancelled,
            attributes={
                "carrier": "the carrier (absent if unknown)",
                "tracking_code": "the carrier's tracking code (absent if unknown)",
                "tracking_url": "the tracking link (absent if unknown)",
            },
        ),
        TriggerSpec(
            type=TriggerType.DELIVERY_CHECK_IN,
            category=MARKETING,
            fires="shipment DELIVERED (first delivery of the order)",
            delays=("delivery_check_in_delay",),
            exit=order_undone,
            attributes=_DELIVERED,
        ),
        TriggerSpec(
            type=TriggerType.REVIEW_REQUEST,
            category=MARKETING,
            fires="shipment DELIVERED (first delivery of the order)",
            delays=("review_request_delay",),
            exit=order_undone_or_reviewed,
            attributes=_DELIVERED,
        ),
        TriggerSpec(
            type=TriggerType.NPS_SURVEY,
            category=MARKETING,
            fires="shipment DELIVERED (first delivery of the order)",
            delays=("nps_survey_delay",),
            window="nps_survey_window",
            exit=order_undone,
            attributes=_DELIVERED,
        ),
        TriggerSpec(
            type=TriggerType.ABANDONED_CART,
            category=MARKETING,
            fires="the last change of a non-empty cart; one reminder per delay",
            delays=("abandoned_cart_first_delay", "abandoned_cart_second_delay"),
            exit=cart_ordered_or_emptied,
            on_emit=_count_cart_reminder,
            attributes={
                "reminder": "1 for the first reminder, 2 for the second",
                "cart_lines": "comma-separated product_id x quantity, e.g. p1x2,p7x1",
                "items": "number of items in the cart",
                "cart_value_minor": "cart value in minor units (absent if no prices known)",
                "currency": "ISO 4217 code (with cart_value_minor)",
                "categories": "comma-separated categories in the cart (absent if none known)",
            },
        ),
        TriggerSpec(
            type=TriggerType.BROWSE_ABANDONMENT,
            category=MARKETING,
            fires="a PRODUCT page view; a newer view replaces the pending one",
            delays=("browse_abandonment_delay",),
            window="browse_abandonment_window",
            exit=cart_add_or_order,
            one_per_customer=True,
            attributes={
                "product_id": "the product viewed last",
                "viewed_at": "when it was viewed (epoch ms)",
                "category": "its category (absent if unknown)",
            },
        ),
        TriggerSpec(
            type=TriggerType.CROSS_SELL,
            category=MARKETING,
            fires="shipment DELIVERED (first delivery of the order)",
            delays=("cross_sell_delay",),
            exit=newer_order,
            attributes={**_DELIVERED, **_PREDICTION},
        ),
        TriggerSpec(
            type=TriggerType.WIN_BACK,
            category=MARKETING,
            fires="the last order that counts (once per lapse)",
            delays=("win_back_delay",),
            exit=new_order,
            attributes={
                "last_order_at": "when the last order was placed (epoch ms)",
                "orders": "the customer's number of orders that count",
                **_PREDICTION,
            },
        ),
        TriggerSpec(
            type=TriggerType.REFERRAL_INVITE,
            category=MARKETING,
            fires="NPS 9-10 or review 5",
            window="referral_window",
            attributes=_FEEDBACK,
        ),
        TriggerSpec(
            type=TriggerType.DETRACTOR_FOLLOW_UP,
            category=TRANSACTIONAL,
            fires="NPS 0-6 or review 1-2",
            attributes=_FEEDBACK,
        ),
        TriggerSpec(
            type=TriggerType.BIRTHDAY,
            category=MARKETING,
            fires="the customer's birthday (CustomerChanged.birthday), every year; learned on "
            "the day itself, it still goes out that day",
            yearly=Yearly(hour="birthday_hour", date_attribute="birthday", years_attribute="age"),
            window="birthday_window",
            one_per_customer=True,
            attributes={
                "birthday": "the date of birth, YYYY-MM-DD (29 Feb is celebrated on 28 Feb in "
                "other years)",
                "age": "the age the customer turns",
            },
        ),
    )
}


def exit_reason(state: JourneyState, timer: Timer) -> Reason | None:
    rule = SPECS[timer.trigger_type].exit
    return rule(state, timer) if rule is not None else None


def window_reason(
    state: JourneyState, timer: Timer, now: int, config: JourneyConfig
) -> Reason | None:
    """At most once per window per customer: the spec's ``window`` setting."""
    spec = SPECS[timer.trigger_type]
    window = spec.window_ms(config)
    if window is None:
        return None
    last = state.last_emitted.get(timer.trigger_type)
    if last is not None and now - last < window:
        return spec.window_reason
    return None


# --- documentation ---------------------------------------------------------------------------
def markdown(config: JourneyConfig | None = None) -> str:
    """docs/triggers.md: the table as the email sender reads it, with the default settings."""
    config = config or JourneyConfig()

    def setting(name: str) -> str:
        return f"`{format_duration_ms(getattr(config, name))}` (`JOURNEY_{name.upper()}`)"

    lines = [
        "# Trigger types",
        "",
        "Generated from `streams/journey/triggers.py` (`SPECS`) by",
        "`python -m streams.journey.triggers > docs/triggers.md`; a unit test fails when this",
        "file and the table disagree. Times are the defaults; each is a setting.",
        "",
        "Every trigger carries `trigger_id`, `trigger_type`, `category`, `customer_id`,",
        "`due_at`, `emitted_at`, `source_event_id`, `stage` and, when it is about one,",
        "`order_id`, `cart_id`, `shipment_id` (see the contract). Marketing triggers obey",
        "consent, bounces and complaints, the frequency cap, quiet hours, sunset; every trigger",
        "obeys the replay guard. A trigger not emitted is recorded in ClickHouse",
        "`journey.triggers` with its status and reason.",
        "",
        "| type | category | fires | timing | at most once per | cancelled when |",
        "|---|---|---|---|---|---|",
    ]
    for spec in SPECS.values():
        timing = ", then ".join(f"{setting(d)} after" for d in spec.delays) or "at once"
        if spec.yearly is not None:
            hour = getattr(config, spec.yearly.hour)
            timing = f"{hour:02d}:00 (`JOURNEY_{spec.yearly.hour.upper()}`) in their time zone"
        window = setting(spec.window) if spec.window else ""
        exits = (spec.exit.__doc__ or "").strip() if spec.exit else ""
        lines.append(
            f"| `{spec.type}` | {spec.category.lower()} | {spec.fires} | {timing} | {window} "
            f"| {exits} |"
        )
    lines += ["", "## Attributes", ""]
    for spec in SPECS.values():
        lines += [f"### `{spec.type}`", ""]
        lines += [f"- `{name}`: {meaning}" for name, meaning in spec.attributes.items()]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
