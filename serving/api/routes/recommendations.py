"""POST /v1/recommendations."""

from __future__ import annotations

import dataclasses
import time

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from recsys.pipeline import RecommendResult
from recsys.requestlog import PolicyRef
from serving.api.deps import current_model, internal_caller, require_json
from serving.api.schemas import ErrorResponse, RecommendationRequest, RecommendationResponse
from serving.recommendations import check_airports, new_request_id, to_domain, to_record, to_response
from serving.responses import OrjsonResponse

router = APIRouter(tags=["recommendations"])

HOLDOUT_RESULT = RecommendResult(offers=[], suppressed=[], cap_degraded=None, cold_start=False)
HOLDOUT_POLICY = PolicyRef("none", "0")

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
    429: {
        "model": ErrorResponse,
        "description": "Over the per-client rate limit (RECSYS_RATE_LIMIT); retry in `Retry-After` seconds.",
    },
    503: {"model": ErrorResponse, "description": "No model loaded yet."},
}


@router.post(
    "/v1/recommendations",
    response_model=RecommendationResponse,
    responses=ERRORS,  # type: ignore[arg-type]
    dependencies=[Depends(require_json)],
    openapi_extra={"parameters": [DEBUG_TOKEN_PARAMETER]},
    summary="Ranked, eligible, explained and capped offers for one member and placement",
)
async def recommend(body: RecommendationRequest, request: Request) -> Response:
    # Services, model and caller are looked up with plain calls, not sub-dependencies or Header parameters:
    # FastAPI's per-request resolution of those cost ~0.1 ms of CPU each, a tenth of the whole pipeline.
    started = time.perf_counter()
    services = request.app.state.services
    if services.rate_limiter is not None:
        await services.rate_limiter.enforce(request)
    model = current_model(services)
    check_airports(body.trip, services.airports)
    debug = body.debug and internal_caller(services, request.headers.get("x-debug-token"))
    domain = to_domain(body, now=services.clock(), debug=debug)
    runtime = services.experiments
    routed = runtime.route(domain.placement, domain.member_id, domain.now) if runtime is not None else None
    if routed is not None and routed.model is not None:
        model = routed.model  # the member's variant serves this request
    if routed is not None and routed.model is None:
        result = HOLDOUT_RESULT  # the holdout gets no personalised offers: none at all
    elif services.settings.pipeline_in_threadpool:
        result = await run_in_threadpool(model.pipeline.recommend, domain)
    else:
        # On the loop; the member-store read and the cap check are awaited, so other requests run meanwhile.
        result = await model.pipeline.arecommend(domain)
    metrics = services.metrics
    metrics.record_suppressed(result.suppressed)
    metrics.record_served((offer.family for offer in result.offers), domain.placement)
    if result.cold_start:
        metrics.cold_start.inc()
    if result.cap_degraded:
        metrics.record_cap_degraded(str(result.cap_degraded).split(":", 1)[0])
    if result.store_degraded:
        metrics.record_dependency_error("redis", "member_store")
    if routed is not None:
        metrics.record_arm(routed.assignment.experiment, routed.assignment.variant)
    # The request's own id when the service minted it (one id in the logs and the answer); a caller's
    # X-Request-ID never keys the request log.
    state = request.scope.get("state", {})
    request_id = state["request_id"] if state.get("request_id_minted") else new_request_id()
    writer = services.request_writer
    if writer is not None:  # queued for the background writer: no I/O on the request path
        record = to_record(
            request_id=request_id,
            domain=domain,
            model=model,
            result=result,
            experiment=routed.assignment.experiment if routed is not None else None,
            variant=routed.assignment.variant if routed is not None else None,
        )
        if routed is not None and routed.model is None:
            record = dataclasses.replace(record, policy=HOLDOUT_POLICY)  # nothing ranked this answer
        writer.submit(record)
    payload = to_response(
        request_id=request_id,
        body=body,
        model=model,
        result=result,
        signer=services.signer,
        debug=debug,
        experiment=routed.assignment if routed is not None else None,
    )
    if routed is not None:
        a = routed.assignment
        runtime.record_latency(a.experiment, a.variant, time.perf_counter() - started)
    return OrjsonResponse(payload)
