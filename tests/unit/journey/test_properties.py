"""Properties of the journey model over random interleavings of two customers' events (page
views, carts, orders, shipments, feedback, engagement, consent, erasure, duplicated event ids,
out-of-order timestamps) and clock advances (a worker firing timers at increasing times).

(a) no marketing Emit without consent at that moment, and no Emit at all after erasure;
(b) never two marketing Emits for a customer within the frequency cap (16 h);
(c) no trigger_id twice among all Emit and Drop decisions;
(d) the same input gives the same decisions, also through encode/decode of the state between
    every step;
and, checked on the way: marketing Emits are outside the customer's quiet hours, and no Emit is
later than the replay guard after its due time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.records import CustomerChanged, InputEvent, MessageEngagement
from streams.journey.config import JourneyConfig
from streams.journey.decisions import Category, Decision, Drop, Emit
from streams.journey.model import fire_due, new_state, step
from streams.journey.state import JourneyState, decode_state, encode_state
from tests.unit.journey.support import (
    BASE,
    DAY,
    HOUR,
    MINUTE,
    advance,
    cancelled,
    cart_add,
    cart_remove,
    customer,
    delivered,
    engaged,
    erased,
    nps,
    placed,
    refunded,
    returned,
    review,
    shipped,
    view,
)

CUSTOMERS = ("c1", "c2")
EVENT_GAPS = (0, MINUTE, 10 * MINUTE, HOUR, 3 * HOUR)
TICK_GAPS = (
    MINUTE,
    30 * MINUTE,
    HOUR,
    3 * HOUR,
    16 * HOUR,
    DAY,
    3 * DAY,
    8 * DAY,
    30 * DAY,
    95 * DAY,
)
JITTER = (0, 0, 0, -5 * MINUTE, -3 * HOUR, -2 * DAY, MINUTE)  # occurred_at - clock
ACTIONS = (
    "DELIVERED",
    "OPENED",
    "CLICKED",
    "BOUNCED",
    "COMPLAINED",
    "UNSUBSCRIBED",
    "RESUBSCRIBED",
)
ZONES = (None, "America/New_York", "Europe/Amsterdam", "Mars/Olympus")
COMMON = (
    "view", "cart_add", "cart_remove", "placed", "cancelled", "refunded", "shipped", "delivered",
    "returned", "nps", "review", "engagement", "consent",
)  # fmt: skip
KINDS = (*COMMON * 3, "erased")  # erasure is rare


def make_event(kind: str, who: str, event_id: str, at: int, a: int, b: int) -> InputEvent:
    order, cart, product = f"o{a % 3}", f"k{a % 2}", f"p{b % 3}"
    common: dict[str, Any] = {"event_id": event_id, "customer": who}
    match kind:
        case "view":
            return view(at, product, page_type="PRODUCT" if b % 4 else "HOME", **common)
        case "cart_add":
            return cart_add(at, product, cart=cart, qty=1 + b % 2, **common)
        case "cart_remove":
            return cart_remove(at, product, cart=cart, qty=None if b % 2 else 1, **common)
        case "placed":
            return placed(
                at, order, total=1_000 * (1 + b % 5), cart=cart if b % 2 else None, **common
            )
        case "cancelled":
            return cancelled(at, order, **common)
        case "refunded":
            return refunded(at, order, amount=(500, 5_000)[b % 2], **common)
        case "shipped":
            return shipped(at, order, **common)
        case "delivered":
            return delivered(at, order, **common)
        case "returned":
            return returned(at, order, **common)
        case "nps":
            return nps(at, b % 11, **common)
        case "review":
            return review(at, 1 + b % 5, order, **common)
        case "engagement":
            return engaged(at, ACTIONS[b % len(ACTIONS)], **common)
        case "consent":
            return customer(
                at, consent=(True, False, None)[b % 3], time_zone=ZONES[a % 4], **common
            )
        case _:
            return erased(at, **common)


# An op is one of:
#   ("event", customer index, kind, a, b, jitter index, gap index)
#   ("dup", how many events back)                   -- the same event (same event_id) again
#   ("tick", gap index, fine)                       -- the clock advances, the worker fires
EVENT = st.tuples(
    st.just("event"),
    st.integers(0, len(CUSTOMERS) - 1),
    st.sampled_from(KINDS),
    st.integers(0, 11),
    st.integers(0, 11),
    st.integers(0, len(JITTER) - 1),
    st.integers(0, len(EVENT_GAPS) - 1),
)
DUP = st.tuples(st.just("dup"), st.integers(0, 4))
TICK = st.tuples(
    st.just("tick"), st.integers(0, len(TICK_GAPS) - 1), st.sampled_from((True, True, False))
)
OPS = st.lists(st.one_of(EVENT, EVENT, TICK, DUP), min_size=12, max_size=45)
# Delays of minutes and hours instead of days: more triggers compete for the same 16 h.
FAST = JourneyConfig(
    abandoned_cart_first_delay=20 * MINUTE,
    abandoned_cart_second_delay=3 * HOUR,
    browse_abandonment_delay=30 * MINUTE,
    delivery_check_in_delay=HOUR,
    review_request_delay=5 * HOUR,
    nps_survey_delay=2 * HOUR,
    cross_sell_delay=9 * HOUR,
    win_back_delay=2 * DAY,
)
CONFIGS = (JourneyConfig(), FAST)
SCENARIO = st.tuples(OPS, st.booleans(), st.sampled_from(CONFIGS))

PROPERTY = settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass
class Record:
    """One call of the model: ``step`` (with its event) or ``fire_due`` (event None)."""

    customer_id: str
    now: int
    event: InputEvent | None
    decisions: list[Decision]


@dataclass
class Run:
    records: list[Record] = field(default_factory=list)
    states: dict[str, bytes] = field(default_factory=dict)


def run(ops: list[tuple[Any, ...]], config: JourneyConfig, *, roundtrip: bool = False) -> Run:
    """Play ``ops`` from fresh states. With ``roundtrip``, every state goes through
    ``encode_state``/``decode_state`` before and after every call."""
    states: dict[str, JourneyState] = {c: new_state(c) for c in CUSTOMERS}
    out = Run()
    clock = BASE
    sent: list[InputEvent] = []

    def through(state: JourneyState) -> JourneyState:
        return decode_state(encode_state(state)) if roundtrip else state

    def deliver(event: InputEvent) -> None:
        who = event.customer_id
        state, decisions = step(through(states[who]), event, clock, config)
        states[who] = through(state)
        out.records.append(Record(who, clock, event, decisions))

    for op in ops:
        if op[0] == "event":
            _, c, kind, a, b, jitter, gap = op
            clock += EVENT_GAPS[gap]
            event = make_event(kind, CUSTOMERS[c], f"e{len(sent)}", clock + JITTER[jitter], a, b)
            sent.append(event)
            deliver(event)
        elif op[0] == "dup":
            if sent:
                deliver(sent[-1 - op[1] % len(sent)])
        else:
            _, gap, fine = op
            before, clock = clock, clock + TICK_GAPS[gap]
            for who in CUSTOMERS:
                if fine:  # the worker fires each timer at its time
                    state, timed = advance(through(states[who]), before, clock, config)
                    for now, decision in timed:
                        out.records.append(Record(who, now, None, [decision]))
                else:  # the worker was away: one call at the end
                    state, decisions = fire_due(through(states[who]), clock, config)
                    out.records.append(Record(who, clock, None, decisions))
                states[who] = through(state)
    out.states = {who: encode_state(state) for who, state in states.items()}
    return out


@dataclass
class Consent:
    """The customer's consent as the contract defines it, from the events in the order applied."""

    default: bool
    consent: bool | None = None
    blocked: str | None = None
    zone: str | None = None
    erased: bool = False
    seen: set[str] = field(default_factory=set)

    def marketing_allowed(self) -> bool:
        given = self.default if self.consent is None else self.consent
        return not self.erased and given and self.blocked is None

    def apply(self, event: InputEvent) -> None:
        if self.erased or event.event_id in self.seen:
            return
        self.seen.add(event.event_id)
        if isinstance(event, MessageEngagement):
            if event.action == "UNSUBSCRIBED":
                self.consent = False
            elif event.action == "RESUBSCRIBED":
                self.consent, self.blocked = True, None
            elif event.action in ("BOUNCED", "COMPLAINED"):
                self.blocked = event.action
        elif isinstance(event, CustomerChanged):
            if event.action == "ERASED":
                self.erased = True
                return
            if event.marketing_consent is not None:
                self.consent = event.marketing_consent
                if event.marketing_consent and self.blocked == "BOUNCED":
                    self.blocked = None  # the model's call: new consent lifts a bounce only
            if event.time_zone in ("America/New_York", "Europe/Amsterdam"):
                self.zone = event.time_zone


