"""Policy evaluation: replay the test period's requests and value each policy's slates.

Each policy picks a slate of ``k`` offers (the placement's slots) from each logged request's candidate set
(:mod:`recsys.evaluation.policy`). Two scores per request: **expected purchases** and **expected value**
(P(purchase) × margin, miles at their liability cost, as the service values offers) — the primary metric is
expected value per request (:data:`PRIMARY_POLICY_METRIC`): it is what the service ranks by and what the
airline earns.

* On a generated world, the **true** values from the hidden acceptance model in each request's context,
  fatigue-free and with the fatigue of the logged exposures, and 0 for a redemption the member cannot afford
  at the request (the world never sells it); the ceilings are the oracle (top-k by true acceptance) and the EV
  oracle (top-k by true acceptance × margin).
* From the logs alone, as an airline has them: IPS, SNIPS and DR (:mod:`recsys.evaluation.ope`) with 95 %
  intervals clustered by member, and paired differences against the baseline (segment popularity).

A policy trained on data after the test period's start is refused: it has seen what it is judged on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recsys.evaluation.metrics import EvaluationError
from recsys.evaluation.ope import ESTIMATORS, Estimate, estimate, paired_difference
from recsys.evaluation.policy import SlatePolicy, check_inclusion
from recsys.evaluation.replay import Replay
from recsys.schema import OfferFamily

PRIMARY_POLICY_METRIC = "ev_per_request"
POLICY_BASELINE = "popularity"
ORACLE_POLICY = "oracle"
EV_ORACLE_POLICY = "ev_oracle"
NO_TASTE_ORACLE_POLICY = "oracle_no_taste"  # ranks by true acceptance without the destination-taste term
# run metrics of the replayed period's size (the experiments pages show the request count beside an estimate)
REPLAYED_REQUESTS_METRIC = "policy_table.requests"
REPLAYED_MEMBERS_METRIC = "policy_table.members"
CHECKED_FAMILIES: tuple[str, ...] = (OfferFamily.UPSELL.value, OfferFamily.ANCILLARY.value)


class PolicyRefused(EvaluationError):
    """A policy cannot be judged on this period (it was trained on data from it)."""


@dataclass
class PolicyResult:
    """One policy's values per request: true (generated worlds) and estimated from the logs."""

    name: str
    true: dict[str, float]  # purchases, ev, purchases_fatigue, ev_fatigue (empty without truth)
    purchases: dict[str, Estimate]
    value: dict[str, Estimate]
    vs_baseline: dict[str, Estimate] = field(default_factory=dict)  # EV difference to the baseline
    # per checked family: (true purchases fatigue-free, true with the logged fatigue, SNIPS estimate)
    family_check: dict[str, tuple[float, float, Estimate]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def primary(self) -> float:
        """Expected value per request: the true one when known, else the SNIPS estimate."""
        return self.true.get("ev", self.value["snips"].value)


@dataclass
class PolicyReport:
    """The policy table's rows, the replayed period and the baseline."""

    results: list[PolicyResult]
    n_requests: int
    n_members: int
    cutoff: pd.Timestamp
    end: pd.Timestamp
    baseline: str = POLICY_BASELINE

    def result(self, name: str) -> PolicyResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no policy {name!r} in the table; have {[r.name for r in self.results]}")

    def table(self) -> pd.DataFrame:
        return policy_table(self)

    def markdown(self) -> str:
        return policy_markdown(self)

    def metrics(self) -> dict[str, float]:
        """Flat ``<policy>.<metric>`` figures for MLflow, and the replayed requests and members."""
        out: dict[str, float] = {
            REPLAYED_REQUESTS_METRIC: float(self.n_requests),
            REPLAYED_MEMBERS_METRIC: float(self.n_members),
        }
        for r in self.results:
            for k, v in r.true.items():
                out[f"{r.name}.true_{k}_per_request"] = v
            for est, e in r.purchases.items():
                out[f"{r.name}.{est}_purchases_per_request"] = e.value
                # the standard error too: the experiment report puts the estimate's interval beside the lift
                out[f"{r.name}.{est}_purchases_per_request_se"] = e.se
            for est, e in r.value.items():
                out[f"{r.name}.{est}_ev_per_request"] = e.value
                out[f"{r.name}.{est}_ev_per_request_se"] = e.se
            out[f"{r.name}.{PRIMARY_POLICY_METRIC}"] = r.primary
        return out


def evaluate_policies(
    replay: Replay,
    policies: Sequence[SlatePolicy],
    *,
    baseline: str = POLICY_BASELINE,
    progress: bool = False,
) -> PolicyReport:
    """Value every policy on the replayed requests (see the module doc).

    Raises :class:`PolicyRefused` for a policy whose ``trained_before`` is after the test period's start and
    :class:`EvaluationError` when the baseline is not among the policies.
    """
    import time

    cutoff = replay.cutoff.to_pydatetime()
    for policy in policies:
        tb = policy.trained_before
        if tb is not None and _naive(tb) > cutoff:
            seen = "all the data" if tb.year == datetime.max.year else f"data up to {tb}"
            raise PolicyRefused(
                f"policy {policy.name!r} was trained on {seen}, after the test period's start {cutoff}: it "
                "saw the period it would be judged on, so its estimate would be inflated; train it before "
                "the cut-off"
            )
    names = [p.name for p in policies]
    if baseline not in names:
        raise EvaluationError(f"the baseline policy {baseline!r} is not among {names}")
    batch, logged = replay.batch, replay.logged
    value_logged = replay.value_logged()
    q, qv = replay.q, replay.q * replay.margin
    n = batch.n_requests
    inclusions: dict[str, np.ndarray] = {}
    results: list[PolicyResult] = []
    redemption = (replay.family == OfferFamily.REDEMPTION.value).astype(np.float64)
    for policy in tqdm(policies, desc="policies", unit="policy", disable=not progress):
        t0 = time.perf_counter()
        if hasattr(policy, "progress"):
            policy.progress = progress
        pi = check_inclusion(policy.name, batch, policy.inclusion(batch))
        inclusions[policy.name] = pi
        true: dict[str, float] = {}
        family_check: dict[str, tuple[float, float, Estimate]] = {}
        if replay.p_true is not None and replay.p_true_fatigue is not None:
            true = {
                "purchases": float(pi @ replay.p_true) / n,
                "ev": float(pi @ (replay.p_true * replay.margin)) / n,
                "purchases_fatigue": float(pi @ replay.p_true_fatigue) / n,
                "ev_fatigue": float(pi @ (replay.p_true_fatigue * replay.margin)) / n,
                # redemptions alone: where destination taste acts (award flights, hotels)
                "purchases_redemption": float(pi @ (replay.p_true * redemption)) / n,
            }
            for fam in CHECKED_FAMILIES:
                mask = replay.family == fam
                if not mask.any():
                    continue
                fam_free = float((pi * mask) @ replay.p_true) / n
                fam_fatigue = float((pi * mask) @ replay.p_true_fatigue) / n
                fam_logged = logged.with_reward(logged.reward * mask)
                family_check[fam] = (fam_free, fam_fatigue, estimate(fam_logged, pi * mask)["snips"])
        results.append(
            PolicyResult(
                policy.name,
                true,
                estimate(logged, pi, q),
                estimate(value_logged, pi, qv),
                family_check=family_check,
                seconds=time.perf_counter() - t0,
            )
        )
    base = inclusions[baseline]
    for r in results:
        r.vs_baseline = paired_difference(value_logged, inclusions[r.name], base, qv)
    return PolicyReport(
        results, n, len(np.unique(logged.cluster)), replay.cutoff, replay.end, baseline=baseline
    )


def _naive(t: datetime) -> datetime:
    from recsys.data.times import to_utc_naive

    return pd.Timestamp(to_utc_naive(t)).to_pydatetime()


def _ci(e: Estimate, fmt: str = "{:.4f}") -> str:
    return f"{fmt.format(e.value)} [{fmt.format(e.low)}, {fmt.format(e.high)}]"


def policy_table(report: PolicyReport) -> pd.DataFrame:
    """One row per policy: true values, ratios to the baseline and the oracles, estimates with CIs."""
    by = {r.name: r for r in report.results}
    base = by[report.baseline]
    oracle = by.get(ORACLE_POLICY)
    ev_oracle = by.get(EV_ORACLE_POLICY)
    rows = []
    for r in report.results:
        row: dict[str, object] = {"policy": r.name}
        if r.true:
            row["purchases/req"] = r.true["purchases"]
            row["EV/req (CNY)"] = r.true["ev"]
            row["purchases/req fatigue"] = r.true["purchases_fatigue"]
            row["EV/req fatigue"] = r.true["ev_fatigue"]
            row["redemption purchases/req"] = r.true.get("purchases_redemption", float("nan"))
            row["purchases x base"] = _ratio(r.true["purchases"], base.true["purchases"])
            row["EV x base"] = _ratio(r.true["ev"], base.true["ev"])
            row["purchases / oracle"] = (
                _ratio(r.true["purchases"], oracle.true["purchases"]) if oracle else None
            )
            row["EV / EV oracle"] = _ratio(r.true["ev"], ev_oracle.true["ev"]) if ev_oracle else None
        else:
            row["purchases x base"] = _ratio(r.purchases["snips"].value, base.purchases["snips"].value)
            row["EV x base"] = _ratio(r.value["snips"].value, base.value["snips"].value)
        for est in ESTIMATORS:
            if est in r.purchases:
                row[f"{est.upper()} purchases"] = _ci(r.purchases[est])
        for est in ESTIMATORS:
            if est in r.value:
                row[f"{est.upper()} EV"] = _ci(r.value[est])
        if "snips" in r.vs_baseline:
            row["SNIPS EV - base"] = _ci(r.vs_baseline["snips"])
        for fam, (free, tired, fam_est) in r.family_check.items():
            row[f"SNIPS {fam} covers truth (free/fatigue)"] = (
                f"{'yes' if fam_est.covers(free) else 'no'}/{'yes' if fam_est.covers(tired) else 'no'}"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def policy_markdown(report: PolicyReport) -> str:
    from recsys.evaluation.report import to_markdown

    head = (
        f"Policy table: {report.n_requests:,} requests of {report.n_members:,} members in "
        f"[{report.cutoff}, {report.end}); values per request, 95 % CIs clustered by member; "
        f"baseline `{report.baseline}`.\n\n"
    )
    return head + to_markdown(report.table())


def family_coverage(report: PolicyReport) -> pd.DataFrame:
    """Per policy and checked family: the fatigue-free true purchases, the SNIPS estimate and its CI."""
    rows = []
    for r in report.results:
        for fam, (free, tired, est) in r.family_check.items():
            rows.append(
                {"policy": r.name, "family": fam, "true": free, "true_fatigue": tired, "snips": est.value,
                 "low": est.low, "high": est.high, "covers": est.covers(free),
                 "covers_fatigue": est.covers(tired)}
            )  # fmt: skip
    return pd.DataFrame(rows)


def margins_by_offer(replay: Replay) -> Mapping[str, float]:
    """offer_id → the margin the replay values it at."""
    return dict(zip(replay.batch.offer_id, replay.margin, strict=True))
