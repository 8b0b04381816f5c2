"""The orchestrator: :class:`OfferPipeline` wires the stages for one request.

::

    member store (profile, embedding, purchases for this trip and the member's cap state — one round trip)
      → candidates   model retrieval (cold-start path for unknown members) + trip/family-specific offers
      → eligibility  tier, next cabin, seats, fare class, sale windows, lounge, miles, bought, validity...
      → score        model score and acceptance probability of the eligible offers
      → value        expected value = p(accept) × margin; rank by it
      → diversity    families mixed, at most N per category
      → caps         frequency caps (``recsys.capping``; a no-op without an enforcer), fills from the next
      → top k        explained, with expiry times

The stages are one generator (``OfferPipeline._steps``) that hands its I/O calls — the member-store
read and the cap check-and-record — to a driver: :meth:`OfferPipeline.recommend` makes them as blocking calls,
:meth:`OfferPipeline.arecommend` awaits them (the service, on its event loop), so both run the same code.

Everything the catalogue allows is precomputed at construction (:class:`~recsys.pipeline.catalogue.Catalogue`,
margins, lounge airports, city names); a request runs plain loops over at most a few hundred candidates.
Every candidate dropped at any stage is returned in ``RecommendResult.suppressed`` with stage, reason and
detail — except offers the catalogue never shows at the request's placement and offers of families the
request did not ask for, which are listed only when the request asks for ``debug`` (they are most of the
catalogue on every request).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, cast

import numpy as np

from recsys.capping.types import CapCandidate, CapDecision, CapEnforcer, CapMember, CapState
from recsys.data.network import CITY, HAS_LOUNGE, IATA, Network, load_network
from recsys.models.bundle import MemberScoring
from recsys.pipeline.candidates import gather_candidates
from recsys.pipeline.catalogue import Catalogue, CatalogueOffer
from recsys.pipeline.diversity import diversify
from recsys.pipeline.eligibility import (
    EligibilityContext,
    Reason,
    arrival,
    filter_eligible,
    rule_family,
    rule_placement,
    rules_for,
)
from recsys.pipeline.explain import ExplainContext, MemberFacts, explain
from recsys.pipeline.scorer import Scorer
from recsys.pipeline.titles import catalogue_titles
from recsys.pipeline.types import (
    InvalidRequest,
    PipelineConfig,
    RankedOffer,
    RecommendRequest,
    RecommendResult,
    Stage,
    SuppressedCandidate,
    TripContext,
)
from recsys.pipeline.value import expected_values, offer_values, rank_by_value, ranking_keys
from recsys.ranker.features import ScoringContext
from recsys.stores.member_store import MemberRead, MemberRecord, MemberStore, model_version_prefix

logger = logging.getLogger(__name__)

BELOW_TOP_K = "below_top_k"
NO_VALUE = "no_expected_value"


def _network_tables(
    network: Network | None,
) -> tuple[frozenset[str] | None, dict[str, str], frozenset[str] | None]:
    """(airports with a lounge, city per airport, all known airports) of a ``Network``."""
    if network is None:
        return None, {}, None
    airports = network.airports
    codes = [str(c) for c in airports[IATA]]
    lounges = frozenset(c for c, has in zip(codes, airports[HAS_LOUNGE], strict=True) if bool(has))
    cities = {c: str(city) for c, city in zip(codes, airports[CITY], strict=True) if city}
    return lounges, cities, frozenset(codes)


class OfferPipeline:
    """candidates → eligibility → score → expected value → diversity → frequency caps → top k.

    - ``bundle``: a :class:`recsys.models.bundle.ModelBundle` (``offers``, and ``for_member`` returning a
      :class:`~recsys.models.bundle.MemberScoring`: ``known``, ``retrieve``, ``score`` and — when the bundle
      has ``similar_destinations`` — ``similar_destinations``); the catalogue is ``bundle.offers``. A bundle
      loaded from the registry (``registered_as``) scores a member with the embedding the member store holds
      for them when it was published for that model version (``recsys members publish``).
    - ``member_store``: a :class:`recsys.stores.member_store.MemberStore`.
    - ``cap_enforcer``: a :class:`recsys.capping.api.CapEnforcer`; ``None`` makes the caps stage a no-op.
    - ``network``: a :class:`recsys.data.network.Network` (lounges at departure airports, city names for the
      explanations, known airports for request validation). ``None`` loads the network shipped with the
      package (``recsys.data.network.load_network()``); pass ``False`` to run without one (lounge offers then
      need explicit ``eligible_origins``, airports are not validated).

    Thread-safe: construction precomputes everything; :meth:`recommend` only reads shared state.
    """

    def __init__(
        self,
        bundle: Scorer,
        member_store: MemberStore,
        cap_enforcer: CapEnforcer | None = None,
        config: PipelineConfig = PipelineConfig(),
        network: Network | Literal[False] | None = None,
    ) -> None:
        self.bundle = bundle
        self.member_store = member_store
        self.cap_enforcer = cap_enforcer
        self.config = config
        if network is None:
            network = load_network()
        self.network = network or None
        self.catalogue = Catalogue(bundle.offers)
        # Exploration draws. random.Random's calls are atomic under the GIL: safe across request threads.
        self._rng = random.Random(config.exploration_seed)
        # The eligibility rules each offer can fail; the placement and family rules never do here, as the
        # candidates stage keeps only offers allowed at the placement and of the requested families.
        self._rules = [
            tuple(r for r in rules_for(o) if r not in (rule_placement, rule_family))
            for o in self.catalogue.offers
        ]
        self.values: list[float] = offer_values(self.catalogue, config.miles_liability_cost_cny).tolist()
        self.lounge_airports, self.city, self.airports = _network_tables(self.network)
        # Offer titles per locale by catalogue index, built once (they depend on the offer and locale only).
        self._titles = catalogue_titles(self.catalogue.offers, self.city)
        self._has_destinations = hasattr(bundle, "similar_destinations")
        # Store versions whose member embeddings were published for this very bundle (None: never used).
        registered = getattr(bundle, "registered_as", None)
        self._embedding_versions: str | None = None
        if registered is not None and hasattr(bundle, "for_vector"):
            self._embedding_versions = model_version_prefix(*registered)
        # A contextual ranker scores candidates in the request's context (placement, trip, time, profile).
        self._contextual = getattr(bundle, "context_ranker", None) is not None
        self._families = [o.family for o in self.catalogue.offers]
        self._categories = [o.category for o in self.catalogue.offers]
        self._cap_candidates: list[CapCandidate] | None = None
        # With the caps in the member store's Redis, the member read brings the cap state along: the cap
        # stage then only calls Redis to record (count_on: serve), one round trip per request otherwise.
        location = member_store.location()
        self._caps_with_profile = (
            cap_enforcer is not None and location is not None and location == cap_enforcer.location()
        )
        if cap_enforcer is not None:
            self._cap_candidates = [
                CapCandidate(o.offer_id, family=o.family, category=o.category, exempt=o.exempt)
                for o in self.catalogue.offers
            ]

    # ------------------------------------------------------------------------------------------------------
    def validate(self, request: RecommendRequest) -> None:
        """Checks that need the pipeline's data (airports known to the network); raises InvalidRequest."""
        trip = request.trip
        if trip is None:
            return
        self._validate_departure(trip, request)
        if self.airports is None:
            return
        for name, code in (("trip.origin", trip.origin), ("trip.destination", trip.destination)):
            if code is not None and code not in self.airports:
                raise InvalidRequest(name, f"unknown airport {code!r}")

    def _validate_departure(self, trip: TripContext, request: RecommendRequest) -> None:
        """A departure is in the future and within the booking horizon; a departed trip only while in
        progress, at placement ``in_trip``."""
        dep = trip.departure_time
        if dep is None:
            return
        now, cfg = request.now, self.config
        if dep - now > timedelta(days=cfg.booking_horizon_days):
            raise InvalidRequest(
                "trip.departure_time",
                f"{dep.isoformat()} is beyond the booking horizon of {cfg.booking_horizon_days:g} days",
            )
        if dep <= now:
            end = arrival(trip, cfg.max_trip_hours)
            if request.placement == "in_trip" and end is not None and now < end:
                return
            raise InvalidRequest(
                "trip.departure_time",
                f"{dep.isoformat()} is in the past"
                + (
                    " and the trip has arrived"
                    if request.placement == "in_trip"
                    else "; a trip in progress is served at placement in_trip until arrival"
                ),
            )

    def recommend(self, request: RecommendRequest) -> RecommendResult:
        """Ranked, eligible, explained and capped offers for one request (see the module doc).

        Raises :class:`InvalidRequest` for request fields the pipeline cannot serve (unknown airports).
        Never raises for an unknown member: the model's cold-start path and a default profile serve them.
        The member-store read and the cap check are blocking calls here; :meth:`arecommend` awaits them.
        """
        return self._drive(self._steps(request))

    def rank(self, request: RecommendRequest) -> tuple[str, ...]:
        """Every eligible offer id in the order the pipeline ranks them (value, then diversity), before
        exploration, caps and ``request.limit``: with caps off and no exploration, :meth:`recommend` returns
        the first ``limit`` of them. Nothing is explained or recorded — what an offline replay of the
        ranking needs (``recsys.evaluation.policies.PipelinePolicy``), at a fraction of the cost."""
        return self._drive(self._steps(request, rank_only=True)).ranking

    def _drive(self, steps: Generator[_Io, Any, RecommendResult]) -> RecommendResult:
        """Run the steps with their I/O calls made as blocking calls."""
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                op = steps.throw(error) if error is not None else steps.send(value)
            except StopIteration as done:
                return done.value
            try:
                value, error = op.run(self), None
            except Exception as exc:  # handed back to the step that asked (it decides what degrades)
                value, error = None, exc

    async def arecommend(self, request: RecommendRequest) -> RecommendResult:
        """:meth:`recommend` for an event loop: the member-store read and the cap check are awaited (stores
        with an asyncio client let other requests run meanwhile; others answer in place)."""
        steps = self._steps(request)
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                op = steps.throw(error) if error is not None else steps.send(value)
            except StopIteration as done:
                return done.value
            try:
                value, error = await op.arun(self), None
            except Exception as exc:
                value, error = None, exc

    def _steps(
        self, request: RecommendRequest, rank_only: bool = False
    ) -> Generator[_Io, Any, RecommendResult]:
        """The pipeline, with its two I/O calls yielded to the driver (:meth:`recommend` runs them blocking,
        :meth:`arecommend` awaits them): one code path for both. ``rank_only`` stops after diversity with
        the ranking in ``RecommendResult.ranking`` (:meth:`rank`)."""
        timings: dict[str, float] = {}
        t0 = t = time.perf_counter()
        self.validate(request)
        cfg = self.config
        trip = request.trip
        member_id = request.member_id
        now = request.now

        trip_key = trip.trip_key() if trip is not None else None
        store_degraded: str | None = None
        cap_key = (
            self.cap_enforcer.state_key(member_id)
            if self._caps_with_profile and self.cap_enforcer is not None
            else None
        )
        cap_state: CapState | None = None
        try:
            read = yield _MemberRead(member_id, trip_key, cap_key)
            record, purchased = read.record, read.purchased
            if read.extra is not None:
                cap_state = CapState.of(read.extra)
        except Exception as exc:  # store down or slow: serve the member as unknown rather than fail
            store_degraded = f"member store unavailable: {type(exc).__name__}: {exc}"[:200]
            logger.warning("%s (member %s)", store_degraded, member_id)
            record, purchased = None, frozenset()
        profile = record.profile if record is not None else None
        member = MemberFacts.from_profile(profile, cfg.default_tier)
        t = _lap(timings, "member_store", t)

        # -- candidates ----------------------------------------------------------------------------------
        # The member's vector is resolved once (cold-start policy included) for retrieval, destinations and
        # scoring.
        scoring = self._scoring(member_id, record, profile)
        cold_start = not scoring.known
        retrieved: Sequence[str] = ()
        if cfg.retrieval_k > 0:
            retrieved = cast(Sequence[str], scoring.retrieve(cfg.retrieval_k)[0])  # an array of offer ids
        destinations = list(member.likely_destinations)
        if cfg.destination_k > 0 and self._has_destinations:
            codes = scoring.similar_destinations(cfg.destination_k)[0]
            destinations.extend(c for c in codes if c != member.home_airport)
        cands = gather_candidates(self.catalogue, retrieved, trip, destinations)
        # Offers the catalogue never shows at this placement, or of families the request did not ask for, are
        # not candidates here. They are listed only in debug mode: most of the catalogue, every request.
        allowed = self.catalogue.allowed_at.get(request.placement, frozenset())
        families = request.families
        offers = self.catalogue.offers
        suppressed: list[SuppressedCandidate] = []
        candidates = [
            i for i in cands.indices if i in allowed and (families is None or offers[i].family in families)
        ]
        if request.debug and len(candidates) < len(cands.indices):
            kept = set(candidates)
            for i in cands.indices:
                if i not in kept:
                    o = offers[i]
                    if i not in allowed:
                        reason = Reason.PLACEMENT_NOT_ALLOWED
                        detail = f"placement {request.placement} not in {sorted(o.placements)}"
                    else:
                        reason = Reason.FAMILY_NOT_REQUESTED
                        detail = f"family {o.family} not among requested {sorted(families or ())}"
                    suppressed.append(SuppressedCandidate(o.offer_id, Stage.ELIGIBILITY, reason, detail))
        t = _lap(timings, "candidates", t)

        # -- eligibility ---------------------------------------------------------------------------------
        ctx = EligibilityContext(
            placement=request.placement,
            now=now,
            tier=member.tier,
            miles_balance=member.miles_balance,
            trip=trip,
            home_airport=member.home_airport,
            purchased=purchased,
            purchased_categories=frozenset(
                offers[self.catalogue.index_of[p]].category for p in purchased if p in self.catalogue.index_of
            ),
            max_trip_hours=cfg.max_trip_hours,
            families=request.families,
            lounge_airports=self.lounge_airports,
            close_fraction=cfg.close_fraction,
            require_seat_inventory=cfg.require_seat_inventory,
        )
        elig = filter_eligible(candidates, self.catalogue, ctx, self._rules)
        suppressed.extend(elig.suppressed)
        t = _lap(timings, "eligibility", t)
        if not elig.eligible:
            timings["total"] = (time.perf_counter() - t0) * 1e3
            return RecommendResult([], suppressed, None, cold_start, timings, store_degraded)

        # -- score and value -----------------------------------------------------------------------------
        eligible = elig.eligible
        offer_ids = [self.catalogue.offers[i].offer_id for i in eligible]
        if self._contextual:
            raw_scores, raw_probs = scoring.score(offer_ids, _scoring_context(request, profile))
        else:
            raw_scores, raw_probs = scoring.score(offer_ids)
        # A few dozen values: from here on plain floats, cheaper than numpy's per-call overhead.
        scores = [-math.inf if math.isnan(x) else x for x in np.asarray(raw_scores, dtype=float).tolist()]
        probs = [
            0.0 if math.isnan(x) else min(max(x, 0.0), 1.0)
            for x in np.asarray(raw_probs, dtype=float).tolist()
        ]
        ev = expected_values(eligible, probs, self.values, elig.close, cfg.close_value_factor)
        key = ranking_keys(probs, ev, cfg.objective_exponent(request.placement))
        order = rank_by_value(key, scores)
        if cfg.drop_worthless:
            keep = []
            for p in order:
                o = self.catalogue.offers[eligible[p]]
                if ev[p] > 0 or (o.exempt and probs[p] > 0):
                    keep.append(p)
                else:
                    suppressed.append(
                        SuppressedCandidate(
                            o.offer_id,
                            Stage.VALUE,
                            NO_VALUE,
                            f"expected value 0 (p(accept)={probs[p]:.3g}, margin={self.values[o.index]:g})",
                        )
                    )
            order = keep
        t = _lap(timings, "score", t)

        # -- diversity -----------------------------------------------------------------------------------
        fams = [self._families[eligible[p]] for p in order]
        cats = [self._categories[eligible[p]] for p in order]
        div = diversify(
            fams,
            cats,
            [key[p] for p in order],
            cfg.max_per_category,
            cfg.max_per_family,
            cfg.family_repeat_penalty,
        )
        for pos, reason, detail in div.dropped:
            suppressed.append(SuppressedCandidate(offer_ids[order[pos]], Stage.DIVERSITY, reason, detail))
        ranked = [order[p] for p in div.order]  # positions into `eligible`, final order
        t = _lap(timings, "diversity", t)
        if rank_only:
            timings["total"] = (time.perf_counter() - t0) * 1e3
            return RecommendResult(
                [], suppressed, None, cold_start, timings, store_degraded,
                ranking=tuple(offer_ids[p] for p in ranked),
            )  # fmt: skip

        # -- exploration and frequency caps -------------------------------------------------------------
        # Explore: the slate is the first k offers that break no cap in a uniformly random order of all
        # eligible offers (= a uniform k-of-n draw from the capped candidate set when the request's own picks
        # crowd nothing out). Exploit: the first k in value order. Either way the cap store also reports
        # which eligible offers are blocked on their own: the rest are the candidate set.
        k = request.limit
        share = cfg.exploration_share
        explore = share > 0.0 and self._rng.random() < share
        n_elig = len(eligible)
        order = self._rng.sample(range(n_elig), n_elig) if explore else ranked
        cap_degraded: str | None = None
        blocked: set[str] = set()
        deterministic: set[int] | None = None  # positions the exploit slate shows (None: `selected`)
        if self.cap_enforcer is not None and self._cap_candidates is not None and order:
            cap_member = CapMember(member_id, tier=member.tier, time_zone=member.time_zone)
            capc = self._cap_candidates
            if explore and share < 1.0:
                # The exploit slate in this cap state (not recorded): the propensities need it.
                det = yield _CapSelect(
                    cap_member,
                    [capc[eligible[p]] for p in ranked],
                    k,
                    request.placement,
                    now,
                    record=False,
                    state=cap_state,
                )
                pos_in_ranked = {offer_ids[p]: p for p in ranked}
                deterministic = {pos_in_ranked[o] for o in det.selected if o in pos_in_ranked}
            window = self.cap_enforcer.candidate_window
            cut = len(order) if window is None else max(window, 5 * k)
            in_order = set(order)
            # Offers only checked (never selected): the ranking's leftovers and anything past the window.
            checked = order[cut:] + [p for p in range(n_elig) if p not in in_order]
            decision = yield _CapSelect(
                cap_member,
                [capc[eligible[p]] for p in order[:cut]],
                k,
                request.placement,
                now,
                also_check=[capc[eligible[p]] for p in checked],
                state=cap_state,
            )
            cap_degraded = decision.degraded
            for s in decision.suppressed:
                suppressed.append(SuppressedCandidate(s.offer_id, Stage.CAPS, s.reason, s.detail))
            # Unknown under a cap-store outage: then what the outage policy suppressed.
            blocked = (
                set(decision.blocked)
                if decision.blocked is not None
                else {s.offer_id for s in decision.suppressed}
            )
            pos_of = {offer_ids[p]: p for p in order}
            selected = [pos_of[o] for o in decision.selected if o in pos_of]
            seen = set(decision.selected) | {s.offer_id for s in decision.suppressed}
            rest = [p for p in order if offer_ids[p] not in seen]
        else:
            selected, rest = order[:k], order[k:]
            if explore:
                deterministic = set(ranked[:k])
        if deterministic is None:
            deterministic = set(selected)
        for p in rest:
            suppressed.append(
                SuppressedCandidate(
                    offer_ids[p],
                    Stage.TOP_K,
                    BELOW_TOP_K,
                    f"not drawn among the {k} returned" if explore else f"ranked below the {k} returned",
                )
            )
        if explore:  # an explored slate may show what value or diversity would have dropped
            shown_ids = {offer_ids[p] for p in selected}
            suppressed = [x for x in suppressed if x.offer_id not in shown_ids]
        candidate_ids = tuple(o for o in offer_ids if o not in blocked) if blocked else tuple(offer_ids)
        # Propensity = P(shown) over the mixture: (1 - share) * [in the exploit slate] + share * k/n.
        n = len(candidate_ids)
        p_explore = share * min(k, n) / n if n else 0.0
        t = _lap(timings, "caps", t)

        # -- top k: explain ------------------------------------------------------------------------------
        ectx = ExplainContext(trip=trip, now=now, city=self.city, locale=request.locale)
        out: list[RankedOffer] = []
        for rank, p in enumerate(selected, start=1):
            o = self.catalogue.offers[eligible[p]]
            propensity = min(1.0, (1.0 - share) * (p in deterministic) + p_explore)
            out.append(
                RankedOffer(
                    offer_id=o.offer_id,
                    family=o.family,
                    category=o.category,
                    title=self._titles[ectx.locale][o.index],
                    price_cash=o.price_cash,
                    price_miles=o.price_miles,
                    score=float(scores[p]),
                    acceptance_probability=float(probs[p]),
                    expected_value=float(ev[p]),
                    rank=rank,
                    expires_at=self._expires_at(o, trip, now),
                    reasons=explain(o, member, ectx, elig.close.get(o.index, 0)),
                    propensity=propensity,
                )
            )
        _lap(timings, "explain", t)
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return RecommendResult(
            out,
            suppressed,
            cap_degraded,
            cold_start,
            timings,
            store_degraded,
            candidates=candidate_ids,
            explored=explore,
        )

    def _scoring(
        self, member_id: str, record: MemberRecord | None, profile: Mapping[str, Any] | None
    ) -> MemberScoring:
        """The member's scoring view: from the embedding the member store holds when it was published for
        this model version, else from the bundle (its learned vector or the cold-start policy)."""
        prefix = self._embedding_versions
        if (
            prefix is not None
            and record is not None
            and record.embedding is not None
            and (record.version or "").startswith(prefix)
        ):
            try:
                for_vector = self.bundle.for_vector  # type: ignore[attr-defined]  # checked at construction
                return for_vector(record.embedding)
            except ValueError:
                logger.warning("member %s: stored embedding does not fit the model; bundle used", member_id)
        return self.bundle.for_member(member_id, member_features=profile)

    def _expires_at(self, o: CatalogueOffer, trip: TripContext | None, now: datetime) -> datetime:
        """The earliest of: the offer's validity end, its sale window closing, now + ``offer_ttl_hours``."""
        expiry = now + timedelta(hours=self.config.offer_ttl_hours)
        if o.valid_to is not None:
            expiry = min(expiry, o.valid_to)
        if o.trip_bound and trip is not None and trip.departure_time is not None:
            close = trip.departure_time - timedelta(hours=o.window_close_hours or 0.0)
            expiry = min(expiry, close)
        return expiry

    def titles(self, locale: str) -> list[str]:
        """Every catalogue offer's title in ``locale`` (``en`` or ``zh-CN``), by catalogue index."""
        return self._titles[locale]

    def offer(self, offer_id: str) -> CatalogueOffer | None:
        """The catalogue entry of an offer id (for the events endpoint's validation), or None."""
        i = self.catalogue.index_of.get(offer_id)
        return None if i is None else self.catalogue.offers[i]

    @property
    def offer_ids(self) -> Mapping[str, int]:
        """Known offer ids → catalogue index."""
        return self.catalogue.index_of


