"""The statistics of an experiment report, on scipy and statsmodels.

- Rates (:func:`compare_proportions`): absolute lift with a Wald (unpooled) 95 % interval, the textbook
  two-proportion z-test p-value (pooled variance, ``statsmodels.stats.proportion.proportions_ztest``).
- Means per member (:func:`compare_means`): Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``) and a
  Welch-Satterthwaite t interval for the absolute lift.
- Relative lift ``treatment / control - 1`` with a delta-method interval:
  ``Var(m_t/m_c) ≈ Var(m_t)/m_c² + m_t² Var(m_c)/m_c⁴`` (the two arms are independent).
- CUPED (:func:`cuped`): ``Y - θ (X - mean X)`` with θ the pooled within-arm regression slope of Y on the
  pre-experiment covariate X; the adjusted lift is the treatment coefficient of ``Y ~ T + X``. The variance
  reduction reported is ``1 - Var(adjusted lift) / Var(unadjusted lift)``.
- Sample-ratio mismatch (:func:`srm`): Pearson's chi-square of the observed arm sizes against the configured
  shares; ``warn`` at p < 0.01, ``alert`` at p < 0.001.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as sps
from statsmodels.stats.proportion import proportions_ztest

Z95 = float(sps.norm.ppf(0.975))
SRM_WARN = 0.01
SRM_ALERT = 0.001


@dataclass(frozen=True)
class Comparison:
    """A treatment arm against control on one metric (None where a figure is undefined, e.g. no data)."""

    control: float | None
    treatment: float | None
    absolute_lift: float | None
    absolute_ci: tuple[float, float] | None
    relative_lift: float | None
    relative_ci: tuple[float, float] | None
    p_value: float | None
    test: str
    n_control: int
    n_treatment: int

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("absolute_ci", "relative_ci"):
            out[k] = list(out[k]) if out[k] is not None else None
        return {k: _clean(v) for k, v in out.items()}


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def relative_delta(
    m_c: float, var_mc: float, m_t: float, var_mt: float, z: float = Z95
) -> tuple[float | None, tuple[float, float] | None]:
    """Relative lift ``m_t / m_c - 1`` and its delta-method interval (variances are of the means)."""
    if m_c == 0:
        return None, None
    rel = m_t / m_c - 1.0
    var = var_mt / m_c**2 + (m_t**2) * var_mc / m_c**4
    half = z * math.sqrt(max(var, 0.0))
    return rel, (rel - half, rel + half)


def compare_proportions(x_c: int, n_c: int, x_t: int, n_t: int) -> Comparison:
    """Two rates ``x/n``: lift, Wald interval, delta-method relative interval, pooled z-test p-value."""
    if n_c <= 0 or n_t <= 0:
        return Comparison(
            x_c / n_c if n_c else None,
            x_t / n_t if n_t else None,
            None,
            None,
            None,
            None,
            None,
            "two-proportion z-test",
            n_c,
            n_t,
        )
    p_c, p_t = x_c / n_c, x_t / n_t
    var_c, var_t = p_c * (1 - p_c) / n_c, p_t * (1 - p_t) / n_t
    diff = p_t - p_c
    half = Z95 * math.sqrt(var_c + var_t)
    if x_c + x_t in (0, n_c + n_t):
        p_value: float | None = 1.0  # both arms all-0 or all-1: no evidence of a difference
    else:
        _, p = proportions_ztest([x_t, x_c], [n_t, n_c], alternative="two-sided")
        p_value = float(p)
    rel, rel_ci = relative_delta(p_c, var_c, p_t, var_t)
    return Comparison(
        p_c, p_t, diff, (diff - half, diff + half), rel, rel_ci, p_value, "two-proportion z-test", n_c, n_t
    )


def _welch_df(v_c: float, n_c: int, v_t: float, n_t: int) -> float:
    a, b = v_c / n_c, v_t / n_t
    denom = (a * a) / (n_c - 1) + (b * b) / (n_t - 1)
    return (a + b) ** 2 / denom if denom > 0 else float(n_c + n_t - 2)


def compare_means(y_c: Sequence[float] | np.ndarray, y_t: Sequence[float] | np.ndarray) -> Comparison:
    """Per-member means: Welch's t-test p-value and interval, delta-method relative interval."""
    c, t = np.asarray(y_c, dtype=float), np.asarray(y_t, dtype=float)
    n_c, n_t = len(c), len(t)
    if n_c < 2 or n_t < 2:
        return Comparison(
            float(c.mean()) if n_c else None,
            float(t.mean()) if n_t else None,
            None,
            None,
            None,
            None,
            None,
            "Welch's t-test",
            n_c,
            n_t,
        )
    m_c, m_t = float(c.mean()), float(t.mean())
    v_c, v_t = float(c.var(ddof=1)), float(t.var(ddof=1))
    diff = m_t - m_c
    se = math.sqrt(v_c / n_c + v_t / n_t)
    if se == 0:
        p_value: float | None = 1.0 if diff == 0 else 0.0
        ci: tuple[float, float] | None = (diff, diff)
    else:
        res = sps.ttest_ind(t, c, equal_var=False)
        p_value = float(res.pvalue)
        dof = _welch_df(v_c, n_c, v_t, n_t)
        half = float(sps.t.ppf(0.975, dof)) * se
        ci = (diff - half, diff + half)
    rel, rel_ci = relative_delta(m_c, v_c / n_c, m_t, v_t / n_t)
    return Comparison(m_c, m_t, diff, ci, rel, rel_ci, p_value, "Welch's t-test", n_c, n_t)


