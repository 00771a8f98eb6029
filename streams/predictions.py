"""Predicted lifetime value per customer: read the purchase histories, fit, write.

Runs from ``journey predict`` and, every ``JOURNEY_PREDICTION_INTERVAL``, in the worker. The
fit itself (numpy/scipy, a second or so for 100k customers) runs in a thread of its own, and
ClickHouse calls on the ClickHouse thread, so the stream is never blocked by it. Histories come
from the view ``orders`` (the contract's purchases), times in days since the first purchase.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sinks.clickhouse.client import ClickHouse
from streams.clv import BgNbd, GammaGamma, fit_bg_nbd, fit_gamma_gamma

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


async def predict_every(
    clickhouse: Callable[[], ClickHouse], interval_ms: int, now_ms: Callable[[], int]
) -> None:
    """The worker's schedule: refit every interval; a failed fit is logged and retried at the
    next one (too few buyers yet is the usual reason), never raised into the worker."""
    while True:
        await asyncio.sleep(interval_ms / 1000)
        try:
            fit = await refresh_predictions(clickhouse(), now_ms())
            log.info("predictions refreshed for %d customers", len(fit.predictions))
        except Exception as exc:  # a fit must never stop the worker
            log.warning("predictions not refreshed: %s", exc)
