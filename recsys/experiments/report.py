"""An experiment's report as plain JSON-able data: what ``GET /v1/experiments/{key}/report`` answers and the
marketer pages render.

Shape (every figure per arm; lifts of each non-control variant, and of the holdout, against the control)::

    experiment        the definition (``recsys.experiments.model.to_json``)
    generated_at      when the report was computed; window: {start, end}
    control           the control variant's key
    arms[]            {variant, holdout, expected_share, exposed_members, requests, empty_requests,
                       impressions, clicks, purchases, purchasers, dismissals, revenue, miles,
                       rates: {ctr, conversion, revenue_per_member, miles_per_member, purchases_per_member,
                               dismiss_rate, empty_response_rate}, p99_latency_ms}
    metrics[]         {metric, kind: proportion|mean, primary, unit, comparisons[]}; each comparison:
                      {variant, control, treatment, absolute_lift, absolute_ci, relative_lift, relative_ci,
                       p_value, test, n_control, n_treatment, cuped: {... same ..., theta,
                       variance_reduction, covariate} | null}
    srm               {chi2, p_value, verdict: ok|warn|alert|insufficient, observed, expected}
    guardrails[]      {variant, dismiss_rate, empty_response_rate, p99_latency_ms, comparisons: {metric:
                       comparison}}
    timeline[]        {date, time, bucket_s, variant, exposed_members, purchasers, conversion} (cumulative
                      at the end of each bucket: a minute to a UTC day, at most 60 buckets over the window)
    offline_estimate  {available, reason | estimates[]}; each estimate: {variant, estimator, metric, control,
                      treatment, absolute_lift, absolute_ci, relative_lift, relative_ci, n_requests, note,
                      measured: {metric, relative_lift, relative_ci, inside_offline_ci}}
    attribution       {requests, events_attributed, events_before_exposure, events_unattributed,
                       events_wrong_member, crossover_members}
    warnings[]        plain sentences

Rates: conversion = purchasers / exposed members; CTR = clicks / impressions; dismiss rate = dismissals /
impressions; empty-response rate = requests with no offer / requests. Means are per exposed member.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np

from recsys.experiments.attribution import Attribution, MemberOutcome
from recsys.experiments.model import HOLDOUT, Experiment, Metric, Variant, to_json
from recsys.experiments.stats import Comparison, compare_means, compare_proportions, cuped, srm


@dataclass(frozen=True)
class History:
    """A member's pre-experiment behaviour: the CUPED covariates."""

    purchases: float = 0.0
    value: float = 0.0  # cash
    miles: float = 0.0


@dataclass(frozen=True)
class OfflineEstimate:
    """The policy evaluation's estimate of the same two policies (off-policy, from logged propensities)."""

    estimator: str
    metric: str
    control: float
    treatment: float
    absolute_lift: float
    absolute_ci: tuple[float, float] | None
    relative_lift: float | None = None
    relative_ci: tuple[float, float] | None = None
    n_requests: int = 0
    note: str = ""


class OfflineEstimator(Protocol):
    """Estimates a variant's lift over control offline (``recsys.evaluation``). None: cannot estimate it."""

    def estimate(
        self, experiment: Experiment, control: Variant, treatment: Variant
    ) -> OfflineEstimate | None: ...


PROPORTIONS = (Metric.CONVERSION, Metric.CTR)
MEANS = (Metric.REVENUE, Metric.MILES, Metric.PURCHASES)
# Which pre-experiment covariate adjusts which per-member metric.
COVARIATE = {
    Metric.CONVERSION: "purchases",
    Metric.PURCHASES: "purchases",
    Metric.REVENUE: "value",
    Metric.MILES: "miles",
}


def _per_member(m: MemberOutcome, metric: Metric) -> float:
    if metric is Metric.CONVERSION:
        return 1.0 if m.purchases > 0 else 0.0
    if metric is Metric.REVENUE:
        return m.revenue
    if metric is Metric.MILES:
        return m.miles
    return float(m.purchases)


def _arm_summary(
    arm: str, members: Sequence[MemberOutcome], share: float, latency_p99: float | None
) -> dict[str, Any]:
    n = len(members)
    req = sum(m.requests for m in members)
    empty = sum(m.empty_requests for m in members)
    imp = sum(m.impressions for m in members)
    clicks = sum(m.clicks for m in members)
    purchases = sum(m.purchases for m in members)
    purchasers = sum(1 for m in members if m.purchases > 0)
    dismissals = sum(m.dismissals for m in members)
    revenue = float(sum(m.revenue for m in members))
    miles = float(sum(m.miles for m in members))

    def ratio(a: float, b: float) -> float | None:
        return a / b if b else None

    return {
        "variant": arm,
        "holdout": arm == HOLDOUT,
        "expected_share": share,
        "exposed_members": n,
        "requests": req,
        "empty_requests": empty,
        "impressions": imp,
        "clicks": clicks,
        "purchases": purchases,
        "purchasers": purchasers,
        "dismissals": dismissals,
        "revenue": revenue,
        "miles": miles,
        "rates": {
            Metric.CTR.value: ratio(clicks, imp),
            Metric.CONVERSION.value: ratio(purchasers, n),
            Metric.REVENUE.value: ratio(revenue, n),
            Metric.MILES.value: ratio(miles, n),
            Metric.PURCHASES.value: ratio(purchases, n),
            Metric.DISMISS_RATE.value: ratio(dismissals, imp),
            Metric.EMPTY_RESPONSE_RATE.value: ratio(empty, req),
        },
        Metric.P99_LATENCY.value: latency_p99,
    }


