"""Offers that behave as a member expects, through the API, on a clock the test moves: dismissals hold for
free offers too, purchases are scoped to their trip, no lounge pass to the entitled, departures checked,
trips in progress served until arrival, and a member's day with the default caps and impressions reported."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.serving.conftest import DEBUG_TOKEN, Registry, make_settings
from tests.serving.test_api import error_fields

BEIJING = timezone(timedelta(hours=8))
DEBUG = {"X-Debug-Token": DEBUG_TOKEN}
VGML = "AN-MEAL-VGML-01"
PAID_PASSES = {"AN-LNG-PASS-01", "AN-LNG-PASS-02"}


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime(2026, 12, 7, 0, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Api:
    client: TestClient
    clock: Clock
    tiers: dict[str, str]

    def recommend(self, member: str, placement: str, trip: dict[str, Any] | None, **over: Any) -> Any:
        body: dict[str, Any] = {"member_id": member, "placement": placement, "limit": 5, **over}
        if trip is not None:
            body["trip"] = trip
        resp = self.client.post("/v1/recommendations", json=body, headers=DEBUG)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def events(
        self, member: str, offers: list[dict[str, Any]], event_type: str, placement: str, **over: Any
    ) -> None:
        batch = [
            {
                "event_id": f"{member}-{event_type}-{o['offer_id']}-{self.clock.now.timestamp()}",
                "event_type": event_type,
                "member_id": member,
                "offer_id": o["offer_id"],
                "placement": placement,
                "event_time": self.clock.now.isoformat(),
                **({"tracking_token": o["tracking_token"]} if "tracking_token" in o else {}),
                **over,
            }
            for o in offers
        ]
        resp = self.client.post("/v1/events", json={"events": batch})
        assert resp.status_code == 200 and resp.json()["accepted"] == len(batch), resp.text

    def member_of_tier(self, tiers: set[str], skip: int = 0) -> str:
        found = [m for m, t in sorted(self.tiers.items()) if t in tiers]
        return found[skip]


# The world's members, with these promoted to an elite tier in the member store (a small generated world
# may have no Gold or Platinum member at all).
ELITE = {"M0000003": "gold", "M0000004": "platinum"}


def member_store(world: Path) -> Any:
    """The world's member profiles in an in-process member store, :data:`ELITE` promoted."""
    from recsys.features.profiles import ProfileCol, build_member_profiles
    from recsys.ranker.features import with_exposures
    from recsys.stores.member_store import EmbeddedMemberStore

    profiles = with_exposures(build_member_profiles(world), world)
    ids = profiles[ProfileCol.MEMBER_ID].astype(str)
    for member, tier in ELITE.items():
        profiles.loc[ids == member, ProfileCol.TIER] = tier
    store = EmbeddedMemberStore()
    store.publish(profiles, None, "behaviour-1")
    return store


def build_api(registry: Registry, world: Path, tmp: Path, prefix: str, factory: Any = None) -> Iterator[Api]:
    import pandas as pd

    clock = Clock()
    settings = make_settings(registry, world, tmp, prefix)
    members = pd.read_parquet(world / "members.parquet", columns=["member_id", "tier"])
    tiers = dict(zip(members["member_id"].astype(str), members["tier"].astype(str), strict=True))
    tiers.update(ELITE)
    app = create_app(settings, clock=clock, pipeline_factory=factory, member_store=member_store(world))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield Api(c, clock, tiers)


@pytest.fixture(scope="module")
def api(
    registry: Registry, serving_world: Path, tmp_path_factory: pytest.TempPathFactory, module_prefix: str
) -> Iterator[Api]:
    yield from build_api(registry, serving_world, tmp_path_factory.mktemp("behave"), module_prefix)


@pytest.fixture(scope="module")
def wide_api(
    registry: Registry, serving_world: Path, tmp_path_factory: pytest.TempPathFactory, module_prefix: str
) -> Iterator[Api]:
    """The service with room for every meal in one answer (the default diversity keeps the two best of a
    category, and the test champion never ranks the vegetarian meal among them)."""
    from recsys.data.network import load_network
    from recsys.pipeline import PipelineConfig
    from recsys.pipeline.pipeline import OfferPipeline

    def factory(bundle: Any, store: Any, enforcer: Any) -> Any:
        config = PipelineConfig(max_per_category=20)
        return OfferPipeline(bundle, store, cap_enforcer=enforcer, config=config, network=load_network())

    yield from build_api(
        registry, serving_world, tmp_path_factory.mktemp("wide"), f"{module_prefix}-w", factory
    )


def trip(
    dep: datetime, *, cabin: str = "Y", fare: str = "B", flight: str = "CA1405", **over: Any
) -> dict[str, Any]:
    t: dict[str, Any] = {
        "origin": "PEK",
        "destination": "CTU",
        "departure_time": dep.astimezone(BEIJING).isoformat(),
        "cabin": cabin,
        "fare_class": fare,
        "flight_number": flight,
        "seats_left": {"F": 2, "C": 4, "W": 6, "Y": 30},
    }
    t.update(over)
    return t


