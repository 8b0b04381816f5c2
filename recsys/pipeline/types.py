"""Public types of the recommend pipeline: the request, the trip context, the result and the configuration.

These are domain objects (plain dataclasses), not API schemas: the web service maps its pydantic
request/response models onto them. Every constructor validates its input and raises
:class:`InvalidRequest` naming the field, so a bad request becomes a clear 4xx at the edge and never a 500
deep inside the pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from recsys.pipeline.messages import ACCEPTED_LOCALES, normalize_locale
from recsys.schema import (
    FARE_CLASS_CABIN,
    MAX_BOOKING_LEAD_DAYS,
    MAX_PARTY_SIZE,
    MAX_STAY_NIGHTS,
    Cabin,
    OfferFamily,
    Placement,
)

MAX_LIMIT = 50
EXPECTED_VALUE = "expected_value"
ACCEPTANCE = "acceptance"
BLEND = "blend"
RANKING_OBJECTIVES: tuple[str, ...] = (EXPECTED_VALUE, ACCEPTANCE, BLEND)
OBJECTIVES = frozenset(RANKING_OBJECTIVES)
# Member ids: letters, digits and ``_-:.``, 1-64 characters (they become parts of Redis keys).
MEMBER_ID_RE = re.compile(r"^[A-Za-z0-9_\-:.]{1,64}$")
# The accepted values as plain-string sets: checked on every request (``Enum.__members__`` builds a view each
# time and compares member by member).
_CABINS = frozenset(c.value for c in Cabin)
_PLACEMENTS = frozenset(p.value for p in Placement)
_FAMILIES = frozenset(f.value for f in OfferFamily)


def _is_one_of(value: object, accepted: frozenset[str]) -> bool:
    return isinstance(value, str) and value in accepted


class InvalidRequest(ValueError):
    """A request field is invalid. ``field`` names it (dotted for nested fields, e.g. ``trip.cabin``)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def _require_aware(name: str, value: datetime | None) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise InvalidRequest(name, "must be a timezone-aware datetime (e.g. 2026-11-22T11:30:00Z)")


def _iata(name: str, value: str | None) -> None:
    if value is not None and not (len(value) == 3 and value.isalpha() and value.isupper()):
        raise InvalidRequest(name, f"must be a 3-letter upper-case IATA airport code, got {value!r}")


@dataclass(frozen=True)
class TripContext:
    """The booked trip the offers are for (all optional: the home screen may have no trip).

    ``seats_left`` maps a cabin code (``F``/``C``/``W``/``Y``) to seats still for sale in it; upgrades
    need it. Airport codes are checked for shape here; whether the airport exists is checked by the
    pipeline against the network it was given (``InvalidRequest`` on ``trip.origin``/``trip.destination``).
    """

    origin: str | None = None
    destination: str | None = None
    departure_time: datetime | None = None
    cabin: str | None = None
    fare_class: str | None = None
    flight_number: str | None = None
    seats_left: Mapping[str, int] | None = None
    arrival_time: datetime | None = None
    # the booking (PNR): whole days from booking to departure, passengers (children included), children,
    # nights until the return flight (None: one way or unknown); they tell business trips from family ones
    booking_lead_days: int | None = None
    party_size: int | None = None
    children: int | None = None
    stay_nights: int | None = None

    def __post_init__(self) -> None:
        _iata("trip.origin", self.origin)
        _iata("trip.destination", self.destination)
        if self.origin is not None and self.origin == self.destination:
            raise InvalidRequest("trip.destination", "must differ from trip.origin")
        _require_aware("trip.departure_time", self.departure_time)
        _require_aware("trip.arrival_time", self.arrival_time)
        if self.arrival_time is not None and (
            self.departure_time is None or self.arrival_time <= self.departure_time
        ):
            raise InvalidRequest("trip.arrival_time", "needs a trip.departure_time before it")
        if self.cabin is not None and not _is_one_of(self.cabin, _CABINS):
            raise InvalidRequest(
                "trip.cabin", f"unknown cabin {self.cabin!r}; one of {[c.value for c in Cabin]}"
            )
        if self.fare_class is not None:
            fc_cabin = FARE_CLASS_CABIN.get(self.fare_class)
            if fc_cabin is None:
                raise InvalidRequest("trip.fare_class", f"unknown fare class {self.fare_class!r}")
            if self.cabin is not None and fc_cabin != self.cabin:
                raise InvalidRequest(
                    "trip.fare_class",
                    f"fare class {self.fare_class} books cabin {fc_cabin}, not {self.cabin}",
                )
        if self.seats_left is not None:
            for cabin, n in self.seats_left.items():
                if cabin not in _CABINS:
                    raise InvalidRequest("trip.seats_left", f"unknown cabin {cabin!r}")
                if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                    raise InvalidRequest(f"trip.seats_left.{cabin}", f"must be an integer >= 0, got {n!r}")
            object.__setattr__(self, "seats_left", MappingProxyType(dict(self.seats_left)))
        for name, lo, hi in (
            ("booking_lead_days", 0, MAX_BOOKING_LEAD_DAYS),
            ("party_size", 1, MAX_PARTY_SIZE),
            ("children", 0, MAX_PARTY_SIZE),
            ("stay_nights", 0, MAX_STAY_NIGHTS),
        ):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi):
                raise InvalidRequest(f"trip.{name}", f"must be an integer {lo}..{hi}, got {v!r}")
        if self.children is not None and self.party_size is not None and self.children > self.party_size:
            raise InvalidRequest(
                "trip.children", f"{self.children} children on a booking of {self.party_size} passengers"
            )

    @property
    def booked_cabin(self) -> str | None:
        """The booked cabin: given, or implied by the fare class."""
        if self.cabin is not None:
            return self.cabin
        if self.fare_class is not None:
            return str(FARE_CLASS_CABIN[self.fare_class])
        return None

    def trip_key(self) -> str | None:
        """A key identifying this trip for per-trip online state ("already bought for this trip").

        ``flight_number|YYYY-MM-DD`` when both are known, else ``origin-destination|YYYY-MM-DD``; None when
        the trip cannot be identified (no departure time).
        """
        if self.departure_time is None:
            return None
        day = self.departure_time.date().isoformat()
        if self.flight_number:
            return f"{self.flight_number}|{day}"
        if self.origin and self.destination:
            return f"{self.origin}-{self.destination}|{day}"
        return None