def _comparison(
    metric: Metric,
    ctrl: Sequence[MemberOutcome],
    treat: Sequence[MemberOutcome],
    history: Mapping[str, History],
) -> dict[str, Any]:
    comp: Comparison
    cup: dict[str, Any] | None = None
    if metric is Metric.CTR:
        comp = compare_proportions(
            sum(m.clicks for m in ctrl),
            sum(m.impressions for m in ctrl),
            sum(m.clicks for m in treat),
            sum(m.impressions for m in treat),
        )
    elif metric is Metric.DISMISS_RATE:
        comp = compare_proportions(
            sum(m.dismissals for m in ctrl),
            sum(m.impressions for m in ctrl),
            sum(m.dismissals for m in treat),
            sum(m.impressions for m in treat),
        )
    elif metric is Metric.EMPTY_RESPONSE_RATE:
        comp = compare_proportions(
            sum(m.empty_requests for m in ctrl),
            sum(m.requests for m in ctrl),
            sum(m.empty_requests for m in treat),
            sum(m.requests for m in treat),
        )
    else:
        y_c = np.array([_per_member(m, metric) for m in ctrl])
        y_t = np.array([_per_member(m, metric) for m in treat])
        if metric is Metric.CONVERSION:
            comp = compare_proportions(int(y_c.sum()), len(y_c), int(y_t.sum()), len(y_t))
        else:
            comp = compare_means(y_c, y_t)
        cov = COVARIATE.get(metric)
        if cov is not None and len(y_c) >= 2 and len(y_t) >= 2:
            x_c = np.array([getattr(history.get(m.member_id, History()), cov) for m in ctrl])
            x_t = np.array([getattr(history.get(m.member_id, History()), cov) for m in treat])
            adjusted = cuped(y_c, x_c, y_t, x_t)
            cup = {**adjusted.to_json(), "covariate": f"pre-experiment {cov}"}
    return {**comp.to_json(), "cuped": cup}


# Bucket sizes of the timeline: the smallest that keeps a window within TIMELINE_POINTS buckets, so an
# experiment of a few hours (a live simulation) gets a curve and not a single daily point.
TIMELINE_BUCKETS = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=6),
    timedelta(days=1),
)
TIMELINE_POINTS = 60


def _timeline(
    arms: Sequence[str], by_arm: Mapping[str, Sequence[MemberOutcome]], start: datetime, end: datetime
) -> list[dict[str, Any]]:
    span = end - start
    size = next((b for b in TIMELINE_BUCKETS if span / b <= TIMELINE_POINTS), TIMELINE_BUCKETS[-1])
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    first = epoch + (start.astimezone(UTC) - epoch) // size * size  # aligned to the bucket size
    buckets: list[datetime] = []
    b = first
    while b <= end and len(buckets) < 400:
        buckets.append(b)
        b += size
    out: list[dict[str, Any]] = []
    for arm in arms:
        members = by_arm.get(arm, [])
        exp_t = np.sort(np.array([m.first_exposure.timestamp() for m in members]))
        buy_t = np.sort(np.array([m.first_purchase.timestamp() for m in members if m.first_purchase]))
        for b in buckets:
            cut = (b + size).timestamp()
            n = int(np.searchsorted(exp_t, cut, side="left"))
            k = int(np.searchsorted(buy_t, cut, side="left"))
            out.append(
                {
                    "date": b.date().isoformat(),
                    "time": b.isoformat(),
                    "bucket_s": int(size.total_seconds()),
                    "variant": arm,
                    "exposed_members": n,
                    "purchasers": k,
                    "conversion": k / n if n else None,
                }
            )
    return out


