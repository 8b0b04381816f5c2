"""Off-policy estimators of a slate policy's value from logged requests: IPS, self-normalised IPS, DR.

Open Bandit Pipeline's shape, for slates: the logged feedback is one row per (request, candidate) pair with
whether the logging policy showed it, its propensity (inclusion probability) when shown, and the reward
(purchase, or its value); the evaluated policy gives its own inclusion probability ``pi`` per pair. With a
reward that adds up over the slate (expected purchases or value of the shown offers, each offer's response not
depending on the rest of the slate), the item-level estimators are unbiased whenever every offer the policy
may show had a positive logging propensity:

* IPS: ``V = 1/N Σ_r Σ_{i shown in r} pi_i / mu_i · y_i``;
* SNIPS: IPS rescaled by ``Σ pi_i / Σ_{shown} pi_i / mu_i`` — the weights' expectation is known exactly (the
  number of slots the policy fills), so their sample ratio corrects the estimate's scale (biased, consistent,
  usually lower variance);
* DR: ``V = 1/N Σ_r [Σ_i pi_i q_i + Σ_{i shown} pi_i / mu_i (y_i − q_i)]`` with a reward model ``q`` fitted on
  data before the test period.

Confidence intervals are normal, on per-request contributions (SNIPS: its linearisation) with the variance
clustered by member (a member's requests are not independent); paired differences use the same requests for
both policies, so they are much tighter than the two intervals suggest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

ESTIMATORS: tuple[str, ...] = ("ips", "snips", "dr")


@dataclass(frozen=True)
class LoggedPairs:
    """Logged bandit feedback, one row per (request, candidate) pair, grouped by request.

    ``shown``: the logging policy showed it; ``propensity``: its inclusion probability (only read where
    shown); ``reward``: the observed reward (0 where not shown); ``cluster``: the request's member (integer
    code) per request.
    """

    request_row: np.ndarray
    shown: np.ndarray
    propensity: np.ndarray
    reward: np.ndarray
    cluster: np.ndarray
    n_requests: int

    def __post_init__(self) -> None:
        n = len(self.request_row)
        for name in ("shown", "propensity", "reward"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, expected {n}")
        if len(self.cluster) != self.n_requests:
            raise ValueError(
                f"cluster has {len(self.cluster)} rows, expected {self.n_requests} (per request)"
            )
        p = np.asarray(self.propensity, dtype=np.float64)[np.asarray(self.shown, dtype=bool)]
        if len(p) and (np.isnan(p).any() or (p <= 0).any() or (p > 1).any()):
            raise ValueError("every shown pair needs a propensity in (0, 1]")

    def with_reward(self, reward: np.ndarray) -> LoggedPairs:
        return LoggedPairs(
            self.request_row, self.shown, self.propensity, reward, self.cluster, self.n_requests
        )


@dataclass(frozen=True)
class Estimate:
    """A value per request with its 95 % interval (normal, clustered by member)."""

    value: float
    se: float

    @property
    def low(self) -> float:
        return self.value - _Z * self.se

    @property
    def high(self) -> float:
        return self.value + _Z * self.se

    def covers(self, x: float) -> bool:
        return self.low <= x <= self.high


_Z = float(stats.norm.ppf(0.975))


def clustered_se(contrib: np.ndarray, cluster: np.ndarray) -> float:
    """Standard error of ``mean(contrib)`` with observations correlated within clusters (CR1 sandwich)."""
    x = np.asarray(contrib, dtype=np.float64)
    n = len(x)
    if n < 2:
        return float("nan")
    _, codes = np.unique(cluster, return_inverse=True)
    sums = np.bincount(codes, weights=x - x.mean())
    g = len(sums)
    if g < 2:
        return float("nan")
    return float(np.sqrt(g / (g - 1) * np.sum(sums**2)) / n)


def contributions(
    logged: LoggedPairs, pi: np.ndarray, q: np.ndarray | None = None
) -> dict[str, tuple[np.ndarray, float]]:
    """Per-request contributions of each estimator and its value: ``{name: (contrib, value)}``.

    ``mean(contrib) == value`` for IPS and DR; for SNIPS ``contrib`` is the linearised influence (its mean is
    the value up to rounding), which is what its interval and paired differences are computed from.
    """
    rows, n = logged.request_row, logged.n_requests
    shown = np.asarray(logged.shown, dtype=bool)
    pi = np.asarray(pi, dtype=np.float64)
    w = np.where(shown, pi / np.where(shown, logged.propensity, 1.0), 0.0)
    y = np.where(shown, logged.reward, 0.0)
    a = np.bincount(rows, weights=w * y, minlength=n)  # weighted rewards per request
    b = np.bincount(rows, weights=w, minlength=n)  # weights per request: E[b] = slots the policy fills
    k = np.bincount(rows, weights=pi, minlength=n)
    out: dict[str, tuple[np.ndarray, float]] = {"ips": (a, float(a.mean()))}
    if b.sum() > 0:
        ratio = a.sum() / b.sum()
        value = float(k.mean() * ratio)
        influence = k.mean() * (a - ratio * b) / b.mean() + ratio * (k - k.mean()) + value
        out["snips"] = (influence, value)
    else:
        out["snips"] = (np.zeros(n), 0.0)
    if q is not None:
        q = np.asarray(q, dtype=np.float64)
        direct = np.bincount(rows, weights=pi * q, minlength=n)
        correction = np.bincount(rows, weights=w * (y - np.where(shown, q, 0.0)), minlength=n)
        dr = direct + correction
        out["dr"] = (dr, float(dr.mean()))
    return out


def estimate(logged: LoggedPairs, pi: np.ndarray, q: np.ndarray | None = None) -> dict[str, Estimate]:
    """IPS, SNIPS (and DR when a reward model ``q`` per pair is given) of the policy ``pi`` per pair."""
    return {
        name: Estimate(value, clustered_se(c, logged.cluster))
        for name, (c, value) in contributions(logged, pi, q).items()
    }


def paired_difference(
    logged: LoggedPairs, pi: np.ndarray, pi_base: np.ndarray, q: np.ndarray | None = None
) -> dict[str, Estimate]:
    """Estimated value of ``pi`` minus that of ``pi_base`` on the same requests, with clustered intervals."""
    mine, base = contributions(logged, pi, q), contributions(logged, pi_base, q)
    return {
        name: Estimate(
            mine[name][1] - base[name][1], clustered_se(mine[name][0] - base[name][0], logged.cluster)
        )
        for name in mine
    }
