"""Time-based train/test split of a dataset for honest offline evaluation.

Models are trained on everything that happened *before* the cut-off ``T``
(``ModelBundle.train(before=T)``) and judged on what members did in the test period ``[T, end)``, where
``end`` is the dataset's ``as_of`` (or its last event). No information from the test period reaches training.

Relevance (a setting; :func:`default_relevance` picks it per kind of data): an offer is relevant to a member
if the member *accepted* it in the test period — a ``purchase`` event in ``interactions``, an ancillary
purchase or a redemption that names the offer (``purchase``, the airline world's default: what the business
values). ``click``: clicks count as well (a weaker, noisier signal). ``any``: every interaction row except
dismissals (generic data's default: its rows are whatever the data scientist recorded, imported as clicks).
With ``min_weight`` only interaction rows whose ``weight`` is at least that count (e.g. plays >= 3).

Already-seen items: with ``exclude_seen`` the (member, offer) pairs the member acted on before the cut-off
(any interaction but impressions and dismissals, ancillary purchases, redemptions) are taken out of the
relevant set and out of every model's ranked list (:attr:`TimeSplit.seen`; the default for generic data).
The airline world keeps them: members buy bags and lounge access again on every trip.

A member is *cold* if they have no event of any kind (flight, purchase, redemption, interaction) before
``T``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from recsys.data.layout import (
    DatasetError,
    has_table,
    iter_table,
    latest_event_time,
    read_manifest,
    read_table,
    table_columns,
)
from recsys.data.times import as_of_end, to_utc_naive
from recsys.evaluation.metrics import EvaluationError
from recsys.interactions import Holdout
from recsys.schema import GENERIC_FAMILY, Col, EventType

Relevance = Literal["purchase", "click", "any"]
RELEVANCES: tuple[str, ...] = ("purchase", "click", "any")
SplitMethod = Literal["time", "per-user", "leave-last-out", "random"]
DEFAULT_TEST_DAYS = 90
# Event types that never make an offer relevant or "seen": exposure and explicit rejection.
_NOT_ACTED = (EventType.IMPRESSION.value, EventType.DISMISS.value)

# (table, time column) of every kind of member history.
_HISTORY: tuple[tuple[str, str], ...] = (
    ("interactions", Col.EVENT_TIME),
    ("ancillaries", Col.PURCHASE_TIME),
    ("redemptions", Col.REDEEM_TIME),
    ("flights", Col.DEPARTURE_TIME),
)


@dataclass(frozen=True)
class TimeSplit:
    """A cut-off, the test period's relevant (member, offer) pairs and who had history before the cut-off."""

    cutoff: pd.Timestamp
    end: pd.Timestamp
    relevant: pd.DataFrame  # member_id, offer_id: accepted in [cutoff, end)
    warm_members: np.ndarray = field(repr=False)  # members with any event before the cut-off
    relevance: Relevance = "purchase"
    # member_id, offer_id: offers shown to (or acted on by) test members in the test period — the eligible set
    # the oracle ranks; never given to models.
    exposed: pd.DataFrame | None = field(default=None, repr=False)
    # member_id, offer_id acted on in training, filtered out of every ranked list; None: no filter.
    seen: pd.DataFrame | None = field(default=None, repr=False)
    method: SplitMethod = "time"
    min_weight: float | None = None
    # What training must not read beyond the cut-off (per-member and random splits); None for a time split.
    holdout: Holdout | None = field(default=None, repr=False)
    test_fraction: float | None = None

    @property
    def test_members(self) -> np.ndarray:
        """Members with at least one relevant offer in the test period (the evaluated members)."""
        return pd.unique(self.relevant[Col.MEMBER_ID])

    @property
    def cold_members(self) -> np.ndarray:
        """Test members without any history before the cut-off."""
        test = self.test_members
        return test[~pd.Index(test).isin(self.warm_members)]

    @property
    def before(self) -> datetime | None:
        """The cut-off as a ``datetime`` for ``ModelBundle.train(before=...)``; None for per-member and random
        splits (their :attr:`holdout` says what training must not read)."""
        return self.cutoff.to_pydatetime() if self.method == "time" else None

    @property
    def exclude_seen(self) -> bool:
        return self.seen is not None

    def summary(self) -> dict[str, object]:
        return {
            "method": self.method,
            "cutoff": self.cutoff.isoformat(),
            "end": self.end.isoformat(),
            "test_fraction": self.test_fraction,
            "relevance": self.relevance,
            "relevant_min_weight": self.min_weight,
            "exclude_seen": self.exclude_seen,
            "test_members": len(self.test_members),
            "cold_test_members": len(self.cold_members),
            "relevant_pairs": len(self.relevant),
        }


