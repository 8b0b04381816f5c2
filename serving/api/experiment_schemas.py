"""API schemas of the experiments admin API (separate from the domain :mod:`recsys.experiments.model`)."""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from recsys.experiments.model import (
    Baseline,
    Experiment,
    HoldoutServing,
    Metric,
    ModelRef,
    Objective,
    Status,
    Variant,
)
from recsys.schema import Placement


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ModelRefIn(_In):
    name: str | None = Field(default=None, description="Registered model name; default: the service's.")
    alias: str | None = Field(default=None, min_length=1, max_length=64, description="Registry alias.")
    version: str | None = Field(default=None, min_length=1, max_length=16, description="Registry version.")


class VariantIn(_In):
    key: str = Field(min_length=1, max_length=64)
    weight: float = Field(description="Share of the experiment's non-holdout members; weights sum to 1.")
    model: ModelRefIn
    objective: Objective = Objective.EXPECTED_VALUE
    cap_policy: str | None = Field(default=None, description="Cap policy file of this variant (YAML path).")
    baseline: Baseline | None = Field(
        default=None, description="`popularity`: this variant is the popularity baseline (model must be one)."
    )


_EXAMPLE: dict[str, Any] = {
    "key": "als-vs-popularity",
    "description": "Does the ALS champion sell more than segment popularity at booking?",
    "placements": ["booking", "home"],
    "namespace": "default",
    "namespace_range": [0.0, 1.0],
    "variants": [
        {"key": "control", "weight": 0.5, "model": {"version": "1"}, "baseline": "popularity"},
        {"key": "champion", "weight": 0.5, "model": {"alias": "champion"}, "objective": "expected_value"},
    ],
    "traffic": 1.0,
    "holdout": 0.05,
    "holdout_serving": "none",
    "start": None,
    "end": "2026-12-31T00:00:00Z",
    "primary_metric": "conversion",
    "guardrail_metrics": ["dismiss_rate", "empty_response_rate", "p99_latency_ms"],
}


class ExperimentIn(_In):
    """A new experiment (a draft until started). The first variant is the control."""

    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, json_schema_extra={"example": _EXAMPLE}
    )

    key: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=2000)
    placements: list[Placement] = Field(min_length=1)
    namespace: str = Field(default="default", min_length=1, max_length=64)
    namespace_range: tuple[float, float] = (0.0, 1.0)
    variants: list[VariantIn] = Field(min_length=2, max_length=10)
    traffic: float = Field(default=1.0, description="Share of members in the experiment (0, 1].")
    holdout: float = Field(default=0.0, description="Share of the experiment's members held out [0, 0.5].")
    holdout_serving: HoldoutServing = HoldoutServing.NONE
    holdout_model: ModelRefIn | None = None
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    primary_metric: Metric = Metric.CONVERSION
    guardrail_metrics: list[Metric] = Field(
        default_factory=lambda: [Metric.DISMISS_RATE, Metric.EMPTY_RESPONSE_RATE, Metric.P99_LATENCY]
    )
    seed: str | None = Field(default=None, max_length=128, description="Hash seed; default: the key.")


