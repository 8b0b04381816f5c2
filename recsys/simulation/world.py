"""The members of a generated world as the live simulation plays them: their trips and hidden responses.

A simulated member has the world's hidden traits (``truth/``), the flights the world gave them (templates for
the trips they take during the simulation) and every offer impression the world already showed them (so the
fatigue of the acceptance model starts where the world's history left it). The responses are drawn exactly
as the generator draws them (``recsys.data.generator._World._offer_log``): purchase, else click, else dismiss,
from :mod:`recsys.data.world.acceptance` with the exposures of the same offer counted so far.

This module reads the hidden truth, as the evaluation's oracle does: it stands in for the members, it is not a
model. Training and serving code never import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsys.data import truth
from recsys.data.layout import DatasetError, has_table, read_table
from recsys.data.world import acceptance as acc
from recsys.schema import Col, EventType

# The generator's constants (recsys.data.generator), repeated here because they describe member behaviour.
LONG_HAUL_KM = 3000
HISTORY_YEARS = 3.0
HOME_REQUESTS_PER_YEAR = 6.0  # times the app share, for an active member
# placement -> (probability a digital member asks, slots shown)
PLACEMENT_PLAN: dict[str, tuple[float, int]] = {
    "booking": (0.9, 3),
    "post_booking": (0.6, 2),
    "check_in": (0.8, 2),
    "in_trip": (0.4, 1),
    "home": (0.0, 2),
}
PREMIUM_CABINS = frozenset({"C", "F"})


@dataclass(frozen=True)
class Leg:
    """One flight of a simulated trip (a template from the member's flights in the world)."""

    flight_number: str
    origin: str
    destination: str
    cabin: str
    fare_class: str
    distance_km: int


@dataclass(frozen=True)
class Response:
    """The member's response to one impression."""

    offer_id: str
    purchase: bool
    click: bool
    dismiss: bool


@dataclass
class SimMembers:
    """The sampled members of one world with everything the simulation needs about them."""

    ids: list[str]
    arrays: acc.MemberArrays
    digital: np.ndarray  # app + web share: how likely a member is to ask for offers around a trip
    app: np.ndarray  # app share: home-screen requests
    mix: np.ndarray  # business/leisure/family trip shares
    flyer: np.ndarray  # 1 if the member flew in the world
    annual_flights: np.ndarray
    legs: list[list[Leg]]  # each member's flights (trip templates)
    params: dict[str, Any]
    offer_index: dict[str, int]
    offers: acc.OfferArrays
    prices: dict[str, tuple[float, int]]  # offer id -> (cash, miles)
    prior: list[dict[str, int]] = field(default_factory=list)  # exposures per member and offer so far

    def __len__(self) -> int:
        return len(self.ids)

    def respond(
        self,
        member: int,
        offer_ids: list[str],
        *,
        placement: str,
        purpose: int,
        long_haul: bool,
        premium: bool,
        rng: np.random.Generator,
    ) -> list[Response]:
        """Draw the member's responses to one slate and count its exposures (fatigue).

        ``purpose`` is 0/1/2 (business/leisure/family) or -1 without a trip. Offers the world does not know
        get no response (they are still counted as exposures by the caller's impression events).
        """
        known = [o for o in offer_ids if o in self.offer_index]
        if not known:
            return []
        seen = self.prior[member]
        oi = np.array([self.offer_index[o] for o in known], dtype=np.int64)
        mi = np.full(len(oi), member, dtype=np.int64)
        n = len(oi)
        logit = acc.pair_logit(
            self.params,
            self.arrays,
            self.offers,
            mi,
            oi,
            purpose=np.full(n, purpose, dtype=np.int64),
            long_haul=np.full(n, long_haul),
            premium=np.full(n, premium),
            placement=np.full(n, acc.PLACEMENTS.index(placement), dtype=np.int64),
        )
        prior = np.array([seen.get(o, 0) for o in known], dtype=float)
        excess = acc.fatigue_excess(self.params, self.arrays.tolerance[mi], prior)
        p_buy, p_click, p_dismiss = acc.response_probabilities(
            self.params, logit, excess, self.arrays.price_sensitivity[mi]
        )
        # the generator's order of draws: purchase, click, dismiss
        buy = rng.random(n) < p_buy
        click = buy | (rng.random(n) < p_click)
        dismiss = ~click & (rng.random(n) < p_dismiss)
        for o in known:
            seen[o] = seen.get(o, 0) + 1
        return [
            Response(o, bool(b), bool(c), bool(d))
            for o, b, c, d in zip(known, buy, click, dismiss, strict=True)
        ]


def load_members(dataset_dir: Path | str, n_members: int | None, seed: int) -> SimMembers:
    """Sample ``n_members`` members (all when ``None`` or more than the world has) of a generated world.

    Raises :class:`DatasetError` when the dataset has no generator truth (imported data cannot be simulated).
    """
    root = Path(dataset_dir)
    if not truth.has_truth(root):
        raise DatasetError(f"{root}: no generator truth (truth/); only a generated world can be simulated")
    members = read_table(root, "members", columns=[Col.MEMBER_ID])[Col.MEMBER_ID].astype(str).to_numpy()
    if n_members is not None and n_members < len(members):
        rng = np.random.default_rng([seed, 1])
        members = np.sort(rng.choice(members, size=n_members, replace=False))
    ids = [str(m) for m in members]
    traits = truth.member_traits(root, ids)
    params = truth.acceptance_parameters(root)
    offers = read_table(root, "offers")
    index = {m: i for i, m in enumerate(ids)}

    flights = read_table(
        root,
        "flights",
        columns=[
            Col.MEMBER_ID,
            Col.FLIGHT_NUMBER,
            Col.ORIGIN,
            Col.DESTINATION,
            Col.CABIN,
            Col.FARE_CLASS,
            Col.DISTANCE_KM,
        ],
    )
    flights = flights[flights[Col.MEMBER_ID].isin(index)]
    legs: list[list[Leg]] = [[] for _ in ids]
    columns = [
        flights[c].astype(str).tolist()
        for c in (Col.MEMBER_ID, Col.FLIGHT_NUMBER, Col.ORIGIN, Col.DESTINATION, Col.CABIN, Col.FARE_CLASS)
    ]
    for member, number, origin, dest, cabin, fare_class, km in zip(
        *columns, flights[Col.DISTANCE_KM].astype(int).tolist(), strict=True
    ):
        legs[index[member]].append(Leg(number, origin, dest, cabin, fare_class, km))

    prior: list[dict[str, int]] = [{} for _ in ids]
    if has_table(root, "interactions"):
        log = read_table(root, "interactions", columns=[Col.MEMBER_ID, Col.OFFER_ID, Col.EVENT_TYPE])
        log = log[(log[Col.EVENT_TYPE] == EventType.IMPRESSION.value) & log[Col.MEMBER_ID].isin(index)]
        counts = log.groupby([Col.MEMBER_ID, Col.OFFER_ID]).size()
        for (member, offer), n in counts.items():
            prior[index[str(member)]][str(offer)] = int(n)

    cash = offers[Col.PRICE_CASH].fillna(0.0).to_numpy(float)
    miles = offers[Col.PRICE_MILES].fillna(0).to_numpy(np.int64)
    offer_ids = offers[Col.OFFER_ID].astype(str).tolist()
    return SimMembers(
        ids=ids,
        arrays=acc.member_arrays(traits),
        digital=(traits["channel_app"] + traits["channel_web"]).to_numpy(float),
        app=traits["channel_app"].to_numpy(float),
        mix=traits[["business", "leisure", "family"]].to_numpy(float),
        flyer=np.array([1.0 if legs[i] else 0.0 for i in range(len(ids))]),
        annual_flights=traits["annual_flights"].to_numpy(float),
        legs=legs,
        params=params,
        offer_index={o: j for j, o in enumerate(offer_ids)},
        offers=acc.offer_arrays(offers, params),
        prices={o: (float(c), int(m)) for o, c, m in zip(offer_ids, cash, miles, strict=True)},
        prior=prior,
    )
