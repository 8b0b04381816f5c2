"""POST /v1/events."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends

from serving.api.deps import ModelDep, ServicesDep, require_json
from serving.api.schemas import ErrorResponse, EventBatchIn, EventBatchOut
from serving.events import TimeWindow, ingest

router = APIRouter(tags=["events"])


@router.post(
    "/v1/events",
    response_model=EventBatchOut,
    responses={
        413: {"model": ErrorResponse, "description": "Batch larger than the configured maximum (`events`)."},
        415: {"model": ErrorResponse, "description": "Body is not JSON."},
        422: {
            "model": ErrorResponse,
            "description": "Invalid event, e.g. unknown offer (`events[3].offer_id`), `event_time` "
            "further ahead than the allowed clock skew or older than the maximum age "
            "(`events[0].event_time`); nothing of the batch is stored.",
        },
        503: {"model": ErrorResponse, "description": "No model (offer catalogue) loaded yet."},
    },
    dependencies=[Depends(require_json)],
    summary="Impressions, clicks, purchases and dismissals from the app (idempotent on event_id)",
)
def post_events(body: EventBatchIn, services: ServicesDep, model: ModelDep) -> EventBatchOut:
    # Plain def: the SQL append blocks, so FastAPI runs this in its threadpool, off the event loop.
    settings = services.settings
    window = TimeWindow(
        now=services.clock(),
        max_future_skew=timedelta(seconds=settings.events_max_future_skew_s),
        max_age=timedelta(days=settings.events_max_age_days),
    )
    result = ingest(
        body.events,
        max_batch=settings.events_max_batch,
        offers=model.offers,
        signer=services.signer,
        window=window,
        event_log=services.event_log,
        member_store=services.member_store,
        cap_enforcer=services.cap_enforcer,
    )
    services.metrics.record_events(
        (ev.event_type for ev in result.append.accepted), len(result.append.duplicate_ids)
    )
    return EventBatchOut(
        received=result.received,
        accepted=len(result.append.accepted),
        duplicates=len(result.append.duplicate_ids),
        duplicate_ids=result.append.duplicate_ids,
        apply_errors=result.apply_errors,
    )
