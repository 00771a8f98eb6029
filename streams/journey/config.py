"""The journey configuration: every setting the model decides with, defined once.

A plain frozen dataclass, so the pure model reads its fields at attribute speed and imports no
process settings. The process settings nest it (``Settings.journey``) and validate it from the
environment: each field is read from ``JOURNEY_<FIELD NAME>`` (``JOURNEY_FREQUENCY_CAP=16h``).
Durations are held in milliseconds. Given as text (the environment, ``.env``) they are parsed
like every duration setting (``16h``, ``3d``, a bare number is seconds); given as numbers (in
Python, e.g. ``JourneyConfig(frequency_cap=2 * HOUR)``) they already are milliseconds.
"""

# ms("16h") in the defaults below returns an int (immutable), which RUF009 cannot see.
# ruff: noqa: RUF009

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, Field

from streams.durations import parse_duration_ms


def _ms(value: Any) -> Any:
    return parse_duration_ms(value) if isinstance(value, str) else value


def _known_zone(zone: str) -> str:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {zone!r}") from exc
    return zone


Ms = Annotated[int, BeforeValidator(_ms), Field(ge=0)]
Hour = Annotated[int, Field(ge=0, le=23)]
Count = Annotated[int, Field(ge=1)]
TimeZone = Annotated[str, AfterValidator(_known_zone)]


def ms(text: str) -> int:
    """A default written as people say it: ``ms("16h")``."""
    return parse_duration_ms(text)


@dataclass(frozen=True, slots=True)
class JourneyConfig:
    """The contract's defaults. Which trigger uses which setting: ``triggers.SPECS``."""

    # --- timing of the triggers (after their event) -------------------------------------------
    abandoned_cart_first_delay: Ms = ms("1h")
    abandoned_cart_second_delay: Ms = ms("24h")
    browse_abandonment_delay: Ms = ms("2h")
    delivery_check_in_delay: Ms = ms("3d")
    review_request_delay: Ms = ms("14d")
    nps_survey_delay: Ms = ms("7d")
    cross_sell_delay: Ms = ms("21d")
    win_back_delay: Ms = ms("90d")  # also when a customer's segment becomes LAPSED
    birthday_hour: Hour = 9  # local time of the customer's zone
    # --- at most once per window per customer --------------------------------------------------
    browse_abandonment_window: Ms = ms("7d")
    nps_survey_window: Ms = ms("90d")
    referral_window: Ms = ms("180d")
    # "Once per year": less than a year, so that this year's birthday deferred by the cap or
    # quiet hours (at most a few days) never blocks next year's.
    birthday_window: Ms = ms("360d")
    # --- delivery rules of every marketing trigger ----------------------------------------------
    frequency_cap: Ms = ms("16h")  # 0s: no cap
    frequency_cap_drop_after: Ms = ms("72h")
    quiet_hours_start: Hour = 21  # equal to the end: no quiet hours
    quiet_hours_end: Hour = 8
    default_time_zone: TimeZone = "Europe/Amsterdam"
    sunset_after: Count = 5
    replay_guard: Ms = ms("24h")
    marketing_consent_default: bool = False
    # --- analytics: an order within this time after an emitted trigger is attributed to it ------
    attribution_window: Ms = ms("5d")
    # --- memory per customer -------------------------------------------------------------------
    seen_event_ids_per_customer: Count = 64
    max_orders_kept: Count = 20
    max_carts_kept: Count = 10