@dataclass(frozen=True, kw_only=True)
class RecommendRequest:
    """What the app asks: offers for ``member_id`` at ``placement``, optionally for a trip, at time ``now``.

    Keyword-only. ``now`` is the request time (aware); it is injected so tests and replays control the clock.
    ``locale`` (the language of the reasons) is normalised to ``en`` or ``zh-CN``
    (:func:`recsys.pipeline.messages.normalize_locale`).
    """

    member_id: str
    placement: str
    trip: TripContext | None = None
    limit: int = 10
    families: frozenset[str] | None = None
    locale: str = "en"
    now: datetime
    debug: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.member_id, str) or not MEMBER_ID_RE.match(self.member_id):
            raise InvalidRequest(
                "member_id", f"must be 1-64 letters, digits or _-:. characters, got {self.member_id!r}"
            )
        if not _is_one_of(self.placement, _PLACEMENTS):
            raise InvalidRequest(
                "placement", f"unknown placement {self.placement!r}; one of {[p.value for p in Placement]}"
            )
        _require_aware("now", self.now)
        if (
            not isinstance(self.limit, int)
            or isinstance(self.limit, bool)
            or not 1 <= self.limit <= MAX_LIMIT
        ):
            raise InvalidRequest("limit", f"must be an integer between 1 and {MAX_LIMIT}, got {self.limit!r}")
        if self.families is not None:
            fams = frozenset(self.families)
            unknown = sorted((f for f in fams if not _is_one_of(f, _FAMILIES)), key=str)
            if unknown:
                raise InvalidRequest(
                    "families", f"unknown families {unknown}; one of {[f.value for f in OfferFamily]}"
                )
            if not fams:
                raise InvalidRequest("families", "must not be empty (omit it for all families)")
            object.__setattr__(self, "families", fams)
        locale = normalize_locale(self.locale)
        if locale is None:
            raise InvalidRequest(
                "locale", f"unsupported locale {self.locale!r}; one of {list(ACCEPTED_LOCALES)}"
            )
        object.__setattr__(self, "locale", locale)


@dataclass
class RankedOffer:
    """One offer returned to the app, ranked 1..k."""

    offer_id: str
    family: str
    category: str
    title: str
    price_cash: float | None
    price_miles: int | None
    score: float
    acceptance_probability: float
    expected_value: float
    rank: int
    expires_at: datetime
    reasons: list[str]
    # Probability that this request's policy showed this offer (its inclusion probability in the slate,
    # over the explore/exploit mixture; see ``OfferPipeline``): what off-policy evaluation divides by.
    propensity: float = 1.0