def trip_key(t: dict[str, Any]) -> str:
    return f"{t['flight_number']}|{t['departure_time'][:10]}"


def ids(body: Any) -> list[str]:
    return [o["offer_id"] for o in body["offers"]]


def reasons(body: Any) -> dict[str, str]:
    return {s["offer_id"]: s["reason"] for s in body["suppressed"] or []}


def test_dismissed_free_special_meal_stays_away_for_its_cooldown(wide_api: Api) -> None:
    api = wide_api
    api.clock.now = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
    dep = api.clock.now + timedelta(days=20)
    # a member to whom the free vegetarian meal is offered
    member = next(
        m
        for m in sorted(api.tiers)[:50]
        if VGML in ids(api.recommend(m, "post_booking", trip(dep), limit=50, families=["ancillary"]))
    )
    api.events(member, [{"offer_id": VGML}], "dismiss", "post_booking")
    for later in (timedelta(minutes=1), timedelta(days=3), timedelta(days=13, hours=23)):
        api.clock.now = datetime(2026, 12, 7, 1, 0, tzinfo=UTC) + later
        body = api.recommend(member, "post_booking", trip(dep), limit=50, families=["ancillary"], debug=True)
        assert VGML not in ids(body), later
        assert reasons(body).get(VGML, "").startswith("cooldown:dismiss"), later
    caps = api.client.get(f"/v1/members/{member}/caps").json()["state"]
    assert any(c["target"] == VGML for c in caps["cooldowns"])
    api.clock.now = datetime(2026, 12, 7, 1, 0, tzinfo=UTC) + timedelta(days=14, hours=1)
    assert VGML in ids(api.recommend(member, "post_booking", trip(dep), limit=50, families=["ancillary"]))


def test_upgrade_bought_on_one_flight_leaves_another_flights_upgrade(api: Api) -> None:
    api.clock.now = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
    flight_a = trip(api.clock.now + timedelta(days=5), flight="CA1405")
    flight_b = trip(api.clock.now + timedelta(days=9), flight="CA1407")
    upgrade = "UP-CAB-Y2W-01"
    member = next(
        m
        for m in sorted(api.tiers)[200:400]
        if upgrade in ids(api.recommend(m, "booking", flight_a, families=["upsell"], limit=10))
    )
    api.events(member, [{"offer_id": upgrade}], "purchase", "booking", trip_key=trip_key(flight_a))
    api.clock.now += timedelta(minutes=5)
    on_a = api.recommend(member, "booking", flight_a, families=["upsell"], limit=10, debug=True)
    assert upgrade not in ids(on_a) and reasons(on_a)[upgrade] == "already_purchased"
    assert not [o for o in on_a["offers"] if o["category"] == "cabin_upgrade"], "one upgrade per trip"
    on_b = api.recommend(member, "booking", flight_b, families=["upsell"], limit=10)
    assert upgrade in ids(on_b), on_b


def test_no_lounge_pass_to_business_passengers_or_gold_members(api: Api) -> None:
    """Except a pass the catalogue lists for their cabin by name: the shower-and-spa pass names Business
    and First, the plain pass only Economy and Premium Economy."""
    api.clock.now = datetime(2026, 12, 9, 1, 0, tzinfo=UTC)
    dep = api.clock.now + timedelta(hours=20)
    basic = api.member_of_tier({"basic", "silver"})
    business = api.recommend(
        basic, "check_in", trip(dep, cabin="C", fare="J"), limit=50, families=["ancillary"], debug=True
    )
    assert "AN-LNG-PASS-01" not in ids(business)
    assert reasons(business).get("AN-LNG-PASS-01") == "cabin_not_eligible"
    assert "AN-LNG-PASS-02" in ids(business), reasons(business).get("AN-LNG-PASS-02")
    gold = api.member_of_tier({"gold", "platinum"})
    body = api.recommend(gold, "check_in", trip(dep), limit=50, families=["ancillary"], debug=True)
    assert not PAID_PASSES & set(ids(body))
    assert {reasons(body).get(p) for p in PAID_PASSES} == {"lounge_entitled"}
    # an economy passenger without status may be sold one
    economy = api.recommend(basic, "check_in", trip(dep), limit=50, families=["ancillary"], debug=True)
    assert {reasons(economy).get(p) for p in PAID_PASSES} != {"lounge_entitled"}


def test_a_lounge_pass_bought_for_a_trip_hides_the_other_passes_for_it(api: Api) -> None:
    api.clock.now = datetime(2026, 12, 10, 1, 0, tzinfo=UTC)
    t = trip(api.clock.now + timedelta(hours=20))
    member = api.member_of_tier({"basic", "silver"}, skip=3)
    api.events(member, [{"offer_id": "AN-LNG-PASS-02"}], "purchase", "check_in", trip_key=trip_key(t))
    body = api.recommend(member, "check_in", t, limit=50, families=["ancillary"], debug=True)
    assert not PAID_PASSES & set(ids(body))
    assert reasons(body).get("AN-LNG-PASS-01") == "already_purchased"
    other = api.recommend(
        member, "check_in", trip(api.clock.now + timedelta(hours=30), flight="CA1409"), limit=50
    )
    assert reasons(other).get("AN-LNG-PASS-01") != "already_purchased"


