"""Predicted customer lifetime value: the BG/NBD and Gamma-Gamma models of Fader, Hardie and Lee.

* **BG/NBD** ("Counting your customers the easy way", 2005): while alive a customer buys as a
  Poisson process (rate ~ Gamma(r, alpha) across customers) and after each purchase drops out
  with probability p (~ Beta(a, b)). From each customer's repeat purchases ``x``, the time of
  the last one ``t_x`` and the time observed ``T`` (days since the first purchase) it gives the
  probability of being alive and the expected purchases in the next ``t`` days.
* **Gamma-Gamma** ("RFM and CLV", 2005): the mean value of a customer's repeat orders, shrunk
  towards the population's (parameters p, q, gamma), from the repeat orders observed.

The ``lifetimes`` package (last release 2020) implements both but depends on autograd and old
pandas behaviour; this is the same maximum-likelihood fit in about a hundred lines of numpy and
scipy, checked against the parameters the papers report on the CDNOW data set
(tests/unit/test_clv.py). Everything here is pure: no I/O; :mod:`streams.predictions` reads the
order histories and writes the predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from scipy.special import gammaln, hyp2f1

Array = NDArray[np.float64]


@dataclass(frozen=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float

    def probability_alive(self, x: Array, t_x: Array, T: Array) -> Array:
        """P(still a customer | x, t_x, T); 1 for a customer who never bought again."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        with np.errstate(divide="ignore", invalid="ignore"):
            odds = (a / (b + x - 1)) * np.exp((r + x) * np.log((alpha + T) / (alpha + t_x)))
        return np.asarray(np.where(x > 0, 1.0 / (1.0 + odds), 1.0), dtype=np.float64)

    def expected_purchases(self, t: float, x: Array, t_x: Array, T: Array) -> Array:
        """E[purchases in (T, T + t] | x, t_x, T] (equation 10 of the BG/NBD paper)."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = t / (alpha + T + t)
        head = (a + b + x - 1) / (a - 1)
        tail = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(
            r + x, b + x, a + b + x - 1, z
        )
        return np.asarray(head * tail * self.probability_alive(x, t_x, T), dtype=np.float64)

    def median_days_to_next(self, x: Array, T: Array) -> Array:
        """Median wait for the next purchase of a customer who is alive: their rate given the
        history is Gamma(r + x, alpha + T), so P(none in t) = ((alpha+T)/(alpha+T+t))^(r+x)."""
        return np.asarray((self.alpha + T) * (2.0 ** (1.0 / (self.r + x)) - 1.0), dtype=np.float64)


@dataclass(frozen=True)
class GammaGamma:
    p: float
    q: float
    gamma: float
    log_likelihood: float

    def expected_order_value(self, x: Array, mean_value: Array) -> Array:
        """E[value of an order | x repeat orders of mean value m] (equation 5 of "RFM and CLV");
        the population mean for a customer without repeat orders."""
        p, q, g = self.p, self.q, self.gamma
        return np.asarray((g + mean_value * x) * p / (p * x + q - 1), dtype=np.float64)


def _weights(*columns: Array) -> tuple[list[Array], Array]:
    """Identical customers counted once, with a weight: the likelihood is a sum over them."""
    stacked = np.column_stack(columns)
    unique, counts = np.unique(stacked, axis=0, return_counts=True)
    return [unique[:, i] for i in range(len(columns))], counts.astype(np.float64)


def _fit(negative_ll: object, start: Array) -> tuple[Array, float]:
    options = {"xatol": 1e-7, "fatol": 1e-9, "maxiter": 20_000, "maxfev": 40_000}
    result = minimize(negative_ll, np.log(start), method="Nelder-Mead", options=options)
    if not result.success:
        raise FitFailed(f"the fit did not converge: {result.message}")
    return np.exp(result.x), -float(result.fun)


class FitFailed(RuntimeError):
    pass


def fit_bg_nbd(x: Array, t_x: Array, T: Array) -> BgNbd:
    """Maximum likelihood (equation 6 of the paper), parameters fitted on a log scale."""
    if len(x) == 0:
        raise FitFailed("no customers to fit")
    (x, t_x, T), w = _weights(x, t_x, T)
    repeat = x > 0

    def negative_ll(log_params: Array) -> float:
        r, alpha, a, b = np.exp(log_params)
        a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
        a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
        a3 = -(r + x) * np.log(alpha + T)
        with np.errstate(divide="ignore", invalid="ignore"):
            a4 = (
                np.log(a) - np.log(np.where(repeat, b + x - 1, 1.0)) - (r + x) * np.log(alpha + t_x)
            )
        mixed = np.where(repeat, np.logaddexp(a3, a4), a3)
        value = -float(np.sum(w * (a1 + a2 + mixed)))
        return value if np.isfinite(value) else 1e300

    (r, alpha, a, b), ll = _fit(negative_ll, np.array([1.0, max(float(np.mean(T)), 1.0), 1.0, 1.0]))
    return BgNbd(float(r), float(alpha), float(a), float(b), ll)


def fit_gamma_gamma(x: Array, mean_value: Array) -> GammaGamma:
    """On customers with at least one repeat order of positive mean value (the model's domain)."""
    keep = (x > 0) & (mean_value > 0)
    if not keep.any():
        raise FitFailed("no customer with a repeat order of positive value")
    (x, m), w = _weights(x[keep], mean_value[keep])

    def negative_ll(log_params: Array) -> float:
        p, q, g = np.exp(log_params)
        px = p * x
        ll = (gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(g) + (px - 1) * np.log(m)
              + px * np.log(x) - (px + q) * np.log(g + m * x))  # fmt: skip
        value = -float(np.sum(w * ll))
        return value if np.isfinite(value) else 1e300

    (p, q, g), ll = _fit(negative_ll, np.array([1.0, 2.0, max(float(np.mean(m)), 1.0)]))
    return GammaGamma(float(p), float(q), float(g), ll)
