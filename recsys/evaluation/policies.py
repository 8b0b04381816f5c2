"""The policies of the policy table, each a :class:`~recsys.evaluation.policy.SlatePolicy`.

- :class:`UniformRandom` — every candidate with probability ``k / n`` (exact, not sampled);
- :class:`LoggingPolicy` — the logging policy's own inclusion probabilities (its on-policy value);
- :class:`ConversionScorer` — purchases per impression of the offer at the placement before the cut-off;
- :class:`BundleScorer` — a trained model bundle: its raw score (popularity baselines), its calibrated
  acceptance (the ``acceptance`` objective) or calibrated acceptance × margin (the ``value`` objective, how
  the service ranks);
- :class:`PipelinePolicy` — the service's own :class:`~recsys.pipeline.pipeline.OfferPipeline` (eligibility,
  value, diversity; no caps), restricted to the request's candidate set;
- :class:`ArrayScorer` — scores known for the replayed pairs (the oracles: true acceptance, true EV).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recsys.evaluation.policy import PolicyError, RequestBatch, slot_of
from recsys.features.miles import balances_column
from recsys.schema import BOOKING_COLUMNS, Col

if TYPE_CHECKING:
    from recsys.stores.member_store import EmbeddedMemberStore

Objective = Literal["score", "acceptance", "value"]


class UniformRandom:
    """Shows ``k`` candidates drawn uniformly at random: each with probability ``min(k, n) / n``."""

    name = "uniform_random"
    trained_before: datetime | None = None

    def inclusion(self, batch: RequestBatch) -> np.ndarray:
        n = np.diff(batch.starts)
        per_request = np.minimum(batch.slots, n) / np.maximum(n, 1)
        return np.asarray(per_request[batch.request_row], dtype=np.float64)


class LoggingPolicy:
    """The policy that wrote the log, by its exact inclusion probabilities of every candidate."""

    trained_before: datetime | None = None

    def __init__(self, inclusion: np.ndarray, name: str = "legacy_logging") -> None:
        self._inclusion = np.asarray(inclusion, dtype=np.float64)
        self.name = name

    def inclusion(self, batch: RequestBatch) -> np.ndarray:
        if len(self._inclusion) != batch.n_pairs:
            raise PolicyError(f"{self.name}: known for {len(self._inclusion)} pairs, asked {batch.n_pairs}")
        return self._inclusion


class ArrayScorer:
    """Scores given for exactly the replayed pairs (oracles reading the hidden truth)."""

    trained_before: datetime | None = None

    def __init__(self, name: str, scores: np.ndarray) -> None:
        self.name = name
        self._scores = np.asarray(scores, dtype=np.float64)

    def score(self, batch: RequestBatch) -> np.ndarray:
        if len(self._scores) != batch.n_pairs:
            raise PolicyError(f"{self.name}: scores for {len(self._scores)} pairs, asked {batch.n_pairs}")
        return self._scores


class ConversionScorer:
    """Purchases per impression of each offer at the request's placement, counted before the cut-off
    (member-agnostic)."""

    name = "conversion"

    def __init__(self, rates: pd.DataFrame, trained_before: datetime) -> None:
        self.rates = rates
        self.trained_before: datetime | None = trained_before

    def score(self, batch: RequestBatch) -> np.ndarray:
        from recsys.evaluation.replay import _pair_rates

        return _pair_rates(self.rates, batch.offer_id, batch.pair_column(Col.PLACEMENT))


class ScoringBundle(Protocol):
    """What :class:`BundleScorer` needs of a :class:`recsys.models.bundle.ModelBundle`."""

    info: dict[str, Any]

    def score_pairs(
        self,
        member_ids: Sequence[str] | np.ndarray,
        offer_ids: Sequence[str] | np.ndarray,
        member_features: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]: ...


class PairScores:
    """A bundle's (score, calibrated acceptance) of a batch's pairs, computed once for the last batch asked:
    a model's value and acceptance rows rank the same scores (the costliest part of a row)."""

    def __init__(self, bundle: ScoringBundle, profiles: Mapping[str, Mapping[str, Any]]) -> None:
        self.bundle = bundle
        self.profiles = profiles
        self._last: tuple[RequestBatch, np.ndarray, np.ndarray] | None = None

    def __call__(self, batch: RequestBatch) -> tuple[np.ndarray, np.ndarray]:
        if self._last is None or self._last[0] is not batch:
            members = batch.pair_column(Col.MEMBER_ID)
            scores, probs = self.bundle.score_pairs(members, batch.offer_id, self.profiles)
            self._last = (batch, scores, probs)
        return self._last[1], self._last[2]


