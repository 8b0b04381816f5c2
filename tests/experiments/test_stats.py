"""Every figure of the report's statistics against an independent implementation on known inputs.

spotify-confidence (test-only dependency) for the intervals and the Welch p-values; scipy's 2×2 chi-square for
the pooled two-proportion z-test; statsmodels OLS for CUPED; a seeded bootstrap for the delta-method relative
interval; the closed form of the one-degree chi-square for the sample-ratio check.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.stats import chi2_contingency

from recsys.experiments.stats import compare_means, compare_proportions, cuped, srm

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import spotify_confidence as confidence


def spotify(kind: str, c: tuple[float, float, float], t: tuple[float, float, float]) -> dict[str, float]:
    """(sum, sum of squares, n) per arm -> spotify-confidence's absolute difference of t over c."""
    df = pd.DataFrame({"group": ["c", "t"], "s": [c[0], t[0]], "ss": [c[1], t[1]], "n": [c[2], t[2]]})
    cls = confidence.ZTest if kind == "z" else confidence.StudentsTTest
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = cls(
            df,
            numerator_column="s",
            numerator_sum_squares_column="ss",
            denominator_column="n",
            categorical_group_columns="group",
            interval_size=0.95,
        )
        row = test.difference(level_1="c", level_2="t", absolute=True).iloc[0]
    return {"diff": row["difference"], "lo": row["ci_lower"], "hi": row["ci_upper"], "p": row["p-value"]}


@pytest.mark.parametrize(
    ("x_c", "n_c", "x_t", "n_t"),
    [(480, 5000, 560, 5000), (31, 1200, 22, 1100), (1500, 20000, 1500, 19000), (7, 90, 19, 110)],
)
def test_proportions(x_c: int, n_c: int, x_t: int, n_t: int) -> None:
    got = compare_proportions(x_c, n_c, x_t, n_t)
    ref = spotify("z", (x_c, x_c, n_c), (x_t, x_t, n_t))
    assert got.absolute_lift == pytest.approx(ref["diff"], rel=1e-12)
    assert got.absolute_ci is not None
    assert got.absolute_ci[0] == pytest.approx(ref["lo"], rel=1e-9)
    assert got.absolute_ci[1] == pytest.approx(ref["hi"], rel=1e-9)
    # The pooled two-proportion z-test is Pearson's chi-square on the 2x2 table without correction.
    table = [[x_c, n_c - x_c], [x_t, n_t - x_t]]
    assert got.p_value == pytest.approx(chi2_contingency(table, correction=False)[1], rel=1e-9)
    assert got.control == x_c / n_c and got.treatment == x_t / n_t


