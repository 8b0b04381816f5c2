"""The request record: what one recommend decision was made from and what it showed, with propensities.

One record per recommend request, in the generated world (``requests`` table, written for the legacy
policy) and in the service (its durable request log). It is the logged bandit feedback of Open Bandit
Pipeline's shape: context (member, time, placement, trip), the candidate set the policy chose from (after
eligibility and caps), the shown slate in slot order, and for each shown offer its **propensity** — the
probability the logging policy had of showing that offer in this request (for a slate, the inclusion
probability). Without the candidates and propensities no later policy can be evaluated from the logs, so
they are recorded at decision time; nothing recovers them afterwards.

Events tie to a record through the tracking token's request id; experiments (issue: A/B experiments) read the
``experiment``/``variant`` fields.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from recsys.schema import MAX_BOOKING_LEAD_DAYS, MAX_PARTY_SIZE, MAX_STAY_NIGHTS


class InvalidRequestRecord(ValueError):
    """A request record breaks an invariant. ``field`` names the offending field."""

    def __init__(self, field_name: str, message: str, *, request_id: str | None = None) -> None:
        where = f"request {request_id!r}: " if request_id else ""
        super().__init__(f"{where}{field_name}: {message}")
        self.field = field_name
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class ShownOffer:
    """One offer of the shown slate: its slot (0 = first) and the logging policy's inclusion probability."""

    offer_id: str
    slot: int
    propensity: float


@dataclass(frozen=True)
class TripSnapshot:
    """The trip context of the request, as the policy saw it (all optional: home requests have no trip)."""

    flight_id: str | None = None  # the dataset's flight row, when the request came from the generated world
    flight_number: str | None = None
    origin: str | None = None
    destination: str | None = None
    cabin: str | None = None
    fare_class: str | None = None
    departure_time: datetime | None = None
    # the booking (PNR): days from booking to departure, passengers, children, nights until the return
    booking_lead_days: int | None = None
    party_size: int | None = None
    children: int | None = None
    stay_nights: int | None = None


@dataclass(frozen=True)
class PolicyRef:
    """The policy that chose the slate: a name (``legacy``, ``als``, ``ranker`` …) and a version."""

    name: str
    version: str


@dataclass(frozen=True, kw_only=True)
class RequestRecord:
    """One logged recommend decision. Construct it and call :meth:`validate` (the writers do)."""

    request_id: str
    member_id: str
    request_time: datetime
    placement: str
    trip: TripSnapshot = field(default_factory=TripSnapshot)
    candidates: tuple[str, ...]
    shown: tuple[ShownOffer, ...]
    policy: PolicyRef
    exploration: bool = False  # the slate was drawn at random from the candidates (exploration share)
    experiment: str | None = None
    variant: str | None = None

    def validate(self) -> RequestRecord:
        """Raise :class:`InvalidRequestRecord` naming the field when an invariant fails; return self."""
        check_slate(
            self.candidates,
            [s.offer_id for s in self.shown],
            [s.propensity for s in self.shown],
            request_id=self.request_id,
        )
        if self.request_time.tzinfo is None:
            raise InvalidRequestRecord("request_time", "must be timezone-aware", request_id=self.request_id)
        slots = [s.slot for s in self.shown]
        if slots != list(range(len(slots))):
            raise InvalidRequestRecord(
                "shown.slot",
                f"slots must be 0..{len(slots) - 1} in order, got {slots}",
                request_id=self.request_id,
            )
        t = self.trip
        for name, lo, hi in (
            ("booking_lead_days", 0, MAX_BOOKING_LEAD_DAYS),
            ("party_size", 1, MAX_PARTY_SIZE),
            ("children", 0, MAX_PARTY_SIZE),
            ("stay_nights", 0, MAX_STAY_NIGHTS),
        ):
            v = getattr(t, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi):
                raise InvalidRequestRecord(
                    f"trip.{name}", f"must be an integer {lo}..{hi}, got {v!r}", request_id=self.request_id
                )
        if t.children is not None and t.party_size is not None and t.children > t.party_size:
            raise InvalidRequestRecord(
                "trip.children",
                f"{t.children} children on a booking of {t.party_size} passengers",
                request_id=self.request_id,
            )
        return self


def check_slate(
    candidates: Sequence[str],
    shown: Sequence[str],
    propensities: Sequence[float | None],
    *,
    request_id: str | None = None,
) -> None:
    """The invariants shared by the dataset's ``requests`` table and the service's log.

    Every shown offer is a candidate, is shown once, and has a propensity in (0, 1].
    """
    if len(shown) != len(propensities):
        raise InvalidRequestRecord(
            "propensities",
            f"{len(propensities)} propensities for {len(shown)} shown offers",
            request_id=request_id,
        )
    cand = set(candidates)
    if len(cand) != len(candidates):
        raise InvalidRequestRecord("candidates", "repeats an offer", request_id=request_id)
    if len(set(shown)) != len(shown):
        raise InvalidRequestRecord("shown", "repeats an offer", request_id=request_id)
    for offer_id, p in zip(shown, propensities, strict=True):
        if offer_id not in cand:
            raise InvalidRequestRecord(
                "shown", f"offer {offer_id!r} is not in the candidate set", request_id=request_id
            )
        if p is None or not isinstance(p, int | float) or math.isnan(p):
            raise InvalidRequestRecord(
                "propensities", f"offer {offer_id!r} has no propensity", request_id=request_id
            )
        if not 0.0 < p <= 1.0:
            raise InvalidRequestRecord(
                "propensities",
                f"offer {offer_id!r} has propensity {p!r}; it must be in (0, 1]",
                request_id=request_id,
            )
