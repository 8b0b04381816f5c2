"""Play simulated members against a running service over HTTP.

Each planned request is a real ``POST /v1/recommendations``; the member's hidden acceptance model (with
fatigue) answers every offer of the response, and the impressions, clicks, purchases and dismissals go back
to ``POST /v1/events`` with the offers' tracking tokens.

Time. The service refuses a departure in the past and an event older than its maximum age, and it stamps
requests with its own clock, so the simulated days are played at real time, compressed: the requests of
day 0 first, then day 1, and so on, each as fast as the service answers. A request keeps the simulated
distance to its flight (booking 5 days ahead sends a departure 5 days after the real now) and events carry
the real time at which the member answered. What the compression changes: the service's cap windows (a day,
7 days) are real time, so caps see all simulated days as a few minutes and bind harder than they would over
the real days. The simulated day of each request is kept in the summary.

Loopback only: the simulator refuses any other host (it posts made-up purchases).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from recsys.simulation.plan import PlannedRequest
from recsys.simulation.world import LONG_HAUL_KM, PLACEMENT_PLAN, PREMIUM_CABINS, SimMembers

CABINS_ABOVE = {"Y": ("W", "C", "F"), "W": ("C", "F"), "C": ("F",), "F": ()}
NO_EXPERIMENT = "-"


class SimulationError(ValueError):
    """The simulation cannot run as asked (bad target URL, service not answering)."""


def check_loopback(base_url: str) -> str:
    """The URL without a trailing slash; raises :class:`SimulationError` unless its host is loopback."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SimulationError(f"--url {base_url!r}: expected http://127.0.0.1:PORT")
    host = parts.hostname
    loopback = host == "localhost"
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
    if not loopback:
        raise SimulationError(f"--url {base_url!r}: the simulator only talks to a loopback service")
    return base_url.rstrip("/")


def experiment_label(body: dict[str, Any]) -> str:
    """``experiment/variant`` as the response names them, ``-`` outside any experiment."""
    exp = body.get("experiment")
    if isinstance(exp, dict):
        key, variant = exp.get("key"), exp.get("variant")
    else:
        key, variant = exp, body.get("variant")
    if not key:
        return NO_EXPERIMENT
    return f"{key}/{variant}" if variant else str(key)


@dataclass
class VariantCounts:
    """What one variant (as the responses named it) received and what the members did."""

    requests: int = 0
    empty_responses: int = 0
    impressions: int = 0
    clicks: int = 0
    purchases: int = 0
    dismissals: int = 0
    revenue_cash: float = 0.0
    miles: int = 0
    members: set[str] = field(default_factory=set)
    buyers: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        exposed = len(self.members)
        return {
            "requests": self.requests,
            "empty_responses": self.empty_responses,
            "members": exposed,
            "impressions": self.impressions,
            "clicks": self.clicks,
            "purchases": self.purchases,
            "dismissals": self.dismissals,
            "buyers": len(self.buyers),
            "conversion_per_member": round(len(self.buyers) / exposed, 5) if exposed else None,
            "revenue_cash": round(self.revenue_cash, 2),
            "miles": self.miles,
        }


@dataclass
class SimulationReport:
    url: str
    members: int
    days: int
    planned: int
    sent: int = 0
    days_played: int = 0
    truncated: str | None = None  # why the run stopped early (time or request budget)
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    variants: dict[str, VariantCounts] = field(default_factory=lambda: defaultdict(VariantCounts))
    events_posted: int = 0
    events_accepted: int = 0
    started: float = field(default_factory=time.monotonic)

    def seconds_so_far(self) -> float:
        return time.monotonic() - self.started

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "members": self.members,
            "days": self.days,
            "days_played": self.days_played,
            "planned_requests": self.planned,
            "requests_sent": self.sent,
            "truncated": self.truncated,
            "seconds": round(self.seconds, 1),
            "events_posted": self.events_posted,
            "events_accepted": self.events_accepted,
            "errors": dict(self.errors),
            "variants": {k: v.as_dict() for k, v in sorted(self.variants.items())},
        }


def _trip(req: PlannedRequest, now: datetime, rng: np.random.Generator) -> tuple[dict[str, Any], str] | None:
    """The request's trip body and the trip key a purchase names (None on the home screen)."""
    leg = req.leg
    if leg is None or req.minutes_to_departure is None:
        return None
    # +1 minute: the service's clock reads a little later than ours
    departure = (now + timedelta(minutes=req.minutes_to_departure + 1)).replace(microsecond=0)
    seats = {c: int(rng.integers(0, 10)) for c in CABINS_ABOVE.get(leg.cabin, ())}
    trip: dict[str, Any] = {
        "origin": leg.origin,
        "destination": leg.destination,
        "departure_time": departure.isoformat(),
        "cabin": leg.cabin,
        "fare_class": leg.fare_class,
        "flight_number": leg.flight_number,
        "seats_left": seats,
    }
    if req.booking is not None:
        b = req.booking
        trip |= {
            "booking_lead_days": b.lead_days,
            "party_size": b.party_size,
            "children": b.children,
            "stay_nights": b.stay_nights,
        }
    return trip, f"{leg.flight_number}|{departure.date().isoformat()}"


