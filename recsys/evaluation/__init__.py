"""Offline evaluation: time-based split, ranking metrics, slices, oracle bound, comparison table."""

from recsys.evaluation.evaluator import (
    DEFAULT_KS,
    PRIMARY_K,
    PRIMARY_METRIC,
    ModelEvaluation,
    collect_recommendations,
    evaluate_recommender,
)
from recsys.evaluation.metrics import EvaluationError, metric_name, metrics_at, ranking_metrics
from recsys.evaluation.oracle import OracleRecommender, PreferenceOracle, has_oracle
from recsys.evaluation.report import (
    BASELINE,
    BASELINE_GLOBAL,
    BASELINE_MODEL_GROUPS,
    ORACLE,
    ORACLE_ON_POPULARITY,
    ORACLE_UNCONSTRAINED,
    best_model,
    comparison_table,
    to_markdown,
)
from recsys.evaluation.slices import slice_metrics
from recsys.evaluation.split import (
    DEFAULT_TEST_DAYS,
    RELEVANCES,
    TimeSplit,
    default_exclude_seen,
    default_relevance,
    is_generic,
    time_split,
)
from recsys.evaluation.splits import DEFAULT_TEST_FRACTION, SPLIT_METHODS, default_split, make_split

__all__ = [
    "BASELINE",
    "BASELINE_GLOBAL",
    "BASELINE_MODEL_GROUPS",
    "DEFAULT_KS",
    "DEFAULT_TEST_DAYS",
    "DEFAULT_TEST_FRACTION",
    "ORACLE",
    "ORACLE_ON_POPULARITY",
    "ORACLE_UNCONSTRAINED",
    "PRIMARY_K",
    "PRIMARY_METRIC",
    "RELEVANCES",
    "SPLIT_METHODS",
    "EvaluationError",
    "ModelEvaluation",
    "OracleRecommender",
    "PreferenceOracle",
    "TimeSplit",
    "best_model",
    "collect_recommendations",
    "comparison_table",
    "default_exclude_seen",
    "default_relevance",
    "default_split",
    "evaluate_recommender",
    "has_oracle",
    "is_generic",
    "make_split",
    "metric_name",
    "metrics_at",
    "ranking_metrics",
    "slice_metrics",
    "time_split",
    "to_markdown",
]
