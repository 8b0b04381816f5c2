"""Health, readiness, metrics and the framework-floor endpoint."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from starlette.responses import PlainTextResponse, Response

from recsys.capping.api import CapMember
from recsys.pipeline.explain import MemberFacts
from serving.api.deps import ServicesDep, current_model, require_json
from serving.api.schemas import HealthOut, ReadyOut, RecommendationRequest
from serving.metrics import CONTENT_TYPE
from serving.recommendations import check_airports, to_domain
from serving.responses import OrjsonResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=HealthOut, summary="Liveness: the process answers")
async def healthz() -> Response:
    return OrjsonResponse({"status": "ok"})


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "Not ready: a check failed (named in `checks`)."}},
    summary="Readiness: a model is loaded, Redis (when configured) and the event log answer",
)
async def readyz(services: ServicesDep) -> Response:
    checks: dict[str, str] = {}
    ready = True
    model = services.holder.current
    if model is None:
        ready = False
        checks["model"] = "not loaded" + (
            f" ({services.holder.last_error})" if services.holder.last_error else ""
        )
    else:
        checks["model"] = f"{model.name} v{model.version} ({model.alias})"
    if services.redis is not None:
        try:
            await anyio.to_thread.run_sync(services.redis.ping)
            checks["redis"] = "ok"
        except Exception as exc:
            ready = False
            checks["redis"] = f"unreachable: {type(exc).__name__}"
    enforcer = services.cap_enforcer
    if enforcer is not None and hasattr(enforcer, "status"):
        # Informational: with the cap store down the outage policy answers, so the service stays ready.
        status = enforcer.status()
        checks["caps"] = f"{status.get('store')}: " + (
            f"degraded ({status.get('last_error')})" if status.get("breaker_open") else "ok"
        )
    try:
        await anyio.to_thread.run_sync(services.event_log.ping)
        checks["event_log"] = "ok"
    except Exception as exc:
        ready = False
        checks["event_log"] = f"unreachable: {type(exc).__name__}"
    return OrjsonResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503
    )


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus text of the whole service (all workers): requests and latency, suppressions by "
    "reason, events, cap store, served model",
    responses={
        200: {
            "content": {
                "text/plain": {
                    "example": 'recsys_http_requests_total{method="POST",'
                    'route="/v1/recommendations",status="200"} 1042.0\n'
                }
            }
        }
    },
)
async def metrics(services: ServicesDep) -> Response:
    services.metrics.sync(services.holder, services.cap_enforcer, services.request_writer)
    return Response(services.metrics.render(), media_type=CONTENT_TYPE)


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

floor_router = APIRouter(tags=["operations"])
# Candidates the I/O floor passes to the cap check: as many as the pipeline passes (the median over
# bench-serve's request mix on the 50k champion is 8, the mean 7.1), so the floor does no more cap work.
IO_FLOOR_CANDIDATES = 8


@floor_router.get("/v1/_floor", summary="Benchmark floor: a fixed 10-offer body (enabled by a setting)")
async def floor() -> Response:
    return OrjsonResponse(FLOOR_BODY)


@floor_router.post(
    "/v1/_floor/recommend-validate",
    dependencies=[Depends(require_json)],
    summary="Benchmark: the recommend endpoint's request handling alone, no I/O (enabled by a setting)",
)
async def recommend_validate_floor(body: RecommendationRequest, request: Request) -> Response:
    """The same body as ``POST /v1/recommendations``, validated as that endpoint does (schema, airports,
    the pipeline's request), answered with ``limit`` offers of the floor body: what a POST of this body
    costs the framework before any store is read. ``make bench-serve`` reports it beside the other floors,
    so the recommend endpoint's cost splits into request handling, I/O and ranking."""
    services = request.app.state.services
    check_airports(body.trip, services.airports)
    domain = to_domain(body, now=services.clock(), debug=False)
    return OrjsonResponse({**FLOOR_BODY, "offers": FLOOR_BODY["offers"][: domain.limit]})


@floor_router.post(
    "/v1/_floor/recommend-io",
    dependencies=[Depends(require_json)],
    summary="Benchmark: the recommend endpoint's per-request I/O without ranking (enabled by a setting)",
)
async def recommend_io_floor(body: RecommendationRequest, request: Request) -> Response:
    """What every recommendation costs before any ranking, as the issue specifies the service: the same body
    validated, the member's profile and embedding read from the member store, the atomic cap check-and-record
    of a ranked list as long as the pipeline's (the catalogue's first offers), and ``limit`` offers in the
    response. ``make bench-serve`` compares its throughput with the floor's: no pipeline built on these
    parts can be faster."""
    services = request.app.state.services
    pipeline = current_model(services).pipeline
    check_airports(body.trip, services.airports)
    domain = to_domain(body, now=services.clock(), debug=False)
    trip_key = domain.trip.trip_key() if domain.trip is not None else None
    record, _ = await pipeline.member_store.aget_with_purchases(domain.member_id, trip_key)
    selected: list[str] = []
    if pipeline.cap_enforcer is not None:
        member = MemberFacts.from_profile(
            record.profile if record is not None else None, pipeline.config.default_tier
        )
        decision = await pipeline.cap_enforcer.aselect_and_record(
            CapMember(domain.member_id, tier=member.tier, time_zone=member.time_zone),
            pipeline.cap_candidates(IO_FLOOR_CANDIDATES),
            k=body.limit,
            placement=domain.placement,
            now=domain.now,
            record=True,
        )
        selected = list(decision.selected)
    offers = FLOOR_BODY["offers"][: body.limit]
    return OrjsonResponse({**FLOOR_BODY, "offers": offers, "selected": selected})
