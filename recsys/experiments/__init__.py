"""A/B experiments: definitions and their store, sticky GrowthBook-compatible assignment, attribution of
events to the variant that served them, and the statistics of the report."""

from recsys.experiments.assignment import assign_member, route
from recsys.experiments.model import (
    HOLDOUT,
    Assignment,
    Baseline,
    Experiment,
    ExperimentError,
    HoldoutServing,
    Metric,
    ModelRef,
    Objective,
    Status,
    Variant,
    validate,
)
from recsys.experiments.store import ExperimentStore, ModelCatalog

__all__ = [
    "HOLDOUT",
    "Assignment",
    "Baseline",
    "Experiment",
    "ExperimentError",
    "ExperimentStore",
    "HoldoutServing",
    "Metric",
    "ModelCatalog",
    "ModelRef",
    "Objective",
    "Status",
    "Variant",
    "assign_member",
    "route",
    "validate",
]
