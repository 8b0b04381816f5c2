"""IPS / SNIPS / DR on a synthetic slate bandit whose true policy values are known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.evaluation.ope import LoggedPairs, clustered_se, estimate, paired_difference
from recsys.requestlog.propensity import plackett_luce_inclusion

N_ACTIONS = 8


def _bandit(
    seed: int, n_requests: int = 6000, n_members: int = 1500, fatigue: float = 0.0
) -> dict[str, np.ndarray]:
    """Requests with 3-8 candidates of 8 actions, 1-3 slots, a Plackett-Luce logging policy and
    Bernoulli purchases with member-type x action probabilities. With ``fatigue``, the logged responses of
    the odd actions (one "family") carry it: each pair has 0-3 earlier exposures and is bought with
    ``p * exp(-fatigue * exposures)`` (``p_fatigue``), as a world's logs do."""
    rng = np.random.default_rng(seed)
    member = rng.integers(0, n_members, n_requests)
    mtype = member % 3
    p_true = np.random.default_rng(99).uniform(0.01, 0.3, size=(3, N_ACTIONS))  # fixed across seeds
    log_w = np.linspace(0.0, -2.5, N_ACTIONS)
    n_cand = rng.integers(3, N_ACTIONS + 1, n_requests)
    k = rng.integers(1, 4, n_requests)
    cand = np.argsort(rng.random((n_requests, N_ACTIONS)), axis=1)
    in_set = np.arange(N_ACTIONS)[None, :] < n_cand[:, None]
    weights = np.where(in_set, np.exp(log_w[cand]), 0.0)
    incl = plackett_luce_inclusion(weights, k)
    g = np.where(in_set, np.log(np.where(in_set, weights, 1.0)) + rng.gumbel(size=weights.shape), -np.inf)
    order = np.argsort(-g, axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(N_ACTIONS)[None, :].repeat(n_requests, 0), axis=1)
    shown = in_set & (rank < k[:, None])
    r, j = np.nonzero(in_set)
    action = cand[r, j]
    p = p_true[mtype[r], action]
    exposures = np.where(action % 2 == 1, rng.integers(0, 4, len(r)), 0)
    p_fatigue = p * np.exp(-fatigue * exposures)
    y = (rng.random(len(r)) < p_fatigue) & shown[r, j]
    return {
        "request_row": r,
        "action": action,
        "p": p,
        "p_fatigue": p_fatigue,
        "k": k,
        "n_cand": n_cand,
        "shown": shown[r, j],
        "propensity": incl[r, j],
        "reward": y.astype(float),
        "member": member,
        "n_requests": np.array(n_requests),
    }


def _logged(b: dict[str, np.ndarray]) -> LoggedPairs:
    return LoggedPairs(
        b["request_row"], b["shown"], b["propensity"], b["reward"], b["member"], int(b["n_requests"])
    )


def _top_k(b: dict[str, np.ndarray], score: np.ndarray) -> np.ndarray:
    """Deterministic policy: the k highest scores of each request (0/1 per pair)."""
    r = b["request_row"]
    order = np.lexsort((-score, r))
    starts = np.searchsorted(r, np.arange(int(b["n_requests"])))
    pos = np.arange(len(r)) - starts[r[order]]
    pi = np.zeros(len(r))
    pi[order] = (pos < b["k"][r[order]]).astype(float)
    return pi


def _policies(b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "oracle": _top_k(b, b["p"]),
        "worst": _top_k(b, -b["p"]),
        "by_action": _top_k(b, -b["action"].astype(float)),
        "uniform": np.minimum(b["k"], b["n_cand"])[b["request_row"]] / b["n_cand"][b["request_row"]],
    }


def _truth(b: dict[str, np.ndarray], pi: np.ndarray, p: str = "p") -> float:
    # closed form: expected purchases per request = mean over requests of sum_i pi_i * p_i
    return float(np.bincount(b["request_row"], weights=pi * b[p]).sum() / int(b["n_requests"]))


