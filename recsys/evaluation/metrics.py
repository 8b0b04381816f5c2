"""Top-k ranking metrics over many members at once, computed column-wise with pandas.

Definitions (for one member with relevant set ``R`` and ranked list ``L``, positions 1..k):

* ``precision@k`` = |L[:k] ∩ R| / k
* ``recall@k``    = |L[:k] ∩ R| / |R|
* ``ndcg@k``      = DCG / IDCG with binary gains, DCG = Σ_{hits at position p} 1 / log2(p + 1) and
  IDCG = Σ_{p=1..min(|R|, k)} 1 / log2(p + 1)
* ``map@k``       = (Σ_{hits at position p} precision@p) / min(|R|, k)

Every metric is averaged over the *evaluated members* (those with at least one relevant offer); an evaluated
member without recommendations scores 0 — a model is never rewarded for staying silent.
``coverage@k`` is the share of the catalogue that appears in at least one evaluated member's top k.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from recsys.schema import Col

RANK = "rank"
METRICS: tuple[str, ...] = ("precision", "recall", "ndcg", "map")


class EvaluationError(ValueError):
    """Inputs to the offline evaluation are unusable (empty, malformed or inconsistent)."""


def metric_name(metric: str, k: int) -> str:
    """The flat name a metric is logged under, e.g. ``ndcg_at_10`` (MLflow metric names allow no ``@``)."""
    return f"{metric}_at_{k}"


def _validate(recommendations: pd.DataFrame, relevant: pd.DataFrame) -> None:
    for name, frame, cols in (
        ("recommendations", recommendations, (Col.MEMBER_ID, Col.OFFER_ID, RANK)),
        ("relevant", relevant, (Col.MEMBER_ID, Col.OFFER_ID)),
    ):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise EvaluationError(f"{name}: missing columns {missing}")
    if recommendations[RANK].isna().any() or (recommendations[RANK] < 1).any():
        raise EvaluationError("recommendations: 'rank' must be a positive integer (1 = best)")
    if recommendations.duplicated([Col.MEMBER_ID, Col.OFFER_ID]).any():
        raise EvaluationError("recommendations: an offer appears twice in one member's list")
    if recommendations.duplicated([Col.MEMBER_ID, RANK]).any():
        raise EvaluationError("recommendations: two offers share one rank in one member's list")


def ranking_metrics(
    recommendations: pd.DataFrame,
    relevant: pd.DataFrame,
    k: int,
    catalogue_size: int | None = None,
) -> dict[str, float]:
    """Precision, recall, NDCG and MAP at ``k`` (and coverage when ``catalogue_size`` is given).

    ``recommendations`` has columns member_id, offer_id, rank (1 = best); ``relevant`` has member_id, offer_id
    pairs (duplicates are ignored). Members are evaluated iff they appear in ``relevant``.
    Returns a dict keyed by :func:`metric_name` plus ``n_members``.
    """
    if k < 1:
        raise EvaluationError(f"k must be >= 1, got {k}")
    _validate(recommendations, relevant)
    rel = relevant[[Col.MEMBER_ID, Col.OFFER_ID]].drop_duplicates()
    n_rel = rel.groupby(Col.MEMBER_ID, sort=False).size()
    n_members = len(n_rel)
    out: dict[str, float] = {"n_members": float(n_members)}
    if n_members == 0:
        raise EvaluationError("no member has a relevant offer in the test period: nothing to evaluate")

    recs = recommendations.loc[recommendations[RANK] <= k, [Col.MEMBER_ID, Col.OFFER_ID, RANK]]
    recs = recs[recs[Col.MEMBER_ID].isin(n_rel.index)]
    # Positions within the top k, 1..k, even if the given ranks have gaps.
    recs = recs.sort_values([Col.MEMBER_ID, RANK], kind="stable")
    pos = recs.groupby(Col.MEMBER_ID, sort=False).cumcount().to_numpy() + 1
    recs = recs.assign(_pos=pos)
    hits = recs.merge(rel, on=[Col.MEMBER_ID, Col.OFFER_ID], how="inner")
    hits = hits.sort_values([Col.MEMBER_ID, "_pos"], kind="stable")
    hit_pos = hits["_pos"].to_numpy(dtype=np.float64)
    hits_cum = hits.groupby(Col.MEMBER_ID, sort=False).cumcount().to_numpy() + 1
    hits = hits.assign(
        _gain=1.0 / np.log2(hit_pos + 1.0),
        _prec=hits_cum / hit_pos,
    )
    per_member = hits.groupby(Col.MEMBER_ID, sort=False).agg(
        n_hits=("_pos", "size"), dcg=("_gain", "sum"), sum_prec=("_prec", "sum")
    )
    per_member = per_member.reindex(n_rel.index, fill_value=0.0)
    n_hits = per_member["n_hits"].to_numpy(dtype=np.float64)
    n_relevant = n_rel.to_numpy(dtype=np.float64)
    ideal_len = np.minimum(n_relevant, k).astype(np.int64)
    discounts = np.cumsum(1.0 / np.log2(np.arange(1, k + 1) + 1.0))
    idcg = discounts[ideal_len - 1]

    out[metric_name("precision", k)] = float(np.mean(n_hits / k))
    out[metric_name("recall", k)] = float(np.mean(n_hits / n_relevant))
    out[metric_name("ndcg", k)] = float(np.mean(per_member["dcg"].to_numpy(dtype=np.float64) / idcg))
    out[metric_name("map", k)] = float(np.mean(per_member["sum_prec"].to_numpy(dtype=np.float64) / ideal_len))
    if catalogue_size is not None:
        if catalogue_size < 1:
            raise EvaluationError("catalogue_size must be >= 1")
        out[metric_name("coverage", k)] = float(recs[Col.OFFER_ID].nunique() / catalogue_size)
    return out


def metrics_at(
    recommendations: pd.DataFrame,
    relevant: pd.DataFrame,
    ks: Iterable[int],
    catalogue_size: int | None = None,
) -> dict[str, float]:
    """:func:`ranking_metrics` for several cut-offs merged into one dict."""
    out: dict[str, float] = {}
    for k in ks:
        out.update(ranking_metrics(recommendations, relevant, k, catalogue_size))
    return out
