"""Event intake: validate a batch, append it idempotently to the event log, apply the new events online.

Order matters for "a retried batch never double counts": the batch is first appended in one transaction
with ``ON CONFLICT DO NOTHING``; only the events that were actually new are then applied to online state
(purchase → member store + cap enforcer; dismiss → cool-downs; impression → cap counts when the policy counts
on events).
A failure while applying is logged and reported (``apply_errors``) — the event itself is safely logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from recsys.capping.types import CapCandidate, CapEnforcer, CapMember
from recsys.events import AppendResult, EventLog, EventRecord
from recsys.pipeline.catalogue import CatalogueOffer
from recsys.schema import Col, EventType
from recsys.stores.member_store import MemberStore
from serving.api.schemas import EventIn
from serving.errors import ApiError
from serving.members import profile_of
from serving.tracking import InvalidTrackingToken, TrackingSigner

logger = logging.getLogger("serving.events")

# How long "already bought for this trip" is remembered after the event (the trip is over by then).
PURCHASE_MEMORY = timedelta(days=60)


@dataclass(frozen=True)
class IntakeResult:
    received: int
    append: AppendResult
    apply_errors: int


@dataclass(frozen=True)
class TimeWindow:
    """Which event times a batch may carry, relative to the server clock ``now``.

    ``max_future_skew``: device clocks run ahead a little; an event further ahead than this is a broken clock
    (logging it would put it after everything that really happens next). ``max_age``: apps queue events while
    offline, but an event older than this is a broken clock too.
    """

    now: datetime
    max_future_skew: timedelta
    max_age: timedelta


def _check_event_time(event_time: datetime, window: TimeWindow) -> tuple[str, str] | None:
    """(code, message) when ``event_time`` is outside the window."""
    ahead = event_time - window.now  # aware datetimes: exact whatever the offsets, no overflow
    if ahead > window.max_future_skew:
        return (
            "event_time_in_future",
            f"event_time {event_time.isoformat()} is {_span(ahead)} ahead of the server clock "
            f"({window.now.isoformat(timespec='seconds')}); "
            f"at most {_span(window.max_future_skew)} is allowed",
        )
    if -ahead > window.max_age:
        return (
            "event_time_too_old",
            f"event_time {event_time.isoformat()} is {_span(-ahead)} before the server clock "
            f"({window.now.isoformat(timespec='seconds')}); events at most {_span(window.max_age)} old "
            "are accepted",
        )
    return None


def _span(delta: timedelta) -> str:
    """``3600 s`` → ``1h 0m 0s``-style text an operator reads at a glance."""
    total = int(delta.total_seconds())
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    if days or hours or minutes:
        parts.append(f"{minutes}m")
    parts.append(f"{seconds}s")
    return " ".join(parts)


# A batch with many bad events names this many of them (each with its index and field).
MAX_NAMED_ERRORS = 20


def check_batch_size(n: int, max_batch: int) -> None:
    """413 naming ``events`` when a batch is too large (checked on the raw JSON, before item validation)."""
    if n > max_batch:
        raise ApiError(
            413, "batch_too_large", f"at most {max_batch} events per batch, got {n}", field="events"
        )


def validate_batch(
    events: list[EventIn],
    *,
    max_batch: int,
    offers: Mapping[str, CatalogueOffer],
    signer: TrackingSigner,
    window: TimeWindow,
) -> list[EventRecord]:
    """Domain records of a valid batch. A batch is all-or-nothing: any bad event raises :class:`ApiError`
    (422) naming every bad event found (up to :data:`MAX_NAMED_ERRORS`) by index and field, and then
    nothing of the batch is stored. An event id repeated with identical content is one event; repeated with
    different content it is an error."""
    check_batch_size(len(events), max_batch)
    errors: list[dict[str, str]] = []

    def bad(i: int, name: str, code: str, message: str) -> None:
        errors.append({"field": f"events[{i}].{name}", "location": "body", "message": message, "type": code})

    records: list[EventRecord] = []
    first_of: dict[str, int] = {}
    record_of: dict[str, EventRecord] = {}
    for i, ev in enumerate(events):
        if len(errors) >= MAX_NAMED_ERRORS:
            break
        seen = first_of.get(ev.event_id)
        if seen is not None:
            if events[seen] != ev:
                bad(
                    i,
                    "event_id",
                    "conflicting_duplicate",
                    f"event_id {ev.event_id!r} is also events[{seen}] with different content; an id names "
                    "one event",
                )
            elif ev.event_id in record_of:  # an identical repeat: the same event, reported as a duplicate
                records.append(record_of[ev.event_id])
            continue
        first_of[ev.event_id] = i
        time_error = _check_event_time(ev.event_time, window)
        if time_error is not None:
            bad(i, "event_time", *time_error)
            continue
        offer = offers.get(ev.offer_id)
        if offer is None:
            bad(i, "offer_id", "unknown_offer", f"unknown offer {ev.offer_id!r}")
            continue
        if (
            ev.event_type == EventType.PURCHASE
            and ev.trip_key is None
            and getattr(offer, "trip_bound", False)
        ):
            bad(
                i,
                "trip_key",
                "trip_key_required",
                f"offer {ev.offer_id!r} ({offer.category}) is sold for a flight: a purchase needs the "
                "trip_key "
                "of that flight",
            )
            continue
        request_id = model_version = None
        if ev.tracking_token:
            try:
                claims = signer.verify(ev.tracking_token)
            except InvalidTrackingToken as exc:
                bad(i, "tracking_token", "invalid_tracking_token", str(exc))
                continue
            mismatch = [
                f"{what} {claimed!r}, not {given!r}"
                for what, claimed, given in (
                    ("offer", claims.offer_id, ev.offer_id),
                    ("member", claims.member_id, ev.member_id),
                    ("placement", claims.placement, ev.placement.value),
                )
                if claimed != given
            ]
            if mismatch:
                bad(
                    i,
                    "tracking_token",
                    "tracking_token_mismatch",
                    "tracking token was issued for " + "; ".join(mismatch),
                )
                continue
            request_id, model_version = claims.request_id, claims.model_version
        record_of[ev.event_id] = EventRecord(
            event_id=ev.event_id,
            member_id=ev.member_id,
            offer_id=ev.offer_id,
            event_type=ev.event_type.value,
            placement=ev.placement.value,
            event_time=ev.event_time.astimezone(UTC),
            trip_key=ev.trip_key,
            request_id=request_id,
            model_version=model_version,
        )
        records.append(record_of[ev.event_id])
    if errors:
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        if len(errors) > 5:
            message += f"; and {len(errors) - 5} more"
        raise ApiError(422, errors[0]["type"], message, fields=errors)
    return records


def cap_member(member_store: MemberStore | None, member_id: str) -> CapMember:
    """The capping view of a member (tier and time zone from the member store; basic/UTC when unknown)."""
    tier, tz = "basic", "UTC"
    if member_store is not None:
        try:
            profile = member_store.get(member_id)
        except Exception:  # store down: cap with defaults rather than drop the event
            logger.warning("member store unavailable for %s; capping with defaults", member_id)
            profile = None
        data = profile_of(profile)
        tier = str(data.get(Col.TIER) or tier)
        tz = str(data.get(Col.TIME_ZONE) or tz)
    return CapMember(member_id, tier=tier, time_zone=tz)


# (placement, member id, event time) -> the enforcer of the experiment arm serving that member there, or None
ArmEnforcer = Callable[[str, str, datetime], CapEnforcer | None]


def apply_online(
    accepted: list[EventRecord],
    *,
    offers: Mapping[str, CatalogueOffer],
    member_store: MemberStore | None,
    cap_enforcer: CapEnforcer | None,
    arm_enforcer: ArmEnforcer | None = None,
) -> int:
    """Apply new events to online state; returns how many could not be applied (logged).

    ``arm_enforcer`` names the enforcer of the experiment arm that served the member on the event's
    placement: its cap policy (count on events, cool-downs) must see the event, not the service's default."""
    if not accepted:
        return 0
    errors = 0
    members: dict[str, CapMember] = {}
    for ev in accepted:
        try:
            if ev.event_type == EventType.CLICK:
                continue
            o = offers[ev.offer_id]
            if ev.event_type == EventType.PURCHASE and ev.trip_key and member_store is not None:
                member_store.add_purchase(ev.member_id, ev.trip_key, ev.offer_id, PURCHASE_MEMORY)
            if ev.event_type == EventType.PURCHASE and getattr(o, "trip_bound", False):
                # Bought for one flight: remembered for that trip above; the member-wide purchase cool-down
                # would hide the same upgrade on every other flight.
                continue
            enforcer = cap_enforcer
            if arm_enforcer is not None:
                enforcer = arm_enforcer(ev.placement, ev.member_id, ev.event_time) or cap_enforcer
            if enforcer is not None:
                member = members.get(ev.member_id)
                if member is None:
                    member = members[ev.member_id] = cap_member(member_store, ev.member_id)
                candidate = CapCandidate(
                    ev.offer_id,
                    family=str(o.family),
                    category=str(o.category),
                    exempt=bool(getattr(o, "exempt", False)),
                )
                enforcer.record_event(member, candidate, ev.event_type, ev.placement, ev.event_time)
        except Exception:
            errors += 1
            logger.exception("event %s logged but not applied to online state", ev.event_id)
    return errors


def ingest(
    events: list[EventIn],
    *,
    max_batch: int,
    offers: Mapping[str, CatalogueOffer],
    signer: TrackingSigner,
    window: TimeWindow,
    event_log: EventLog,
    member_store: MemberStore | None,
    cap_enforcer: CapEnforcer | None,
    arm_enforcer: ArmEnforcer | None = None,
) -> IntakeResult:
    """Validate, append (idempotent) and apply one batch."""
    records = validate_batch(events, max_batch=max_batch, offers=offers, signer=signer, window=window)
    result = event_log.append(records)
    errors = apply_online(
        result.accepted,
        offers=offers,
        member_store=member_store,
        cap_enforcer=cap_enforcer,
        arm_enforcer=arm_enforcer,
    )
    return IntakeResult(received=len(events), append=result, apply_errors=errors)
