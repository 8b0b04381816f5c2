"""Hand-made catalogues and a tiny fake scorer for the pipeline's pure-logic unit tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from recsys.schema import OFFERS, Col

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

_DEFAULTS: dict[str, Any] = {
    Col.TITLE: "",
    Col.PRICE_CASH: np.nan,
    Col.PRICE_MILES: 0,
    Col.MARGIN: 10.0,
    Col.ELIGIBLE_TIERS: [],
    Col.ELIGIBLE_CABINS: [],
    Col.ELIGIBLE_FARE_CLASSES: [],
    Col.ELIGIBLE_ORIGINS: [],
    Col.TARGET_CABIN: None,
    Col.DESTINATION: None,
    Col.REGION: None,
    Col.MEAL: None,
    Col.MIN_MILES: 0,
    Col.WINDOW_OPEN_HOURS: np.nan,
    Col.WINDOW_CLOSE_HOURS: np.nan,
    Col.REQUIRES_LOUNGE: False,
    Col.PLACEMENTS: [],
    Col.BLACKOUT_MONTHS: [],
    Col.VALID_FROM: NOW - timedelta(days=30),
    Col.VALID_TO: None,
    Col.EXEMPT: False,
}


def offer(offer_id: str, family: str, category: str, **kw: Any) -> dict[str, Any]:
    """One offers-table row with permissive defaults (no restriction) overridden by ``kw``."""
    row = {Col.OFFER_ID: offer_id, Col.FAMILY: family, Col.CATEGORY: category, **_DEFAULTS}
    row[Col.TITLE] = offer_id
    for k, v in kw.items():
        if k not in OFFERS.columns:
            raise KeyError(k)
        row[k] = v
    return row


def catalogue_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(OFFERS.columns))


class FakeBundle:
    """The ModelBundle surface the pipeline uses, with fixed per-offer probabilities.

    ``known`` members are "known to the model"; ``retrieval`` is what retrieve returns (default: every offer
    by probability). Records the member ids it was called with.
    """

    def __init__(
        self,
        offers: pd.DataFrame,
        probs: dict[str, float] | None = None,
        known: Sequence[str] = (),
        retrieval: Sequence[str] | None = None,
    ) -> None:
        self.offers = offers
        self.probs = probs or {}
        self.known = set(known)
        self.retrieval = retrieval
        self.calls: list[str] = []

    def _p(self, offer_ids: Sequence[str]) -> np.ndarray:
        return np.array([self.probs.get(o, 0.1) for o in offer_ids], dtype=float)

    def is_known(self, member_id: str) -> bool:
        return member_id in self.known

    def retrieve(self, member_id: str, k: int, member_features: Any = None) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(member_id)
        ids = list(self.retrieval) if self.retrieval is not None else list(self.offers[Col.OFFER_ID])
        p = self._p(ids)
        order = np.argsort(-p, kind="stable")[:k]
        return np.array(ids, dtype=object)[order], p[order]

    def score(self, member_id: str, offer_ids: Sequence[str], member_features: Any = None) -> np.ndarray:
        return self._p(offer_ids)

    def acceptance_probability(
        self, member_id: str, offer_ids: Sequence[str], member_features: Any = None
    ) -> np.ndarray:
        return self._p(offer_ids)

    def member_embedding(self, member_id: str) -> np.ndarray | None:
        return np.full(4, float(len(member_id)), dtype=np.float32) if member_id in self.known else None

    def for_member(self, member_id: str, member_features: Any = None) -> FakeScoring:
        return FakeScoring(self, member_id, member_features)


class FakeScoring:
    """The per-request scoring view of :class:`FakeBundle` (``ModelBundle.for_member``'s surface)."""

    def __init__(self, bundle: FakeBundle, member_id: str, member_features: Any) -> None:
        self.bundle = bundle
        self.member_id = member_id
        self.member_features = member_features
        self.known = bundle.is_known(member_id)

    def retrieve(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.bundle.retrieve(self.member_id, k, self.member_features)

    def score(self, offer_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        b = self.bundle
        return (
            b.score(self.member_id, offer_ids, self.member_features),
            b.acceptance_probability(self.member_id, offer_ids, self.member_features),
        )
