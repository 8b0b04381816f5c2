"""``make bench-serve``'s floors: the service's app with three benchmark-only endpoints added, run with
``python bench/floor_app.py`` (same environment as ``python -m serving``, one worker). The product has none
of these endpoints; they exist only here.

- ``GET /v1/_floor``: a fixed 10-offer body (the framework floor);
- ``POST /v1/_floor/recommend-validate``: the recommend body validated as the endpoint does, no I/O;
- ``POST /v1/_floor/recommend-io``: validated, the member-store read and the atomic cap check-and-record of
  a ranked list as long as the pipeline's, no ranking (the I/O floor: no pipeline built on these parts can
  be faster).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.responses import Response

from recsys.capping.api import CapCandidate, CapMember, CapState
from recsys.pipeline.explain import MemberFacts
from serving.__main__ import load_settings, prepare, server_options
from serving.api.deps import current_model, require_json
from serving.api.schemas import RecommendationRequest
from serving.app import create_app
from serving.config import Settings
from serving.recommendations import check_airports, to_domain
from serving.responses import OrjsonResponse

FLOOR_BODY = {
    "request_id": "00000000000000000000000000000000",
    "offers": [
        {
            "offer_id": f"FLOOR-{i:02d}",
            "family": "ancillary",
            "category": "seat",
            "title": f"Offer {i}",
            "price_cash": 100.0 + i,
            "price_miles": None,
            "score": 1.0 - i / 10,
            "rank": i + 1,
            "expires_at": "2026-11-23T00:00:00Z",
            "reasons": ["Framework floor"],
            "tracking_token": "x" * 64,
        }
        for i in range(10)
    ],
}
# Candidates the I/O floor passes to the cap check: as many as the pipeline passes (the median over
# bench-serve's request mix on the 50k champion is 8, the mean 7.1), so the floor does no more cap work.
IO_FLOOR_CANDIDATES = 8

router = APIRouter(tags=["benchmark"])


@router.get("/v1/_floor", summary="Benchmark floor: a fixed 10-offer body")
async def floor() -> Response:
    return OrjsonResponse(FLOOR_BODY)


@router.post(
    "/v1/_floor/recommend-validate",
    dependencies=[Depends(require_json)],
    summary="Benchmark: the recommend endpoint's request handling alone, no I/O",
)
async def recommend_validate_floor(body: RecommendationRequest, request: Request) -> Response:
    services = request.app.state.services
    check_airports(body.trip, services.airports)
    domain = to_domain(body, now=services.clock(), debug=False)
    return OrjsonResponse({**FLOOR_BODY, "offers": FLOOR_BODY["offers"][: domain.limit]})


@router.post(
    "/v1/_floor/recommend-io",
    dependencies=[Depends(require_json)],
    summary="Benchmark: the recommend endpoint's per-request I/O without ranking",
)
async def recommend_io_floor(body: RecommendationRequest, request: Request) -> Response:
    services = request.app.state.services
    pipeline = current_model(services).pipeline
    check_airports(body.trip, services.airports)
    domain = to_domain(body, now=services.clock(), debug=False)
    trip_key = domain.trip.trip_key() if domain.trip is not None else None
    enforcer = pipeline.cap_enforcer
    # As the pipeline does: the member read brings the cap state when both stores share the Redis.
    location = enforcer.location() if enforcer is not None else None
    cap_key = None
    if enforcer is not None and location is not None and location == pipeline.member_store.location():
        cap_key = enforcer.state_key(domain.member_id)
    read = await pipeline.member_store.aread(domain.member_id, trip_key, cap_key)
    record = read.record
    selected: list[str] = []
    if enforcer is not None:
        member = MemberFacts.from_profile(
            record.profile if record is not None else None, pipeline.config.default_tier
        )
        # The catalogue's first offers, as the cap enforcer sees them.
        candidates = [
            CapCandidate(o.offer_id, family=o.family, category=o.category, exempt=o.exempt)
            for o in pipeline.catalogue.offers[:IO_FLOOR_CANDIDATES]
        ]
        decision = await enforcer.aselect_and_record(
            CapMember(domain.member_id, tier=member.tier, time_zone=member.time_zone),
            candidates,
            k=body.limit,
            placement=domain.placement,
            now=domain.now,
            record=True,
            state=CapState.of(read.extra) if read.extra is not None else None,
        )
        selected = list(decision.selected)
    offers = FLOOR_BODY["offers"][: body.limit]
    return OrjsonResponse({**FLOOR_BODY, "offers": offers, "selected": selected})


def floor_app(settings: Settings) -> FastAPI:
    """The service's app for ``settings`` with the benchmark's floor endpoints added."""
    app = create_app(settings)
    app.include_router(router)
    return app


def main() -> None:
    settings = load_settings()
    prepare(settings)
    uvicorn.run(floor_app(settings), **server_options(settings))


if __name__ == "__main__":
    main()
