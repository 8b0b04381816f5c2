"""POST /v1/recommendations."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from serving.api.deps import current_model, internal_caller, require_json
from serving.api.schemas import ErrorResponse, RecommendationRequest, RecommendationResponse
from serving.recommendations import check_airports, new_request_id, to_domain, to_record, to_response
from serving.responses import OrjsonResponse

router = APIRouter(tags=["recommendations"])

# Read from the request headers in the route (see there), documented here.
DEBUG_TOKEN_PARAMETER = {
    "name": "x-debug-token",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "Internal callers' token (enables debug: the response lists suppressed candidates).",
}

ERRORS = {
    415: {"model": ErrorResponse, "description": "Body is not JSON."},
    422: {"model": ErrorResponse, "description": "Invalid field (named in `error.fields`)."},
    503: {"model": ErrorResponse, "description": "No model loaded yet."},
}


@router.post(
    "/v1/recommendations",
    response_model=RecommendationResponse,
    response_class=OrjsonResponse,
    responses=ERRORS,  # type: ignore[arg-type]
    dependencies=[Depends(require_json)],
    openapi_extra={"parameters": [DEBUG_TOKEN_PARAMETER]},
    summary="Ranked, eligible, explained and capped offers for one member and placement",
)
async def recommend(body: RecommendationRequest, request: Request) -> Response:
    # Services, model and caller are looked up with plain calls, not sub-dependencies or Header parameters:
    # FastAPI's per-request resolution of those cost ~0.1 ms of CPU each, a tenth of the whole pipeline.
    services = request.app.state.services
    model = current_model(services)
    check_airports(body.trip, services.airports)
    debug = body.debug and internal_caller(services, request.headers.get("x-debug-token"))
    domain = to_domain(body, now=services.clock(), debug=debug)
    if services.settings.pipeline_in_threadpool:
        result = await run_in_threadpool(model.pipeline.recommend, domain)
    else:
        # On the loop; the member-store read and the cap check are awaited, so other requests run meanwhile.
        result = await model.pipeline.arecommend(domain)
    metrics = services.metrics
    metrics.record_suppressed(result.suppressed)
    metrics.record_served(offer.family for offer in result.offers)
    if result.cold_start:
        metrics.cold_start.inc()
    if result.cap_degraded:
        metrics.record_cap_degraded(str(result.cap_degraded).split(":", 1)[0])
    request_id = new_request_id()
    writer = services.request_writer
    if writer is not None:  # queued for the background writer: no I/O on the request path
        writer.submit(to_record(request_id=request_id, domain=domain, model=model, result=result))
    payload = to_response(
        request_id=request_id,
        body=body,
        model=model,
        result=result,
        signer=services.signer,
        debug=debug,
    )
    return OrjsonResponse(payload)
