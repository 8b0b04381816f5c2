"""The comparison table of all models (plus the oracle) that a data scientist reads and MLflow stores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from recsys.evaluation.evaluator import PRIMARY_METRIC, ModelEvaluation
from recsys.evaluation.metrics import EvaluationError

ORACLE = "oracle"
ORACLE_UNCONSTRAINED = "oracle_all_offers"
ORACLE_ON_POPULARITY = "oracle_on_popularity"
BASELINE = "popularity"
# The popularity baseline without groups (the table's ``popularity`` row is per segment/tier group).
BASELINE_GLOBAL = "popularity_global"
# The popularity baseline over the learned models' member groups: how much of a learned model's lead is its
# grouping rather than what it learned per member.
BASELINE_MODEL_GROUPS = "popularity_model_groups"
# Rows that are references, never candidates for registration.
REFERENCES = frozenset(
    {ORACLE, ORACLE_UNCONSTRAINED, ORACLE_ON_POPULARITY, BASELINE_GLOBAL, BASELINE_MODEL_GROUPS}
)

# From the policy replay (recsys.evaluation.policy_eval): shown first, when some row has them.
_POLICY_HEAD = ("ev_per_request", "purchases_per_request")
_HEAD = (
    "ndcg_at_10",
    "precision_at_10",
    "recall_at_10",
    "map_at_10",
    "ndcg_at_5",
    "precision_at_5",
    "recall_at_5",
    "map_at_5",
    "coverage_at_10",
    "cold_start_ndcg_at_10",
    "warm_ndcg_at_10",
)


def comparison_table(
    evaluations: Sequence[ModelEvaluation],
    oracle: ModelEvaluation | None = None,
    primary: str = PRIMARY_METRIC,
    baseline: str = BASELINE,
    references: Sequence[ModelEvaluation] = (),
) -> pd.DataFrame:
    """One row per model (oracle last): main metrics, per-family NDCG, ``frac_of_oracle``, ``vs_baseline``.

    ``references`` are extra reference rows (e.g. the oracle over all offers) after the oracle.
    ``frac_of_oracle`` = model's primary metric / the oracle's; ``vs_baseline`` = model's / the baseline's
    (popularity). Both are NaN when the reference is missing or zero.
    """
    rows = list(evaluations) + ([oracle] if oracle is not None else []) + list(references)
    if not rows:
        raise EvaluationError("no evaluated model to compare")
    family_cols = sorted(
        {m for e in rows for m in e.metrics if m.startswith("family_") and m.endswith(primary)}
    )
    policy_cols = [c for c in _POLICY_HEAD if any(c in e.metrics for e in rows)]
    records = []
    for e in rows:
        rec: dict[str, object] = {"model": e.name}
        for col in (*policy_cols, *_HEAD, *family_cols):
            rec[col] = e.metrics.get(col, np.nan)
        rec["n_members"] = int(e.metrics.get("n_members", 0))
        rec["train_s"] = e.train_seconds if e.train_seconds is not None else np.nan
        rec["eval_s"] = e.eval_seconds
        records.append(rec)
    table = pd.DataFrame.from_records(records)
    oracle_value = oracle.metrics.get(primary) if oracle is not None else None
    base = next((e.metrics.get(primary) for e in evaluations if e.name == baseline), None)
    table["frac_of_oracle"] = table[primary] / oracle_value if oracle_value else np.nan
    table["vs_baseline"] = table[primary] / base if base else np.nan
    for ref in references:
        value = ref.metrics.get(primary)
        table[f"frac_of_{ref.name}"] = table[primary] / value if value else np.nan
    return table


def best_model(table: pd.DataFrame, primary: str = PRIMARY_METRIC) -> str:
    """The name of the model (never the oracle) with the highest primary metric."""
    models = table[~table["model"].isin(REFERENCES)]
    if models.empty:
        raise EvaluationError("no model in the comparison table")
    return str(models.sort_values(primary, ascending=False, kind="stable").iloc[0]["model"])


def to_markdown(table: pd.DataFrame, floatfmt: str = "{:.4f}") -> str:
    """A GitHub-flavoured markdown table (no extra dependency)."""

    def fmt(v: object) -> str:
        if isinstance(v, float | np.floating):
            return "" if np.isnan(v) else floatfmt.format(v)
        return str(v)

    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