@pytest.mark.parametrize(
    ("case", "departure"),
    [
        ("past", "2020-01-01T08:00:00+08:00"),
        ("year 9999", "9999-12-31T08:00:00+08:00"),
        ("beyond the horizon", "2028-01-01T08:00:00+08:00"),
        ("integer", 1893456000),
    ],
)
def test_bad_departures_are_named(api: Api, case: str, departure: Any) -> None:
    api.clock.now = datetime(2026, 12, 11, 1, 0, tzinfo=UTC)
    body = {
        "member_id": "M0000042",
        "placement": "booking",
        "trip": {**trip(api.clock.now + timedelta(days=3)), "departure_time": departure},
    }
    resp = api.client.post("/v1/recommendations", json=body)
    assert resp.status_code == 422, (case, resp.text)
    assert error_fields(resp) == ["trip.departure_time"], case


def test_a_trip_in_progress_gets_in_trip_offers_until_arrival(api: Api) -> None:
    api.clock.now = datetime(2026, 12, 12, 6, 0, tzinfo=UTC)
    dep = api.clock.now - timedelta(hours=1)
    t = trip(dep, arrival_time=(dep + timedelta(hours=3)).isoformat())
    member = api.member_of_tier({"basic", "silver"}, skip=5)
    body = api.recommend(member, "in_trip", t, limit=5, debug=True)
    assert body["offers"], body
    assert not any(r == "departed" for r in reasons(body).values())
    api.clock.now = dep + timedelta(hours=4)  # landed
    resp = api.client.post(
        "/v1/recommendations", json={"member_id": member, "placement": "in_trip", "trip": t}
    )
    assert resp.status_code == 422 and error_fields(resp) == ["trip.departure_time"]
    booking = api.client.post(
        "/v1/recommendations", json={"member_id": member, "placement": "booking", "trip": t}
    )
    assert booking.status_code == 422 and error_fields(booking) == ["trip.departure_time"]


def test_upgrades_without_seat_inventory_are_explained(api: Api) -> None:
    api.clock.now = datetime(2026, 12, 13, 1, 0, tzinfo=UTC)
    t = trip(api.clock.now + timedelta(days=4))
    del t["seats_left"]
    resp = api.client.post(
        "/v1/recommendations",
        json={
            "member_id": "M0000042",
            "placement": "booking",
            "trip": t,
            "limit": 50,
            "families": ["upsell"],
        },
    )
    body = resp.json()
    assert resp.status_code == 200 and not [o for o in body["offers"] if o["category"] == "cabin_upgrade"]
    assert body["withheld"]["needs_seats_left"] >= 1
    assert body["suppressed"] is None, "no debug token: the aggregate only"
    assert all(isinstance(v, int) for v in body["withheld"].values())


def test_a_members_day_with_default_caps_and_impressions_reported(api: Api) -> None:
    """Home, booking, check-in and in-trip on one day, every offer shown reported as an impression."""
    morning = datetime(2026, 12, 20, 8, 0, tzinfo=BEIJING)
    dep = morning.replace(hour=15)
    t = trip(dep, arrival_time=(dep + timedelta(hours=2, minutes=50)).isoformat())
    api.clock.now = morning
    # a member the home screen has something for (award offers need miles); asking spends no cap
    member = next(
        m
        for m, tier in sorted(api.tiers.items())[40:]
        if tier in ("basic", "silver") and api.recommend(m, "home", None, limit=4)["offers"]
    )
    steps = [
        ("home", morning, None),
        ("booking", morning + timedelta(minutes=10), t),
        ("check_in", morning + timedelta(hours=4), t),
        ("in_trip", dep + timedelta(minutes=40), t),
    ]
    seen: list[tuple[str, int, Any]] = []
    for placement, when, step_trip in steps:
        api.clock.now = when
        body = {"member_id": member, "placement": placement, "limit": 4}
        if step_trip is not None:
            body["trip"] = step_trip
        resp = api.client.post("/v1/recommendations", json=body)
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        seen.append((placement, len(answer["offers"]), answer["withheld"]))
        if len(answer["offers"]) < 4:  # a short answer says why
            assert answer["withheld"] is not None and sum(answer["withheld"].values()) > 0, answer
        if answer["offers"]:
            api.events(member, answer["offers"], "impression", placement)
    print("member's day:", seen)
    assert all(n > 0 for _, n, _ in seen), seen
    state = api.client.get(f"/v1/members/{member}/caps").json()["state"]
    daily = next(c for c in state["caps"] if c["cap"] == "member_daily")
    assert daily["count"] == sum(n for _, n, _ in seen), "impressions reported are what counts"