@dataclass
class SuppressedCandidate:
    """A candidate dropped at some stage, with a machine reason code and a human detail."""

    offer_id: str
    stage: str
    reason: str
    detail: str


@dataclass
class RecommendResult:
    """The pipeline's answer. ``suppressed`` lists every dropped candidate (the debug response shows them).

    ``cap_degraded``: the cap store's outage mode when it was unavailable; ``store_degraded``: why the member
    store could not be read (the member was then served with a default profile); ``timings_ms``: per stage.
    """

    offers: list[RankedOffer]
    suppressed: list[SuppressedCandidate]
    cap_degraded: str | None
    cold_start: bool
    timings_ms: dict[str, float] = field(default_factory=dict)
    store_degraded: str | None = None  # the member store failed: the member was served as unknown
    # The candidate set the slate was chosen from (after eligibility and caps), for the request log.
    candidates: tuple[str, ...] = ()
    explored: bool = False  # the slate was drawn uniformly at random (exploration share)
    # OfferPipeline.rank only: every eligible offer in ranked order (value, diversity), before caps and limit.
    ranking: tuple[str, ...] = ()


class Stage:
    """Stage names used in :class:`SuppressedCandidate.stage`."""

    CANDIDATES = "candidates"
    ELIGIBILITY = "eligibility"
    VALUE = "value"
    DIVERSITY = "diversity"
    CAPS = "caps"
    TOP_K = "top_k"


