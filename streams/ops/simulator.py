"""Synthetic shop traffic: a deterministic, streaming generator of contract records.

``generate`` yields the customer events of a whole simulated shop in time order; ``run`` paces
them against the wall clock and hands them to a ``send`` callback (the CLI publishes to Kafka).

Design choices, because they are what make the simulator usable at scale and in tests:

* Every customer is an independent lazy timeline. Its profile comes from
  ``Random(f"{seed}:{index}")`` and each of its visits from ``Random(f"{seed}:{index}:{visit}")``,
  so a customer's events depend only on the seed and its index, never on how customers
  interleave. Seeding per visit (instead of keeping one generator per customer) means a dormant
  customer holds no 2.5 KB Mersenne-Twister state, which matters once 100k customers are active.
* A visit is planned in one go: the session, its cart, and everything that follows causally
  from an order (shipping, delivery, returns, feedback, email engagement) are computed with
  times that respect causality, then parked in the customer's small pending heap.
* ``generate`` merges customers with a heap keyed by (time, index) and admits customers only
  when the clock reaches their arrival, so memory grows with the number of customers that are
  *active*, not with the number of events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import json
import math
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from random import Random
from typing import Any

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
)

SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

CURRENCY = "EUR"
SHOP_URL = "https://shop.example"

Weighted = tuple[tuple[str, float], ...]


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


_NOT_PROBABILITIES = frozenset(
    {"pages_per_browse_session", "prospect_return_median_h", "repeat_gap_mean_days"}
)


@dataclass(frozen=True)
class Behaviour:
    """Shopper behaviour. Defaults follow common e-commerce figures; rates are probabilities."""

    # --- Profiles ---
    known_at_first_visit: float = 0.60
    marketing_consent: float = 0.65
    # Shoppers who were anonymous leave a profile when they check out (a guest account).
    guest_profile_at_checkout: float = 0.85
    guest_marketing_consent: float = 0.35
    birthday_given: float = 0.25
    consent_change_per_visit: float = 0.04
    erased: float = 0.005
    time_zones: Weighted = (
        ("Europe/Amsterdam", 0.70),
        ("Europe/Brussels", 0.15),
        ("Europe/London", 0.10),
        ("America/New_York", 0.05),
    )
    # --- Visits ---
    pages_per_browse_session: float = 4.0
    cart_on_first_visit: float = 0.40
    cart_on_return_visit: float = 0.50
    cart_on_purchase_visit: float = 0.80
    # A shopper who has not bought yet comes back after a visit without an order.
    prospect_return: float = 0.60
    prospect_return_median_h: float = 30.0
    # Someone gone quiet (no visit planned) returns once after 90+ days.
    lapsed_return: float = 0.12
    # --- Carts ---
    cart_abandoned: float = 0.70  # carts that never become an order, reminders included
    abandoned_cart_recovered: float = 0.10  # left carts that come back 1-48 h later and order
    checkout_started_when_abandoned: float = 0.30
    product_removed: float = 0.15
    coupon: float = 0.15
    # --- Orders ---
    cancelled: float = 0.04
    returned: float = 0.06  # of delivered orders; each return is refunded
    partial_refund: float = 0.40  # of returns of orders with several lines
    delivery_failed: float = 0.03
    repeat_purchase: float = 0.32  # first-time buyers who buy again
    further_purchase: float = 0.50  # repeat buyers who buy once more, each time
    repeat_gap_days: tuple[int, int] = (20, 300)
    repeat_gap_mean_days: float = 70.0
    lifespan_days: int = 400  # no visit starts later than this after arrival
    # name, weight, hours from order to SHIPPED, days in transit. DPD is the slow one.
    carriers: tuple[tuple[str, float, tuple[int, int], tuple[int, int]], ...] = (
        ("PostNL", 0.45, (4, 24), (1, 2)),
        ("DHL", 0.25, (4, 30), (1, 2)),
        ("DPD", 0.18, (12, 48), (2, 4)),
        ("UPS", 0.12, (4, 20), (1, 2)),
    )
    # --- Feedback ---
    nps_answered: float = 0.25
    nps_promoter: float = 0.55  # 9-10
    nps_passive: float = 0.30  # 7-8; the rest are detractors (0-6)
    review_written: float = 0.15
    review_scores: tuple[float, float, float, float, float] = (0.07, 0.05, 0.10, 0.28, 0.50)
    review_comment: float = 0.40
    # --- Email engagement (of transactional messages; the reminder that brings an abandoned
    # cart back is always opened and clicked, on top of these) ---
    delivered_email: float = 0.50  # share of deliveries followed by a "parcel arrived" email
    bounced: float = 0.01
    opened: float = 0.40
    clicked: float = 0.10
    complained: float = 0.001
    unsubscribed: float = 0.004
    resubscribed: float = 0.20  # of those who unsubscribed
    channels: Weighted = (("EMAIL", 0.90), ("SMS", 0.06), ("PUSH", 0.04))

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.name in _NOT_PROBABILITIES or not isinstance(value, float):
                continue
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Behaviour.{spec.name} must be a probability, got {value}")
        if self.clicked > self.opened:
            raise ValueError("Behaviour.clicked cannot exceed Behaviour.opened")
        if self.nps_promoter + self.nps_passive > 1.0:
            raise ValueError("Behaviour.nps_promoter + nps_passive cannot exceed 1")
        low, high = self.repeat_gap_days
        if not (low < self.repeat_gap_mean_days and low <= high):
            raise ValueError("Behaviour.repeat_gap_mean_days must exceed repeat_gap_days[0]")


# The one default of each simulation option: the CLI (`journey run`/`simulate`), the runner
# and SimulationConfig read them. SimulationConfig alone defaults to no malformed payloads:
# tests, imports and benchmarks generate clean data unless they ask.
DEFAULT_SEED = 42
DEFAULT_CUSTOMERS = 2000
DEFAULT_RATE = 1000.0  # events per second at most
DEFAULT_SPEED = 20000.0  # simulated time runs this many times faster than the clock
DEFAULT_BAD_EVENT_RATE = 0.002  # malformed payloads per good event, to show dead-lettering


@dataclass(frozen=True, kw_only=True)
class SimulationConfig:
    seed: int = DEFAULT_SEED
    customers: int = DEFAULT_CUSTOMERS
    start_ms: int  # simulated time of the start; the CLI passes "now"
    arrival_window_ms: int = 14 * DAY  # customers' first visits spread over this window
    horizon_ms: int | None = None  # stop after start+horizon; None runs every life to the end
    bad_event_rate: float = 0.0  # extra malformed payloads per good event
    # Prefix of every id (customers, carts, orders, events), so that runs do not collide with
    # each other's customers in the same topics and tables. Empty: c-000001, ...
    run_id: str = ""
    behaviour: Behaviour = field(default_factory=Behaviour)

    def __post_init__(self) -> None:
        if self.customers < 0:
            raise ValueError("customers must be >= 0")
        if self.arrival_window_ms < 0:
            raise ValueError("arrival_window_ms must be >= 0")
        if self.horizon_ms is not None and self.horizon_ms < 0:
            raise ValueError("horizon_ms must be >= 0 or None")
        if not 0.0 <= self.bad_event_rate <= 1.0:
            raise ValueError("bad_event_rate must be within [0, 1]")


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

_KIND_OF: dict[type, tuple[str, str]] = {
    PageViewed: ("page_view", "page_type"),
    CartChanged: ("cart", "action"),
    OrderChanged: ("order", "status"),
    ShipmentChanged: ("shipment", "status"),
    FeedbackGiven: ("feedback", "kind"),
    MessageEngagement: ("engagement", "action"),
    CustomerChanged: ("customer", "action"),
}


@dataclass(frozen=True, slots=True)
class SimEvent:
    topic: str  # short input topic name (streams.settings.INPUT_TOPICS)
    key: str  # customer_id
    record: InputEvent | None
    raw: bytes | None  # a malformed payload, instead of a record
    at_ms: int

    @property
    def kind(self) -> str:
        """``order.placed``, ``cart.product_added``, ``page_view.home``, ... or ``bad``."""
        if self.record is None:
            return "bad"
        prefix, attribute = _KIND_OF[type(self.record)]
        return f"{prefix}.{str(getattr(self.record, attribute)).lower()}"


@dataclass
class SimStats:
    """What ``run`` sent; ``summary()`` is the console report."""

    start_ms: int = 0
    events: int = 0
    by_topic: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    customers_started: int = 0
    carts_created: int = 0
    carts_converted: int = 0
    orders: int = 0
    bad: int = 0
    wall_seconds: float = 0.0
    sim_reached_ms: int | None = None
    _customers: set[str] = field(default_factory=set, repr=False)
    _carts: set[str] = field(default_factory=set, repr=False)

    @property
    def carts_abandoned(self) -> int:
        """Carts without an order (so far: a cart may still convert after the run stops)."""
        return self.carts_created - self.carts_converted

    def observe(self, event: SimEvent) -> None:
        self.events += 1
        self.by_topic[event.topic] += 1
        self.by_kind[event.kind] += 1
        self.sim_reached_ms = event.at_ms
        if event.key not in self._customers:
            self._customers.add(event.key)
            self.customers_started += 1
        record = event.record
        if record is None:
            self.bad += 1
        elif isinstance(record, CartChanged):
            if record.cart_id not in self._carts:
                self._carts.add(record.cart_id)
                self.carts_created += 1
        elif isinstance(record, OrderChanged) and record.status == "PLACED":
            self.orders += 1
            if record.cart_id is not None:
                self.carts_converted += 1

    def summary(self) -> str:
        sim_span = (self.sim_reached_ms or self.start_ms) - self.start_ms
        rate = self.events / self.wall_seconds if self.wall_seconds > 0 else 0.0
        abandoned_pct = (
            100.0 * self.carts_abandoned / self.carts_created if self.carts_created else 0.0
        )
        lines = [
            f"simulated   {_iso(self.start_ms)} -> {_iso(self.start_ms + sim_span)}"
            f"  ({_span(sim_span)} of shop time)",
            f"wall time   {self.wall_seconds:.2f} s  ({rate:,.0f} events/s)",
            f"customers   {self.customers_started:,} started",
            f"events      {self.events:,}  ({self.bad:,} malformed)",
            f"carts       {self.carts_created:,} created  {self.carts_converted:,} converted  "
            f"{self.carts_abandoned:,} abandoned ({abandoned_pct:.1f}%)",
            f"orders      {self.orders:,} placed  {self.by_kind['order.cancelled']:,} cancelled  "
            f"{self.by_kind['order.refunded']:,} refunded",
            "",
            f"{'topic':<34}{'events':>10}",
        ]
        lines += [f"{topic:<34}{count:>10,}" for topic, count in sorted(self.by_topic.items())]
        lines += ["", f"{'kind':<34}{'events':>10}"]
        lines += [f"{kind:<34}{count:>10,}" for kind, count in sorted(self.by_kind.items())]
        return "\n".join(lines)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _span(ms: int) -> str:
    days, rest = divmod(ms, DAY)
    hours, rest = divmod(rest, HOUR)
    return f"{days}d {hours:02d}h {rest // MINUTE:02d}m"


# --------------------------------------------------------------------------------------------
# The shop: catalog, traffic sources, shared tables
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    category: str
    price_minor: int


# category, popularity, price range in whole euros
_CATEGORIES = (
    ("shoes", 1.6, (40, 160)),
    ("jackets", 1.0, (60, 250)),
    ("shirts", 1.5, (20, 70)),
    ("trousers", 1.2, (35, 110)),
    ("dresses", 1.0, (30, 140)),
    ("knitwear", 0.8, (30, 120)),
    ("accessories", 1.1, (8, 50)),
    ("bags", 0.7, (25, 200)),
    ("sportswear", 0.9, (20, 90)),
    ("kids", 0.6, (12, 60)),
)
_PRODUCTS_PER_CATEGORY = 20


def _build_catalog() -> tuple[tuple[Product, ...], ...]:
    # The catalog is fixed, whatever the traffic seed: the same shop under different traffic.
    rng = Random("journey-catalog")
    catalog = []
    for number, (category, _, (low, high)) in enumerate(_CATEGORIES):
        products = []
        for i in range(_PRODUCTS_PER_CATEGORY):
            euros = rng.randint(low, high)
            cents = rng.choice((95, 99, 0, 50))
            price = euros * 100 + cents if cents else euros * 100
            products.append(Product(f"sku-{number + 1:02d}{i + 1:03d}", category, price))
        catalog.append(tuple(products))
    return tuple(catalog)


CATALOG: tuple[tuple[Product, ...], ...] = _build_catalog()
PRODUCTS: tuple[Product, ...] = tuple(p for products in CATALOG for p in products)


def _cumulative(weights: list[float] | tuple[float, ...]) -> tuple[float, ...]:
    total = 0.0
    out = []
    for weight in weights:
        total += weight
        out.append(total)
    return tuple(out)


_CATEGORY_CUM = _cumulative([popularity for _, popularity, _ in _CATEGORIES])
# Within a category a few best-sellers get most of the views (Zipf-like).
_PRODUCT_CUM = _cumulative([1.0 / (rank + 1) ** 0.9 for rank in range(_PRODUCTS_PER_CATEGORY)])


@dataclass(frozen=True, slots=True)
class _Source:
    weight: float
    referrer: str | None
    utm_source: str | None
    utm_medium: str | None
    campaigns: tuple[str, ...]
    landing: str  # the page type people usually land on from this source


_SOURCES = (
    _Source(0.38, None, None, None, (), "HOME"),
    _Source(0.20, "https://www.google.com/", None, None, (), "PRODUCT"),
    _Source(0.10, "https://www.google.com/", "google", "cpc", ("brand", "shopping"), "PRODUCT"),
    _Source(0.08, None, "newsletter", "email", ("weekly", "new-arrivals", "sale"), "CATEGORY"),
    _Source(0.09, "https://www.instagram.com/", "instagram", "social", ("spring-drop",), "PRODUCT"),
    _Source(0.05, "https://www.facebook.com/", "facebook", "social", ("retargeting",), "PRODUCT"),
    _Source(0.04, "https://www.tiktok.com/", "tiktok", "social", ("creators",), "CATEGORY"),
    _Source(0.03, "https://www.bing.com/", None, None, (), "CATEGORY"),
    _Source(0.03, "https://tweakers.net/", "pricecompare", "referral", ("feed",), "PRODUCT"),
)
_SOURCE_CUM = _cumulative([s.weight for s in _SOURCES])
_NEWSLETTER = 3  # index in _SOURCES; only reaches people who consented to marketing
_REMINDER = _Source(0.0, None, "journey", "email", ("abandoned_cart",), "CART")

_SEARCH_TERMS = (
    "sneakers", "rain jacket", "linen shirt", "jeans", "summer dress", "wool sweater",
    "belt", "backpack", "running", "kids shoes", "sale", "gift",
)  # fmt: skip
_OTHER_PAGES = ("/help/returns", "/help/shipping", "/about", "/account")
_COUPONS_FIRST = ("WELCOME10", "WELCOME10", "FREESHIP", "SPRING15")
_COUPONS_REPEAT = ("LOYAL10", "FREESHIP", "SPRING15", "NEWSLETTER5")
_LOCALES = {
    "Europe/Amsterdam": (("nl-NL", 0.9), ("en-GB", 0.1)),
    "Europe/Brussels": (("nl-BE", 0.9), ("en-GB", 0.1)),
    "Europe/London": (("en-GB", 1.0),),
    "America/New_York": (("en-US", 1.0),),
}
# Standard-time offsets are good enough to keep simulated people awake at night-time.
_UTC_OFFSET_H = {"Europe/Amsterdam": 1, "Europe/Brussels": 1, "Europe/London": 0}
_REVIEW_COMMENTS = {
    1: ("Fell apart after a week.", "Not as pictured.", "Very disappointed."),
    2: ("Runs small.", "Quality could be better."),
    3: ("Okay for the price.", "Colour slightly different than online."),
    4: ("Nice fit, good quality.", "Happy with it.", "Fast delivery, good product."),
    5: ("Love it!", "Perfect, would buy again.", "Great quality, fits perfectly."),
}
_DIGITS = "0123456789"
_ALNUM = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
# Arrival intensity per Amsterdam hour of day: quiet nights, an evening peak.
_DIURNAL = (
    0.25, 0.15, 0.10, 0.08, 0.08, 0.15, 0.35, 0.70, 1.00, 1.10, 1.20, 1.30,
    1.40, 1.30, 1.20, 1.20, 1.30, 1.40, 1.50, 1.80, 2.00, 1.90, 1.40, 0.70,
)  # fmt: skip


def _pick(rng: Random, cum: tuple[float, ...]) -> int:
    """Index drawn with the weights whose running sums are ``cum``."""
    return min(bisect_right(cum, rng.random() * cum[-1]), len(cum) - 1)


def _pick_weighted(rng: Random, items: Weighted) -> str:
    return items[_pick(rng, _cumulative([w for _, w in items]))][0]


class _Model:
    """Per-run tables derived from the Behaviour, shared by all customers."""

    def __init__(self, config: SimulationConfig) -> None:
        b = config.behaviour
        self.seed = config.seed
        self.id_prefix = f"{config.run_id}-" if config.run_id else ""
        self.b = b
        self.zones = tuple(zone for zone, _ in b.time_zones)
        self.zone_cum = _cumulative([w for _, w in b.time_zones])
        self.carriers = b.carriers
        self.carrier_cum = _cumulative([c[1] for c in b.carriers])
        self.channels = tuple(name for name, _ in b.channels)
        self.channel_cum = _cumulative([w for _, w in b.channels])
        self.review_cum = _cumulative(b.review_scores)
        # Carts first left unordered, before reminders bring some back: A0 * (1 - r) = A.
        kept = 1.0 - b.abandoned_cart_recovered
        self.first_abandon = min(1.0, b.cart_abandoned / kept) if kept > 0 else 1.0
        self.open_click = b.clicked / b.opened if b.opened else 0.0
        self.open_unsubscribe = min(1.0, b.unsubscribed / b.opened) if b.opened else 0.0

    def category(self, rng: Random) -> int:
        return _pick(rng, _CATEGORY_CUM)

    def product(self, rng: Random, category: int) -> Product:
        return CATALOG[category][_pick(rng, _PRODUCT_CUM)]


class _ArrivalCurve:
    """Maps a fraction in [0, 1) to a time in the arrival window, following ``_DIURNAL``.

    The map is monotone, which lets ``generate`` admit customers in index order.
    """

    def __init__(self, start_ms: int, window_ms: int) -> None:
        self.start = start_ms
        self.edges = [start_ms]
        self.cum = [0.0]
        self.weights: list[float] = []
        t, end = start_ms, start_ms + window_ms
        while t < end:
            nxt = min(end, (t // HOUR + 1) * HOUR)
            weight = _DIURNAL[(t // HOUR + 1) % 24]
            self.weights.append(weight)
            self.cum.append(self.cum[-1] + weight * (nxt - t))
            self.edges.append(nxt)
            t = nxt

    def at(self, fraction: float) -> int:
        if not self.weights:
            return self.start
        target = fraction * self.cum[-1]
        k = min(bisect_right(self.cum, target) - 1, len(self.weights) - 1)
        offset = int((target - self.cum[k]) / self.weights[k])
        return min(self.edges[k] + offset, self.edges[k + 1])


# --------------------------------------------------------------------------------------------
# One customer
# --------------------------------------------------------------------------------------------

_Pending = tuple[int, int, SimEvent]
_Tracking = tuple[str, str, str]  # carrier, tracking code, tracking url


class _Customer:
    """A customer's state between visits and the events planned but not yet due."""

    __slots__ = (
        "arrival",
        "birthday",
        "carts",
        "cid",
        "consent",
        "erase",
        "index",
        "known",
        "locale",
        "m",
        "n",
        "num",
        "offset",
        "orders",
        "orders_placed",
        "pending",
        "sessions",
        "shipments",
        "upcoming",
        "visits",
        "zone",
    )

    def __init__(self, model: _Model, index: int, arrival: int, rng: Random) -> None:
        b = model.b
        self.m = model
        self.index = index
        self.num = f"{model.id_prefix}{index:06d}"
        self.cid = f"c-{self.num}"
        self.arrival = arrival
        self.known = rng.random() < b.known_at_first_visit
        self.consent = rng.random() < b.marketing_consent
        self.zone = model.zones[_pick(rng, model.zone_cum)]
        self.locale = _pick_weighted(rng, _LOCALES.get(self.zone, (("en-US", 1.0),)))
        self.offset = _UTC_OFFSET_H.get(self.zone, -5) * HOUR
        # Birthdays as Avro dates (days since 1970-01-01), born 1955-2006.
        self.birthday = rng.randint(-5479, 13513) if rng.random() < b.birthday_given else None
        self.erase = rng.random() < b.erased
        self.n = 0
        self.visits = 0
        self.sessions = 0
        self.carts = 0
        self.orders = 0
        self.shipments = 0
        self.orders_placed = 0
        self.pending: list[_Pending] = []
        self.upcoming: list[tuple[int, str]] = [(arrival, "first")]

    # --- the timeline -------------------------------------------------------------------------

    def events(self) -> Iterator[SimEvent]:
        pending = self.pending
        while True:
            if self.upcoming and (not pending or self.upcoming[0][0] <= pending[0][0]):
                at, kind = self.upcoming.pop(0)
                self._visit(Random(f"{self.m.seed}:{self.index}:{self.visits}"), at, kind)
                self.visits += 1
                continue
            if not pending:
                return
            yield heapq.heappop(pending)[2]

    def _emit(self, topic: str, record: InputEvent) -> None:
        self.n += 1
        event = SimEvent(topic, self.cid, record, None, record.occurred_at)
        heapq.heappush(self.pending, (record.occurred_at, self.n, event))

    def _eid(self) -> str:
        return f"{self.cid}-{self.n}"

    # --- visits -------------------------------------------------------------------------------

    def _visit(self, rng: Random, at: int, kind: str) -> None:
        b = self.m.b
        if kind == "first":
            if self.known:
                self._profile(at)
        elif self.known and rng.random() < b.consent_change_per_visit:
            self.consent = not self.consent
            self._profile(at)

        p_cart = {
            "first": b.cart_on_first_visit,
            "prospect": b.cart_on_return_visit,
            "lapsed": b.cart_on_return_visit,
            "purchase": b.cart_on_purchase_visit,
        }.get(kind, 0.0)
        if rng.random() < p_cart:
            end, ordered_at = self._shop(rng, at)
        else:
            end, ordered_at = self._browse(rng, at), None
        self._plan_next(rng, kind, end, ordered_at)

        if not self.upcoming and self.erase:
            # The end of the relationship: the customer asks to be forgotten, possibly while
            # follow-ups of an order are still due; those are then never published.
            erased_at = end + rng.randint(HOUR, 30 * DAY)
            self.pending[:] = [p for p in self.pending if p[0] <= erased_at]
            heapq.heapify(self.pending)
            self._emit("customers", CustomerChanged(self._eid(), self.cid, erased_at, "ERASED"))

    def _plan_next(self, rng: Random, kind: str, end: int, ordered_at: int | None) -> None:
        b = self.m.b
        upcoming: list[tuple[int, str]] = []
        if ordered_at is not None:
            self.orders += 1
            self.upcoming.clear()  # an order ends whatever shopping was still planned
            again = b.repeat_purchase if self.orders == 1 else b.further_purchase
            if rng.random() < again:
                low, high = b.repeat_gap_days
                gap = min(high, low + int(rng.expovariate(1.0 / (b.repeat_gap_mean_days - low))))
                purchase_at = ordered_at + gap * DAY + rng.randint(0, DAY)
                for _ in range(rng.choice((0, 1, 1, 2, 3))):
                    upcoming.append((rng.randint(ordered_at + DAY, purchase_at - HOUR), "browse"))
                upcoming.append((purchase_at, "purchase"))
            else:
                for _ in range(rng.choice((0, 0, 1, 2))):
                    upcoming.append((ordered_at + rng.randint(2 * DAY, 60 * DAY), "browse"))
                if rng.random() < b.lapsed_return:
                    upcoming.append((ordered_at + rng.randint(90 * DAY, 240 * DAY), "lapsed"))
        elif kind == "purchase":
            upcoming.append((end + self._return_gap(rng, 36.0), "purchase"))
        elif kind in ("first", "prospect") or (kind == "lapsed" and rng.random() < 0.5):
            if rng.random() < b.prospect_return:
                upcoming.append(
                    (end + self._return_gap(rng, b.prospect_return_median_h), "prospect")
                )
            elif kind != "lapsed" and rng.random() < b.lapsed_return:
                upcoming.append((end + rng.randint(90 * DAY, 200 * DAY), "lapsed"))

        last_start = self.arrival + b.lifespan_days * DAY
        for at, what in upcoming:
            at = self._awake(rng, max(at, end + 30 * MINUTE))
            if at <= last_start:
                self.upcoming.append((at, what))
        self.upcoming.sort()

    def _return_gap(self, rng: Random, median_h: float) -> int:
        hours = rng.lognormvariate(math.log(median_h), 1.0)
        return int(min(max(hours, 1.0), 30 * 24.0) * HOUR)

    def _awake(self, rng: Random, at: int) -> int:
        """Moves a visit planned for the customer's night to the next morning or day."""
        hour = (at + self.offset) // HOUR % 24
        if 7 <= hour < 23:
            return at
        midnight = (at + self.offset) // DAY * DAY - self.offset
        morning = midnight + (DAY if hour >= 23 else 0) + 7 * HOUR
        return morning + rng.randint(0, 14 * HOUR)

    def _profile(self, at: int) -> None:
        self._emit(
            "customers",
            CustomerChanged(
                self._eid(), self.cid, at, "UPDATED",
                self.consent, self.zone, self.locale, self.birthday,
            ),
        )  # fmt: skip

    # --- sessions ---------------------------------------------------------------------------

    def _session(self) -> str:
        self.sessions += 1
        return f"s-{self.num}-{self.sessions}"

    def _view(
        self,
        rng: Random,
        at: int,
        session: str,
        page_type: str,
        product: Product | None = None,
        category: int | None = None,
        source: _Source | None = None,
    ) -> int:
        """Publishes a page view; returns when the next page is looked at."""
        cat_name = product.category if product else None
        if page_type == "PRODUCT" and product is not None:
            path = f"/p/{product.product_id}"
        elif page_type == "CATEGORY" and category is not None:
            cat_name = _CATEGORIES[category][0]
            path = f"/c/{cat_name}"
        elif page_type == "SEARCH":
            path = f"/search?q={rng.choice(_SEARCH_TERMS).replace(' ', '+')}"
        elif page_type == "CART":
            path = "/cart"
        elif page_type == "CHECKOUT":
            path = "/checkout"
        elif page_type == "OTHER":
            path = rng.choice(_OTHER_PAGES)
        else:
            page_type, path = "HOME", "/"
        campaign = rng.choice(source.campaigns) if source and source.campaigns else None
        self._emit(
            "page_views",
            PageViewed(
                self._eid(), self.cid, at, session, page_type, SHOP_URL + path,
                product.product_id if product else None, cat_name,
                source.referrer if source else None,
                source.utm_source if source else None,
                source.utm_medium if source else None,
                campaign,
            ),
        )  # fmt: skip
        seconds = rng.lognormvariate(math.log(35.0), 0.8)
        return at + int(min(max(seconds, 3.0), 900.0) * SECOND)

    def _entry(self, rng: Random) -> _Source | None:
        """Where the first view of a session comes from; None when that is not recorded."""
        i = _pick(rng, _SOURCE_CUM)
        if i == _NEWSLETTER and not (self.known and self.consent):
            i = 0
        source = _SOURCES[i]
        return None if source.referrer is None and source.utm_source is None else source

    def _land(self, rng: Random, session: str, at: int) -> tuple[int, int, Product | None]:
        """The landing page view: returns the next time, the category and any product seen."""
        source = self._entry(rng)
        landing = source.landing if source else rng.choice(("HOME", "HOME", "CATEGORY", "SEARCH"))
        category = self.m.category(rng)
        product = self.m.product(rng, category) if landing == "PRODUCT" else None
        t = self._view(rng, at, session, landing, product, category, source)
        return t, category, product

    def _browse(self, rng: Random, at: int) -> int:
        """A session without a cart. Viewing products and leaving is browse abandonment."""
        session = self._session()
        t, category, _ = self._land(rng, session, at)
        last = at
        extra = int(rng.expovariate(1.0 / max(self.m.b.pages_per_browse_session - 1.0, 0.1)))
        for _ in range(min(extra, 30)):
            roll = rng.random()
            last = t
            if roll < 0.55:
                t = self._view(rng, t, session, "PRODUCT", self.m.product(rng, category))
            elif roll < 0.80:
                category = self.m.category(rng) if rng.random() < 0.4 else category
                t = self._view(rng, t, session, "CATEGORY", category=category)
            elif roll < 0.93:
                t = self._view(rng, t, session, "SEARCH")
            elif roll < 0.97:
                t = self._view(rng, t, session, "HOME")
            else:
                t = self._view(rng, t, session, "OTHER")
        return last

    # --- carts and orders -------------------------------------------------------------------

    def _cart_event(
        self, at: int, cart: str, action: str, product: Product | None = None, qty: int = 0
    ) -> None:
        if product is None:
            record = CartChanged(self._eid(), self.cid, at, cart, action)
        else:
            record = CartChanged(
                self._eid(), self.cid, at, cart, action,
                product.product_id, product.category, qty, product.price_minor, CURRENCY,
            )  # fmt: skip
        self._emit("cart", record)

    def _shop(self, rng: Random, at: int) -> tuple[int, int | None]:
        """A session that fills a cart; returns its end and the order time, if it orders."""
        m = self.m
        b = m.b
        session = self._session()
        t, category, product = self._land(rng, session, at)
        self.carts += 1
        cart = f"k-{self.num}-{self.carts}"
        converts = rng.random() >= m.first_abandon

        lines: dict[str, tuple[Product, int]] = {}
        n_lines = 1 + (rng.random() < 0.40) + (rng.random() < 0.15)
        while len(lines) < n_lines:
            if product is None or product.product_id in lines:
                if lines and rng.random() < 0.5:
                    category = m.category(rng)
                    t = self._view(rng, t, session, "CATEGORY", category=category)
                for _ in range(rng.choice((0, 0, 1, 2))):
                    t = self._view(rng, t, session, "PRODUCT", m.product(rng, category))
                product = m.product(rng, category)
                if product.product_id in lines:
                    continue
                t = self._view(rng, t, session, "PRODUCT", product)
            qty = 1 if rng.random() < 0.85 else rng.choice((2, 2, 3))
            lines[product.product_id] = (product, qty)
            self._cart_event(t, cart, "PRODUCT_ADDED", product, qty)
            t += rng.randint(5, 60) * SECOND

        # Removing the only line empties the cart, which can only happen to an abandoned one.
        if rng.random() < b.product_removed and (len(lines) > 1 or not converts):
            gone, qty = lines.pop(rng.choice(sorted(lines)))
            t = self._view(rng, t, session, "CART")
            self._cart_event(t, cart, "PRODUCT_REMOVED", gone, qty)
            t += rng.randint(5, 90) * SECOND

        if converts:
            return self._checkout(rng, t, session, cart, lines)
        if not lines:
            return t, None
        t = self._view(rng, t, session, "CART")
        if rng.random() < b.checkout_started_when_abandoned:
            t = self._view(rng, t, session, "CHECKOUT")
            self._cart_event(t, cart, "CHECKOUT_STARTED")
        if rng.random() >= b.abandoned_cart_recovered:
            return t, None
        # Back after a reminder: mostly around the 1 h and 24 h reminders, some any time up to 48 h.
        roll = rng.random()
        if roll < 0.5:
            delay = rng.randint(HOUR, 4 * HOUR)
        elif roll < 0.9:
            delay = rng.randint(20 * HOUR, 30 * HOUR)
        else:
            delay = rng.randint(HOUR, 48 * HOUR)
        back = t + delay
        emailed = self.known and self.consent and rng.random() < 0.7
        if emailed:
            self._message(rng, back - rng.randint(2, 30) * MINUTE, clicked_at=back)
        session = self._session()
        t = self._view(rng, back, session, "CART", source=_REMINDER if emailed else None)
        return self._checkout(rng, t, session, cart, lines)

    def _checkout(
        self, rng: Random, at: int, session: str, cart: str, lines: dict[str, tuple[Product, int]]
    ) -> tuple[int, int]:
        t = self._view(rng, at, session, "CHECKOUT")
        self._cart_event(t, cart, "CHECKOUT_STARTED")
        placed = t + rng.randint(40, 360) * SECOND
        self._order(rng, placed, cart, lines)
        return placed, placed

    def _order(
        self, rng: Random, placed: int, cart: str, lines: dict[str, tuple[Product, int]]
    ) -> None:
        b = self.m.b
        if not self.known and rng.random() < b.guest_profile_at_checkout:
            self.known = True
            self.consent = rng.random() < b.guest_marketing_consent
            self._profile(placed)
        self.orders_placed += 1
        order_id = f"o-{self.num}-{self.orders_placed}"
        items = [
            OrderItem(p.product_id, qty, p.price_minor, p.category)
            for p, qty in (lines[key] for key in sorted(lines))
        ]
        coupon = None
        if rng.random() < b.coupon:
            coupon = rng.choice(_COUPONS_FIRST if self.orders == 0 else _COUPONS_REPEAT)

        def order_event(at: int, status: str, its: list[OrderItem]) -> None:
            amount = sum(i.quantity * i.unit_price_minor for i in its)
            record = OrderChanged(
                self._eid(), self.cid, at, order_id, status, amount, CURRENCY, its, cart, coupon
            )
            self._emit("orders", record)

        order_event(placed, "PLACED", items)
        self._message(rng, placed + rng.randint(20, 120) * SECOND)
        if rng.random() < b.cancelled:
            order_event(placed + rng.randint(15 * MINUTE, 3 * HOUR), "CANCELLED", items)
            return
        delivered, shipment_id, tracking = self._ship(rng, placed, order_id)
        if rng.random() < b.returned:
            returned_at = delivered + rng.randint(3 * DAY, 14 * DAY)
            self._shipment(returned_at, order_id, "RETURNED", shipment_id, tracking)
            refunded = items
            if len(items) > 1 and rng.random() < b.partial_refund:
                kept = set(rng.sample(range(len(items)), rng.randint(1, len(items) - 1)))
                refunded = [item for n, item in enumerate(items) if n in kept]
            order_event(returned_at + rng.randint(DAY, 5 * DAY), "REFUNDED", refunded)
        self._feedback(rng, delivered, order_id, items)

    # --- fulfilment ---------------------------------------------------------------------------

    def _ship(self, rng: Random, placed: int, order_id: str) -> tuple[int, str, _Tracking]:
        """SHIPPED, OUT_FOR_DELIVERY, maybe DELIVERY_FAILED and a retry, DELIVERED."""
        m = self.m
        name, _, (ship_lo, ship_hi), (days_lo, days_hi) = m.carriers[_pick(rng, m.carrier_cum)]
        self.shipments += 1
        shipment_id = f"sh-{self.num}-{self.shipments}"
        code = _tracking_code(rng, name)
        url = f"https://track.example/{name.lower()}/{code}"
        tracking = (name, code, url)

        shipped = placed + rng.randint(ship_lo * HOUR, ship_hi * HOUR)
        self._shipment(shipped, order_id, "SHIPPED", shipment_id, tracking)
        self._message(rng, shipped + rng.randint(1, 20) * MINUTE)

        def morning(after: int, days: int) -> int:
            midnight = (after + self.offset) // DAY * DAY - self.offset
            return midnight + days * DAY + rng.randint(7 * HOUR, 10 * HOUR)

        out = morning(shipped, rng.randint(days_lo, days_hi))
        self._shipment(out, order_id, "OUT_FOR_DELIVERY", shipment_id, tracking)
        if rng.random() < m.b.delivery_failed:
            failed = out + rng.randint(HOUR, 9 * HOUR)
            self._shipment(failed, order_id, "DELIVERY_FAILED", shipment_id, tracking)
            out = morning(failed, 1)
            self._shipment(out, order_id, "OUT_FOR_DELIVERY", shipment_id, tracking)
        delivered = out + rng.randint(30 * MINUTE, 8 * HOUR)
        self._shipment(delivered, order_id, "DELIVERED", shipment_id, tracking)
        if rng.random() < m.b.delivered_email:
            self._message(rng, delivered + rng.randint(1, 30) * MINUTE)
        return delivered, shipment_id, tracking

    def _shipment(
        self, at: int, order_id: str, status: str, shipment_id: str, tracking: _Tracking
    ) -> None:
        carrier, code, url = tracking
        self._emit(
            "shipments",
            ShipmentChanged(
                self._eid(), self.cid, at, order_id, shipment_id, status, carrier, code, url
            ),
        )

    # --- feedback and engagement ------------------------------------------------------------

    def _feedback(self, rng: Random, delivered: int, order_id: str, items: list[OrderItem]) -> None:
        b = self.m.b
        if rng.random() < b.nps_answered:
            roll = rng.random()
            if roll < b.nps_promoter:
                score = rng.choice((9, 10))
            elif roll < b.nps_promoter + b.nps_passive:
                score = rng.choice((7, 8))
            else:
                # Unhappy customers mostly still give a 5 or 6 rather than a 0.
                score = rng.choice((0, 1, 2, 3, 3, 4, 4, 5, 5, 5, 6, 6, 6, 6))
            at = delivered + rng.randint(7 * DAY, 10 * DAY)
            self._emit("feedback", FeedbackGiven(self._eid(), self.cid, at, "NPS", score, order_id))
        if rng.random() < b.review_written:
            stars = _pick(rng, self.m.review_cum) + 1
            product_id = rng.choice(items).product_id
            comment = (
                rng.choice(_REVIEW_COMMENTS[stars]) if rng.random() < b.review_comment else None
            )
            at = delivered + rng.randint(3 * DAY, 21 * DAY)
            self._emit(
                "feedback",
                FeedbackGiven(
                    self._eid(), self.cid, at, "REVIEW", stars, order_id, product_id, comment
                ),
            )

    def _message(self, rng: Random, sent: int, clicked_at: int | None = None) -> None:
        """What the email sender reports back about one message (trigger ids are unknown)."""
        m = self.m
        b = m.b
        channel = m.channels[_pick(rng, m.channel_cum)]

        def engagement(at: int, action: str) -> None:
            self._emit("engagement", MessageEngagement(self._eid(), self.cid, at, action, channel))

        if clicked_at is not None:
            # The email that brought an abandoned cart back: it was read and clicked.
            engagement(sent, "DELIVERED")
            engagement(sent + (clicked_at - sent) // 2, "OPENED")
            engagement(clicked_at - SECOND, "CLICKED")
            return
        if rng.random() < b.bounced:
            engagement(sent, "BOUNCED")
            return
        engagement(sent, "DELIVERED")
        if rng.random() < b.complained:
            engagement(sent + rng.randint(HOUR, 3 * DAY), "COMPLAINED")
            return
        if rng.random() >= b.opened:
            return
        minutes = min(max(rng.lognormvariate(math.log(90.0), 1.2), 1.0), 7 * 24 * 60.0)
        opened = sent + int(minutes * MINUTE)
        engagement(opened, "OPENED")
        if rng.random() < m.open_click:
            engagement(opened + rng.randint(5, 600) * SECOND, "CLICKED")
        if rng.random() < m.open_unsubscribe:
            unsubscribed = opened + rng.randint(10, 300) * SECOND
            engagement(unsubscribed, "UNSUBSCRIBED")
            if rng.random() < b.resubscribed:
                engagement(unsubscribed + rng.randint(DAY, 60 * DAY), "RESUBSCRIBED")


def _tracking_code(rng: Random, carrier: str) -> str:
    if carrier == "PostNL":
        return "3S" + "".join(rng.choices(_ALNUM[10:], k=4)) + "".join(rng.choices(_DIGITS, k=9))
    if carrier == "DHL":
        return "JVGL" + "".join(rng.choices(_DIGITS, k=16))
    if carrier == "UPS":
        return "1Z" + "".join(rng.choices(_ALNUM, k=16))
    return "".join(rng.choices(_DIGITS, k=14))


# --------------------------------------------------------------------------------------------
# Malformed payloads, for the dead-letter path
# --------------------------------------------------------------------------------------------

_ENUM_FIELD = {
    "page_views": "page_type",
    "cart": "action",
    "orders": "status",
    "shipments": "status",
    "feedback": "kind",
    "engagement": "action",
    "customers": "action",
}


def _malformed(rng: Random, event: SimEvent) -> SimEvent:
    """A bad payload on the same topic and key as ``event``, of one of four kinds."""
    assert event.record is not None
    variant = rng.randrange(4)
    if variant == 0:
        raw = b"not avro"
    elif variant == 1:
        # Avro single-object marker, then a fingerprint cut short.
        raw = b"\xc3\x01" + rng.randbytes(rng.randint(0, 5))
    else:
        body: dict[str, Any] = dataclasses.asdict(event.record)
        if variant == 2:
            body[_ENUM_FIELD[event.topic]] = "TELEPORTED"
        else:
            required = [
                f.name
                for f in dataclasses.fields(event.record)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            ]
            del body[rng.choice(required)]
        raw = json.dumps(body, separators=(",", ":")).encode()
    return SimEvent(event.topic, event.key, None, raw, event.at_ms)


# --------------------------------------------------------------------------------------------
# The generator and its driver
# --------------------------------------------------------------------------------------------


def generate(config: SimulationConfig) -> Iterator[SimEvent]:
    """All events of the simulated shop in nondecreasing ``at_ms``, identical for a seed."""
    model = _Model(config)
    curve = _ArrivalCurve(config.start_ms, config.arrival_window_ms)
    end = None if config.horizon_ms is None else config.start_ms + config.horizon_ms
    bad_rng = Random(f"{config.seed}:bad")
    bad_rate = config.bad_event_rate
    total = config.customers
    if total == 0:
        return

    # (time, customer index, event, the rest of that customer's events); (time, index) is
    # unique because each customer has one entry, so events are never compared.
    heap: list[tuple[int, int, SimEvent, Iterator[SimEvent]]] = []
    index = 0

    def arrival(i: int) -> tuple[int, Random]:
        rng = Random(f"{config.seed}:{i}")
        # Stratified: customer i arrives in the i-th slice of the window, so arrivals are
        # sorted by index and a customer can be created only when the clock reaches it.
        return curve.at((i + rng.random()) / total), rng

    next_at, next_rng = arrival(0)
    while True:
        while index < total and (not heap or next_at <= heap[0][0]):
            life = _Customer(model, index, next_at, next_rng).events()
            first = next(life, None)
            if first is not None:
                heapq.heappush(heap, (first.at_ms, index, first, life))
            index += 1
            if index < total:
                next_at, next_rng = arrival(index)
        if not heap:
            return
        at, who, event, life = heap[0]
        if end is not None and at > end:
            return
        yield event
        if bad_rate and bad_rng.random() < bad_rate:
            yield _malformed(bad_rng, event)
        following = next(life, None)
        if following is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (following.at_ms, who, following, life))