def test_proportions_relative_interval_against_bootstrap() -> None:
    rng = np.random.default_rng(7)
    c = rng.random(8000) < 0.08
    t = rng.random(8000) < 0.095
    got = compare_proportions(int(c.sum()), len(c), int(t.sum()), len(t))
    boot = []
    for _ in range(3000):
        bc = rng.choice(c, len(c)).mean()
        bt = rng.choice(t, len(t)).mean()
        boot.append(bt / bc - 1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    assert got.relative_lift == pytest.approx(t.mean() / c.mean() - 1)
    assert got.relative_ci is not None
    width = hi - lo
    assert abs(got.relative_ci[0] - lo) < 0.1 * width and abs(got.relative_ci[1] - hi) < 0.1 * width


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_means_against_spotify_welch(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_c = rng.exponential(10, 3000) * (rng.random(3000) < 0.3)
    y_t = rng.exponential(11, 2600) * (rng.random(2600) < 0.3)
    got = compare_means(y_c, y_t)
    ref = spotify("t", (y_c.sum(), (y_c**2).sum(), len(y_c)), (y_t.sum(), (y_t**2).sum(), len(y_t)))
    assert got.absolute_lift == pytest.approx(ref["diff"], rel=1e-9)
    assert got.absolute_ci is not None
    assert got.absolute_ci[0] == pytest.approx(ref["lo"], rel=1e-9)
    assert got.absolute_ci[1] == pytest.approx(ref["hi"], rel=1e-9)
    assert got.p_value == pytest.approx(ref["p"], rel=1e-6)


def test_means_relative_interval_against_bootstrap() -> None:
    rng = np.random.default_rng(11)
    y_c = rng.gamma(2.0, 50.0, 4000)
    y_t = rng.gamma(2.0, 56.0, 4000)
    got = compare_means(y_c, y_t)
    boot = [rng.choice(y_t, len(y_t)).mean() / rng.choice(y_c, len(y_c)).mean() - 1 for _ in range(3000)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    assert got.relative_ci is not None
    width = hi - lo
    assert abs(got.relative_ci[0] - lo) < 0.1 * width and abs(got.relative_ci[1] - hi) < 0.1 * width


def test_cuped_equals_regression_adjustment() -> None:
    rng = np.random.default_rng(5)
    n = 4000
    x = rng.poisson(3, n).astype(float)  # pre-experiment purchases
    treat = rng.random(n) < 0.5
    y = 0.6 * x + rng.normal(0, 1.5, n) + 0.25 * treat
    got = cuped(y[~treat], x[~treat], y[treat], x[treat])
    design = sm.add_constant(np.column_stack([treat.astype(float), x]))
    fit = sm.OLS(y, design).fit()
    assert got.comparison.absolute_lift == pytest.approx(fit.params[1], rel=1e-9)
    assert got.theta == pytest.approx(fit.params[2], rel=1e-9)
    # Variance of the lift shrinks by about the squared within-arm correlation of Y and X.
    rho = np.corrcoef(
        np.concatenate([x[~treat] - x[~treat].mean(), x[treat] - x[treat].mean()]),
        np.concatenate([y[~treat] - y[~treat].mean(), y[treat] - y[treat].mean()]),
    )[0, 1]
    assert got.variance_reduction == pytest.approx(rho**2, abs=0.01)
    raw = compare_means(y[~treat], y[treat])
    assert got.comparison.absolute_ci is not None and raw.absolute_ci is not None
    assert (
        got.comparison.absolute_ci[1] - got.comparison.absolute_ci[0]
        < raw.absolute_ci[1] - raw.absolute_ci[0]
    )
    # The CUPED interval is the OLS interval of the treatment coefficient up to the t/z and dof details.
    lo, hi = fit.conf_int()[1]
    assert got.comparison.absolute_ci[0] == pytest.approx(lo, abs=0.01 * (hi - lo))
    assert got.comparison.absolute_ci[1] == pytest.approx(hi, abs=0.01 * (hi - lo))


def test_cuped_without_signal_changes_nothing() -> None:
    y_c, y_t = np.array([0.0, 1, 0, 1, 1]), np.array([1.0, 1, 0, 1, 1, 0])
    got = cuped(y_c, np.zeros(5), y_t, np.zeros(6))
    raw = compare_means(y_c, y_t)
    assert got.theta == 0 and got.variance_reduction == pytest.approx(0.0)
    assert got.comparison.p_value == pytest.approx(raw.p_value)


@pytest.mark.parametrize(
    ("observed", "shares", "verdict"),
    [
        ({"a": 5000, "b": 5000}, {"a": 0.5, "b": 0.5}, "ok"),
        ({"a": 5000, "b": 5200}, {"a": 0.5, "b": 0.5}, "ok"),  # p = 0.048
        ({"a": 5000, "b": 5300}, {"a": 0.5, "b": 0.5}, "warn"),  # p = 0.0031
        ({"a": 5000, "b": 5400}, {"a": 0.5, "b": 0.5}, "alert"),  # p = 8.6e-5
        ({"a": 8990, "b": 1010}, {"a": 0.9, "b": 0.1}, "ok"),
    ],
)
def test_srm_two_arms_closed_form(observed: dict[str, int], shares: dict[str, float], verdict: str) -> None:
    got = srm(observed, shares)
    total = sum(observed.values())
    chi2 = sum((observed[k] - total * s) ** 2 / (total * s) for k, s in shares.items())
    assert got.chi2 == pytest.approx(chi2, rel=1e-12)
    assert got.p_value == pytest.approx(math.erfc(math.sqrt(chi2 / 2)), rel=1e-9)  # chi-square, 1 dof
    assert got.verdict == verdict


def test_srm_three_arms() -> None:
    # 3 arms (2 dof): the survival function is exp(-chi2 / 2).
    got = srm({"c": 4700, "t": 4750, "holdout": 550}, {"c": 0.475, "t": 0.475, "holdout": 0.05})
    chi2 = (4700 - 4750) ** 2 / 4750 + 0 + (550 - 500) ** 2 / 500
    assert got.chi2 == pytest.approx(chi2)
    assert got.p_value == pytest.approx(math.exp(-chi2 / 2), rel=1e-9)
    assert got.verdict == "ok"