def is_generic(dataset_dir: Path | str) -> bool:
    """Whether a dataset holds generic items (every offer of family ``generic``, as the interactions importer
    writes them) rather than the airline's offers: it picks the defaults of relevance and the seen filter."""
    offers = read_table(dataset_dir, "offers", columns=[Col.FAMILY])
    return bool(len(offers)) and bool((offers[Col.FAMILY].astype(str) == GENERIC_FAMILY).all())


def default_relevance(dataset_dir: Path | str) -> Relevance:
    """``any`` for generic data, ``purchase`` for the airline world (see the module docstring)."""
    return "any" if is_generic(dataset_dir) else "purchase"


def default_exclude_seen(dataset_dir: Path | str) -> bool:
    """True for generic data, False for the airline world (offers are bought again on every trip)."""
    return is_generic(dataset_dir)


def accepted_events(relevance: Relevance) -> frozenset[str]:
    """Event types of ``interactions`` that make an offer relevant under ``relevance``."""
    if relevance not in RELEVANCES:
        raise EvaluationError(f"unknown relevance {relevance!r}; choose from {', '.join(RELEVANCES)}")
    if relevance == "purchase":
        return frozenset({EventType.PURCHASE.value})
    if relevance == "click":
        return frozenset({EventType.PURCHASE.value, EventType.CLICK.value})
    return frozenset(str(e) for e in EventType) - {EventType.DISMISS.value}


def no_relevant_error(relevance: Relevance, min_weight: float | None, where: str, kinds: pd.Series) -> str:
    """The message for a relevance setting that selects no test item: what the test rows were instead."""
    found = ", ".join(f"{n:,} {k}" for k, n in kinds.value_counts().items()) or "none"
    setting = f"relevance={relevance}" + (f", relevant_min_weight={min_weight:g}" if min_weight else "")
    return (
        f"the setting {setting} (--relevance, --relevant-min-weight) selects no test item {where}; the test "
        f"rows are: {found}. Choose another relevance (purchase, click, any) or a lower weight threshold"
    )


def dataset_end(dataset_dir: Path | str) -> pd.Timestamp:
    """The (exclusive) end of the dataset: its manifest's ``as_of`` (a date = the end of that day), else the
    time of its last event plus a second."""
    manifest = read_manifest(dataset_dir)
    as_of = manifest.get("as_of")
    if as_of:
        return as_of_end(str(as_of))
    last = latest_event_time(dataset_dir, _HISTORY[:3])
    if last is None:
        raise EvaluationError(
            f"{dataset_dir}: the dataset has no events (interactions, purchases, redemptions)"
        )
    return last + pd.Timedelta(seconds=1)


