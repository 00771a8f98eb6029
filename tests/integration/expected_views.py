"""The analysts' views, computed again in plain Python from the contract's definitions.

Nothing here reads ClickHouse or shares code with the SQL: the inputs are the events a test
generated (deduplicated by ``event_id`` here, which is the point) and, for the views built on
trigger decisions, the decisions themselves (they are the engine's: ``journey.triggers FINAL``).
Every function returns the view's rows as dicts with the view's column names, in its order.

Times are epoch milliseconds; days and months are UTC, as in the views. Medians are true
medians (the mean of the two middle values of an even count); rates and medians are rounded
like the views round them, so compare those with a tolerance of one unit in the last place.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas.records import (
    CartChanged,
    FeedbackGiven,
    InputEvent,
    MessageEngagement,
    OrderChanged,
    PageViewed,
    ShipmentChanged,
)

STAGES = ("AWARENESS", "CONSIDERATION", "PURCHASE", "SERVICE", "ADVOCACY")


def day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


def month(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().replace(day=1).isoformat()


def whole_seconds(later_ms: int, earlier_ms: int) -> int:
    """Second boundaries crossed between two times (what ClickHouse's dateDiff counts)."""
    return later_ms // 1000 - earlier_ms // 1000


def unique(events: Iterable[InputEvent]) -> list[InputEvent]:
    """One event per event_id: a duplicate or a replay is the same event, not another one."""
    seen: dict[str, InputEvent] = {}
    for event in events:
        first = seen.setdefault(event.event_id, event)
        assert first == event, f"two different events share the id {event.event_id}"
    return list(seen.values())


# --- orders --------------------------------------------------------------------------------------
@dataclass
class Order:
    order_id: str
    customer_id: str
    placed_at: int | None = None
    total_minor: int = 0
    cart_id: str | None = None
    cancelled: bool = False
    refunds: int = 0
    refunded_minor: int = 0

    @property
    def counts(self) -> bool:
        """A purchase: placed, not cancelled, not fully refunded (there were refunds, and they
        add up to the total or more), whatever its amount: a free order is a purchase."""
        fully_refunded = self.refunds > 0 and self.refunded_minor >= self.total_minor
        return self.placed_at is not None and not self.cancelled and not fully_refunded

    @property
    def revenue_minor(self) -> int:
        """What it earned: the total less partial refunds (nothing if it does not count)."""
        return self.total_minor - self.refunded_minor if self.counts else 0


def orders(events: Iterable[InputEvent]) -> dict[str, Order]:
    by_id: dict[str, Order] = {}
    for event in events:
        if not isinstance(event, OrderChanged):
            continue
        order = by_id.setdefault(event.order_id, Order(event.order_id, event.customer_id))
        if event.status == "PLACED":
            if order.placed_at is None or event.occurred_at < order.placed_at:
                order.placed_at = event.occurred_at
            order.total_minor, order.cart_id = event.total_minor, event.cart_id
        elif event.status == "CANCELLED":
            order.cancelled = True
        elif event.status == "REFUNDED":
            order.refunds += 1
            order.refunded_minor += event.total_minor
    return by_id


def counted(all_orders: dict[str, Order]) -> list[Order]:
    return [o for o in all_orders.values() if o.counts]


# --- funnel ----------------------------------------------------------------------------------------
FUNNEL_STEPS = ("visitors", "product_viewers", "cart_adders", "checkout_starters", "purchasers")


def funnel_daily(events: list[InputEvent], all_orders: dict[str, Order]) -> list[dict[str, Any]]:
    """Distinct customers per UTC day and step. Days where every step is 0 are left out."""
    steps: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for e in events:
        who, on = e.customer_id, steps[day(e.occurred_at)]
        if isinstance(e, PageViewed):
            on["visitors"].add(who)
            if e.page_type == "PRODUCT":
                on["product_viewers"].add(who)
        elif isinstance(e, CartChanged) and e.action == "PRODUCT_ADDED":
            on["cart_adders"].add(who)
        elif isinstance(e, CartChanged) and e.action == "CHECKOUT_STARTED":
            on["checkout_starters"].add(who)
    for order in counted(all_orders):
        assert order.placed_at is not None
        steps[day(order.placed_at)]["purchasers"].add(order.customer_id)
    rows = []
    for d in sorted(steps):
        row: dict[str, Any] = {"day": d, **{s: len(steps[d][s]) for s in FUNNEL_STEPS}}
        if any(row[s] for s in FUNNEL_STEPS):
            rows.append(row)
    return rows


# --- trigger decisions -------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """A row of journey.triggers FINAL (times in epoch ms)."""

    trigger_id: str
    trigger_type: str
    category: str
    customer_id: str
    status: str
    due_at: int
    decided_at: int
    cart_id: str | None


def recovered_carts(
    all_orders: dict[str, Order], decisions: list[Decision], window_ms: int
) -> dict[str, list[Order]]:
    """Cart -> its orders that recover it: orders that count, placed at or after an emitted
    ABANDONED_CART reminder for that cart and at most the attribution window after it."""
    sent: dict[str, list[int]] = defaultdict(list)
    for d in decisions:
        if d.trigger_type == "ABANDONED_CART" and d.status == "EMITTED" and d.cart_id:
            sent[d.cart_id].append(d.decided_at)
    recovered: dict[str, list[Order]] = defaultdict(list)
    for order in counted(all_orders):
        assert order.placed_at is not None
        if order.cart_id is None:
            continue
        placed = order.placed_at
        if any(at <= placed <= at + window_ms for at in sent.get(order.cart_id, ())):
            recovered[order.cart_id].append(order)
    return dict(recovered)


def cart_recovery_daily(
    all_orders: dict[str, Order], decisions: list[Decision], window_ms: int
) -> list[dict[str, Any]]:
    """A cart is abandoned on the day its first reminder that was not cancelled became due;
    reminders count on the day they were sent; a recovered cart counts once, on the day of its
    first recovering order, with the revenue of all its recovering orders."""
    reminders = [d for d in decisions if d.trigger_type == "ABANDONED_CART" and d.cart_id]
    first_due: dict[str, int] = {}
    for d in reminders:
        if d.status != "CANCELLED" and d.cart_id is not None:
            first_due[d.cart_id] = min(first_due.get(d.cart_id, d.due_at), d.due_at)
    rows: dict[str, Counter[str]] = defaultdict(Counter)
    for due in first_due.values():
        rows[day(due)]["carts_abandoned"] += 1
    for d in reminders:
        if d.status == "EMITTED":
            rows[day(d.decided_at)]["reminders_emitted"] += 1
    for recovering in recovered_carts(all_orders, decisions, window_ms).values():
        first = min(o.placed_at for o in recovering if o.placed_at is not None)
        rows[day(first)]["carts_recovered"] += 1
        rows[day(first)]["recovered_revenue_minor"] += sum(o.revenue_minor for o in recovering)
    columns = ("carts_abandoned", "reminders_emitted", "carts_recovered", "recovered_revenue_minor")
    return [{"day": d, **{c: rows[d][c] for c in columns}} for d in sorted(rows)]


def attributions(
    all_orders: dict[str, Order], decisions: list[Decision], window_ms: int
) -> dict[str, Decision]:
    """Order -> the trigger it is attributed to (last touch): the customer's latest emitted
    MARKETING trigger at or before the order, if the order is at most the window after it."""
    touches: dict[str, list[Decision]] = defaultdict(list)
    for d in decisions:
        if d.status == "EMITTED" and d.category == "MARKETING":
            touches[d.customer_id].append(d)
    attributed: dict[str, Decision] = {}
    for order in counted(all_orders):
        placed = order.placed_at
        assert placed is not None
        before = [d for d in touches.get(order.customer_id, ()) if d.decided_at <= placed]
        if not before:
            continue
        last = max(before, key=lambda d: d.decided_at)
        tied = [d.trigger_id for d in before if d.decided_at == last.decided_at]
        # "The latest" is ambiguous when two were sent in the same millisecond; the test keeps a
        # frequency cap so that this cannot happen, rather than depend on a tie-break.
        assert len(tied) == 1, f"order {order.order_id}: triggers sent at the same time {tied}"
        if placed - last.decided_at <= window_ms:
            attributed[order.order_id] = last
    return attributed


def trigger_attribution(
    all_orders: dict[str, Order], decisions: list[Decision], window_ms: int
) -> list[dict[str, Any]]:
    """Per trigger type that was ever emitted: how many were emitted, how many of those got
    at least one order attributed, the share, and the revenue of the orders attributed."""
    emitted = Counter(d.trigger_type for d in decisions if d.status == "EMITTED")
    converted: dict[str, set[str]] = defaultdict(set)
    revenue: Counter[str] = Counter()
    for order_id, trigger in attributions(all_orders, decisions, window_ms).items():
        converted[trigger.trigger_type].add(trigger.trigger_id)
        revenue[trigger.trigger_type] += all_orders[order_id].revenue_minor
    return [
        {
            "trigger_type": t,
            "emitted": emitted[t],
            "converted": len(converted[t]),
            "conversion_rate": round(len(converted[t]) / emitted[t], 4),
            "attributed_revenue_minor": revenue[t],
        }
        for t in sorted(emitted)
    ]


# --- customers, feedback, deliveries --------------------------------------------------------------
def repeat_purchase_cohorts(all_orders: dict[str, Order]) -> list[dict[str, Any]]:
    """Customers by the month of their first order that counts; repeat customers have a second
    one; days to the second order as a true median, rounded to 0.1 day."""
    placed: dict[str, list[int]] = defaultdict(list)
    for order in counted(all_orders):
        assert order.placed_at is not None
        placed[order.customer_id].append(order.placed_at)
    cohorts: dict[str, list[list[int]]] = defaultdict(list)
    for times in placed.values():
        times.sort()
        cohorts[month(times[0])].append(times)
    rows = []
    for m in sorted(cohorts):
        members = cohorts[m]
        gaps = [whole_seconds(t[1], t[0]) / 86_400 for t in members if len(t) >= 2]
        rows.append(
            {
                "cohort_month": m,
                "customers": len(members),
                "repeat_customers": len(gaps),
                "repeat_rate": round(len(gaps) / len(members), 4),
                "median_days_to_second_order": (
                    round(statistics.median(gaps), 1) if gaps else None
                ),
            }
        )
    return rows


def nps_daily(events: list[InputEvent]) -> list[dict[str, Any]]:
    """Per day: NPS answers, promoters (9-10), passives (7-8), detractors (0-6) and the score,
    % promoters - % detractors, rounded to 0.1."""
    scores: dict[str, list[int]] = defaultdict(list)
    for e in events:
        if isinstance(e, FeedbackGiven) and e.kind == "NPS":
            scores[day(e.occurred_at)].append(e.score)
    rows = []
    for d in sorted(scores):
        answers = scores[d]
        promoters = sum(1 for s in answers if s >= 9)
        passives = sum(1 for s in answers if 7 <= s <= 8)
        detractors = sum(1 for s in answers if s <= 6)
        rows.append(
            {
                "day": d,
                "responses": len(answers),
                "promoters": promoters,
                "passives": passives,
                "detractors": detractors,
                "nps": round(100 * (promoters - detractors) / len(answers), 1),
            }
        )
    return rows


def delivery_daily(events: list[InputEvent]) -> list[dict[str, Any]]:
    """Per day: shipments shipped (first SHIPPED), delivered (first DELIVERED), delivery
    failures (each attempt), and the median hours from SHIPPED to DELIVERED of the shipments
    delivered that day (those without a SHIPPED have no time)."""
    shipped: dict[str, int] = {}
    delivered: dict[str, int] = {}
    rows: dict[str, Counter[str]] = defaultdict(Counter)
    for e in events:
        if not isinstance(e, ShipmentChanged):
            continue
        key, at = e.shipment_id, e.occurred_at
        if e.status == "SHIPPED":
            shipped[key] = min(shipped.get(key, at), at)
        elif e.status == "DELIVERED":
            delivered[key] = min(delivered.get(key, at), at)
        elif e.status == "DELIVERY_FAILED":
            rows[day(at)]["failed"] += 1
    hours: dict[str, list[float]] = defaultdict(list)
    for at in shipped.values():
        rows[day(at)]["shipped"] += 1
    for key, at in delivered.items():
        rows[day(at)]["delivered"] += 1
        if key in shipped:
            hours[day(at)].append(whole_seconds(at, shipped[key]) / 3600)
    return [
        {
            "day": d,
            "shipped": rows[d]["shipped"],
            "delivered": rows[d]["delivered"],
            "failed": rows[d]["failed"],
            "median_hours_to_deliver": (
                round(statistics.median(hours[d]), 1) if hours[d] else None
            ),
        }
        for d in sorted(rows)
    ]


def stage_counts(stage_of: dict[str, str]) -> list[dict[str, Any]]:
    """Customers per journey stage (the stages are the engine's), in funnel order."""
    counts = Counter(stage_of.values())
    return [{"stage": s, "customers": counts[s]} for s in STAGES if counts[s]]


# --- buyers, lifetime value, engagement, stages --------------------------------------------------
@dataclass(frozen=True)
class Buyer:
    orders: int
    revenue_minor: int
    first_order_at: int
    last_order_at: int


def buyers(all_orders: dict[str, Order]) -> dict[str, Buyer]:
    """Customer -> their purchases (what `customers` and the view `buyers` must say)."""
    mine: dict[str, list[Order]] = defaultdict(list)
    for order in counted(all_orders):
        mine[order.customer_id].append(order)
    result = {}
    for customer, bought in mine.items():
        times = [o.placed_at for o in bought if o.placed_at is not None]
        result[customer] = Buyer(
            len(bought), sum(o.revenue_minor for o in bought), min(times), max(times)
        )
    return result


def funnel_totals(events: list[InputEvent], all_orders: dict[str, Order]) -> dict[str, int]:
    """Distinct customers who ever took each step (not a sum over days)."""
    steps: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if isinstance(e, PageViewed):
            steps["visitors"].add(e.customer_id)
            if e.page_type == "PRODUCT":
                steps["product_viewers"].add(e.customer_id)
        elif isinstance(e, CartChanged) and e.action == "PRODUCT_ADDED":
            steps["cart_adders"].add(e.customer_id)
        elif isinstance(e, CartChanged) and e.action == "CHECKOUT_STARTED":
            steps["checkout_starters"].add(e.customer_id)
    steps["purchasers"] = {o.customer_id for o in counted(all_orders)}
    return {s: len(steps[s]) for s in FUNNEL_STEPS}


def months_between(earlier: str, later: str) -> int:
    a, b = datetime.fromisoformat(earlier), datetime.fromisoformat(later)
    return (b.year - a.year) * 12 + b.month - a.month


def customer_value_cohorts(all_orders: dict[str, Order]) -> list[dict[str, Any]]:
    """Per cohort (month of the first purchase) and calendar month since: cohort customers who
    bought, their purchases and revenue, and cumulative revenue per cohort customer."""
    who = buyers(all_orders)
    cohort_of = {c: month(b.first_order_at) for c, b in who.items()}
    size = Counter(cohort_of.values())
    cells: dict[tuple[str, int], list[Order]] = defaultdict(list)
    for order in counted(all_orders):
        assert order.placed_at is not None
        cohort = cohort_of[order.customer_id]
        cells[(cohort, months_between(cohort, month(order.placed_at)))].append(order)
    rows, running = [], Counter[str]()
    for cohort, since in sorted(cells):
        orders_in = cells[(cohort, since)]
        revenue = sum(o.revenue_minor for o in orders_in)
        running[cohort] += revenue
        active = len({o.customer_id for o in orders_in})
        rows.append(
            {
                "cohort_month": cohort,
                "months_since_first": since,
                "cohort_customers": size[cohort],
                "active_customers": active,
                "retention_rate": round(active / size[cohort], 4),
                "orders": len(orders_in),
                "revenue_minor": revenue,
                "cumulative_revenue_minor": running[cohort],
                "cumulative_revenue_per_customer_minor": round(running[cohort] / size[cohort], 1),
            }
        )
    return rows


ENGAGEMENT_ACTIONS = {
    "DELIVERED": "delivered", "OPENED": "opened", "CLICKED": "clicked", "BOUNCED": "bounced",
    "COMPLAINED": "complained", "UNSUBSCRIBED": "unsubscribed",
}  # fmt: skip


def trigger_engagement(
    events: list[InputEvent],
    all_orders: dict[str, Order],
    decisions: list[Decision],
    window_ms: int,
) -> list[dict[str, Any]]:
    """Per type of emitted trigger: messages sent, messages with each reported action (an
    engagement counts when it names an emitted trigger of the same customer; once per message),
    messages with a purchase attributed (last touch) and its revenue; rates like the view's."""
    return engagement(
        events, all_orders, decisions, window_ms, lambda d: {"trigger_type": d.trigger_type}
    )


def engagement_daily(
    events: list[InputEvent],
    all_orders: dict[str, Order],
    decisions: list[Decision],
    window_ms: int,
) -> list[dict[str, Any]]:
    """The same per UTC day the message was sent and trigger type."""
    return engagement(
        events,
        all_orders,
        decisions,
        window_ms,
        lambda d: {"day": day(d.decided_at), "trigger_type": d.trigger_type},
    )


def engagement(
    events: list[InputEvent],
    all_orders: dict[str, Order],
    decisions: list[Decision],
    window_ms: int,
    group: Callable[[Decision], dict[str, str]],
) -> list[dict[str, Any]]:
    """Engagement of the emitted triggers grouped by `group` (its key columns), in key order."""
    sent = {(d.customer_id, d.trigger_id): d for d in decisions if d.status == "EMITTED"}
    acted: dict[str, set[str]] = defaultdict(set)  # action -> trigger ids
    for e in events:
        if (
            isinstance(e, MessageEngagement)
            and e.action in ENGAGEMENT_ACTIONS
            and (e.customer_id, e.trigger_id) in sent
        ):
            acted[ENGAGEMENT_ACTIONS[e.action]].add(e.trigger_id or "")
    converted: set[str] = set()
    revenue: Counter[str] = Counter()  # trigger id -> attributed revenue
    for order_id, trigger in attributions(all_orders, decisions, window_ms).items():
        converted.add(trigger.trigger_id)
        revenue[trigger.trigger_id] += all_orders[order_id].revenue_minor
    groups: dict[tuple[tuple[str, str], ...], set[str]] = defaultdict(set)  # key -> trigger ids
    for d in sent.values():
        groups[tuple(group(d).items())].add(d.trigger_id)
    rows = []
    for k in sorted(groups):
        ids = groups[k]
        n = {name: len(acted[name] & ids) for name in ENGAGEMENT_ACTIONS.values()}
        emitted, delivered, conversions = len(ids), n["delivered"], len(converted & ids)

        def per_delivered(count: int, delivered: int = delivered) -> float | None:
            return round(count / delivered, 4) if delivered else None

        rows.append(
            {
                **dict(k),
                "emitted": emitted,
                **n,
                "conversions": conversions,
                "attributed_revenue_minor": sum(revenue[i] for i in ids),
                "delivery_rate": round(delivered / emitted, 4),
                "open_rate": per_delivered(n["opened"]),
                "click_rate": per_delivered(n["clicked"]),
                "bounce_rate": round(n["bounced"] / emitted, 4),
                "complaint_rate": per_delivered(n["complained"]),
                "unsubscribe_rate": per_delivered(n["unsubscribed"]),
                "conversion_rate": round(conversions / emitted, 4),
            }
        )
    return rows


def stage_transitions_daily(snapshots: Iterable[tuple[str, int, str]]) -> list[dict[str, Any]]:
    """Per UTC day of the snapshot, stage before and after: consecutive snapshots of a customer
    (customer, written at, stage; in the order written) whose stages differ; the first one
    comes from the stage "" (the customer entered). A snapshot written again at the same time
    replaces the earlier copy."""
    history: dict[str, dict[int, str]] = defaultdict(dict)
    for customer, at, stage in snapshots:
        history[customer][at] = stage
    moves: Counter[tuple[str, str, str]] = Counter()
    for stages in history.values():
        before = ""
        for at in sorted(stages):
            if stages[at] != before:
                moves[(day(at), before, stages[at])] += 1
            before = stages[at]
    return [
        {"day": d, "from_stage": a, "to_stage": b, "customers": n}
        for (d, a, b), n in sorted(moves.items())
    ]


def stage_balance(transitions: list[dict[str, Any]]) -> dict[str, int]:
    """Per stage: transitions into it less transitions out of it (customers there now)."""
    balance: Counter[str] = Counter()
    for row in transitions:
        balance[row["to_stage"]] += row["customers"]
        if row["from_stage"]:
            balance[row["from_stage"]] -= row["customers"]
    return {stage: n for stage, n in balance.items() if n}
