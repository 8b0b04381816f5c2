"""POST /v1/events."""

from __future__ import annotations

import json
from datetime import timedelta

from fastapi import APIRouter, Depends, Request

from recsys.events import EventLogUnavailable
from serving.api.deps import ModelDep, ServicesDep, require_json
from serving.api.schemas import ErrorResponse, EventBatchIn, EventBatchOut
from serving.errors import ApiError
from serving.events import TimeWindow, check_batch_size, ingest
from serving.experiments import Routed

# Seconds a client waits before sending a refused batch again (a database failover takes seconds).
RETRY_AFTER_S = 2

router = APIRouter(tags=["events"])


async def batch_size_first(request: Request, services: ServicesDep) -> None:
    """413 for a batch with too many items, counted on the decoded JSON before any item is validated:
    validating a few hundred thousand junk items (and listing their errors) would hold the event loop for
    seconds. FastAPI solves dependencies before it validates the body, and the JSON is decoded once (cached
    on the request)."""
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return  # the body validation names the syntax error
    if isinstance(data, dict):
        events = data.get("events")
        if isinstance(events, list):
            check_batch_size(len(events), services.settings.events_max_batch)


@router.post(
    "/v1/events",
    response_model=EventBatchOut,
    responses={
        413: {
            "model": ErrorResponse,
            "description": "Body larger than the configured byte limit, or more events than the configured "
            "batch maximum (`events`); refused before any event is validated.",
        },
        415: {"model": ErrorResponse, "description": "Body is not JSON."},
        422: {
            "model": ErrorResponse,
            "description": "Invalid batch. A batch is all-or-nothing: every bad event found (up to 20) "
            "is named by index and field in `error.fields` (e.g. unknown offer `events[3].offer_id`, "
            "`event_time` beyond the allowed clock skew or older than the maximum age, a tracking token "
            "issued for another member, offer or placement, an `event_id` repeated with different content, "
            "a purchase of a flight-bound offer without `trip_key`, malformed JSON with its line and "
            "column), and nothing of the batch is stored, on every event-log backend.",
        },
        503: {
            "model": ErrorResponse,
            "description": "No model (offer catalogue) loaded yet, or the event log's database is "
            "unreachable (`event_log_unavailable`, with `Retry-After`): nothing of the batch is stored; send "
            "the same batch again (event ids make the retry safe).",
        },
    },
    dependencies=[Depends(require_json), Depends(batch_size_first)],
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
    try:
        result = ingest(
            body.events,
            max_batch=settings.events_max_batch,
            offers=model.offers,
            signer=services.signer,
            window=window,
            event_log=services.event_log,
            member_store=services.member_store,
            cap_enforcer=services.cap_enforcer,
            arm_enforcer=services.experiments.arm_enforcer if services.experiments is not None else None,
        )
    except EventLogUnavailable as exc:
        # Refused, not buffered: a buffer in this process would be lost with it and could not be shared
        # between workers; the app already queues events and retries.
        services.metrics.record_dependency_error("database", "event_log")
        raise ApiError(
            503,
            "event_log_unavailable",
            f"{exc}; nothing of this batch was stored, send it again",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from exc
    runtime = services.experiments
    services.metrics.record_events(
        (
            (ev.event_type, _arm(runtime.route(ev.placement, ev.member_id, ev.event_time)))
            if runtime is not None
            else (ev.event_type, None)
            for ev in result.append.accepted
        ),
        len(result.append.duplicate_ids),
    )
    return EventBatchOut(
        received=result.received,
        accepted=len(result.append.accepted),
        duplicates=len(result.append.duplicate_ids),
        duplicate_ids=result.append.duplicate_ids,
        apply_errors=result.apply_errors,
    )


def _arm(routed: Routed | None) -> tuple[str, str] | None:
    """(experiment, variant) of a member's arm, or None outside every running experiment."""
    return (routed.assignment.experiment, routed.assignment.variant) if routed is not None else None
