"""Time-based train/test split of a dataset for honest offline evaluation.

Models are trained on everything that happened *before* the cut-off ``T``
(``ModelBundle.train(before=T)``) and judged on what members did in the test period ``[T, end)``, where
``end`` is the dataset's ``as_of`` (or its last event). No information from the test period reaches training.

Relevance: an offer is relevant to a member if the member *accepted* it in the test period — a ``purchase``
event in ``interactions``, an ancillary purchase or a redemption that names the offer. With
``relevance="click"`` clicks count as well (a weaker, noisier signal; purchases are the default because they
are what the business values). A member is *cold* if they have no event of any kind (flight, purchase,
redemption, interaction) before ``T``.
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
)
from recsys.data.times import as_of_end, to_utc_naive
from recsys.evaluation.metrics import EvaluationError
from recsys.schema import Col, EventType

Relevance = Literal["purchase", "click"]
DEFAULT_TEST_DAYS = 90

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
    def before(self) -> datetime:
        """The cut-off as a ``datetime`` for ``ModelBundle.train(before=...)``."""
        return self.cutoff.to_pydatetime()

    def summary(self) -> dict[str, object]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "end": self.end.isoformat(),
            "relevance": self.relevance,
            "test_members": len(self.test_members),
            "cold_test_members": len(self.cold_members),
            "relevant_pairs": len(self.relevant),
        }


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
) -> TimeSplit:
    """Split ``dataset_dir`` at ``cutoff`` (default: ``test_days`` before the period's end).

    The test period ends at ``end`` (default: the dataset's end). An earlier ``end`` makes a *validation*
    split that never looks at what happens after it: choose settings on ``time_split(d, end=T)`` where ``T``
    is the real split's cut-off, then report the real split.

    Raises :class:`EvaluationError` when the dataset has no events, the cut-off leaves no training history, or
    nobody accepted an offer in the test period.
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
    accepted = {EventType.PURCHASE.value} | ({EventType.CLICK.value} if relevance == "click" else set())
    for table, col in _HISTORY:
        if not has_table(root, table):
            continue
        cols = [Col.MEMBER_ID, col] + ([Col.OFFER_ID] if table != "flights" else [])
        if table == "interactions":
            cols.append(Col.EVENT_TYPE)
        for part in iter_table(root, table, columns=cols):
            if not len(part):
                continue
            times = to_utc_naive(part[col])
            before = (times < t).to_numpy()
            warm_parts.append(pd.unique(part.loc[before, Col.MEMBER_ID]))
            if table == "flights":
                continue
            test = ~before & (times < period_end).to_numpy() & part[Col.OFFER_ID].notna().to_numpy()
            exposed_parts.append(part.loc[test, [Col.MEMBER_ID, Col.OFFER_ID]].drop_duplicates())
            if table == "interactions":
                test &= part[Col.EVENT_TYPE].isin(accepted).to_numpy()
            relevant_parts.append(part.loc[test, [Col.MEMBER_ID, Col.OFFER_ID]])
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
    if relevant.empty:
        raise EvaluationError(
            f"no member accepted an offer between {t} and {period_end}: the test period has nothing to "
            "evaluate (use an earlier cut-off or a longer test period)"
        )
    offers = read_table(root, "offers", columns=[Col.OFFER_ID])
    relevant = relevant[relevant[Col.OFFER_ID].isin(offers[Col.OFFER_ID])].reset_index(drop=True)
    exposed = pd.concat(exposed_parts, ignore_index=True)
    exposed = exposed[exposed[Col.MEMBER_ID].isin(relevant[Col.MEMBER_ID].unique())]
    exposed = exposed.drop_duplicates(ignore_index=True)
    return TimeSplit(
        cutoff=t, end=period_end, relevant=relevant, warm_members=warm, relevance=relevance, exposed=exposed
    )