def _scoring_context(request: RecommendRequest, profile: Mapping[str, Any] | None) -> ScoringContext:
    trip = request.trip
    if trip is None:
        return ScoringContext(request.placement, request.now, profile=profile)
    return ScoringContext(
        request.placement,
        request.now,
        trip.origin,
        trip.destination,
        trip.departure_time,
        trip.booked_cabin,
        profile,
        trip.booking_lead_days,
        trip.party_size,
        trip.children,
        trip.stay_nights,
    )


# Why candidates were withheld, in aggregate (the app may show it; it names no offer).
WITHHELD_KEYS: tuple[str, ...] = (
    "frequency_cap",
    "cooldown",
    "cap_store_unavailable",
    "already_purchased",
    "needs_seats_left",
    "not_eligible",
    "low_value",
    "diversity",
)


def withheld_counts(suppressed: Sequence[SuppressedCandidate]) -> dict[str, int]:
    """How many candidates each kind of reason withheld (every key of :data:`WITHHELD_KEYS`, zeros
    included). Offers ranked below the returned ones are not counted: they were not withheld."""
    out = dict.fromkeys(WITHHELD_KEYS, 0)
    for s in suppressed:
        if s.stage == Stage.CAPS:
            if s.reason.startswith(("cooldown", "purchased")):
                key = "cooldown"
            elif s.reason.startswith("outage"):
                key = "cap_store_unavailable"
            else:
                key = "frequency_cap"
        elif s.stage == Stage.ELIGIBILITY:
            if s.reason == Reason.ALREADY_PURCHASED:
                key = "already_purchased"
            elif s.reason == Reason.SEATS_UNKNOWN:
                key = "needs_seats_left"
            else:
                key = "not_eligible"
        elif s.stage == Stage.VALUE:
            key = "low_value"
        elif s.stage == Stage.DIVERSITY:
            key = "diversity"
        else:
            continue
        out[key] += 1
    return out