async def _play_one(
    client: httpx.AsyncClient,
    members: SimMembers,
    req: PlannedRequest,
    report: SimulationReport,
    *,
    seed: int,
    clock: Callable[[], datetime],
) -> None:
    rng = np.random.default_rng([seed, 3, req.member, req.seq])
    member_id = members.ids[req.member]
    body: dict[str, Any] = {
        "member_id": member_id,
        "placement": req.placement,
        "limit": PLACEMENT_PLAN[req.placement][1],
    }
    trip = _trip(req, clock(), rng)
    if trip is not None:
        body["trip"] = trip[0]
    report.sent += 1
    try:
        resp = await client.post("/v1/recommendations", json=body)
    except httpx.HTTPError as exc:
        report.errors[f"recommend:{type(exc).__name__}"] += 1
        return
    if resp.status_code != 200:
        report.errors[f"recommend:{resp.status_code}"] += 1
        return
    data = resp.json()
    counts = report.variants[experiment_label(data)]
    counts.requests += 1
    offers = data.get("offers") or []
    if not offers:
        counts.empty_responses += 1
        return
    counts.members.add(member_id)
    leg = req.leg
    answers = {
        r.offer_id: r
        for r in members.respond(
            req.member,
            [o["offer_id"] for o in offers],
            placement=req.placement,
            purpose=req.purpose,
            long_haul=leg is not None and leg.distance_km >= LONG_HAUL_KM,
            premium=leg is not None and leg.cabin in PREMIUM_CABINS,
            rng=rng,
        )
    }
    now = clock()
    events: list[dict[str, Any]] = []

    def event(offer: dict[str, Any], kind: str, seconds: int) -> None:
        ev = {
            "event_id": f"sim-{data['request_id']}-{offer['offer_id']}-{kind}",
            "event_type": kind,
            "member_id": member_id,
            "offer_id": offer["offer_id"],
            "placement": req.placement,
            "event_time": (now + timedelta(seconds=seconds)).isoformat(),
            "tracking_token": offer["tracking_token"],
        }
        if kind == "purchase" and trip is not None:
            ev["trip_key"] = trip[1]
        events.append(ev)

    for offer in offers:
        event(offer, "impression", 0)
        counts.impressions += 1
        answer = answers.get(offer["offer_id"])
        if answer is None:
            continue
        if answer.click:
            event(offer, "click", 1)
            counts.clicks += 1
        if answer.purchase:
            event(offer, "purchase", 2)
            counts.purchases += 1
            counts.buyers.add(member_id)
            cash, miles = members.prices.get(offer["offer_id"], (0.0, 0))
            counts.revenue_cash += cash
            counts.miles += miles
        elif answer.dismiss:
            event(offer, "dismiss", 1)
            counts.dismissals += 1
    report.events_posted += len(events)
    try:
        ev_resp = await client.post("/v1/events", json={"events": events})
    except httpx.HTTPError as exc:
        report.errors[f"events:{type(exc).__name__}"] += 1
        return
    if ev_resp.status_code != 200:
        report.errors[f"events:{ev_resp.status_code}"] += 1
        return
    report.events_accepted += int(ev_resp.json().get("accepted", 0))


async def run_simulation(
    base_url: str,
    members: SimMembers,
    plan: list[PlannedRequest],
    *,
    days: int,
    seed: int,
    concurrency: int = 8,
    max_seconds: float | None = None,
    max_requests: int | None = None,
    clock: Callable[[], datetime] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout_s: float = 30.0,
    day_seconds: float = 0.0,
    on_day: Callable[[int, SimulationReport], None] | None = None,
) -> SimulationReport:
    """Play ``plan`` day by day against the service at ``base_url`` (loopback only).

    Within a day the members run side by side (``concurrency`` requests in flight), each member's requests
    in order, so a member's fatigue and the service's caps see them in sequence. Stops early, saying why in
    ``truncated``, when ``max_seconds`` or ``max_requests`` is reached. ``day_seconds`` > 0 paces the run:
    each simulated day lasts at least that long in real time (to watch a report fill up). ``on_day`` is
    called after each simulated day with its number (progress).
    """
    url = check_loopback(base_url)
    if concurrency < 1:
        raise SimulationError(f"concurrency must be at least 1, got {concurrency}")
    clock = clock or (lambda: datetime.now(UTC))
    report = SimulationReport(url=url, members=len(members), days=days, planned=len(plan))
    started = time.monotonic()
    by_day: dict[int, dict[int, list[PlannedRequest]]] = defaultdict(lambda: defaultdict(list))
    for req in plan:
        by_day[req.day][req.member].append(req)
    sem = asyncio.Semaphore(concurrency)
    stop: list[str] = []

    def budget_left() -> bool:
        if stop:
            return False
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            stop.append(f"time budget of {max_seconds:g} s reached")
        elif max_requests is not None and report.sent >= max_requests:
            stop.append(f"request budget of {max_requests} reached")
        return not stop

    async def chain(client: httpx.AsyncClient, reqs: list[PlannedRequest]) -> None:
        for req in reqs:
            async with sem:
                if not budget_left():
                    return
                await _play_one(client, members, req, report, seed=seed, clock=clock)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, timeout=timeout_s, limits=limits, transport=transport
    ) as client:
        try:
            ready = await client.get("/readyz")
        except httpx.HTTPError as exc:
            raise SimulationError(f"no service answers at {url} ({type(exc).__name__}: {exc})") from exc
        if ready.status_code != 200:
            raise SimulationError(f"the service at {url} is not ready (/readyz {ready.status_code})")
        for day in range(days):
            if not budget_left():
                break
            day_started = time.monotonic()
            chains = by_day.get(day, {})
            await asyncio.gather(*(chain(client, reqs) for reqs in chains.values()))
            if not stop:
                report.days_played = day + 1
            if on_day is not None:
                on_day(day, report)
            rest = day_seconds - (time.monotonic() - day_started)
            if rest > 0 and day < days - 1:
                await asyncio.sleep(rest)
    report.truncated = stop[0] if stop else None
    report.seconds = time.monotonic() - started
    return report