def build_report(
    exp: Experiment,
    attribution: Attribution,
    *,
    history: Mapping[str, History] | None = None,
    latency_p99: Mapping[str, float | None] | None = None,
    offline: OfflineEstimator | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The report of ``exp`` from its attributed members (see the module docstring for the shape)."""
    now = now or datetime.now(UTC)
    history = history or {}
    latency_p99 = latency_p99 or {}
    arms = exp.arms()
    shares = exp.expected_shares()
    by_arm = attribution.by_variant()
    control = exp.control.key
    ctrl = by_arm.get(control, [])
    warnings: list[str] = []

    arm_rows = [_arm_summary(a, by_arm.get(a, []), shares[a], latency_p99.get(a)) for a in arms]
    metric_list = [exp.primary_metric, *[m for m in (*PROPORTIONS, *MEANS) if m is not exp.primary_metric]]
    metrics = []
    purchases: dict[str, dict[str, Any]] = {}  # variant -> its purchases-per-member comparison
    for metric in metric_list:
        comparisons: list[dict[str, Any]] = []
        for arm in arms[1:]:
            comparisons.append({"variant": arm, **_comparison(metric, ctrl, by_arm.get(arm, []), history)})
        if metric is Metric.PURCHASES:
            purchases = {c["variant"]: c for c in comparisons}
        metrics.append(
            {
                "metric": metric.value,
                "kind": "proportion" if metric in PROPORTIONS else "mean",
                "primary": metric is exp.primary_metric,
                "comparisons": comparisons,
            }
        )

    observed = {a: len(by_arm.get(a, [])) for a in arms}
    srm_result = srm(observed, shares).to_json()
    if srm_result["verdict"] == "alert":
        warnings.append(
            f"sample ratio mismatch (p = {srm_result['p_value']:.2g} < 0.001): the split is broken; "
            "do not trust the lifts"
        )
    elif srm_result["verdict"] == "warn":
        warnings.append(f"possible sample ratio mismatch (p = {srm_result['p_value']:.2g} < 0.01)")

    guardrails = []
    for row in arm_rows:
        arm = row["variant"]
        comps = {}
        if arm != control:
            for g in (Metric.DISMISS_RATE, Metric.EMPTY_RESPONSE_RATE):
                comps[g.value] = _comparison(g, ctrl, by_arm.get(arm, []), history)
        guardrails.append(
            {
                "variant": arm,
                Metric.DISMISS_RATE.value: row["rates"][Metric.DISMISS_RATE.value],
                Metric.EMPTY_RESPONSE_RATE.value: row["rates"][Metric.EMPTY_RESPONSE_RATE.value],
                Metric.P99_LATENCY.value: row[Metric.P99_LATENCY.value],
                "comparisons": comps,
            }
        )

    if attribution.crossovers:
        warnings.append(
            f"{attribution.crossovers} members were logged under more than one variant (kept in their first)"
        )
    if not attribution.members:
        warnings.append("no exposed members yet")

    start = exp.start or exp.started_at or now
    end = min(exp.end, now) if exp.end is not None else now
    offline_json: dict[str, Any]
    if offline is None:
        offline_json = {"available": False, "reason": "no offline policy evaluation is configured"}
    else:
        estimates = []
        for v in exp.variants[1:]:
            est = offline.estimate(exp, exp.control, v)
            if est is not None:
                measured = _measured_beside(est, purchases[v.key])
                estimates.append({"variant": v.key, **_offline_json(est), "measured": measured})
        offline_json = (
            {"available": True, "estimates": estimates}
            if estimates
            else {"available": False, "reason": "the policy evaluation could not estimate these policies"}
        )
    return {
        "experiment": to_json(exp),
        "generated_at": now.isoformat(),
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "control": control,
        "arms": arm_rows,
        "metrics": metrics,
        "srm": srm_result,
        "guardrails": guardrails,
        "timeline": _timeline(arms, by_arm, start, end) if attribution.members else [],
        "offline_estimate": offline_json,
        "attribution": {
            "requests": attribution.requests,
            "events_attributed": attribution.events_attributed,
            "events_before_exposure": attribution.events_before_exposure,
            "events_unattributed": attribution.events_unattributed,
            "events_wrong_member": attribution.events_wrong_member,
            "crossover_members": attribution.crossovers,
        },
        "warnings": warnings,
    }


def _measured_beside(est: OfflineEstimate, measured: Mapping[str, Any]) -> dict[str, Any]:
    """The measured lift the offline estimate predicts: purchases per exposed member against the replay's
    purchases per request. Different units, so they meet in the relative lift; ``inside_offline_ci`` says
    whether the measured relative lift falls in the estimate's 95 % interval (None: either is missing)."""
    rel, ci = measured.get("relative_lift"), est.relative_ci
    return {
        "metric": Metric.PURCHASES.value,
        "relative_lift": rel,
        "relative_ci": measured.get("relative_ci"),
        "inside_offline_ci": None if rel is None or ci is None else bool(ci[0] <= rel <= ci[1]),
    }


def _offline_json(est: OfflineEstimate) -> dict[str, Any]:
    return {
        "estimator": est.estimator,
        "metric": est.metric,
        "control": est.control,
        "treatment": est.treatment,
        "absolute_lift": est.absolute_lift,
        "absolute_ci": list(est.absolute_ci) if est.absolute_ci else None,
        "relative_lift": est.relative_lift,
        "relative_ci": list(est.relative_ci) if est.relative_ci else None,
        "n_requests": est.n_requests,
        "note": est.note,
    }
