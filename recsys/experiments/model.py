"""Experiments as domain objects: what a marketer configures, and the checks every change must pass.

An experiment splits the members who reach one of its placements between variants. Each variant names the
model that ranks (a registry alias or version), the ranking objective, and optionally its own cap policy or
that it is the popularity baseline. The **first variant is the control**: lifts are measured against it.

``traffic`` is the share of members in the experiment at all (GrowthBook's coverage); ``holdout`` is the share
of those members that get no personalised offers (see :data:`HOLDOUT`); the rest are split by the variants'
weights, which must sum to 1. Assignment hashes the member id with ``seed`` (default: the key), so the same
key and ids give the same split as a GrowthBook SDK with variations ``[*variants, holdout]`` and weights
``[w × (1 - holdout) …, holdout]`` (no holdout: the variants' weights as they are).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from recsys.schema import Placement

KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_\-.]{0,63}$")
HOLDOUT = "holdout"  # the variant name requests of the holdout are logged under
WEIGHT_TOLERANCE = 1e-6


class Status(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    STOPPED = "stopped"


class Objective(StrEnum):
    """How a variant ranks eligible offers: by expected value (p(accept) × margin), by p(accept) alone, or by
    their blend p × margin^β (``PipelineConfig.objective``)."""

    EXPECTED_VALUE = "expected_value"
    ACCEPTANCE = "acceptance"
    BLEND = "blend"


class Baseline(StrEnum):
    POPULARITY = "popularity"


class HoldoutServing(StrEnum):
    """What the holdout gets: nothing (an empty offer list) or the popularity baseline (not personalised)."""

    NONE = "none"
    POPULARITY = "popularity"


class Metric(StrEnum):
    """Per-variant metrics the report computes (primary or guardrail)."""

    CONVERSION = "conversion"  # purchasers / exposed members
    CTR = "ctr"  # clicks / impressions
    REVENUE = "revenue_per_member"  # cash revenue of attributed purchases / exposed members
    MILES = "miles_per_member"  # miles spent on attributed purchases / exposed members
    PURCHASES = "purchases_per_member"
    DISMISS_RATE = "dismiss_rate"  # dismissals / impressions
    EMPTY_RESPONSE_RATE = "empty_response_rate"  # requests with no offer / requests
    P99_LATENCY = "p99_latency_ms"


PRIMARY_METRICS = frozenset({Metric.CONVERSION, Metric.CTR, Metric.REVENUE, Metric.MILES, Metric.PURCHASES})
GUARDRAIL_METRICS = frozenset({Metric.DISMISS_RATE, Metric.EMPTY_RESPONSE_RATE, Metric.P99_LATENCY})


class ExperimentError(ValueError):
    """A refused experiment change. ``field`` names the offending field; ``kind`` maps to an HTTP status:
    ``invalid`` 422, ``not_found`` 404, ``conflict`` 409."""

    def __init__(
        self, field_name: str, message: str, *, kind: str = "invalid", code: str = "invalid"
    ) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message
        self.kind = kind
        self.code = code


def _enum(cls: Any, value: Any, name: str) -> Any:
    try:
        return cls(value)
    except ValueError as exc:
        raise ExperimentError(name, f"unknown value {value!r}; one of {[m.value for m in cls]}") from exc


@dataclass(frozen=True)
class ModelRef:
    """A registered model version or alias (exactly one of them). ``pinned`` is the version an alias pointed
    to when the experiment started: a running experiment keeps serving it even if the alias moves."""

    name: str
    alias: str | None = None
    version: str | None = None
    pinned: str | None = None

    def __post_init__(self) -> None:
        if (self.alias is None) == (self.version is None):
            raise ExperimentError("model", "give exactly one of alias and version")

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias is not None else f"{self.name}/{self.version}"

    def served(self) -> ModelRef:
        """What to load: the pinned version when there is one, else the reference itself."""
        if self.alias is not None and self.pinned is not None:
            return ModelRef(self.name, version=self.pinned)
        return self


@dataclass(frozen=True)
class Variant:
    key: str
    weight: float
    model: ModelRef
    objective: Objective = Objective.EXPECTED_VALUE
    cap_policy: str | None = None  # path of a cap policy file; None = the service's policy
    baseline: Baseline | None = None  # popularity: the model must be a popularity-kind version

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "objective", _enum(Objective, self.objective, f"variants[{self.key}].objective")
        )
        if self.baseline is not None:
            object.__setattr__(
                self, "baseline", _enum(Baseline, self.baseline, f"variants[{self.key}].baseline")
            )


@dataclass(frozen=True, kw_only=True)
class Experiment:
    key: str
    description: str = ""
    placements: tuple[str, ...]
    namespace: str = "default"
    namespace_range: tuple[float, float] = (0.0, 1.0)
    variants: tuple[Variant, ...]
    traffic: float = 1.0
    holdout: float = 0.0
    holdout_serving: HoldoutServing = HoldoutServing.NONE
    holdout_model: ModelRef | None = None  # popularity-kind version served to the holdout (holdout_serving)
    status: Status = Status.DRAFT
    start: datetime | None = None
    end: datetime | None = None
    primary_metric: Metric = Metric.CONVERSION
    guardrail_metrics: tuple[Metric, ...] = (
        Metric.DISMISS_RATE,
        Metric.EMPTY_RESPONSE_RATE,
        Metric.P99_LATENCY,
    )
    seed: str | None = None  # GrowthBook's seed; None = the key
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    revision: int = 0  # bumped by every stored change (the service reloads when it moves)

    @property
    def hash_seed(self) -> str:
        return self.seed if self.seed is not None else self.key

    @property
    def control(self) -> Variant:
        return self.variants[0]

    def arms(self) -> list[str]:
        """Variant keys in assignment order, the holdout last when there is one."""
        keys = [v.key for v in self.variants]
        return [*keys, HOLDOUT] if self.holdout > 0 else keys

    def arm_weights(self) -> list[float]:
        """The GrowthBook weights of :meth:`arms` (they sum to 1)."""
        if self.holdout <= 0:
            return [v.weight for v in self.variants]
        keep = 1.0 - self.holdout
        return [*(v.weight * keep for v in self.variants), self.holdout]

    def expected_shares(self) -> dict[str, float]:
        """Each arm's expected share of the members in the experiment (the SRM check's null)."""
        return dict(zip(self.arms(), self.arm_weights(), strict=True))

    def variant(self, key: str) -> Variant | None:
        return next((v for v in self.variants if v.key == key), None)

    def model_refs(self) -> list[ModelRef]:
        refs = [v.model for v in self.variants]
        if self.holdout_model is not None:
            refs.append(self.holdout_model)
        return refs

    def with_status(self, status: Status, **changes: Any) -> Experiment:
        return replace(self, status=status, **changes)


def _finite(name: str, value: float, lo: float, hi: float, *, lo_open: bool = False) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ExperimentError(name, f"must be a number, got {value!r}")
    if value < lo or value > hi or (lo_open and value == lo):
        bracket = "(" if lo_open else "["
        raise ExperimentError(name, f"must be in {bracket}{lo:g}, {hi:g}], got {value:g}")


def validate(exp: Experiment) -> Experiment:
    """Raise :class:`ExperimentError` naming the field when the experiment cannot run as configured."""
    if not KEY_RE.match(exp.key):
        raise ExperimentError(
            "key", f"must be 1-64 lower-case letters, digits or _-. starting alphanumeric, got {exp.key!r}"
        )
    if not exp.placements:
        raise ExperimentError("placements", "name at least one placement")
    known = {p.value for p in Placement}
    for i, p in enumerate(exp.placements):
        if p not in known:
            raise ExperimentError(f"placements[{i}]", f"unknown placement {p!r}; one of {sorted(known)}")
    if len(set(exp.placements)) != len(exp.placements):
        raise ExperimentError("placements", "repeats a placement")
    if not exp.namespace or len(exp.namespace) > 64:
        raise ExperimentError("namespace", "must be 1-64 characters")
    lo, hi = exp.namespace_range
    _finite("namespace_range[0]", lo, 0.0, 1.0)
    _finite("namespace_range[1]", hi, 0.0, 1.0)
    if hi <= lo:
        raise ExperimentError("namespace_range", f"end {hi:g} must be above start {lo:g}")
    if len(exp.variants) < 2:
        raise ExperimentError("variants", "an experiment needs at least two variants (the first is control)")
    keys = [v.key for v in exp.variants]
    for i, v in enumerate(exp.variants):
        if not KEY_RE.match(v.key):
            raise ExperimentError(f"variants[{i}].key", f"invalid variant key {v.key!r}")
        if v.key == HOLDOUT:
            raise ExperimentError(f"variants[{i}].key", f"{HOLDOUT!r} is reserved for the holdout")
        _finite(f"variants[{i}].weight", v.weight, 0.0, 1.0, lo_open=True)
    if len(set(keys)) != len(keys):
        raise ExperimentError("variants", f"variant keys must be unique, got {keys}")
    total = math.fsum(v.weight for v in exp.variants)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise ExperimentError(
            "variants.weight",
            f"variant weights must sum to 1, got {total:g} ({[v.weight for v in exp.variants]})",
        )
    _finite("traffic", exp.traffic, 0.0, 1.0, lo_open=True)
    _finite("holdout", exp.holdout, 0.0, 0.5)
    if exp.holdout_serving is HoldoutServing.POPULARITY and exp.holdout_model is None:
        raise ExperimentError("holdout_model", "holdout_serving=popularity needs a popularity model to serve")
    if exp.holdout_serving is HoldoutServing.NONE and exp.holdout_model is not None:
        raise ExperimentError("holdout_model", "given, but holdout_serving is 'none'")
    if exp.start is not None and exp.start.tzinfo is None:
        raise ExperimentError("start", "must be timezone-aware")
    if exp.end is not None and exp.end.tzinfo is None:
        raise ExperimentError("end", "must be timezone-aware")
    if exp.start is not None and exp.end is not None and exp.end <= exp.start:
        raise ExperimentError("end", f"end {exp.end.isoformat()} is not after start {exp.start.isoformat()}")
    if exp.primary_metric not in PRIMARY_METRICS:
        raise ExperimentError(
            "primary_metric",
            f"{exp.primary_metric!r} is not a primary metric; one of {sorted(PRIMARY_METRICS)}",
        )
    for i, m in enumerate(exp.guardrail_metrics):
        if m not in GUARDRAIL_METRICS:
            raise ExperimentError(
                f"guardrail_metrics[{i}]", f"{m!r} is not a guardrail; one of {sorted(GUARDRAIL_METRICS)}"
            )
    return exp


def overlaps(a: Experiment, b: Experiment) -> str | None:
    """Why two experiments cannot run together (a member could be in both on one placement), or None.

    Experiments sharing a placement must share a namespace and hold disjoint ranges of it; then a member's
    namespace hash puts them in at most one.
    """
    shared = sorted(set(a.placements) & set(b.placements))
    if not shared:
        return None
    if a.namespace != b.namespace:
        return (
            f"shares placement {shared[0]!r} with running experiment {b.key!r} in namespace {b.namespace!r}; "
            f"experiments on one placement must share a namespace with disjoint ranges"
        )
    (a0, a1), (b0, b1) = a.namespace_range, b.namespace_range
    if a0 < b1 and b0 < a1:
        return (
            f"overlaps running experiment {b.key!r} on placement {shared[0]!r} in namespace {b.namespace!r} "
            f"(ranges [{a0:g}, {a1:g}) and [{b0:g}, {b1:g}))"
        )
    return None


# --------------------------------------------------------------------------------------------------------
# JSON round trip (the store keeps each experiment as one document)
# --------------------------------------------------------------------------------------------------------


def _ref_json(ref: ModelRef | None) -> dict[str, Any] | None:
    if ref is None:
        return None
    return {"name": ref.name, "alias": ref.alias, "version": ref.version, "pinned_version": ref.pinned}


def _ref(obj: Mapping[str, Any] | None) -> ModelRef | None:
    if obj is None:
        return None
    return ModelRef(
        name=obj["name"], alias=obj.get("alias"), version=obj.get("version"), pinned=obj.get("pinned_version")
    )


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def to_json(exp: Experiment) -> dict[str, Any]:
    return {
        "key": exp.key,
        "description": exp.description,
        "placements": list(exp.placements),
        "namespace": exp.namespace,
        "namespace_range": list(exp.namespace_range),
        "variants": [
            {
                "key": v.key,
                "weight": v.weight,
                "model": _ref_json(v.model),
                "objective": v.objective.value,
                "cap_policy": v.cap_policy,
                "baseline": v.baseline.value if v.baseline else None,
            }
            for v in exp.variants
        ],
        "traffic": exp.traffic,
        "holdout": exp.holdout,
        "holdout_serving": exp.holdout_serving.value,
        "holdout_model": _ref_json(exp.holdout_model),
        "status": exp.status.value,
        "start": exp.start.isoformat() if exp.start else None,
        "end": exp.end.isoformat() if exp.end else None,
        "primary_metric": exp.primary_metric.value,
        "guardrail_metrics": [m.value for m in exp.guardrail_metrics],
        "seed": exp.seed,
        "created_at": exp.created_at.isoformat() if exp.created_at else None,
        "updated_at": exp.updated_at.isoformat() if exp.updated_at else None,
        "started_at": exp.started_at.isoformat() if exp.started_at else None,
        "stopped_at": exp.stopped_at.isoformat() if exp.stopped_at else None,
        "revision": exp.revision,
    }


def from_json(obj: Mapping[str, Any]) -> Experiment:
    variants: Sequence[Mapping[str, Any]] = obj["variants"]
    return Experiment(
        key=obj["key"],
        description=obj.get("description", ""),
        placements=tuple(obj["placements"]),
        namespace=obj.get("namespace", "default"),
        namespace_range=(float(obj["namespace_range"][0]), float(obj["namespace_range"][1])),
        variants=tuple(
            Variant(
                key=v["key"],
                weight=float(v["weight"]),
                model=_ref(v["model"]),  # type: ignore[arg-type]
                objective=Objective(v.get("objective", Objective.EXPECTED_VALUE.value)),
                cap_policy=v.get("cap_policy"),
                baseline=Baseline(v["baseline"]) if v.get("baseline") else None,
            )
            for v in variants
        ),
        traffic=float(obj.get("traffic", 1.0)),
        holdout=float(obj.get("holdout", 0.0)),
        holdout_serving=HoldoutServing(obj.get("holdout_serving", HoldoutServing.NONE.value)),
        holdout_model=_ref(obj.get("holdout_model")),
        status=Status(obj.get("status", Status.DRAFT.value)),
        start=_dt(obj.get("start")),
        end=_dt(obj.get("end")),
        primary_metric=Metric(obj.get("primary_metric", Metric.CONVERSION.value)),
        guardrail_metrics=tuple(Metric(m) for m in obj.get("guardrail_metrics", ())),
        seed=obj.get("seed"),
        created_at=_dt(obj.get("created_at")),
        updated_at=_dt(obj.get("updated_at")),
        started_at=_dt(obj.get("started_at")),
        stopped_at=_dt(obj.get("stopped_at")),
        revision=int(obj.get("revision", 0)),
    )


@dataclass(frozen=True)
class Assignment:
    """A member's arm in one experiment (``variant`` is :data:`HOLDOUT` for the holdout)."""

    experiment: str
    variant: str
    holdout: bool = False
