"""Every row of the contract's trigger table: when it fires, and when it is cancelled/suppressed.

Each case plays a customer's history on a fake clock (events delivered at their own time, a
worker firing timers at their fire times in between) and checks every final decision of one
trigger type: the Emits (time and attributes) and the Drops (status and reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from schemas.codec import Codec
from schemas.records import InputEvent, Trigger
from streams.journey.config import JourneyConfig
from streams.journey.decisions import Category, Reason, Segment, Stage, Status
from streams.journey.triggers import SPECS, markdown
from streams.journey.triggers import TriggerType as T
from tests.unit.journey.support import (
    AMS,
    BASE,
    CONFIG,
    CUSTOMER,
    DAY,
    HOUR,
    MINUTE,
    NYC,
    Sim,
    cancelled,
    cart_add,
    cart_remove,
    customer,
    delivered,
    erased,
    local,
    nps,
    placed,
    refunded,
    returned,
    review,
    shipped,
    view,
)

B = BASE
D = B + 2 * DAY  # delivery time of the standard purchase
PURCHASE: tuple[InputEvent, ...] = (placed(B), shipped(B + DAY), delivered(D))


@dataclass(frozen=True)
class Case:
    name: str
    events: tuple[InputEvent, ...]
    until: int
    emitted: tuple[tuple[int, dict[str, str]], ...] = ()  # (emitted_at, attributes subset)
    dropped: tuple[tuple[str, str], ...] = ()  # (status, reason), in decision order
    config: JourneyConfig = field(default=CONFIG)


def check(trigger_type: str, case: Case) -> Sim:
    sim = Sim(case.config).play(case.events, until=case.until)
    got = sim.emitted(trigger_type)
    assert [t.emitted_at for t in got] == [at for at, _ in case.emitted], got
    for trigger, (_, attributes) in zip(got, case.emitted, strict=True):
        assert trigger.category == SPECS[trigger_type].category
        assert {k: trigger.attributes.get(k) for k in attributes} == attributes, trigger
        # Only documented attributes (docs/triggers.md is generated from the table).
        assert set(trigger.attributes) <= set(SPECS[trigger_type].attributes), trigger
    assert [(d.status, d.reason) for d in sim.dropped(trigger_type)] == list(case.dropped)
    return sim


def cases(*rows: Case) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("case", rows, ids=[r.name for r in rows])


# --- the table's categories ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("trigger_type", "category"),
    [
        (T.ORDER_CONFIRMATION, Category.TRANSACTIONAL),
        (T.SHIPPING_CONFIRMATION, Category.TRANSACTIONAL),
        (T.DELIVERY_CHECK_IN, Category.MARKETING),
        (T.REVIEW_REQUEST, Category.MARKETING),
        (T.NPS_SURVEY, Category.MARKETING),
        (T.ABANDONED_CART, Category.MARKETING),
        (T.BROWSE_ABANDONMENT, Category.MARKETING),
        (T.CROSS_SELL, Category.MARKETING),
        (T.WIN_BACK, Category.MARKETING),
        (T.REFERRAL_INVITE, Category.MARKETING),
        (T.DETRACTOR_FOLLOW_UP, Category.TRANSACTIONAL),
        (T.BIRTHDAY, Category.MARKETING),
    ],
)
def test_category(trigger_type: str, category: str) -> None:
    assert SPECS[trigger_type].category == category
    assert len(SPECS) == 12


def test_every_trigger_type_of_the_table_is_exercised() -> None:
    """Each type has its table of cases below (``test_<type>``), and one of them emits it."""
    for trigger_type in SPECS:
        test = globals().get(f"test_{trigger_type.lower()}")
        assert test is not None, f"no test_{trigger_type.lower()} for {trigger_type}"
        rows = [c for m in test.pytestmark if m.name == "parametrize" for c in m.args[1]]
        assert any(isinstance(c, Case) and c.emitted for c in rows), trigger_type


def test_docs_are_generated_from_the_table() -> None:
    docs = Path(__file__).parents[3] / "docs" / "triggers.md"
    assert docs.read_text() == markdown(), "run: python -m streams.journey.triggers > " + str(docs)


# --- ORDER_CONFIRMATION ----------------------------------------------------------------------
FIRST = {"first_order": "true", "total_minor": "5000", "currency": "EUR", "items": "2"}


@cases(
    Case("first_order", (placed(B),), B + HOUR,
         emitted=((B, FIRST | {"categories": "shoes,socks"}),)),
    Case(
        "second_order_not_first",
        (placed(B, "o1"), placed(B + DAY, "o2", total=700)),
        B + 2 * DAY,
        emitted=((B, {"first_order": "true"}),
                 (B + DAY, {"first_order": "false", "total_minor": "700"})),
    ),
    Case("coupon", (placed(B, coupon="WELCOME10"),), B + HOUR,
         emitted=((B, {"coupon": "WELCOME10"}),)),
    Case(
        "same_order_placed_twice_confirmed_once",
        (placed(B), placed(B + 5 * MINUTE)),
        B + DAY,
        emitted=((B, FIRST),),
    ),
    Case(
        "first_order_after_a_cancelled_one",  # cancelled orders are not purchases
        (placed(B, "o1"), cancelled(B + HOUR, "o1"), placed(B + DAY, "o2")),
        B + 2 * DAY,
        emitted=((B, {"first_order": "true"}), (B + DAY, {"first_order": "true"})),
    ),
)  # fmt: skip
def test_order_confirmation(case: Case) -> None:
    sim = check(T.ORDER_CONFIRMATION, case)
    assert all(t.order_id is not None for t in sim.emitted(T.ORDER_CONFIRMATION))


# --- SHIPPING_CONFIRMATION -------------------------------------------------------------------
TRACKING = {
    "carrier": "DHL",
    "tracking_code": "JD0001",
    "tracking_url": "https://track.example/JD0001",
}


@cases(
    Case("shipped", (placed(B), shipped(B + DAY)), B + 2 * DAY, emitted=((B + DAY, TRACKING),)),
    Case(
        "order_cancelled",
        (placed(B), cancelled(B + HOUR), shipped(B + DAY)),
        B + 2 * DAY,
        dropped=((Status.CANCELLED, "order_cancelled"),),
    ),
    Case(
        "same_shipment_twice_once",
        (placed(B), shipped(B + DAY), shipped(B + DAY + HOUR)),
        B + 2 * DAY,
        emitted=((B + DAY, TRACKING),),
    ),
    Case(
        "split_shipment_twice",
        (placed(B), shipped(B + DAY, shipment_id="s1"), shipped(B + DAY + HOUR, shipment_id="s2")),
        B + 2 * DAY,
        emitted=((B + DAY, TRACKING), (B + DAY + HOUR, TRACKING)),
    ),
)  # fmt: skip
def test_shipping_confirmation(case: Case) -> None:
    sim = check(T.SHIPPING_CONFIRMATION, case)
    for trigger in sim.emitted(T.SHIPPING_CONFIRMATION):
        assert trigger.order_id == "o1"
        assert trigger.shipment_id in ("s-o1", "s1", "s2")


# --- DELIVERY_CHECK_IN -----------------------------------------------------------------------
@cases(
    Case("three_days_after_delivery", PURCHASE, D + 4 * DAY,
         emitted=((D + 3 * DAY, {"delivered_at": str(D), "categories": "shoes,socks"}),)),
    Case("order_cancelled", (*PURCHASE, cancelled(D + DAY)), D + 4 * DAY,
         dropped=((Status.CANCELLED, "order_cancelled"),)),
    Case("order_refunded", (*PURCHASE, refunded(D + DAY)), D + 4 * DAY,
         dropped=((Status.CANCELLED, "order_refunded"),)),
    Case("partially_refunded", (*PURCHASE, refunded(D + DAY, amount=1_000)), D + 4 * DAY,
         dropped=((Status.CANCELLED, "order_refunded"),)),
    Case("order_returned", (*PURCHASE, returned(D + DAY)), D + 4 * DAY,
         dropped=((Status.CANCELLED, "order_returned"),)),
)  # fmt: skip
def test_delivery_check_in(case: Case) -> None:
    check(T.DELIVERY_CHECK_IN, case)


# --- REVIEW_REQUEST --------------------------------------------------------------------------
@cases(
    Case("fourteen_days_after_delivery", PURCHASE, D + 15 * DAY, emitted=((D + 14 * DAY, {}),)),
    Case("reviewed_that_order", (*PURCHASE, review(D + 5 * DAY, 3, "o1")), D + 15 * DAY,
         dropped=((Status.CANCELLED, "already_reviewed"),)),
    Case("reviewed_before_the_order_reached_us", (review(B - HOUR, 4, "o1"), *PURCHASE),
         D + 15 * DAY, dropped=((Status.CANCELLED, "already_reviewed"),)),
    Case("review_of_another_order_does_not_cancel", (*PURCHASE, review(D + 5 * DAY, 3, "o9")),
         D + 15 * DAY, emitted=((D + 14 * DAY, {}),)),
    Case("order_returned", (*PURCHASE, returned(D + 5 * DAY)), D + 15 * DAY,
         dropped=((Status.CANCELLED, "order_returned"),)),
    Case("order_refunded", (*PURCHASE, refunded(D + 5 * DAY)), D + 15 * DAY,
         dropped=((Status.CANCELLED, "order_refunded"),)),
)  # fmt: skip
def test_review_request(case: Case) -> None:
    check(T.REVIEW_REQUEST, case)


# --- NPS_SURVEY ------------------------------------------------------------------------------
SECOND_PURCHASE = (placed(B + 3 * DAY, "o2"), delivered(B + 5 * DAY, "o2"))
LATER_PURCHASE = (placed(B + 98 * DAY, "o2"), delivered(B + 100 * DAY, "o2"))


@cases(
    Case("seven_days_after_delivery", PURCHASE, D + 8 * DAY, emitted=((D + 7 * DAY, {}),)),
    Case("order_refunded", (*PURCHASE, refunded(D + DAY)), D + 8 * DAY,
         dropped=((Status.CANCELLED, "order_refunded"),)),
    Case("order_returned", (*PURCHASE, returned(D + DAY)), D + 8 * DAY,
         dropped=((Status.CANCELLED, "order_returned"),)),
    Case("once_per_90_days", (*PURCHASE, *SECOND_PURCHASE), B + 20 * DAY,
         emitted=((D + 7 * DAY, {}),), dropped=((Status.SUPPRESSED, "nps_survey_window"),)),
    Case("again_after_90_days", (*PURCHASE, *LATER_PURCHASE), B + 110 * DAY,
         emitted=((D + 7 * DAY, {}), (B + 107 * DAY, {}))),
)  # fmt: skip
def test_nps_survey(case: Case) -> None:
    check(T.NPS_SURVEY, case)


# --- ABANDONED_CART --------------------------------------------------------------------------
CART_1 = {
    "reminder": "1", "cart_lines": "p1x1", "items": "1", "cart_value_minor": "1000",
    "currency": "EUR", "categories": "shoes",
}  # fmt: skip
CART_2 = CART_1 | {"reminder": "2"}
TWO_LINES = {"cart_lines": "p1x1,p2x2", "items": "3", "cart_value_minor": "3000"}
BOTH_CANCELLED_BY_ORDER = ((Status.CANCELLED, "order_placed"), (Status.CANCELLED, "order_placed"))


@cases(
    Case("reminders_at_1h_and_24h", (cart_add(B),), B + 2 * DAY,
         emitted=((B + HOUR, CART_1), (B + DAY, CART_2))),
    Case("timed_from_the_last_change",
         (cart_add(B), cart_add(B + 30 * MINUTE, "p2", qty=2, category="socks")), B + 2 * DAY,
         emitted=((B + 90 * MINUTE, TWO_LINES | {"reminder": "1", "categories": "shoes,socks"}),
                  (B + DAY + 30 * MINUTE, TWO_LINES | {"reminder": "2"}))),
    Case("order_of_that_cart", (cart_add(B), placed(B + 30 * MINUTE, cart="k1")), B + 2 * DAY,
         dropped=BOTH_CANCELLED_BY_ORDER),
    Case("order_without_cart_id", (cart_add(B), placed(B + 30 * MINUTE)), B + 2 * DAY,
         dropped=BOTH_CANCELLED_BY_ORDER),
    Case("order_between_reminders", (cart_add(B), placed(B + 2 * HOUR, cart="k1")), B + 2 * DAY,
         emitted=((B + HOUR, CART_1),), dropped=((Status.CANCELLED, "order_placed"),)),
    Case("cart_emptied", (cart_add(B), cart_remove(B + 30 * MINUTE)), B + 2 * DAY,
         dropped=((Status.CANCELLED, "cart_emptied"), (Status.CANCELLED, "cart_emptied"))),
    Case("partly_emptied_still_fires",
         (cart_add(B, qty=2), cart_remove(B + 30 * MINUTE, qty=1)), B + 2 * DAY,
         emitted=((B + 90 * MINUTE, {"reminder": "1", "cart_lines": "p1x1"}),
                  (B + DAY + 30 * MINUTE, {"reminder": "2"}))),
)  # fmt: skip
def test_abandoned_cart(case: Case) -> None:
    sim = check(T.ABANDONED_CART, case)
    assert all(t.cart_id == "k1" for t in sim.emitted(T.ABANDONED_CART))


# --- BROWSE_ABANDONMENT ----------------------------------------------------------------------
BROWSED = {"product_id": "p1", "category": "shoes", "viewed_at": str(B)}


@cases(
    Case("two_hours_after_a_product_view", (view(B),), B + DAY, emitted=((B + 2 * HOUR, BROWSED),)),
    Case("cart_add_since", (view(B), cart_add(B + HOUR)), B + DAY,
         dropped=((Status.CANCELLED, "cart_add"),)),
    Case("order_since", (view(B), placed(B + HOUR)), B + DAY,
         dropped=((Status.CANCELLED, "order_placed"),)),
    Case("not_a_product_page", (view(B, None, page_type="HOME"), view(B, None, page_type="CART")),
         B + DAY),
    Case("about_the_latest_view", (view(B), view(B + HOUR, "p2", category="bags")), B + DAY,
         emitted=((B + 3 * HOUR, {"product_id": "p2", "category": "bags"}),)),
    Case("older_cart_add_does_not_cancel",
         (cart_add(B - HOUR), cart_remove(B - 30 * MINUTE), view(B)), B + DAY,
         emitted=((B + 2 * HOUR, BROWSED),)),
    Case("once_per_7_days", (view(B), view(B + 3 * DAY), view(B + 8 * DAY)), B + 9 * DAY,
         emitted=((B + 2 * HOUR, {}), (B + 8 * DAY + 2 * HOUR, {})),
         dropped=((Status.SUPPRESSED, "browse_abandonment_window"),)),
)  # fmt: skip
def test_browse_abandonment(case: Case) -> None:
    check(T.BROWSE_ABANDONMENT, case)


# --- CROSS_SELL ------------------------------------------------------------------------------
@cases(
    Case("21_days_after_delivery_with_categories", PURCHASE, D + 22 * DAY,
         emitted=((D + 21 * DAY, {"categories": "shoes,socks", "delivered_at": str(D)}),)),
    Case("newer_order", (*PURCHASE, placed(D + 10 * DAY, "o2")), D + 22 * DAY,
         dropped=((Status.CANCELLED, "newer_order"),)),
    Case("newer_order_after_it_was_scheduled_but_cancelled_itself",
         (*PURCHASE, placed(D + 10 * DAY, "o2"), cancelled(D + 10 * DAY + HOUR, "o2")),
         D + 22 * DAY, dropped=((Status.CANCELLED, "newer_order"),)),
)  # fmt: skip
def test_cross_sell(case: Case) -> None:
    check(T.CROSS_SELL, case)


# --- WIN_BACK --------------------------------------------------------------------------------
@cases(
    Case("90_days_after_the_last_order", (placed(B),), B + 91 * DAY,
         emitted=((B + 90 * DAY, {"last_order_at": str(B), "orders": "1"}),)),
    Case("new_order_cancels_and_restarts_the_lapse", (placed(B), placed(B + 30 * DAY, "o2")),
         B + 130 * DAY, emitted=((B + 120 * DAY, {"last_order_at": str(B + 30 * DAY)}),),
         dropped=((Status.CANCELLED, "new_order"),)),
    Case("once_per_lapse", (placed(B),), B + 300 * DAY, emitted=((B + 90 * DAY, {}),)),
    Case("next_lapse_after_a_new_order", (placed(B), placed(B + 100 * DAY, "o2")), B + 300 * DAY,
         emitted=((B + 90 * DAY, {}), (B + 190 * DAY, {"orders": "2"}))),
    Case("cancelled_order_is_no_purchase", (placed(B), cancelled(B + HOUR)), B + 100 * DAY,
         dropped=((Status.CANCELLED, "new_order"),)),
    Case("cancelled_newer_order_keeps_the_lapse",
         (placed(B), placed(B + 30 * DAY, "o2"), cancelled(B + 31 * DAY, "o2")), B + 200 * DAY,
         emitted=((B + 90 * DAY, {"last_order_at": str(B)}),),
         dropped=((Status.CANCELLED, "new_order"), (Status.CANCELLED, "new_order"))),
    Case("no_second_win_back_when_the_newer_order_is_cancelled",
         (placed(B), placed(B + 90 * DAY + HOUR, "o2"), cancelled(B + 90 * DAY + 2 * HOUR, "o2")),
         B + 200 * DAY, emitted=((B + 90 * DAY, {}),), dropped=((Status.CANCELLED, "new_order"),)),
)  # fmt: skip
def test_win_back(case: Case) -> None:
    check(T.WIN_BACK, case)


# --- REFERRAL_INVITE -------------------------------------------------------------------------
@cases(
    Case("nps_9", (nps(B, 9),), B + HOUR, emitted=((B, {"kind": "NPS", "score": "9"}),)),
    Case("nps_10", (nps(B, 10),), B + HOUR, emitted=((B, {"kind": "NPS", "score": "10"}),)),
    Case("review_5", (review(B, 5),), B + HOUR,
         emitted=((B, {"kind": "REVIEW", "score": "5", "product_id": "p1"}),)),
    Case("nps_8_passive", (nps(B, 8),), B + HOUR),
    Case("review_4", (review(B, 4),), B + HOUR),
    Case("once_per_180_days", (nps(B, 10), review(B + 30 * DAY, 5), nps(B + 181 * DAY, 9)),
         B + 182 * DAY, emitted=((B, {}), (B + 181 * DAY, {"score": "9"})),
         dropped=((Status.SUPPRESSED, "referral_invite_window"),)),
)  # fmt: skip
def test_referral_invite(case: Case) -> None:
    check(T.REFERRAL_INVITE, case)


# --- DETRACTOR_FOLLOW_UP ---------------------------------------------------------------------
@cases(
    *(Case(f"nps_{s}", (nps(B, s),), B + HOUR, emitted=((B, {"kind": "NPS", "score": str(s)}),))
      for s in range(0, 7)),
    Case("review_1", (review(B, 1),), B + HOUR, emitted=((B, {"kind": "REVIEW", "score": "1"}),)),
    Case("review_2", (review(B, 2),), B + HOUR, emitted=((B, {"kind": "REVIEW", "score": "2"}),)),
    Case("nps_7_passive", (nps(B, 7),), B + HOUR),
    Case("review_3", (review(B, 3),), B + HOUR),
    Case("every_detractor_answer", (nps(B, 3), nps(B + HOUR, 2)), B + DAY,
         emitted=((B, {"score": "3"}), (B + HOUR, {"score": "2"}))),
)  # fmt: skip
def test_detractor_follow_up(case: Case) -> None:
    check(T.DETRACTOR_FOLLOW_UP, case)


# --- BIRTHDAY --------------------------------------------------------------------------------
def ams(*args: int) -> int:
    return local(AMS, *args)


JUNE_10 = date(1990, 6, 10)  # BASE is 2024-06-04 10:00: the birthday comes six days later
TODAY = date(1990, 6, 4)
AT_34 = {"birthday": "1990-06-10", "age": "34"}


@cases(
    Case("at_nine_on_the_birthday", (customer(B, birthday=JUNE_10),), ams(2024, 6, 11),
         emitted=((ams(2024, 6, 10, 9), AT_34),)),
    Case("in_the_customer_s_time_zone",
         (customer(B, time_zone="America/New_York", birthday=JUNE_10),), ams(2024, 6, 11),
         emitted=((local(NYC, 2024, 6, 10, 9), AT_34),)),
    Case("learned_on_the_day_itself", (customer(B, birthday=TODAY),), B + DAY,
         emitted=((B, {"birthday": "1990-06-04", "age": "34"}),)),
    Case("learned_on_the_day_itself_in_quiet_hours", (customer(ams(2024, 6, 4, 22), birthday=TODAY),),
         B + 2 * DAY, emitted=((ams(2024, 6, 5, 8), {"age": "34"}),)),
    Case("once_every_year", (customer(B, birthday=JUNE_10),), ams(2026, 6, 11),
         emitted=((ams(2024, 6, 10, 9), AT_34), (ams(2025, 6, 10, 9), {"age": "35"}),
                  (ams(2026, 6, 10, 9), {"age": "36"}))),
    Case("told_again_after_it_went_out",
         (customer(B, birthday=JUNE_10), customer(ams(2024, 6, 10, 12), birthday=JUNE_10)),
         ams(2024, 12, 31), emitted=((ams(2024, 6, 10, 9), AT_34),)),
    Case("corrected_after_it_went_out_waits_a_year",
         (customer(B, birthday=JUNE_10), customer(ams(2024, 6, 11), birthday=date(1990, 6, 20))),
         ams(2025, 6, 21), emitted=((ams(2024, 6, 10, 9), AT_34),
                                    (ams(2025, 6, 20, 9), {"birthday": "1990-06-20"}))),
    Case("moved_before_it_went_out", (customer(B, birthday=JUNE_10),
                                      customer(B + HOUR, birthday=date(1990, 6, 7))),
         ams(2024, 6, 11), emitted=((ams(2024, 6, 7, 9), {"birthday": "1990-06-07"}),)),
    Case("no_consent_every_year", (customer(B, birthday=JUNE_10),), ams(2025, 6, 11),
         dropped=((Status.SUPPRESSED, "no_consent"), (Status.SUPPRESSED, "no_consent")),
         config=JourneyConfig()),
    Case("consent_given_on_the_day", (customer(B, birthday=JUNE_10),
                                      customer(ams(2024, 6, 10, 15), consent=True)),
         ams(2024, 6, 11), dropped=((Status.SUPPRESSED, "no_consent"),),
         config=JourneyConfig()),
    Case("deferred_by_the_frequency_cap", (customer(B, birthday=JUNE_10),
                                           view(ams(2024, 6, 9, 17))),
         ams(2024, 6, 11), emitted=((ams(2024, 6, 10, 11), AT_34),)),
    Case("29_february_in_a_common_year", (customer(B, birthday=date(1992, 2, 29)),),
         ams(2025, 3, 1), emitted=((ams(2025, 2, 28, 9), {"birthday": "1992-02-29", "age": "33"}),)),
    Case("told_long_ago_replayed", (customer(ams(2023, 1, 1), birthday=JUNE_10),),
         ams(2024, 6, 11), emitted=((ams(2024, 6, 10, 9), AT_34),),
         dropped=((Status.EXPIRED, "replay_guard"),)),
    Case("erased", (customer(B, birthday=JUNE_10), erased(B + DAY)), ams(2025, 6, 11)),
)  # fmt: skip
def test_birthday(case: Case) -> None:
    sim = check(T.BIRTHDAY, case)
    if not sim.state.erased:  # next year's is always pending
        (pending,) = [t for t in sim.state.timers.values() if t.trigger_type == T.BIRTHDAY]
        assert pending.due_at > case.until


# --- the standard purchase, end to end -------------------------------------------------------
def test_full_post_purchase_journey() -> None:
    sim = Sim().play(PURCHASE, until=B + 100 * DAY)
    assert [(t.trigger_type, t.emitted_at) for t in sim.emitted()] == [
        (T.ORDER_CONFIRMATION, B),
        (T.SHIPPING_CONFIRMATION, B + DAY),
        (T.DELIVERY_CHECK_IN, D + 3 * DAY),
        (T.NPS_SURVEY, D + 7 * DAY),
        (T.REVIEW_REQUEST, D + 14 * DAY),
        (T.CROSS_SELL, D + 21 * DAY),
        (T.WIN_BACK, B + 90 * DAY),
    ]
    assert sim.dropped() == []
    assert sim.state.timers == {}


def test_every_trigger_type_is_in_the_trigger_schema() -> None:
    """A type of the table the messaging topic cannot carry would fail at its first emit."""
    codec = Codec.load()
    sim = Sim().play((customer(B, birthday=JUNE_10),), until=ams(2024, 6, 11))
    (trigger,) = sim.emitted(T.BIRTHDAY)
    assert codec.decode(codec.encode(trigger), Trigger) == trigger
    newest = max(codec.versions("Trigger").values(), key=lambda v: v.version)
    (field_,) = [f for f in newest.schema["fields"] if f["name"] == "trigger_type"]
    assert set(field_["type"]["symbols"]) == set(SPECS)


@pytest.mark.parametrize("days", [10**9, -(10**9)])
def test_a_birthday_beyond_the_calendar_is_no_birthday(days: int) -> None:
    told = replace(customer(B, consent=True), birthday=days)
    sim = Sim().play((told, cart_add(B + HOUR)), until=B + 3 * HOUR)
    assert sim.state.consent is True  # the rest of the update counts
    assert not sim.schedules(T.BIRTHDAY)
    assert [t.trigger_type for t in sim.emitted()] == [T.ABANDONED_CART]


# --- the lifetime-value prediction on WIN_BACK and CROSS_SELL (journey.predictions) ----------
def prediction(at: int, alive: float, next_order_at: int | None = None) -> Any:
    from schemas.records import CustomerPrediction

    return CustomerPrediction(f"prediction/{CUSTOMER}/{at}", CUSTOMER, at, alive, 0.4, 12_345,
                              next_order_at)  # fmt: skip


def test_win_back_and_cross_sell_carry_the_newest_prediction() -> None:
    from streams.journey.model import predicted

    sim = Sim().play((placed(B),))
    sim.state = predicted(sim.state, prediction(B + 10 * DAY, 0.61, B + 40 * DAY))
    sim.state = predicted(sim.state, prediction(B + 5 * DAY, 0.99))  # older, delivered late
    sim.send(delivered(B + 2 * DAY))
    sim.run(B + 91 * DAY)
    (win_back,) = sim.emitted(T.WIN_BACK)
    assert win_back.attributes == {
        "last_order_at": str(B), "orders": "1", "probability_alive": "0.610",
        "expected_orders_90d": "0.400", "predicted_clv_minor": "12345",
        "expected_next_order_at": str(B + 40 * DAY), "predicted_at": str(B + 10 * DAY),
    }  # fmt: skip
    (cross_sell,) = sim.emitted(T.CROSS_SELL)
    assert cross_sell.attributes["probability_alive"] == "0.610"
    # Only these two: the others say nothing about a prediction.
    assert all("probability_alive" not in t.attributes for t in sim.emitted(T.REVIEW_REQUEST))
    assert set(SPECS[T.WIN_BACK].attributes) >= set(win_back.attributes)


def test_without_a_prediction_win_back_carries_none_and_an_erased_customer_keeps_none() -> None:
    from streams.journey.model import predicted

    sim = Sim().play((placed(B),), B + 91 * DAY)
    (win_back,) = sim.emitted(T.WIN_BACK)
    assert "probability_alive" not in win_back.attributes
    gone = Sim().play((erased(B),))
    assert predicted(gone.state, prediction(B + DAY, 0.5)).prediction is None


def test_each_members_module_name_is_that_member() -> None:
    """``decisions`` names every member at module level too (read on every event and fired
    timer); the names are unpacked from the classes, so a member moved within its class must
    not hand its name to another."""
    from streams.journey import decisions

    members = [m for e in (Status, Category, Stage, Segment, Reason) for m in e]
    assert len({m.name for m in members}) == len(members)  # no two enums share a name
    for member in members:
        assert getattr(decisions, member.name) is member, member
