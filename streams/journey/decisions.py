"""What the journey model decides, and the configuration it decides with."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from schemas.records import Trigger
from streams.settings import Settings

# Final statuses of a trigger decision (the contract's journey.triggers.status).
EMITTED = "EMITTED"
SUPPRESSED = "SUPPRESSED"
EXPIRED = "EXPIRED"
CANCELLED = "CANCELLED"

TRANSACTIONAL = "TRANSACTIONAL"
MARKETING = "MARKETING"


@dataclass(frozen=True, slots=True)
class Emit:
    """Send this trigger to the messaging topic (and record it as EMITTED)."""

    trigger: Trigger


@dataclass(frozen=True, slots=True)
class Drop:
    """A trigger that sends nothing: SUPPRESSED, EXPIRED or CANCELLED, and why."""

    trigger_id: str
    trigger_type: str
    category: str
    customer_id: str
    status: str
    reason: str
    due_at: int
    decided_at: int
    order_id: str | None = None
    cart_id: str | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    """A timer was set (or moved): the trigger is evaluated again at ``fire_at``."""

    key: str
    trigger_id: str
    trigger_type: str
    fire_at: int


@dataclass(frozen=True, slots=True)
class Unschedule:
    """A timer is gone without a decision of its own (replaced by a newer one for the same key)."""

    key: str
    trigger_id: str


@dataclass(frozen=True, slots=True)
class Erase:
    """Delete everything stored about the customer (ClickHouse rows included)."""

    customer_id: str


Decision = Emit | Drop | Schedule | Unschedule | Erase


def trigger_id(customer_id: str, trigger_type: str, subject: str, source_event_id: str) -> str:
    """Deterministic: the same input history gives the same id, so the sender can deduplicate."""
    text = f"{customer_id}\x1f{trigger_type}\x1f{subject}\x1f{source_event_id}"
    return "t-" + hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class JourneyConfig:
    """The settings the model uses, in milliseconds, as a small immutable value."""

    abandoned_cart_first_delay: int = 3_600_000
    abandoned_cart_second_delay: int = 86_400_000
    browse_abandonment_delay: int = 7_200_000
    browse_abandonment_window: int = 7 * 86_400_000
    delivery_check_in_delay: int = 3 * 86_400_000
    review_request_delay: int = 14 * 86_400_000
    nps_survey_delay: int = 7 * 86_400_000
    nps_survey_window: int = 90 * 86_400_000
    cross_sell_delay: int = 21 * 86_400_000
    win_back_delay: int = 90 * 86_400_000
    referral_window: int = 180 * 86_400_000
    frequency_cap: int = 16 * 3_600_000
    frequency_cap_drop_after: int = 72 * 3_600_000
    quiet_hours_start: int = 21
    quiet_hours_end: int = 8
    default_time_zone: str = "Europe/Amsterdam"
    sunset_after: int = 5
    replay_guard: int = 86_400_000
    marketing_consent_default: bool = False
    seen_event_ids: int = 64
    max_orders_kept: int = 20
    max_carts_kept: int = 10

    @classmethod
    def from_settings(cls, settings: Settings) -> JourneyConfig:
        return cls(
            abandoned_cart_first_delay=settings.abandoned_cart_first_delay,
            abandoned_cart_second_delay=settings.abandoned_cart_second_delay,
            browse_abandonment_delay=settings.browse_abandonment_delay,
            browse_abandonment_window=settings.browse_abandonment_window,
            delivery_check_in_delay=settings.delivery_check_in_delay,
            review_request_delay=settings.review_request_delay,
            nps_survey_delay=settings.nps_survey_delay,
            nps_survey_window=settings.nps_survey_window,
            cross_sell_delay=settings.cross_sell_delay,
            win_back_delay=settings.win_back_delay,
            referral_window=settings.referral_window,
            frequency_cap=settings.frequency_cap,
            frequency_cap_drop_after=settings.frequency_cap_drop_after,
            quiet_hours_start=settings.quiet_hours_start,
            quiet_hours_end=settings.quiet_hours_end,
            default_time_zone=settings.default_time_zone,
            sunset_after=settings.sunset_after,
            replay_guard=settings.replay_guard,
            marketing_consent_default=settings.marketing_consent_default,
            seen_event_ids=settings.seen_event_ids_per_customer,
        )