def emitted(record: Record) -> list[Emit]:
    return [d for d in record.decisions if isinstance(d, Emit)]


@given(SCENARIO)
@PROPERTY
def test_marketing_only_with_consent_and_never_after_erasure(scenario: Any) -> None:
    ops, default, base = scenario
    config = replace(base, marketing_consent_default=default)
    consent = {c: Consent(default) for c in CUSTOMERS}
    for record in run(ops, config).records:
        tracked = consent[record.customer_id]
        # Timers due before an event are decided before it is applied: the consent before it.
        for emit in emitted(record):
            assert not tracked.erased, emit
            if emit.trigger.category == Category.MARKETING:
                assert tracked.marketing_allowed(), (emit, tracked)
                zone = ZoneInfo(tracked.zone or config.default_time_zone)
                local = datetime.fromtimestamp(emit.trigger.emitted_at / 1000, zone)
                assert config.quiet_hours_end <= local.hour < config.quiet_hours_start, emit
            assert emit.trigger.emitted_at - emit.trigger.due_at <= config.replay_guard, emit
        if record.event is not None:
            tracked.apply(record.event)


@given(SCENARIO)
@PROPERTY
def test_marketing_frequency_cap(scenario: Any) -> None:
    ops, default, base = scenario
    config = replace(base, marketing_consent_default=default)
    last: dict[str, int] = {}
    for record in run(ops, config).records:
        for emit in emitted(record):
            if emit.trigger.category != Category.MARKETING:
                continue
            previous = last.get(record.customer_id)
            at = emit.trigger.emitted_at
            assert at == record.now
            assert previous is None or at - previous >= config.frequency_cap, (previous, emit)
            last[record.customer_id] = at


@given(SCENARIO)
@PROPERTY
def test_trigger_ids_unique_among_decisions(scenario: Any) -> None:
    ops, default, base = scenario
    seen: dict[str, Decision] = {}
    for record in run(ops, replace(base, marketing_consent_default=default)).records:
        for decision in record.decisions:
            if isinstance(decision, Emit):
                key = decision.trigger.trigger_id
            elif isinstance(decision, Drop):
                key = decision.trigger_id
            else:
                continue
            assert key not in seen, (seen[key], decision)
            seen[key] = decision


@given(SCENARIO)
@PROPERTY
def test_deterministic_and_encoding_transparent(scenario: Any) -> None:
    ops, default, base = scenario
    config = replace(base, marketing_consent_default=default)
    first = run(ops, config)
    second = run(ops, config)
    through_bytes = run(ops, config, roundtrip=True)
    assert first.records == second.records
    assert first.records == through_bytes.records
    assert first.states == second.states == through_bytes.states