async def run(
    config: SimulationConfig,
    send: Callable[[SimEvent], Awaitable[None]],
    *,
    rate: float,
    speed: float,
    max_events: int | None = None,
    on_progress: Callable[[SimStats], None] | None = None,
    progress_every_s: float = 1.0,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> SimStats:
    """Sends the generated events, simulated time running ``speed`` times faster than the wall.

    An event at ``at_ms`` is due at ``wall0 + (at_ms - start_ms) / 1000 / speed``; late events go
    out as fast as ``rate`` (events per second) allows. ``rate <= 0`` means no rate limit and
    ``speed <= 0`` or ``inf`` no pacing by simulated time.
    """
    stats = SimStats(start_ms=config.start_ms)
    wall0 = clock()
    paced = 0 < speed < math.inf
    interval = 1.0 / rate if rate > 0 else 0.0
    # Token bucket in its virtual-scheduling form: `allowed` is when the next event may go;
    # `burst` lets 50 ms worth of events out at once so high rates do not need a sleep per event.
    burst = max(0.0, (rate / 20.0 - 1.0) * interval) if rate > 0 else 0.0
    allowed = wall0
    next_progress = wall0 + progress_every_s
    since_yield = 0
    try:
        for event in generate(config):
            if max_events is not None and stats.events >= max_events:
                break
            target = allowed - burst
            if paced:
                target = max(target, wall0 + (event.at_ms - config.start_ms) / 1000.0 / speed)
            now = clock()
            if target > now:
                await sleep(target - now)
                now = clock()
                since_yield = 0
            elif since_yield >= 1000:
                # Running flat out: still let the producer and signal handlers have a turn.
                await sleep(0)
                since_yield = 0
            since_yield += 1
            await send(event)
            stats.observe(event)
            if interval:
                allowed = max(allowed, now) + interval
            if on_progress is not None and now >= next_progress:
                stats.wall_seconds = now - wall0
                on_progress(stats)
                next_progress = now + progress_every_s
    finally:
        stats.wall_seconds = clock() - wall0
    return stats
