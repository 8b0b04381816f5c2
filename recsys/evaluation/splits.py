"""The splits a data scientist chooses from (``recsys evaluate --split``), beside the global time cut-off.

* ``time``            every member's history before one cut-off ``T`` trains, ``[T, end)`` tests
                      (:func:`~recsys.evaluation.split.time_split`; the default).
* ``per-user``        the last ``test_fraction`` of each member's interactions, by time, tests (at least one
                      row; ties at the member's cut-off time all test); the rest trains.
* ``leave-last-out``  each member's last interaction (all rows at that time) tests.
* ``random``          a seeded ``test_fraction`` of each member's (member, item) pairs tests — for data
                      without timestamps, where no time split is possible.

"Interactions" here are the rows a member acted on: interaction events other than impressions and
dismissals, ancillary purchases and redemptions naming an offer. A member needs two of them (at two different
times for the time-based splits) to be split: one to learn from and one to test; others only train. In the
per-member splits every history table (flights too) is cut at the member's own cut-off time, so nothing after
it reaches training (:class:`~recsys.interactions.Holdout`).

Relevance and the already-seen filter are the same settings as for the time split.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.layout import DatasetError, has_table, iter_table, latest_event_time, table_columns
from recsys.data.times import to_utc_naive
from recsys.evaluation.metrics import EvaluationError
from recsys.evaluation.split import (
    _NOT_ACTED,
    DEFAULT_TEST_DAYS,
    Relevance,
    SplitMethod,
    TimeSplit,
    accepted_events,
    dataset_end,
    default_exclude_seen,
    default_relevance,
    drop_seen,
    no_relevant_error,
    time_split,
)
from recsys.interactions import Holdout
from recsys.schema import Col

SPLIT_METHODS: tuple[str, ...] = ("time", "per-user", "leave-last-out", "random")
DEFAULT_TEST_FRACTION = 0.2
_KIND = "_kind"
_TIME = "_time"


def make_split(
    dataset_dir: Path | str,
    method: SplitMethod = "time",
    *,
    cutoff: datetime | str | None = None,
    test_days: int = DEFAULT_TEST_DAYS,
    end: datetime | str | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    relevance: Relevance | None = None,
    min_weight: float | None = None,
    exclude_seen: bool | None = None,
    seed: int = 42,
) -> TimeSplit:
    """The split ``method`` of a dataset. ``relevance`` and ``exclude_seen`` default by kind of data
    (``default_relevance``, ``default_exclude_seen`` in :mod:`recsys.evaluation.split`).
    Bad settings (an unknown method, a fraction outside (0, 1), a split that leaves no test member, a
    relevance that selects no test item) raise :class:`EvaluationError` naming the setting."""
    root = Path(dataset_dir)
    if method not in SPLIT_METHODS:
        raise EvaluationError(f"unknown split {method!r} (--split); choose from {', '.join(SPLIT_METHODS)}")
    rel = relevance if relevance is not None else default_relevance(root)
    seen = exclude_seen if exclude_seen is not None else default_exclude_seen(root)
    if min_weight is not None and (not np.isfinite(min_weight) or min_weight < 0):
        raise EvaluationError(f"relevant_min_weight (--relevant-min-weight) must be >= 0, got {min_weight}")
    if method == "time":
        _refuse_undated(root, method)
        return time_split(root, cutoff, test_days, rel, end, min_weight=min_weight, exclude_seen=seen)
    if not 0 < test_fraction < 1:
        raise EvaluationError(f"test_fraction (--test-fraction) must be in (0, 1), got {test_fraction}")
    rows = _acted_rows(root, min_weight is not None)
    if rows.empty:
        raise EvaluationError(f"{root}: the dataset has no interactions to split")
    if method == "random":
        return _random_split(root, rows, test_fraction, rel, min_weight, seen, seed)
    _refuse_undated(root, method, rows)
    return _member_time_split(root, rows, method, test_fraction, rel, min_weight, seen)


def undated_interactions(dataset_dir: Path | str) -> int:
    """How many interaction rows have no time (an interactions import of a file without timestamps)."""
    root = Path(dataset_dir)
    undated = 0
    if has_table(root, "interactions"):
        for part in iter_table(root, "interactions", [Col.EVENT_TIME]):
            undated += int(part[Col.EVENT_TIME].isna().sum())
    return undated


def default_split(dataset_dir: Path | str) -> SplitMethod:
    """``time``, or ``random`` for data without timestamps."""
    return "random" if undated_interactions(dataset_dir) else "time"


def _refuse_undated(root: Path, method: str, rows: pd.DataFrame | None = None) -> None:
    undated = int(rows[_TIME].isna().sum()) if rows is not None else undated_interactions(root)
    if undated:
        raise EvaluationError(
            f"{root}: {undated:,} interaction(s) have no timestamp, so the {method!r} split (--split) cannot "
            "order them in time; use --split random"
        )


def _acted_rows(root: Path, weighted: bool) -> pd.DataFrame:
    """member_id, offer_id, _time, _kind (event type, or the table's name), weight of every row naming an
    offer in interactions, ancillaries and redemptions."""
    if weighted and Col.WEIGHT not in table_columns(root, "interactions"):
        raise EvaluationError(
            f"relevant_min_weight is set but {root / 'interactions'} has no '{Col.WEIGHT}' column"
        )
    frames = []
    for table, col in (
        ("interactions", Col.EVENT_TIME),
        ("ancillaries", Col.PURCHASE_TIME),
        ("redemptions", Col.REDEEM_TIME),
    ):
        if not has_table(root, table):
            continue
        cols = [Col.MEMBER_ID, Col.OFFER_ID, col]
        if table == "interactions":
            cols += [Col.EVENT_TYPE] + ([Col.WEIGHT] if weighted else [])
        for part in iter_table(root, table, cols):
            part = part[part[Col.OFFER_ID].notna()]
            kind = part[Col.EVENT_TYPE].astype(str) if table == "interactions" else table
            frame = pd.DataFrame(
                {
                    Col.MEMBER_ID: part[Col.MEMBER_ID].astype(str),
                    Col.OFFER_ID: part[Col.OFFER_ID].astype(str),
                    _TIME: to_utc_naive(part[col]),
                    _KIND: kind,
                    Col.WEIGHT: pd.to_numeric(part[Col.WEIGHT], errors="coerce") if weighted else np.nan,
                }
            )
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[Col.MEMBER_ID, Col.OFFER_ID, _TIME, _KIND, Col.WEIGHT])
    return pd.concat(frames, ignore_index=True)


def _relevant(rows: pd.DataFrame, relevance: Relevance, min_weight: float | None, where: str) -> pd.DataFrame:
    ok = rows[_KIND].isin(accepted_events(relevance) | {"ancillaries", "redemptions"})
    if min_weight is not None:
        ok &= rows[Col.WEIGHT] >= min_weight
    out = rows.loc[ok, [Col.MEMBER_ID, Col.OFFER_ID]].drop_duplicates(ignore_index=True)
    if out.empty:
        raise EvaluationError(no_relevant_error(relevance, min_weight, where, rows[_KIND]))
    return out


def _end(root: Path) -> pd.Timestamp:
    try:
        return dataset_end(root)
    except (EvaluationError, DatasetError):
        return pd.Timestamp("NaT")


def _member_time_split(
    root: Path,
    rows: pd.DataFrame,
    method: str,
    test_fraction: float,
    relevance: Relevance,
    min_weight: float | None,
    exclude_seen: bool,
) -> TimeSplit:
    acted = rows[~rows[_KIND].isin(_NOT_ACTED)].sort_values([Col.MEMBER_ID, _TIME], kind="stable")
    n = acted.groupby(Col.MEMBER_ID, sort=False)[_TIME].transform("size").to_numpy()
    pos = acted.groupby(Col.MEMBER_ID, sort=False).cumcount().to_numpy()
    if method == "leave-last-out":
        n_test = np.ones_like(n)
    else:
        n_test = np.maximum(1, np.rint(test_fraction * n)).astype(np.int64)
    n_test = np.minimum(n_test, np.maximum(n - 1, 1))  # one interaction at least stays in training
    first_test = acted.loc[(pos == n - n_test) & (n >= 2), [Col.MEMBER_ID, _TIME]]
    first_time = acted.groupby(Col.MEMBER_ID, sort=False)[_TIME].min()
    cut = first_test.set_index(Col.MEMBER_ID)[_TIME]
    cut = cut[cut > first_time.reindex(cut.index)]  # something must stay in training
    if cut.empty:
        raise EvaluationError(
            f"the {method!r} split (--split) leaves no test user: of {acted[Col.MEMBER_ID].nunique():,} "
            "member(s), none has two interactions at different times (one to learn from, one to test)"
        )
    member_cut = rows[Col.MEMBER_ID].map(cut)
    test = (member_cut.notna() & (rows[_TIME] >= member_cut)).to_numpy()
    relevant = _relevant(rows.loc[test], relevance, min_weight, f"after the members' {method} cut-offs")
    seen = None
    if exclude_seen:
        train = ~test & ~rows[_KIND].isin(_NOT_ACTED).to_numpy()
        seen = rows.loc[train, [Col.MEMBER_ID, Col.OFFER_ID]].drop_duplicates(ignore_index=True)
        relevant = drop_seen(relevant, seen, f"after the members' {method} cut-offs")
    warm = pd.unique(rows.loc[~test, Col.MEMBER_ID])
    end = _end(root)
    return TimeSplit(
        cutoff=pd.Timestamp(cut.min()),
        end=end,
        relevant=relevant,
        warm_members=np.asarray(warm, dtype=object),
        relevance=relevance,
        exposed=None,
        seen=seen,
        method="per-user" if method == "per-user" else "leave-last-out",
        min_weight=min_weight,
        holdout=Holdout(member_cutoffs=cut),
        test_fraction=None if method == "leave-last-out" else test_fraction,
    )


def _random_split(
    root: Path,
    rows: pd.DataFrame,
    test_fraction: float,
    relevance: Relevance,
    min_weight: float | None,
    exclude_seen: bool,
    seed: int,
) -> TimeSplit:
    key = [Col.MEMBER_ID, Col.OFFER_ID]
    pairs = rows.loc[~rows[_KIND].isin(_NOT_ACTED), key].drop_duplicates(ignore_index=True)
    rng = np.random.default_rng(seed)
    pairs = pairs.assign(_r=rng.random(len(pairs))).sort_values([Col.MEMBER_ID, "_r"], kind="stable")
    n = pairs.groupby(Col.MEMBER_ID, sort=False)["_r"].transform("size").to_numpy()
    pos = pairs.groupby(Col.MEMBER_ID, sort=False).cumcount().to_numpy()
    n_test = np.maximum(1, np.rint(test_fraction * n)).astype(np.int64)
    held = pairs.loc[(n >= 2) & (pos < np.minimum(n_test, n - 1)), key].reset_index(drop=True)
    if held.empty:
        raise EvaluationError(
            f"the 'random' split (--split) leaves no test user: of {pairs[Col.MEMBER_ID].nunique():,} "
            "member(s), none has two different items (one to learn from, one to test)"
        )
    merged = rows.merge(held.assign(_held=True), on=key, how="left")
    test = merged["_held"].notna().to_numpy(dtype=bool)
    relevant = _relevant(rows.loc[test], relevance, min_weight, "among the randomly held-out pairs")
    seen = None
    if exclude_seen:  # the held-out pairs are never in training: nothing to drop, the lists are filtered
        train = ~test & ~rows[_KIND].isin(_NOT_ACTED).to_numpy()
        seen = rows.loc[train, key].drop_duplicates(ignore_index=True)
    end = _end(root)
    latest = latest_event_time(root, (("interactions", Col.EVENT_TIME),))
    return TimeSplit(
        cutoff=end if latest is not None else pd.Timestamp("NaT"),
        end=end,
        relevant=relevant,
        warm_members=np.asarray(pd.unique(rows.loc[~test, Col.MEMBER_ID]), dtype=object),
        relevance=relevance,
        exposed=None,
        seen=seen,
        method="random",
        min_weight=min_weight,
        holdout=Holdout(pairs=held),
        test_fraction=test_fraction,
    )