@dataclass(frozen=True)
class PipelineConfig:
    """Tunable behaviour of the pipeline (plain values; the service maps its settings onto them).

    - ``retrieval_k``: candidates asked from the model's retrieval.
    - ``destination_k``: destinations asked from the model (``bundle.similar_destinations``) whose award
      flights and hotels become candidates, besides the profile's top destinations (0: profile only).
    - ``max_per_category``: at most this many offers of one category in the answer (diversity).
    - ``max_per_family``: optional hard limit per family.
    - ``family_repeat_penalty``: in the diversity re-rank, each offer of the same family already chosen
      multiplies a candidate's expected value by this factor (1.0 = no mixing; smaller = stronger mixing).
      What the defaults (0.8, and 2 per category) cost in value and purchases against the families an
      answer shows, per objective: bench/README.md, ``bench/pipeline_stages.py``.
    - ``close_fraction``: a redemption the member cannot afford yet is still offered as "you're close"
      when the balance is at least this fraction of its miles price.
    - ``close_value_factor``: the expected value of a "you're close" offer is multiplied by this (it cannot
      be accepted before more miles are earned).
    - ``miles_liability_cost_cny``: what one mile costs the airline on its books (liability per mile, CNY);
      values a miles-only offer whose catalogue row has no ``margin`` (see ``recsys.pipeline.value``).
    - ``require_seat_inventory``: an upgrade needs ``trip.seats_left`` for the target cabin; when the app
      sends no seat inventory, upgrades are suppressed (``seats_unknown``) rather than sold into a full cabin.
    - ``drop_worthless``: drop offers whose expected value is 0 (the model gives them no chance, or they
      earn nothing) instead of filling the list with them — showing nothing beats over-targeting. Exempt
      service offers (free special meals, lounge reminders) earn nothing but are kept when the model gives
      them a chance (p(accept) > 0).
    - ``offer_ttl_hours``: expiry of an offer with no earlier closing (validity end, sale window).
    - ``default_tier``: tier assumed for a member the member store does not know (a brand-new member).
    - ``objective``: what the candidates are ranked by (:data:`RANKING_OBJECTIVES`), at every placement not
      in ``ranking_objectives`` (placement → objective); experiments compare them. ``expected_value``
      (default): p(accept) × margin; ``acceptance``: p(accept) alone (the most likely purchases); ``blend``:
      p^(1-β) × EV^β = p × margin^β with β = ``blend_exponent`` in [0, 1] — β = 1 is expected value, β = 0
      acceptance, in between a margin that counts less than proportionally. The diversity re-rank uses
      the same key; every returned offer still reports its expected value.
    - ``booking_horizon_days``: how far ahead flights are sold; a later departure is an invalid request.
    - ``max_trip_hours``: the longest flight; a trip without ``arrival_time`` is in progress this long after
      departure (in-trip offers are sold until arrival; a trip that has arrived is an invalid request).
    - ``exploration_share``: share of requests whose slate is drawn uniformly at random (without
      replacement) from the candidate set instead of by value, caps applied all the same; 0 disables. Every
      shown offer carries its propensity over the explore/exploit mixture (see ``OfferPipeline``).
    - ``exploration_seed``: seed of the exploration draws (None: from the OS).
    """

    retrieval_k: int = 60
    destination_k: int = 3
    max_per_category: int = 2
    max_per_family: int | None = None
    family_repeat_penalty: float = 0.8
    close_fraction: float = 0.8
    close_value_factor: float = 0.5
    miles_liability_cost_cny: float = 0.005
    require_seat_inventory: bool = True
    drop_worthless: bool = True
    offer_ttl_hours: float = 24.0
    default_tier: str = "basic"
    objective: str = EXPECTED_VALUE
    ranking_objectives: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    blend_exponent: float = 0.5
    booking_horizon_days: float = 361.0
    max_trip_hours: float = 20.0
    exploration_share: float = 0.0
    exploration_seed: int | None = None

    def objective_exponent(self, placement: str) -> float:
        """β of the ranking key p^(1-β) × EV^β at a placement: 1 expected value, 0 acceptance."""
        objective = self.ranking_objectives.get(placement, self.objective)
        if objective == EXPECTED_VALUE:
            return 1.0
        if objective == ACCEPTANCE:
            return 0.0
        return self.blend_exponent

    def __post_init__(self) -> None:
        if self.objective not in RANKING_OBJECTIVES:
            raise ValueError(f"objective must be one of {list(RANKING_OBJECTIVES)}, got {self.objective!r}")
        for placement, objective in self.ranking_objectives.items():
            if placement not in _PLACEMENTS:
                raise ValueError(
                    f"ranking_objectives: unknown placement {placement!r}; one of {sorted(_PLACEMENTS)}"
                )
            if objective not in RANKING_OBJECTIVES:
                raise ValueError(
                    f"ranking_objectives.{placement} must be one of {list(RANKING_OBJECTIVES)}, "
                    f"got {objective!r}"
                )
        object.__setattr__(self, "ranking_objectives", MappingProxyType(dict(self.ranking_objectives)))
        if not 0.0 <= self.blend_exponent <= 1.0:
            raise ValueError("blend_exponent must be in [0, 1]")
        if self.retrieval_k < 0:
            raise ValueError("retrieval_k must be >= 0")
        if self.destination_k < 0:
            raise ValueError("destination_k must be >= 0")
        if self.max_per_category < 1:
            raise ValueError("max_per_category must be >= 1")
        if self.max_per_family is not None and self.max_per_family < 1:
            raise ValueError("max_per_family must be >= 1 or None")
        if not 0.0 < self.family_repeat_penalty <= 1.0:
            raise ValueError("family_repeat_penalty must be in (0, 1]")
        if not 0.0 < self.close_fraction <= 1.0:
            raise ValueError("close_fraction must be in (0, 1]")
        if not 0.0 <= self.close_value_factor <= 1.0:
            raise ValueError("close_value_factor must be in [0, 1]")
        if self.miles_liability_cost_cny < 0:
            raise ValueError("miles_liability_cost_cny must be >= 0")
        if self.offer_ttl_hours <= 0:
            raise ValueError("offer_ttl_hours must be > 0")
        if not 0.0 <= self.exploration_share <= 1.0:
            raise ValueError("exploration_share must be in [0, 1]")


def parse_ranking_objectives(text: str) -> tuple[str, dict[str, str]]:
    """``"acceptance"`` or ``"expected_value,booking=acceptance,home=blend"`` → (default objective,
    per-placement objectives); a bare objective sets the default. Raises ValueError naming the bad part."""
    default = EXPECTED_VALUE
    per: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "=" in part:
            placement, objective = (x.strip() for x in part.split("=", 1))
            if placement not in _PLACEMENTS:
                raise ValueError(f"unknown placement {placement!r} in {text!r}; one of {sorted(_PLACEMENTS)}")
            if objective not in RANKING_OBJECTIVES:
                raise ValueError(
                    f"unknown objective {objective!r} in {text!r}; one of {list(RANKING_OBJECTIVES)}"
                )
            per[placement] = objective
        elif part in RANKING_OBJECTIVES:
            default = part
        else:
            raise ValueError(f"unknown objective {part!r} in {text!r}; one of {list(RANKING_OBJECTIVES)}")
    return default, per