@dataclass(frozen=True)
class Cuped:
    comparison: Comparison
    theta: float
    variance_reduction: float | None  # 1 - Var(adjusted lift) / Var(unadjusted lift)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.comparison.to_json(),
            "theta": _clean(self.theta),
            "variance_reduction": _clean(self.variance_reduction),
        }


def cuped_theta(y_c: np.ndarray, x_c: np.ndarray, y_t: np.ndarray, x_t: np.ndarray) -> float:
    """Pooled within-arm slope of Y on X (0 when X does not vary)."""
    xc, xt = x_c - x_c.mean(), x_t - x_t.mean()
    sxx = float(xc @ xc + xt @ xt)
    if sxx <= 0:
        return 0.0
    return float((xc @ (y_c - y_c.mean()) + xt @ (y_t - y_t.mean())) / sxx)


def cuped(
    y_c: Sequence[float] | np.ndarray,
    x_c: Sequence[float] | np.ndarray,
    y_t: Sequence[float] | np.ndarray,
    x_t: Sequence[float] | np.ndarray,
) -> Cuped:
    """CUPED-adjusted comparison of per-member means with pre-experiment covariate X (same order as Y)."""
    yc, xc = np.asarray(y_c, dtype=float), np.asarray(x_c, dtype=float)
    yt, xt = np.asarray(y_t, dtype=float), np.asarray(x_t, dtype=float)
    theta = cuped_theta(yc, xc, yt, xt)
    x_mean = float(np.concatenate([xc, xt]).mean()) if len(xc) + len(xt) else 0.0
    adj_c = yc - theta * (xc - x_mean)
    adj_t = yt - theta * (xt - x_mean)
    comp = compare_means(adj_c, adj_t)
    reduction: float | None = None
    if len(yc) >= 2 and len(yt) >= 2:
        raw = float(yc.var(ddof=1)) / len(yc) + float(yt.var(ddof=1)) / len(yt)
        adj = float(adj_c.var(ddof=1)) / len(adj_c) + float(adj_t.var(ddof=1)) / len(adj_t)
        reduction = 1.0 - adj / raw if raw > 0 else None
    return Cuped(comp, theta, reduction)


@dataclass(frozen=True)
class SrmResult:
    chi2: float | None
    p_value: float | None
    verdict: str  # ok | warn | alert | insufficient
    observed: dict[str, int]
    expected: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {k: _clean(v) for k, v in asdict(self).items()}


def srm(observed: Mapping[str, int], shares: Mapping[str, float]) -> SrmResult:
    """Chi-square goodness of fit of the arms' member counts to their configured shares."""
    arms = list(shares)
    obs = np.array([observed.get(a, 0) for a in arms], dtype=float)
    total = float(obs.sum())
    p = np.array([shares[a] for a in arms], dtype=float)
    p = p / p.sum()
    expected = {a: float(total * s) for a, s in zip(arms, p, strict=True)}
    if total == 0 or len(arms) < 2:
        return SrmResult(None, None, "insufficient", {a: int(observed.get(a, 0)) for a in arms}, expected)
    chi2, pv = sps.chisquare(obs, total * p)
    verdict = "alert" if pv < SRM_ALERT else "warn" if pv < SRM_WARN else "ok"
    return SrmResult(float(chi2), float(pv), verdict, {a: int(observed.get(a, 0)) for a in arms}, expected)
