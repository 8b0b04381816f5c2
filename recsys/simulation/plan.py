"""Which requests the simulated members make over the simulated days, and in which trip contexts.

As in the generator (``_requests``): each member takes trips at the rate they flew in the world (flights per
year / 2, times ``activity``); a trip is one of the member's own flights out and the same route back, for a
purpose drawn from the member's hidden mix, with the generator's trip length. Around each trip a digital
member asks for offers at booking (business: 1–10 days ahead, else 5–58 days), after booking, at each
check-in (1–24 h ahead) and during the trip before the return flight, each with the generator's probability
times the member's app + web share. App users also open the home screen (6 a year times their app share).
Only requests that fall inside the simulated days are kept (trips booked before day 0 are not re-booked).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.data.generator import draw_bookings
from recsys.simulation.world import HISTORY_YEARS, HOME_REQUESTS_PER_YEAR, PLACEMENT_PLAN, Leg, SimMembers

MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class Booking:
    """The trip's booking (PNR) as the app knows it, as the recommend API's trip fields."""

    lead_days: int  # whole days from the booking to this leg's departure
    party_size: int
    children: int
    stay_nights: int


@dataclass(frozen=True)
class PlannedRequest:
    """One recommend call a member will make: when (minutes since the start of day 0), where, for what trip.

    ``minutes_to_departure`` is how long before the leg's departure the request is made (None without a trip).
    ``booking`` is what the app knows of the trip's booking, sent as the recommend API's trip fields (None
    without a trip): drawn from the trip's purpose as the generator draws it.
    """

    member: int
    minute: int
    placement: str
    leg: Leg | None
    minutes_to_departure: int | None
    purpose: int  # 0 business, 1 leisure, 2 family, -1 none (home screen)
    seq: int = 0  # the member's n-th request (0-based), set by plan_requests
    booking: Booking | None = None

    @property
    def day(self) -> int:
        return self.minute // MINUTES_PER_DAY


def _return_leg(legs: list[Leg], out: Leg) -> Leg:
    for leg in legs:
        if leg.origin == out.destination and leg.destination == out.origin:
            return leg
    return Leg(out.flight_number, out.destination, out.origin, out.cabin, out.fare_class, out.distance_km)


def plan_requests(members: SimMembers, days: int, seed: int, activity: float = 1.0) -> list[PlannedRequest]:
    """Every request of every member over ``days`` simulated days, in time order (seeded)."""
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if activity <= 0:
        raise ValueError(f"activity must be positive, got {activity}")
    horizon = days * MINUTES_PER_DAY
    out: list[PlannedRequest] = []
    for i in range(len(members)):
        rng = np.random.default_rng([seed, 2, i])
        digital = float(members.digital[i])
        legs = members.legs[i]
        reqs: list[PlannedRequest] = []
        if legs:
            trips_per_day = len(legs) / 2.0 / (HISTORY_YEARS * 365.0) * activity
            n_trips = int(rng.poisson(trips_per_day * days))
            for _ in range(n_trips):
                out_leg = legs[int(rng.integers(len(legs)))]
                back = _return_leg(legs, out_leg)
                mix = members.mix[i] / members.mix[i].sum()
                purpose = int(rng.choice(3, p=mix))
                if purpose == 0:
                    length_days = 1 + int(rng.geometric(0.45))
                elif purpose == 1:
                    length_days = 2 + int(rng.geometric(0.18))
                else:
                    length_days = 3 + int(rng.geometric(0.11))
                length_days = min(length_days, 30)
                # the booking as the generator draws it from the purpose, so requests carry what a PNR shows
                drawn = draw_bookings(rng, np.array([purpose]))
                lead_h = float(drawn["lead_h"][0])
                party, children = int(drawn["party"][0]), int(drawn["children"][0])
                out_book = Booking(int(lead_h // 24), party, children, length_days)
                back_book = Booking(int((lead_h + 24 * length_days) // 24), party, children, length_days)
                dep = int(rng.integers(horizon)) // MINUTES_PER_DAY * MINUTES_PER_DAY + int(
                    rng.integers(6 * 60, 22 * 60)
                )
                ret = dep + length_days * MINUTES_PER_DAY
                plan = [
                    ("booking", out_leg, out_book, dep, lead_h),
                    ("post_booking", out_leg, out_book, dep, float(rng.uniform(0.05, 0.95)) * lead_h + 2),
                    ("check_in", out_leg, out_book, dep, float(rng.uniform(1, 24))),
                    ("check_in", back, back_book, ret, float(rng.uniform(1, 24))),
                    ("in_trip", back, back_book, ret, float(rng.uniform(2, 24)) * min(length_days, 3)),
                ]
                for placement, leg, booking, dep_min, hours in plan:
                    if rng.random() >= PLACEMENT_PLAN[placement][0] * digital:
                        continue
                    to_dep = int(hours * 60)
                    at = dep_min - to_dep
                    if 0 <= at < horizon:
                        reqs.append(PlannedRequest(i, at, placement, leg, to_dep, purpose, booking=booking))
        rate = (
            HOME_REQUESTS_PER_YEAR
            * float(members.app[i])
            * (0.3 + 0.7 * float(members.flyer[i]) + 0.02 * float(members.annual_flights[i]))
            * activity
        )
        for _ in range(int(rng.poisson(rate * days / 365.0))):
            reqs.append(PlannedRequest(i, int(rng.integers(horizon)), "home", None, None, -1))
        reqs.sort(key=lambda r: (r.minute, r.placement))
        out.extend(
            PlannedRequest(
                r.member, r.minute, r.placement, r.leg, r.minutes_to_departure, r.purpose, seq, r.booking
            )
            for seq, r in enumerate(reqs)
        )
    out.sort(key=lambda r: (r.minute, r.member, r.seq))
    return out
