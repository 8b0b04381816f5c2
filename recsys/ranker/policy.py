"""The ranker as a policy of the policy evaluation (:class:`recsys.evaluation.policy.PairScorer`): each logged
request's candidates scored by the ranker's P(purchase) in that request's context, ranked by the objective
the service would use (expected value p × margin, acceptance p, or the blend p × margin^β).

Features come from the same code as training (:func:`recsys.ranker.training.pair_features`): member profiles
as of the ranker's cut-off (what the service would have published) but the miles balance, the batch's balance
as of each request (:data:`recsys.features.miles.BALANCE_AT_REQUEST`, as the replayed pipeline's eligibility
sees it; the profile's without a ledger), exposures from the interactions strictly before each request's
time, CF scores from the ranker's own base model.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.data.layout import read_table
from recsys.features.miles import balances_column
from recsys.pipeline.catalogue import Catalogue
from recsys.pipeline.types import ACCEPTANCE, EXPECTED_VALUE, RANKING_OBJECTIVES
from recsys.pipeline.value import offer_values
from recsys.ranker.features import booking_inputs, to_seconds, with_travel
from recsys.ranker.training import pair_features, read_events
from recsys.schema import Col


class RankerScorer:
    """Scores a :class:`~recsys.evaluation.policy.RequestBatch`'s candidate pairs (see the module docstring);
    wrap it in :class:`~recsys.evaluation.policy.ScoredPolicy` for the top-``k`` slate."""

    def __init__(
        self,
        bundle: Any,
        dataset_dir: Path | str,
        *,
        objective: str = EXPECTED_VALUE,
        blend_exponent: float = 0.5,
        miles_liability_cost_cny: float = 0.005,
        name: str | None = None,
        seed: int = 42,
    ) -> None:
        if bundle.context_ranker is None:
            raise ValueError("the bundle has no context ranker (train it with recsys train --model ranker)")
        if objective not in RANKING_OBJECTIVES:
            raise ValueError(f"objective must be one of {list(RANKING_OBJECTIVES)}, got {objective!r}")
        self.bundle = bundle
        self.root = Path(dataset_dir)
        self.objective = objective
        self.exponent = (
            1.0 if objective == EXPECTED_VALUE else 0.0 if objective == ACCEPTANCE else blend_exponent
        )
        self._name = name or f"ranker_{objective}"
        self.seed = seed
        before = bundle.info.get("before")
        self._before = pd.Timestamp(before).to_pydatetime() if before else None
        self.offers = bundle.offers
        values = offer_values(Catalogue(self.offers), miles_liability_cost_cny)
        self._value = dict(zip(self.offers[Col.OFFER_ID].astype(str), values.tolist(), strict=True))
        self._profiles: pd.DataFrame | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def trained_before(self) -> datetime | None:
        return self._before

    def _member_profiles(self) -> pd.DataFrame:
        if self._profiles is None:
            from recsys.features.profiles import build_member_profiles

            as_of = self._before - timedelta(microseconds=1) if self._before is not None else None
            profiles = build_member_profiles(self.root, as_of, seed=self.seed)
            self._profiles = with_travel(profiles, self.root, as_of)
        return self._profiles

    def probabilities(self, batch: Any) -> np.ndarray:
        """The ranker's P(purchase) of every candidate pair, in its request's context."""
        ranker = self.bundle.context_ranker
        if batch.n_pairs == 0:
            return np.zeros(0)
        times = pd.to_datetime(batch.pair_column(Col.REQUEST_TIME))
        end = pd.Timestamp(times.max()) + pd.Timedelta(seconds=1)
        dep = batch.pair_column(Col.DEPARTURE_TIME)
        has_dep = pd.notna(dep)
        dep_s = np.full(batch.n_pairs, np.nan)
        if has_dep.any():
            dep_s[has_dep] = to_seconds(pd.Series(dep[has_dep]))

        def obj(column: str) -> np.ndarray:
            values = batch.pair_column(column)
            return np.asarray([v if isinstance(v, str) and v else None for v in values], dtype=object)

        members = np.asarray(batch.pair_column(Col.MEMBER_ID), dtype=object).astype(str)
        balances = balances_column(batch.requests)
        x = pair_features(
            ranker.space,
            read_table(self.root, "offers") if self.offers is None else self.offers,
            read_events(self.root, end),
            self._member_profiles(),
            self.bundle,
            members,
            np.asarray(batch.offer_id, dtype=object).astype(str),
            to_seconds(pd.Series(times)),
            obj(Col.PLACEMENT),
            obj(Col.ORIGIN),
            obj(Col.DESTINATION),
            dep_s,
            obj(Col.CABIN),
            booking=booking_inputs(batch.requests, batch.request_row),
            miles_balance=None if balances is None else balances[batch.request_row],
        )
        return ranker.predict(x)

    def score(self, batch: Any) -> np.ndarray:
        """The objective's key per pair: p^(1-β) × (p × margin)^β (β = 1 expected value, 0 acceptance)."""
        p = self.probabilities(batch)
        if self.exponent == 0.0:
            return p
        margin = np.fromiter(
            (self._value.get(str(o), 0.0) for o in batch.offer_id), np.float64, batch.n_pairs
        )
        return p ** (1.0 - self.exponent) * (p * margin) ** self.exponent