def time_split(
    dataset_dir: Path | str,
    cutoff: datetime | str | None = None,
    test_days: int = DEFAULT_TEST_DAYS,
    relevance: Relevance = "purchase",
    end: datetime | str | None = None,
    *,
    min_weight: float | None = None,
    exclude_seen: bool = False,
) -> TimeSplit:
    """Split ``dataset_dir`` at ``cutoff`` (default: ``test_days`` before the period's end).

    The test period ends at ``end`` (default: the dataset's end). An earlier ``end`` makes a *validation*
    split that never looks at what happens after it: choose settings on ``time_split(d, end=T)`` where ``T``
    is the real split's cut-off, then report the real split.

    Raises :class:`EvaluationError` when the dataset has no events, the cut-off leaves no training history, or
    nobody accepted an offer in the test period (naming the relevance setting when it selected nothing).
    """
    root = Path(dataset_dir)
    try:
        data_end = dataset_end(root)
    except DatasetError as exc:
        raise EvaluationError(str(exc)) from exc
    period_end: pd.Timestamp = data_end if end is None else min(pd.Timestamp(to_utc_naive(end)), data_end)
    if cutoff is None:
        if test_days < 1:
            raise EvaluationError(f"test_days must be >= 1, got {test_days}")
        t = period_end - timedelta(days=test_days)
    else:
        t = to_utc_naive(cutoff)
    if t >= period_end:
        raise EvaluationError(
            f"cut-off {t} is not before the test period's end {period_end}: the test period is empty"
        )

    relevant_parts: list[pd.DataFrame] = []
    exposed_parts: list[pd.DataFrame] = []
    warm_parts: list[np.ndarray] = []
    seen_parts: list[pd.DataFrame] = []
    test_kinds: list[pd.Series] = []
    accepted = accepted_events(relevance)
    weighted = min_weight is not None
    if weighted and Col.WEIGHT not in table_columns(root, "interactions"):
        raise EvaluationError(
            f"relevant_min_weight={min_weight:g} is set but {root / 'interactions'} has no "
            f"'{Col.WEIGHT}' column"
        )
    for table, col in _HISTORY:
        if not has_table(root, table):
            continue
        cols = [Col.MEMBER_ID, col] + ([Col.OFFER_ID] if table != "flights" else [])
        if table == "interactions":
            cols += [Col.EVENT_TYPE] + ([Col.WEIGHT] if weighted else [])
        for part in iter_table(root, table, columns=cols):
            if not len(part):
                continue
            times = to_utc_naive(part[col])
            before = (times < t).to_numpy()
            warm_parts.append(pd.unique(part.loc[before, Col.MEMBER_ID]))
            if table == "flights":
                continue
            named = part[Col.OFFER_ID].notna().to_numpy()
            test = ~before & (times < period_end).to_numpy() & named
            exposed_parts.append(part.loc[test, [Col.MEMBER_ID, Col.OFFER_ID]].drop_duplicates())
            acted = named.copy()
            if table == "interactions":
                test_kinds.append(part.loc[test, Col.EVENT_TYPE].astype(str))
                test &= part[Col.EVENT_TYPE].isin(accepted).to_numpy()
                if weighted:
                    test &= (pd.to_numeric(part[Col.WEIGHT], errors="coerce") >= min_weight).to_numpy()
                acted &= ~part[Col.EVENT_TYPE].isin(_NOT_ACTED).to_numpy()
            else:
                test_kinds.append(pd.Series(table, index=part.index[test]))
            relevant_parts.append(part.loc[test, [Col.MEMBER_ID, Col.OFFER_ID]])
            if exclude_seen:
                seen_parts.append(part.loc[before & acted, [Col.MEMBER_ID, Col.OFFER_ID]].drop_duplicates())
    if not warm_parts:
        raise EvaluationError(f"{root}: the dataset has no events")
    warm = pd.unique(np.concatenate(warm_parts)) if warm_parts else np.array([], dtype=object)
    if len(warm) == 0:
        raise EvaluationError(f"no event before the cut-off {t}: nothing to train on")
    relevant = (
        pd.concat(relevant_parts, ignore_index=True).drop_duplicates(ignore_index=True)
        if relevant_parts
        else pd.DataFrame(columns=[Col.MEMBER_ID, Col.OFFER_ID])
    )
    kinds = pd.concat(test_kinds, ignore_index=True) if test_kinds else pd.Series(dtype=object)
    if relevant.empty and len(kinds):
        where = f"between {t} and {period_end}"
        raise EvaluationError(no_relevant_error(relevance, min_weight, where, kinds))
    if relevant.empty:
        raise EvaluationError(
            f"no member accepted an offer between {t} and {period_end}: the test period has nothing to "
            "evaluate (use an earlier cut-off or a longer test period)"
        )
    offers = read_table(root, "offers", columns=[Col.OFFER_ID])
    relevant = relevant[relevant[Col.OFFER_ID].isin(offers[Col.OFFER_ID])].reset_index(drop=True)
    seen = None
    if exclude_seen:
        seen = _pairs(seen_parts)
        relevant = drop_seen(relevant, seen, f"between {t} and {period_end}")
    exposed = pd.concat(exposed_parts, ignore_index=True)
    exposed = exposed[exposed[Col.MEMBER_ID].isin(relevant[Col.MEMBER_ID].unique())]
    exposed = exposed.drop_duplicates(ignore_index=True)
    return TimeSplit(
        cutoff=t,
        end=period_end,
        relevant=relevant,
        warm_members=warm,
        relevance=relevance,
        exposed=exposed,
        seen=seen,
        min_weight=min_weight,
    )


def _pairs(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame({Col.MEMBER_ID: pd.Series(dtype=object), Col.OFFER_ID: pd.Series(dtype=object)})
    return pd.concat(parts, ignore_index=True).drop_duplicates(ignore_index=True)


def drop_seen(relevant: pd.DataFrame, seen: pd.DataFrame, where: str) -> pd.DataFrame:
    """``relevant`` without the pairs seen in training; refuses a result with no test member."""
    key = [Col.MEMBER_ID, Col.OFFER_ID]
    merged = relevant.merge(seen[key].drop_duplicates(), on=key, how="left", indicator=True)
    out = merged.loc[merged["_merge"] == "left_only", key].reset_index(drop=True)
    if out.empty:
        raise EvaluationError(
            f"every relevant test item {where} was already seen in training, and seen items are filtered "
            "(exclude_seen): no test member is left. Turn the filter off (--keep-seen) or use another split"
        )
    return out