def test_estimates_cover_the_true_value_at_the_nominal_rate() -> None:
    hits = {name: 0 for name in ("ips", "snips", "dr")}
    total = 0
    for seed in range(25):
        b = _bandit(seed)
        logged = _logged(b)
        q = np.full(len(b["p"]), float(b["reward"][b["shown"]].mean()))  # a poor but honest reward model
        for pi in _policies(b).values():
            truth = _truth(b, pi)
            for name, est in estimate(logged, pi, q).items():
                hits[name] += est.covers(truth)
            total += 1
    for name, h in hits.items():
        assert 0.88 <= h / total <= 0.995, (name, h / total)


def test_snips_per_family_covers_the_truth_the_logs_were_drawn_from() -> None:
    """A family's SNIPS (its pairs' rewards, the policy's inclusion of its pairs) covers that family's true
    value at the nominal rate. When the logs carry fatigue, the truth they estimate is the value with the
    logged fatigue: the fatigue-free value of the fatigued family is missed, the other family's is not —
    what the 50k world's ancillary offers show (bench/snips_families.py)."""
    covered = {("fresh", "free"): 0, ("tired", "fatigue"): 0, ("tired", "free"): 0}
    total = 0
    for seed in range(20):
        b = _bandit(seed, fatigue=0.5)
        logged = _logged(b)
        fam = {"fresh": b["action"] % 2 == 0, "tired": b["action"] % 2 == 1}
        for pi in _policies(b).values():
            for name, truth in list(covered):
                mask = fam[name]
                est = estimate(logged.with_reward(logged.reward * mask), pi * mask)["snips"]
                p = "p_fatigue" if truth == "fatigue" else "p"
                covered[(name, truth)] += est.covers(_truth(b, pi * mask, p))
            total += 1
    assert 0.88 <= covered[("fresh", "free")] / total <= 1.0, covered
    assert 0.88 <= covered[("tired", "fatigue")] / total <= 1.0, covered
    assert covered[("tired", "free")] / total < 0.5, covered


def test_estimators_are_unbiased_and_dr_with_the_true_model_is_tight() -> None:
    b = _bandit(1, n_requests=40_000, n_members=8000)
    logged = _logged(b)
    for name, pi in _policies(b).items():
        truth = _truth(b, pi)
        est = estimate(logged, pi, q=b["p"])
        for e in est.values():
            assert abs(e.value - truth) < 4 * e.se, (name, est, truth)
        # what is left is the purchases' own Bernoulli noise, which no reward model removes
        assert est["dr"].se < est["ips"].se, name
    # the on-policy value: pi = the logging policy's own inclusion probabilities
    on_policy = estimate(logged, b["propensity"])["ips"].value
    assert on_policy == pytest.approx(b["reward"].sum() / int(b["n_requests"]))


def test_paired_differences_are_tighter_than_the_separate_intervals() -> None:
    b = _bandit(2)
    logged = _logged(b)
    pols = _policies(b)
    diff = paired_difference(logged, pols["oracle"], pols["by_action"], q=b["p"])
    want = _truth(b, pols["oracle"]) - _truth(b, pols["by_action"])
    for name, d in diff.items():
        assert d.covers(want) or abs(d.value - want) < 4 * d.se, name
    sep = estimate(logged, pols["oracle"])["ips"]
    assert diff["ips"].se < sep.se * np.sqrt(2)
    assert diff["ips"].value > 0


def test_clustered_standard_error() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=4000)
    singletons = clustered_se(x, np.arange(len(x)))
    assert singletons == pytest.approx(x.std(ddof=1) / np.sqrt(len(x)), rel=1e-3)
    # each value twice in the same cluster: the information is that of 4000 values, not 8000
    doubled = clustered_se(np.repeat(x, 2), np.repeat(np.arange(len(x)), 2))
    assert doubled == pytest.approx(singletons, rel=1e-3)


def test_logged_pairs_refuse_missing_or_out_of_range_propensities() -> None:
    with pytest.raises(ValueError, match=r"propensity in \(0, 1\]"):
        LoggedPairs(
            np.array([0, 0]), np.array([True, False]), np.array([0.0, 0.5]), np.zeros(2), np.zeros(1), 1
        )
    with pytest.raises(ValueError, match="per request"):
        LoggedPairs(np.array([0]), np.array([True]), np.array([0.5]), np.zeros(1), np.zeros(3), 1)
