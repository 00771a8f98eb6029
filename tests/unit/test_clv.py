"""The BG/NBD and Gamma-Gamma fits against the papers' published results on the CDNOW sample,
and parameter recovery on data generated from known parameters."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from streams.clv import BgNbd, FitFailed, fit_bg_nbd, fit_gamma_gamma

DATA = Path(__file__).parent / "data" / "cdnow_summary.csv"


def cdnow() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with DATA.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2357
    return tuple(np.array([float(r[c]) for r in rows]) for c in ("x", "t_x", "T", "zbar"))  # type: ignore[return-value]


def test_bg_nbd_reproduces_the_published_cdnow_fit() -> None:
    """Fader, Hardie & Lee (2005), section 5: r = 0.243, alpha = 4.414, a = 0.793, b = 2.426,
    log-likelihood -9582.4; customer 1 (x = 2, t_x = 30.43, T = 38.86) is expected to make
    1.226 purchases in the next 39 weeks."""
    x, t_x, T, _ = cdnow()
    model = fit_bg_nbd(x, t_x, T)
    got = (model.r, model.alpha, model.a, model.b)
    assert got == pytest.approx((0.243, 4.414, 0.793, 2.426), abs=6e-4)
    assert model.log_likelihood == pytest.approx(-9582.4, abs=0.05)
    one = np.array([2.0]), np.array([30.43]), np.array([38.86])
    assert model.expected_purchases(39, *one)[0] == pytest.approx(1.226, abs=5e-4)


def test_gamma_gamma_reproduces_the_published_cdnow_fit() -> None:
    """Fader, Hardie & Lee, "RFM and CLV" (2005): p = 6.25, q = 3.74, gamma = 15.44 on the
    946 CDNOW customers with repeat purchases."""
    x, _, _, zbar = cdnow()
    model = fit_gamma_gamma(x, zbar)
    assert (model.p, model.q, model.gamma) == pytest.approx((6.25, 3.74, 15.44), abs=0.01)
    # Shrinkage: one repeat order of $100 is believed less than ten of them.
    one, ten = model.expected_order_value(np.array([1.0, 10.0]), np.array([100.0, 100.0]))
    population = model.p * model.gamma / (model.q - 1)
    assert population < one < ten < 100


def simulate(r: float, alpha: float, a: float, b: float, n: int, weeks: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Customers drawn from the BG/NBD story itself, observed for `weeks` after a first purchase."""
    rng = np.random.default_rng(seed)
    xs, txs = np.zeros(n), np.zeros(n)
    for i in range(n):
        rate, drop = rng.gamma(r, 1 / alpha), rng.beta(a, b)
        t, x, last = 0.0, 0, 0.0
        while True:
            t += rng.exponential(1 / rate)
            if t > weeks:
                break
            x, last = x + 1, t
            if rng.random() < drop:
                break
        xs[i], txs[i] = x, last
    return xs, txs, np.full(n, weeks)


def test_bg_nbd_recovers_known_parameters() -> None:
    truth = (0.5, 6.0, 0.9, 3.0)
    x, t_x, T = simulate(*truth, n=6000, weeks=52, seed=7)
    model = fit_bg_nbd(x, t_x, T)
    for got, want in zip((model.r, model.alpha, model.a, model.b), truth, strict=True):
        assert got == pytest.approx(want, rel=0.25)


def test_predictions_behave() -> None:
    model = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426, log_likelihood=0.0)
    x = np.array([0.0, 5.0, 5.0])
    t_x = np.array([0.0, 38.0, 5.0])
    T = np.array([39.0, 39.0, 39.0])
    alive = model.probability_alive(x, t_x, T)
    assert alive[0] == 1.0  # never bought again: no evidence of dropping out
    assert alive[1] > 0.8 > 0.01 > alive[2]  # recent buyer alive, long-silent frequent buyer not
    expected = model.expected_purchases(13, x, t_x, T)
    assert expected[1] > expected[0] > 0 and expected[1] > expected[2]
    wait = model.median_days_to_next(x, T)
    assert wait[1] < wait[0]  # a frequent buyer is expected back sooner


def test_nothing_to_fit_is_a_clear_error() -> None:
    with pytest.raises(FitFailed, match="no customers"):
        fit_bg_nbd(np.array([]), np.array([]), np.array([]))
    with pytest.raises(FitFailed, match="repeat order"):
        fit_gamma_gamma(np.array([0.0, 0.0]), np.array([0.0, 0.0]))


def test_prediction_records_stay_within_what_the_workers_accept() -> None:
    """Non-finite or extreme model outputs are clamped, never sent as a poison pill."""
    from schemas.bounds import bounds_problem
    from streams.predictions import Fit, prediction_records
    from streams.runtime.ingest import semantic_problem

    rows = [
        ("c1", 1_000, 2, 0.8, 0.5, 100.0, 4_321.9, 2_000),
        ("c2", 1_000, 1, float("nan"), float("inf"), 0.0, float("inf"), 10**15),
        ("c3", 1_000, 1, 1.0000001, -0.1, 0.0, 1e30, 0),
    ]
    fit = Fit(1_000, None, None, rows)  # type: ignore[arg-type]
    records = prediction_records(fit)
    assert [(r.probability_alive, r.predicted_clv_minor) for r in records] == [
        (0.8, 4_321), (0.0, 0), (1.0, 10**12),
    ]  # fmt: skip
    assert [r.expected_next_order_at for r in records] == [2_000, None, None]
    assert all(bounds_problem(r) is None and semantic_problem(r) is None for r in records)