class ExperimentUpdate(_In):
    """Fields to change (only those given). A running experiment keeps its split: changing variants,
    weights, traffic, holdout, placements, namespace or seed is refused (409)."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "example": {"description": "Run until the end of the year.", "end": "2026-12-31T00:00:00Z"}
        },
    )

    description: str | None = Field(default=None, max_length=2000)
    placements: list[Placement] | None = None
    namespace: str | None = Field(default=None, min_length=1, max_length=64)
    namespace_range: tuple[float, float] | None = None
    variants: list[VariantIn] | None = None
    traffic: float | None = None
    holdout: float | None = None
    holdout_serving: HoldoutServing | None = None
    holdout_model: ModelRefIn | None = None
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    primary_metric: Metric | None = None
    guardrail_metrics: list[Metric] | None = None
    seed: str | None = None


class ModelRefOut(BaseModel):
    name: str
    alias: str | None
    version: str | None
    pinned_version: str | None = Field(
        default=None, description="The version the alias pointed to when the experiment started (served)."
    )


class VariantOut(BaseModel):
    key: str
    weight: float
    model: ModelRefOut
    objective: Objective
    cap_policy: str | None
    baseline: Baseline | None


_OUT_EXAMPLE: dict[str, Any] = {
    **_EXAMPLE,
    "namespace_range": [0.0, 1.0],
    "variants": [
        {
            "key": "control",
            "weight": 0.5,
            "model": {"name": "loyalty-offers", "alias": None, "version": "1"},
            "objective": "expected_value",
            "cap_policy": None,
            "baseline": "popularity",
        },
        {
            "key": "champion",
            "weight": 0.5,
            "model": {"name": "loyalty-offers", "alias": "champion", "version": None},
            "objective": "expected_value",
            "cap_policy": None,
            "baseline": None,
        },
    ],
    "holdout_model": None,
    "status": "running",
    "start": "2026-12-05T12:00:00+00:00",
    "seed": None,
    "created_at": "2026-12-05T11:58:00+00:00",
    "updated_at": "2026-12-05T12:00:00+00:00",
    "started_at": "2026-12-05T12:00:00+00:00",
    "stopped_at": None,
    "revision": 2,
}


class ExperimentOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": _OUT_EXAMPLE})

    key: str
    description: str
    placements: list[str]
    namespace: str
    namespace_range: tuple[float, float]
    variants: list[VariantOut]
    traffic: float
    holdout: float
    holdout_serving: HoldoutServing
    holdout_model: ModelRefOut | None
    status: Status
    start: str | None
    end: str | None
    primary_metric: Metric
    guardrail_metrics: list[Metric]
    seed: str | None
    created_at: str | None
    updated_at: str | None
    started_at: str | None
    stopped_at: str | None
    revision: int


class ExperimentList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"experiments": [_OUT_EXAMPLE]}})

    experiments: list[ExperimentOut]


# --------------------------------------------------------------------------------------------- mapping


def to_ref(obj: ModelRefIn, default_name: str) -> ModelRef:
    return ModelRef(name=obj.name or default_name, alias=obj.alias, version=obj.version)


def to_variant(v: VariantIn, default_name: str) -> Variant:
    return Variant(
        key=v.key,
        weight=v.weight,
        model=to_ref(v.model, default_name),
        objective=v.objective,
        cap_policy=v.cap_policy,
        baseline=v.baseline,
    )


def to_domain(body: ExperimentIn, default_name: str) -> Experiment:
    return Experiment(
        key=body.key,
        description=body.description,
        placements=tuple(p.value for p in body.placements),
        namespace=body.namespace,
        namespace_range=body.namespace_range,
        variants=tuple(to_variant(v, default_name) for v in body.variants),
        traffic=body.traffic,
        holdout=body.holdout,
        holdout_serving=body.holdout_serving,
        holdout_model=to_ref(body.holdout_model, default_name) if body.holdout_model else None,
        start=body.start,
        end=body.end,
        primary_metric=body.primary_metric,
        guardrail_metrics=tuple(body.guardrail_metrics),
        seed=body.seed,
    )


def to_changes(body: ExperimentUpdate, default_name: str) -> dict[str, Any]:
    """The domain fields the update sets (an explicit null clears optional ones such as ``end``)."""
    given = body.model_fields_set
    changes: dict[str, Any] = {}
    for name in given:
        value = getattr(body, name)
        if name == "placements" and value is not None:
            value = tuple(p.value for p in value)
        elif name == "variants" and value is not None:
            value = tuple(to_variant(v, default_name) for v in value)
        elif name == "holdout_model" and value is not None:
            value = to_ref(value, default_name)
        elif name == "guardrail_metrics" and value is not None:
            value = tuple(value)
        elif value is None and name not in ("end", "start", "holdout_model", "seed"):
            continue  # null for a required field: leave it as it is
        changes[name] = value
    return changes


# -- the report (``GET /v1/experiments/{key}/report``; built by recsys.experiments.report.build_report)
Interval = tuple[float, float]


class RatesOut(BaseModel):
    """Per-arm rates (null where the denominator is 0)."""

    ctr: float | None = Field(description="clicks / impressions")
    conversion: float | None = Field(description="purchasers / exposed members")
    revenue_per_member: float | None
    miles_per_member: float | None
    purchases_per_member: float | None
    dismiss_rate: float | None = Field(description="dismissals / impressions")
    empty_response_rate: float | None = Field(description="requests with no offer / requests")


class ArmOut(BaseModel):
    variant: str
    holdout: bool
    expected_share: float
    exposed_members: int
    requests: int
    empty_requests: int
    impressions: int
    clicks: int
    purchases: int
    purchasers: int
    dismissals: int
    revenue: float
    miles: float
    rates: RatesOut
    p99_latency_ms: float | None = Field(
        description="every request any worker served the arm since the start (HDR histograms, 1 % precision)"
    )


class _ComparisonFields(BaseModel):
    control: float | None
    treatment: float | None
    absolute_lift: float | None
    absolute_ci: Interval | None = Field(description="95 % confidence interval of the absolute lift")
    relative_lift: float | None
    relative_ci: Interval | None = Field(description="95 % delta-method interval of the relative lift")
    p_value: float | None
    test: str = Field(description="the test behind p_value (two-proportion z-test or Welch's t-test)")
    n_control: int
    n_treatment: int


class CupedOut(_ComparisonFields):
    theta: float | None
    variance_reduction: float | None
    covariate: str


class ComparisonOut(_ComparisonFields):
    cuped: CupedOut | None = Field(description="CUPED-adjusted figures, null where no covariate applies")


class VariantComparisonOut(ComparisonOut):
    variant: str


class MetricReportOut(BaseModel):
    metric: Metric
    kind: str = Field(description="proportion or mean")
    primary: bool
    comparisons: list[VariantComparisonOut]


class SrmOut(BaseModel):
    chi2: float | None
    p_value: float | None
    verdict: str = Field(description="ok, warn (p < 0.01), alert (p < 0.001) or insufficient")
    observed: dict[str, int]
    expected: dict[str, float]


class GuardrailOut(BaseModel):
    variant: str
    dismiss_rate: float | None
    empty_response_rate: float | None
    p99_latency_ms: float | None
    comparisons: dict[str, ComparisonOut]


class TimelinePointOut(BaseModel):
    date: str
    time: AwareDatetime
    bucket_s: int
    variant: str
    exposed_members: int
    purchasers: int
    conversion: float | None = Field(description="cumulative at the end of the bucket")


class MeasuredBesideOut(BaseModel):
    metric: str = Field(description="measured metric the estimate predicts: purchases per exposed member")
    relative_lift: float | None
    relative_ci: Interval | None
    inside_offline_ci: bool | None = Field(
        description="the measured relative lift lies inside the offline estimate's 95 % interval"
    )


class OfflineEstimateOut(BaseModel):
    variant: str
    estimator: str
    metric: str
    control: float
    treatment: float
    absolute_lift: float
    absolute_ci: Interval | None
    relative_lift: float | None
    relative_ci: Interval | None
    n_requests: int
    note: str
    measured: MeasuredBesideOut | None = None


class OfflineOut(BaseModel):
    available: bool
    reason: str | None = Field(default=None, description="why there is no estimate")
    estimates: list[OfflineEstimateOut] | None = None


class AttributionOut(BaseModel):
    requests: int
    events_attributed: int
    events_before_exposure: int
    events_unattributed: int
    events_wrong_member: int
    crossover_members: int


class WindowOut(BaseModel):
    start: AwareDatetime
    end: AwareDatetime


class ExperimentReportOut(BaseModel):
    """An experiment's report: per-arm figures, lifts against control with CIs and p-values, CUPED, SRM,
    guardrails, cumulative conversion over time and the offline estimate of the same policies."""

    experiment: ExperimentOut
    generated_at: AwareDatetime
    window: WindowOut
    control: str
    arms: list[ArmOut]
    metrics: list[MetricReportOut]
    srm: SrmOut
    guardrails: list[GuardrailOut]
    timeline: list[TimelinePointOut]
    offline_estimate: OfflineOut
    attribution: AttributionOut
    warnings: list[str]
