"""Predicted lifetime value per customer: read the purchase histories, fit, write.

Runs from ``journey predict`` and, every ``JOURNEY_PREDICTION_INTERVAL``, in the loader. The
predictions are also handed to the journey workers on ``journey.predictions`` (a
``CustomerPrediction`` per customer, keyed by customer_id): the WIN_BACK and CROSS_SELL triggers
and the customer snapshot carry the newest one. The
fit itself (numpy/scipy, a second or so for 100k customers) runs in a thread of its own, and
ClickHouse calls on the ClickHouse thread, so the stream is never blocked by it. Histories come
from the view ``orders`` (the contract's purchases), times in days since the first purchase.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas.bounds import MAX_MONEY_MINOR, MAX_TIME_MS, MIN_TIME_MS
from schemas.records import CustomerPrediction
from sinks.clickhouse.client import ClickHouse
from streams.clv import BgNbd, GammaGamma, fit_bg_nbd, fit_gamma_gamma
from streams.ops.publish import Publisher
from streams.settings import Settings

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
HORIZON_DAYS = 90  # expected_orders_90d
CLV_DAYS = 365  # predicted_clv_minor: the next year, undiscounted

# Per buyer: repeat purchases, days from the first purchase to the last and to `now`, and the
# mean revenue of the repeat purchases (Gamma-Gamma models repeat orders, as in the paper).
HISTORY_SQL = """
SELECT
    customer_id,
    toFloat64(count() - 1) AS x,
    dateDiff('millisecond', min(placed_at), max(placed_at)) / {day} AS t_x,
    ({now} - toUnixTimestamp64Milli(min(placed_at))) / {day} AS T,
    if(count() > 1, (sum(revenue_minor) - argMin(revenue_minor, placed_at)) / (count() - 1), 0)
        AS repeat_value
FROM {db}.orders
WHERE counts AND toUnixTimestamp64Milli(placed_at) <= {now}
GROUP BY customer_id
"""

PREDICTION_COLUMNS = (
    "customer_id", "fitted_at", "orders", "probability_alive", "expected_orders_90d",
    "expected_order_value_minor", "predicted_clv_minor", "expected_next_order_at",
)  # fmt: skip
FIT_COLUMNS = ("fitted_at", "model", "parameters", "log_likelihood", "customers")


@dataclass(frozen=True)
class Fit:
    fitted_at: int
    purchases: BgNbd
    order_value: GammaGamma
    predictions: list[tuple[Any, ...]]

    def fit_rows(self) -> list[tuple[Any, ...]]:
        p, v = self.purchases, self.order_value
        return [
            (self.fitted_at, "bg_nbd", {"r": p.r, "alpha": p.alpha, "a": p.a, "b": p.b},
             p.log_likelihood, len(self.predictions)),
            (self.fitted_at, "gamma_gamma", {"p": v.p, "q": v.q, "gamma": v.gamma},
             v.log_likelihood, len(self.predictions)),
        ]  # fmt: skip


def fit_histories(histories: list[tuple[Any, ...]], now_ms: int) -> Fit:
    """Pure: (customer_id, x, t_x, T, repeat_value) rows -> both models and a row per customer."""
    ids = [str(h[0]) for h in histories]
    x, t_x, T, value = (np.array([float(h[i]) for h in histories]) for i in range(1, 5))
    purchases = fit_bg_nbd(x, t_x, T)
    order_value = fit_gamma_gamma(x, value)
    alive = purchases.probability_alive(x, t_x, T)
    next_90 = purchases.expected_purchases(HORIZON_DAYS, x, t_x, T)
    next_year = purchases.expected_purchases(CLV_DAYS, x, t_x, T)
    per_order = order_value.expected_order_value(x, value)
    wait = purchases.median_days_to_next(x, T)
    rows = [
        (
            ids[i], now_ms, int(x[i]) + 1, float(alive[i]), float(next_90[i]),
            float(per_order[i]), float(next_year[i] * per_order[i]),
            now_ms + int(wait[i] * DAY_MS),
        )
        for i in range(len(ids))
    ]  # fmt: skip
    return Fit(now_ms, purchases, order_value, rows)


async def refresh_predictions(ch: ClickHouse, now_ms: int) -> Fit:
    """Fit on every buyer's history as of ``now_ms`` and write the predictions and the fit."""
    db = ch.database
    histories = await ch.aquery_rows(HISTORY_SQL.format(db=db, now=now_ms, day=DAY_MS))
    loop = asyncio.get_running_loop()
    fit = await loop.run_in_executor(None, fit_histories, histories, now_ms)
    await ch.run(ch.client.insert, f"{db}.customer_predictions", fit.predictions,
                 column_names=list(PREDICTION_COLUMNS))  # fmt: skip
    await ch.run(ch.client.insert, f"{db}.prediction_fits", fit.fit_rows(),
                 column_names=list(FIT_COLUMNS))  # fmt: skip
    return fit


def prediction_records(fit: Fit) -> list[CustomerPrediction]:
    """The fit's rows as the records the workers read (within the bounds they check)."""
    records = []
    for customer_id, fitted_at, _, alive, orders_90d, _, clv, next_at in fit.predictions:
        finite_clv = clv if math.isfinite(clv) else 0.0
        records.append(
            CustomerPrediction(
                event_id=f"prediction/{customer_id}/{fitted_at}",
                customer_id=customer_id,
                occurred_at=fitted_at,
                probability_alive=min(1.0, max(0.0, alive)) if math.isfinite(alive) else 0.0,
                expected_orders_90d=min(1e6, max(0.0, orders_90d))
                if math.isfinite(orders_90d)
                else 0.0,
                predicted_clv_minor=int(min(MAX_MONEY_MINOR, max(0.0, finite_clv))),
                expected_next_order_at=next_at if MIN_TIME_MS <= next_at < MAX_TIME_MS else None,
            )
        )
    return records


async def publish_predictions(settings: Settings, fit: Fit) -> int:
    """Hand the predictions to the journey workers; returns how many were published."""
    publisher = Publisher(settings)
    await publisher.start()
    try:
        for record in prediction_records(fit):
            await publisher.send_record("predictions", record.customer_id, record)
    finally:
        await publisher.close()  # waits until the broker has them all
    return len(fit.predictions)


async def predict_every(
    clickhouse: Callable[[], ClickHouse],
    interval_ms: int,
    now_ms: Callable[[], int],
    publish: Callable[[Fit], Awaitable[object]] | None = None,
) -> None:
    """The loader's schedule: refit every interval, then ``publish`` the predictions; a failure
    is logged and retried at the next one (too few buyers yet is the usual reason), never
    raised into the loader."""
    while True:
        await asyncio.sleep(interval_ms / 1000)
        try:
            fit = await refresh_predictions(clickhouse(), now_ms())
            log.info("predictions refreshed for %d customers", len(fit.predictions))
            if publish is not None:
                await publish(fit)
        except Exception as exc:  # a fit must never stop the loader
            log.warning("predictions not refreshed: %s", exc)
