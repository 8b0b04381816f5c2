"""Mapping between the recommend API and the pipeline: request schema → domain request, result → body.

Kept out of the router so the route stays a few lines and this logic is testable on its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any

from recsys.experiments import Assignment
from recsys.pipeline import RecommendRequest, RecommendResult, TripContext
from recsys.pipeline.catalogue import CASH_CURRENCY
from recsys.pipeline.pipeline import withheld_counts
from recsys.requestlog import PolicyRef, RequestRecord, ShownOffer, TripSnapshot
from serving.api.schemas import RecommendationRequest, TripIn
from serving.errors import ApiError
from serving.model_holder import ServedModel
from serving.tracking import TrackingSigner


def check_airports(trip: TripIn | None, airports: Collection[str]) -> None:
    """422 naming ``trip.origin``/``trip.destination`` for an airport not in the network."""
    if trip is None or not airports:
        return
    for name in ("origin", "destination"):
        code = getattr(trip, name)
        if code is not None and code not in airports:
            raise ApiError(
                422,
                "unknown_airport",
                f"unknown airport {code!r} (not in the route network)",
                field=f"trip.{name}",
            )


def to_domain(body: RecommendationRequest, *, now: datetime, debug: bool) -> RecommendRequest:
    """The pipeline request (raises :class:`recsys.pipeline.InvalidRequest` naming a field on bad input)."""
    trip = None
    if body.trip is not None:
        t = body.trip
        trip = TripContext(
            origin=t.origin,
            destination=t.destination,
            departure_time=t.departure_time,
            cabin=t.cabin.value if t.cabin is not None else None,
            fare_class=t.fare_class,
            flight_number=t.flight_number,
            seats_left={c.value: n for c, n in t.seats_left.items()} if t.seats_left is not None else None,
            arrival_time=t.arrival_time,
            booking_lead_days=t.booking_lead_days,
            party_size=t.party_size,
            children=t.children,
            stay_nights=t.stay_nights,
        )
    return RecommendRequest(
        member_id=body.member_id,
        placement=body.placement.value,
        trip=trip,
        limit=body.limit,
        families=frozenset(f.value for f in body.families) if body.families else None,
        locale=body.locale,
        now=now,
        debug=debug,
    )


def new_request_id() -> str:
    return uuid.uuid4().hex


def to_response(
    *,
    request_id: str,
    body: RecommendationRequest,
    model: ServedModel,
    result: RecommendResult,
    signer: TrackingSigner,
    debug: bool,
    experiment: Assignment | None = None,
) -> dict[str, Any]:
    """The response body as plain JSON-able data (rendered by orjson; shape = ``RecommendationResponse``)."""
    placement = body.placement.value
    member_id = body.member_id
    version = model.version
    sign = signer.sign
    offers = [
        {
            "offer_id": o.offer_id,
            "family": o.family,
            "category": o.category,
            "title": o.title,
            "price_cash": o.price_cash,
            "currency": CASH_CURRENCY if o.price_cash is not None else None,
            "price_miles": o.price_miles,
            "score": float(o.score),
            "acceptance_probability": float(o.acceptance_probability),
            "expected_value": float(o.expected_value),
            "rank": o.rank,
            "expires_at": o.expires_at,
            "reasons": list(o.reasons),
            "tracking_token": sign(request_id, o.offer_id, version, placement, member_id),
        }
        for o in result.offers
    ]
    suppressed = (
        [
            {"offer_id": s.offer_id, "stage": s.stage, "reason": s.reason, "detail": s.detail}
            for s in result.suppressed
        ]
        if debug
        else None
    )
    return {
        "request_id": request_id,
        "member_id": body.member_id,
        "placement": placement,
        "locale": body.locale,
        "model": {"name": model.name, "version": version, "alias": model.alias},
        "cold_start": bool(result.cold_start),
        "cap_degraded": result.cap_degraded,
        "offers": offers,
        # Why fewer than `limit` came back, in aggregate: allowed without the debug token, names no offer.
        "withheld": withheld_counts(result.suppressed) if len(offers) < body.limit else None,
        "suppressed": suppressed,
        "experiment": (
            {"key": experiment.experiment, "variant": experiment.variant} if experiment is not None else None
        ),
    }


def to_record(
    *,
    request_id: str,
    domain: RecommendRequest,
    model: ServedModel,
    result: RecommendResult,
    experiment: str | None = None,
    variant: str | None = None,
) -> RequestRecord:
    """The request log's record of this decision: context, candidate set, shown slate with propensities."""
    trip = domain.trip
    snapshot = (
        TripSnapshot(
            flight_number=trip.flight_number,
            origin=trip.origin,
            destination=trip.destination,
            cabin=trip.cabin,
            fare_class=trip.fare_class,
            departure_time=trip.departure_time,
            booking_lead_days=trip.booking_lead_days,
            party_size=trip.party_size,
            children=trip.children,
            stay_nights=trip.stay_nights,
        )
        if trip is not None
        else TripSnapshot()
    )
    return RequestRecord(
        request_id=request_id,
        member_id=domain.member_id,
        request_time=domain.now,
        placement=domain.placement,
        trip=snapshot,
        candidates=result.candidates,
        shown=tuple(ShownOffer(o.offer_id, slot, o.propensity) for slot, o in enumerate(result.offers)),
        policy=PolicyRef(model.name, str(model.version)),
        exploration=result.explored,
        experiment=experiment,
        variant=variant,
    )