class BundleScorer:
    """A model bundle's per-pair scores, as the service computes them for one member and its candidates.

    ``objective``: ``score`` (the model score), ``acceptance`` (calibrated P(accept)) or ``value`` (calibrated
    P(accept) × margin). ``profiles`` (member_id → profile dict) feed the cold-start policy. Scorers of one
    bundle given the same ``shared`` :class:`PairScores` score a batch once between them.
    """

    def __init__(
        self,
        name: str,
        bundle: ScoringBundle,
        objective: Objective,
        margins: Mapping[str, float],
        profiles: Mapping[str, Mapping[str, Any]] | None = None,
        shared: PairScores | None = None,
    ) -> None:
        self.name = name
        self.bundle = bundle
        self.objective = objective
        self.margins = margins
        self.profiles = profiles or {}
        self.pair_scores = shared if shared is not None else PairScores(bundle, self.profiles)
        before = bundle.info.get("before")
        # a bundle refitted on all data saw everything: it has no cut-off
        self.trained_before: datetime | None = (
            datetime.fromisoformat(before) if before else datetime.max.replace(tzinfo=None)
        )

    def score(self, batch: RequestBatch) -> np.ndarray:
        scores, probs = self.pair_scores(batch)
        if self.objective == "score":
            return scores
        if self.objective == "acceptance":
            return probs
        margin = np.array([self.margins.get(o, 0.0) for o in batch.offer_id], dtype=np.float64)
        return np.asarray(probs * margin)


class RecommendPipeline(Protocol):
    """What :class:`PipelinePolicy` needs of :class:`recsys.pipeline.pipeline.OfferPipeline`."""

    def rank(self, request: Any) -> Sequence[str]: ...


class PipelinePolicy:
    """The service's pipeline as a policy: per request it ranks (eligibility, value, diversity, no caps);
    the first ``k`` ranked offers that are in the request's candidate set make the slate.

    With ``store`` (the pipeline's in-process member store) and ``balance_at_request``, each request's member
    record holds the member's miles balance as of the request (the batch's
    :data:`~recsys.features.miles.BALANCE_AT_REQUEST`, when the dataset has a ledger) instead of the published
    profile's."""

    def __init__(
        self,
        name: str,
        pipeline: RecommendPipeline,
        trained_before: datetime | None,
        *,
        store: EmbeddedMemberStore | None = None,
        balance_at_request: bool = False,
    ) -> None:
        self.name = name
        self.pipeline = pipeline
        self.trained_before = trained_before
        self.progress = False
        self.store = store
        self.balance_at_request = balance_at_request

    def inclusion(self, batch: RequestBatch) -> np.ndarray:
        from recsys.pipeline.types import RecommendRequest, TripContext

        req = batch.requests
        starts = batch.starts.tolist()
        scores = np.full(batch.n_pairs, -np.inf)
        # plain Python values, once: per-row pandas access costs as much as a pipeline stage
        cols = {c: req[c].tolist() for c in req.columns}
        times = [t.to_pydatetime() for t in pd.to_datetime(req[Col.REQUEST_TIME]).dt.tz_localize(UTC)]
        deps = _aware(req[Col.DEPARTURE_TIME])
        booking = {c: _ints(req[c]) if c in req else [None] * batch.n_requests for c in BOOKING_COLUMNS}
        offer_ids = batch.offer_id
        balances = balances_column(req) if self.store is not None and self.balance_at_request else None
        for i in tqdm(range(batch.n_requests), desc=self.name, disable=not self.progress, unit="req"):
            a, b = starts[i], starts[i + 1]
            if a == b:
                continue
            if balances is not None and self.store is not None:
                record = self.store.get(str(cols[Col.MEMBER_ID][i]))
                if record is not None:  # the replay's own store: the balance as of this request
                    record.profile[Col.MILES_BALANCE] = int(balances[i])
            trip = None
            if isinstance(cols[Col.ORIGIN][i], str):
                trip = TripContext(
                    origin=cols[Col.ORIGIN][i],
                    destination=cols[Col.DESTINATION][i],
                    departure_time=deps[i],
                    cabin=cols[Col.CABIN][i],
                    fare_class=cols[Col.FARE_CLASS][i],
                    flight_number=cols[Col.FLIGHT_NUMBER][i],
                    booking_lead_days=booking[Col.BOOKING_LEAD_DAYS][i],
                    party_size=booking[Col.PARTY_SIZE][i],
                    children=booking[Col.CHILDREN][i],
                    stay_nights=booking[Col.STAY_NIGHTS][i],
                )
            ranking = self.pipeline.rank(
                RecommendRequest(
                    member_id=str(cols[Col.MEMBER_ID][i]),
                    placement=str(cols[Col.PLACEMENT][i]),
                    trip=trip,
                    now=times[i],
                )
            )
            n = len(ranking)
            rank = {o: n - r for r, o in enumerate(ranking)}
            scores[a:b] = [rank.get(o, -np.inf) for o in offer_ids[a:b]]
        return (slot_of(batch, scores) >= 0).astype(np.float64)