@dataclass(frozen=True, slots=True)
class _MemberRead:
    """The member's record, this trip's purchases and (``cap_key``) the member's cap state from the member
    store."""

    member_id: str
    trip_key: str | None
    cap_key: str | None = None

    def run(self, pipeline: OfferPipeline) -> MemberRead:
        return pipeline.member_store.read(self.member_id, self.trip_key, self.cap_key)

    async def arun(self, pipeline: OfferPipeline) -> MemberRead:
        return await pipeline.member_store.aread(self.member_id, self.trip_key, self.cap_key)


@dataclass(frozen=True, slots=True)
class _CapSelect:
    """The cap enforcer's atomic check-and-record of the ranked candidates."""

    member: CapMember
    candidates: list[CapCandidate]
    k: int
    placement: str
    now: datetime
    record: bool = True
    also_check: list[CapCandidate] = field(default_factory=list)
    state: CapState | None = None

    def run(self, pipeline: OfferPipeline) -> CapDecision:
        enforcer = pipeline.cap_enforcer  # only asked for when there is one
        assert enforcer is not None
        return enforcer.select_and_record(
            self.member,
            self.candidates,
            k=self.k,
            placement=self.placement,
            now=self.now,
            record=self.record,
            also_check=self.also_check,
            state=self.state,
        )

    async def arun(self, pipeline: OfferPipeline) -> CapDecision:
        enforcer = pipeline.cap_enforcer
        assert enforcer is not None
        return await enforcer.aselect_and_record(
            self.member,
            self.candidates,
            k=self.k,
            placement=self.placement,
            now=self.now,
            record=self.record,
            also_check=self.also_check,
            state=self.state,
        )


_Io = _MemberRead | _CapSelect


def _lap(timings: dict[str, float], name: str, since: float) -> float:
    now = time.perf_counter()
    timings[name] = (now - since) * 1e3
    return now
