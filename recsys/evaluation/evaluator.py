"""Evaluate any recommender on a :class:`~recsys.evaluation.split.TimeSplit`.

A recommender is anything with ``recommend(member_ids, k) -> DataFrame[member_id, offer_id, score, rank]``:
a ``ModelBundle`` (trained with ``before=split.before``), the
:class:`~recsys.evaluation.oracle.OracleRecommender`, or a test double. Members are asked for in batches so
a million-member evaluation runs in bounded memory.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recsys.evaluation.metrics import RANK, EvaluationError, metric_name, metrics_at
from recsys.evaluation.slices import slice_metrics
from recsys.evaluation.split import TimeSplit
from recsys.schema import Col

RecommendFn = Callable[[np.ndarray, int], pd.DataFrame]
DEFAULT_KS: tuple[int, ...] = (5, 10)
PRIMARY_K = 10
PRIMARY_METRIC = metric_name("ndcg", PRIMARY_K)


@dataclass
class ModelEvaluation:
    """A model's metrics on the held-out period: flat ``metrics`` (loggable) and the per-slice table."""

    name: str
    metrics: dict[str, float]
    slices: pd.DataFrame = field(repr=False)
    eval_seconds: float = 0.0
    train_seconds: float | None = None

    @property
    def primary(self) -> float:
        return self.metrics[PRIMARY_METRIC]


def _slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", text).strip("_")


def collect_recommendations(
    recommend: RecommendFn,
    member_ids: np.ndarray,
    k: int,
    batch_size: int = 20_000,
    progress: bool = False,
    desc: str = "recommend",
) -> pd.DataFrame:
    """Call ``recommend`` batch by batch and keep member_id, offer_id, rank of the top ``k``."""
    frames: list[pd.DataFrame] = []
    batches = range(0, len(member_ids), batch_size)
    for start in tqdm(batches, desc=desc, disable=not progress, unit="batch", leave=False):
        recs = recommend(member_ids[start : start + batch_size], k)
        missing = {Col.MEMBER_ID, Col.OFFER_ID, RANK} - set(recs.columns)
        if missing:
            raise EvaluationError(f"{desc}: recommend() returned no column(s) {sorted(missing)}")
        frames.append(recs.loc[recs[RANK] <= k, [Col.MEMBER_ID, Col.OFFER_ID, RANK]])
    if not frames:
        return pd.DataFrame(columns=[Col.MEMBER_ID, Col.OFFER_ID, RANK])
    return pd.concat(frames, ignore_index=True)


def without_seen(recommend: RecommendFn, seen: pd.DataFrame) -> RecommendFn:
    """``recommend`` with each member's already-seen offers (member_id, offer_id pairs) taken out of the list:
    it asks for ``k`` plus the most any member of the batch has seen, drops those and renumbers the ranks."""
    per_member = seen.groupby(Col.MEMBER_ID, sort=False)[Col.OFFER_ID].size()
    key = [Col.MEMBER_ID, Col.OFFER_ID]

    def filtered(member_ids: np.ndarray, k: int) -> pd.DataFrame:
        extra = int(per_member.reindex(pd.Index(member_ids)).fillna(0).max()) if len(member_ids) else 0
        recs = recommend(member_ids, k + extra)
        merged = recs.merge(seen[key], on=key, how="left", indicator="_seen")
        recs = recs.loc[(merged["_seen"] == "left_only").to_numpy()]
        recs = recs.sort_values([Col.MEMBER_ID, RANK], kind="stable")
        recs = recs.assign(**{RANK: recs.groupby(Col.MEMBER_ID, sort=False).cumcount() + 1})
        return recs.loc[recs[RANK] <= k]

    return filtered


def evaluate_recommender(
    name: str,
    recommend: RecommendFn,
    split: TimeSplit,
    offers: pd.DataFrame,
    ks: Iterable[int] = DEFAULT_KS,
    batch_size: int = 20_000,
    progress: bool = False,
) -> ModelEvaluation:
    """Metrics at every ``k`` in ``ks``, catalogue coverage, and slices at :data:`PRIMARY_K`.

    ``offers`` is the catalogue (offer_id, family). Slice metrics are added to the flat dict as
    ``<slice>_ndcg_at_10`` etc. (``cold_start_…``, ``warm_…``, ``family_upsell_…``).
    """
    ks = tuple(sorted(set(ks) | {PRIMARY_K}))
    if offers.empty:
        raise EvaluationError("the offer catalogue is empty")
    t0 = time.perf_counter()
    members = np.asarray(split.test_members, dtype=object)
    if split.seen is not None:
        recommend = without_seen(recommend, split.seen)
    recs = collect_recommendations(recommend, members, max(ks), batch_size, progress, desc=name)
    metrics = metrics_at(recs, split.relevant, ks, catalogue_size=len(offers))
    slices = slice_metrics(recs, split, offers, PRIMARY_K)
    for row in slices.itertuples(index=False):
        if row.slice == "all":
            continue
        for col in slices.columns:
            if col.endswith(f"_at_{PRIMARY_K}"):
                metrics[f"{_slug(str(row.slice))}_{col}"] = float(getattr(row, col))
        metrics[f"{_slug(str(row.slice))}_n_members"] = float(row.n_members)
    return ModelEvaluation(name=name, metrics=metrics, slices=slices, eval_seconds=time.perf_counter() - t0)