def _ints(values: pd.Series) -> list[int | None]:
    """A nullable integer column as plain ints (None for a missing one)."""
    return [None if pd.isna(v) else int(v) for v in values]


def _aware(times: pd.Series) -> list[datetime | None]:
    """Naive UTC times as aware datetimes (None for a missing one)."""
    out = pd.to_datetime(times).dt.tz_localize(UTC)
    return [None if pd.isna(t) else t.to_pydatetime() for t in out]


def standard_policies(
    dataset_dir: str | Any,
    replay: Any,
    bundles: Mapping[str, ScoringBundle],
    *,
    global_popularity: ScoringBundle | None = None,
    pipeline_kinds: Sequence[str] = (),
    baseline: str = "popularity",
) -> list[Any]:
    """The policy table's policies over ``bundles`` (model kind → bundle trained before the cut-off).

    Rows: uniform random; the logging policy (generated worlds); segment popularity (``baseline``) and global
    popularity by their scores; per-offer conversion; each learned model ranked by calibrated acceptance ×
    margin (``<kind>``, as the service values offers) and by acceptance alone (``<kind>_acceptance``); for the
    kinds in ``pipeline_kinds`` and for contextual rankers (they score a request in its context) the service's
    whole pipeline by expected value (``<kind>_pipeline``) and by acceptance (``<kind>_pipeline_acceptance``)
    — a contextual ranker's member store holds the exposure history, so each request is scored with the
    member's exposures before it, as its ``<kind>`` rows are; the oracles.
    """
    from recsys.evaluation.policy import ScoredPolicy
    from recsys.evaluation.policy_eval import (
        EV_ORACLE_POLICY,
        NO_TASTE_ORACLE_POLICY,
        ORACLE_POLICY,
        margins_by_offer,
    )
    from recsys.features.profiles import build_member_profiles, profile_records

    cutoff = replay.cutoff.to_pydatetime()
    profiles_df = build_member_profiles(dataset_dir, as_of=cutoff)
    profiles = {str(r[Col.MEMBER_ID]): r for r in profile_records(profiles_df)}
    if any(getattr(b, "context_ranker", None) is not None for b in bundles.values()):
        from recsys.ranker.features import with_travel

        # a contextual ranker's member store holds the travel history too, as the service publishes it
        profiles_df = with_travel(profiles_df, dataset_dir, cutoff)
    margins = margins_by_offer(replay)
    policies: list[Any] = [UniformRandom()]
    if replay.logging_inclusion is not None:
        policies.append(LoggingPolicy(replay.logging_inclusion))
    if baseline in bundles:
        policies.append(ScoredPolicy(BundleScorer(baseline, bundles[baseline], "score", margins, profiles)))
    if global_popularity is not None:
        policies.append(
            ScoredPolicy(BundleScorer(f"{baseline}_global", global_popularity, "score", margins, profiles))
        )
    policies.append(ScoredPolicy(ConversionScorer(replay.rates, cutoff)))
    pipelines = list(pipeline_kinds)
    for kind, bundle in bundles.items():
        if kind == baseline:
            continue
        if getattr(bundle, "context_ranker", None) is not None:
            # a contextual ranker scores each request in its context: by its P(purchase) with the member's
            # exposures as of each request (the same features as its training), and through the pipeline
            from recsys.ranker.policy import RankerScorer

            policies.append(
                ScoredPolicy(RankerScorer(bundle, dataset_dir, objective="expected_value", name=kind))
            )
            policies.append(
                ScoredPolicy(
                    RankerScorer(bundle, dataset_dir, objective="acceptance", name=f"{kind}_acceptance")
                )
            )
            pipelines += [] if kind in pipelines else [kind]
            continue
        shared = PairScores(bundle, profiles)
        policies.append(ScoredPolicy(BundleScorer(kind, bundle, "value", margins, profiles, shared)))
        policies.append(
            ScoredPolicy(BundleScorer(f"{kind}_acceptance", bundle, "acceptance", margins, profiles, shared))
        )
    exposures = None
    for kind in pipelines:
        if getattr(bundles[kind], "context_ranker", None) is not None and exposures is None:
            exposures = replay_exposures(dataset_dir, replay)
        contextual = exposures if getattr(bundles[kind], "context_ranker", None) is not None else None
        for objective, suffix in (("expected_value", ""), ("acceptance", "_acceptance")):
            policies.append(
                pipeline_policy(
                    f"{kind}_pipeline{suffix}",
                    bundles[kind],
                    profiles_df,
                    objective=objective,
                    exposures=contextual,
                    balance_at_request=True,
                )
            )
    if replay.p_true is not None:
        policies.append(ScoredPolicy(ArrayScorer(ORACLE_POLICY, replay.p_true)))
        policies.append(ScoredPolicy(ArrayScorer(EV_ORACLE_POLICY, replay.p_true * replay.margin)))
    if replay.p_no_taste is not None:
        # the oracle of a world without destination taste, valued in this one: oracle minus this row is
        # what the taste term is worth (what CF features can at most recover)
        policies.append(ScoredPolicy(ArrayScorer(NO_TASTE_ORACLE_POLICY, replay.p_no_taste)))
    return policies


def pipeline_policy(
    name: str,
    bundle: Any,
    profiles: pd.DataFrame,
    *,
    objective: str = "expected_value",
    exposures: Mapping[str, Any] | None = None,
    balance_at_request: bool = False,
) -> PipelinePolicy:
    """The service's pipeline over ``bundle`` ranking by ``objective``, with an in-process member store of
    ``profiles`` and no caps; every catalogue offer is retrieved (the logged candidate set bounds the slate)
    and seat inventory, which the log does not hold, is not required. ``exposures`` (member → exposure
    history, :func:`replay_exposures`) join the profiles as the service publishes them, so a contextual
    ranker scores each request with the member's exposures before it; with ``balance_at_request`` each
    request sees the member's miles balance as of the request (the replayed batch's, when it has a ledger)."""
    from recsys.pipeline.pipeline import OfferPipeline
    from recsys.pipeline.types import PipelineConfig
    from recsys.ranker.features import EXPOSURES_KEY
    from recsys.stores.member_store import EmbeddedMemberStore

    if exposures is not None:
        ids = profiles[Col.MEMBER_ID].astype(str)
        profiles = profiles.assign(**{EXPOSURES_KEY: [exposures.get(m) for m in ids]})
    store = EmbeddedMemberStore()
    store.publish(profiles, None, "replay")
    config = PipelineConfig(retrieval_k=len(bundle.offers), require_seat_inventory=False, objective=objective)
    before = bundle.info.get("before")
    trained = datetime.fromisoformat(before) if before else datetime.max
    pipeline = OfferPipeline(bundle, store, None, config)
    return PipelinePolicy(name, pipeline, trained, store=store, balance_at_request=balance_at_request)


def replay_exposures(dataset_dir: str | Any, replay: Any) -> dict[str, Any]:
    """Each member's impressions, dismissals, clicks and purchases from the exposure horizon before the
    replayed period's start to its end, in the member store's format: the ranker's features count, for each
    request, only those before it — the member's state as of the request, as the open replay values it."""
    from recsys.data.layout import read_table
    from recsys.ranker.features import EXPOSURE_HORIZON_DAYS, member_exposures

    root = Path(dataset_dir)
    events = read_table(
        root, "interactions", columns=[Col.MEMBER_ID, Col.OFFER_ID, Col.EVENT_TYPE, Col.EVENT_TIME]
    )
    offers = read_table(root, "offers", columns=[Col.OFFER_ID, Col.FAMILY])
    since = replay.cutoff - pd.Timedelta(days=EXPOSURE_HORIZON_DAYS)
    return member_exposures(events, offers, replay.end, since=since)
