"""The pipeline with a real (popularity) model bundle trained on the ``small_world`` fixture, real member
profiles, the shipped network, and — for the Redis paths — the real Redis member store and cap enforcer."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis

from recsys.capping.api import build_enforcer, load_policy
from recsys.features.profiles import ProfileCol, build_member_profiles
from recsys.models.bundle import ModelBundle
from recsys.pipeline import OfferPipeline, PipelineConfig, RecommendRequest, Stage, TripContext
from recsys.pipeline.eligibility import EligibilityContext, check
from recsys.pipeline.explain import ExplainContext, MemberFacts, explain
from recsys.schema import FARE_CLASSES, Cabin, next_cabin
from recsys.stores.member_store import EmbeddedMemberStore, RedisMemberStore, publish_profiles
from recsys.stores.redis import RedisCallPolicy, RedisClients, RedisConfig
from tests.conftest import delete_prefix, redis_or_fail, unique_prefix

REDIS_URL = "redis://127.0.0.1:6379/14"
POLICY_FILE = Path(__file__).resolve().parents[2] / "config" / "caps.yaml"
PLACEMENTS = ("home", "booking", "check_in", "post_booking", "in_trip")
HOURS_BEFORE = {"booking": 400.0, "post_booking": 90.0, "check_in": 20.0, "in_trip": 1.5}


@dataclass
class World:
    bundle: ModelBundle
    profiles: pd.DataFrame
    store: EmbeddedMemberStore
    pipeline: OfferPipeline
    now: datetime


@pytest.fixture(scope="module")
def world(small_world: Path) -> World:
    bundle = ModelBundle.train(small_world, "popularity", seed=7)
    profiles = build_member_profiles(small_world)
    store = EmbeddedMemberStore()
    publish_profiles(store, profiles, bundle, "v1")
    as_of = pd.Timestamp(profiles[ProfileCol.AS_OF].iloc[0]).tz_localize(UTC).to_pydatetime()
    return World(bundle, profiles, store, OfferPipeline(bundle, store), as_of + timedelta(hours=8))


def pek_ctu_economy(now: datetime) -> TripContext:
    """CA4101 PEK-CTU in economy (fare class M) departing 60 hours after ``now``, 2 seats left in W."""
    return TripContext(
        origin="PEK",
        destination="CTU",
        departure_time=now + timedelta(hours=60),
        cabin="Y",
        fare_class="M",
        flight_number="CA4101",
        seats_left={"W": 2},
    )


def make_requests(w: World, n: int, seed: int) -> list[RecommendRequest]:
    """Requests over many members (and some brand-new ones), every placement, trips from their profiles."""
    rng = np.random.default_rng(seed)
    rows = w.profiles.to_dict("records")
    out = []
    for i in range(n):
        new = rng.random() < 0.05
        prof = rows[int(rng.integers(len(rows)))]
        member_id = f"NEW-{i}" if new else prof[ProfileCol.MEMBER_ID]
        placement = PLACEMENTS[int(rng.integers(len(PLACEMENTS)))]
        trip = None
        if placement != "home":
            origin = prof[ProfileCol.HOME_AIRPORT]
            origin = origin if origin not in ("unknown", "none") else "PEK"
            dest = prof[ProfileCol.TOP_DESTINATION]
            dest = dest if dest not in ("none", origin) else ("CTU" if origin != "CTU" else "PEK")
            cabin = ("Y", "Y", "Y", "W", "C", "F")[int(rng.integers(6))]
            classes = FARE_CLASSES[Cabin(cabin)]
            trip = TripContext(
                origin=origin,
                destination=dest,
                departure_time=w.now
                + timedelta(hours=HOURS_BEFORE[placement] * float(rng.uniform(0.5, 1.3))),
                cabin=cabin,
                fare_class=classes[int(rng.integers(len(classes)))],
                flight_number=f"CA{int(rng.integers(1000, 9999))}",
                seats_left={
                    "W": int(rng.integers(0, 4)),
                    "C": int(rng.integers(0, 4)),
                    "F": int(rng.integers(0, 3)),
                },
            )
        out.append(RecommendRequest(member_id=member_id, placement=placement, trip=trip, now=w.now, limit=8))
    return out


def test_every_returned_offer_is_eligible_explained_and_diverse(world: World) -> None:
    cfg = world.pipeline.config
    served = Counter()
    for req in make_requests(world, 400, seed=1):
        res = world.pipeline.recommend(req)
        assert len(res.offers) <= req.limit
        assert [o.rank for o in res.offers] == list(range(1, len(res.offers) + 1))
        rec = world.store.get(req.member_id)
        facts = MemberFacts.from_profile(rec.profile if rec else None)
        ctx = EligibilityContext(
            placement=req.placement,
            now=req.now,
            tier=facts.tier,
            miles_balance=facts.miles_balance,
            trip=req.trip,
            home_airport=facts.home_airport,
            lounge_airports=world.pipeline.lounge_airports,
        )
        cats = Counter(o.category for o in res.offers)
        assert max(cats.values(), default=0) <= cfg.max_per_category
        returned = {o.offer_id for o in res.offers}
        assert not returned & {s.offer_id for s in res.suppressed}
        for o in res.offers:
            entry = world.pipeline.offer(o.offer_id)
            assert entry is not None and check(entry, ctx) is None, (req, o.offer_id)
            assert o.reasons and all(isinstance(r, str) and r for r in o.reasons)
            assert 0.0 <= o.acceptance_probability <= 1.0 and o.expected_value >= 0.0
            assert o.expires_at > req.now
            if entry.is_upgrade and req.trip is not None:
                assert entry.target_cabin == next_cabin(req.trip.booked_cabin or "F")
                assert (req.trip.seats_left or {}).get(entry.target_cabin, 0) > 0
        served[(req.placement, bool(res.offers))] += 1
    # every placement serves offers to most requests
    for placement in PLACEMENTS:
        assert served[(placement, True)] > served[(placement, False)], served


def test_brand_new_member_gets_offers_from_the_cold_start_path(world: World) -> None:
    trip = pek_ctu_economy(world.now)
    res = world.pipeline.recommend(
        RecommendRequest(member_id="NEW-MEMBER-1", placement="post_booking", trip=trip, now=world.now)
    )
    assert res.cold_start and res.offers
    known = next(m for m in world.profiles[ProfileCol.MEMBER_ID] if world.bundle.is_known(m))
    res = world.pipeline.recommend(
        RecommendRequest(member_id=known, placement="post_booking", trip=trip, now=world.now)
    )
    assert not res.cold_start and res.offers


def test_explanations_quote_the_members_profile(world: World) -> None:
    p = world.profiles
    row = p[(p[ProfileCol.TOP_ROUTE_CABIN] == "C") & (p[ProfileCol.TOP_ROUTE_CABIN_FLIGHTS] >= 2)].iloc[0]
    facts = MemberFacts.from_profile(world.store.get(row[ProfileCol.MEMBER_ID]).profile)  # type: ignore[union-attr]
    origin, dest = row[ProfileCol.TOP_ROUTE].split("-")
    upgrade = next(o for o in world.pipeline.catalogue.offers if o.is_upgrade and o.target_cabin == "C")
    trip = TripContext(
        origin=origin,
        destination=dest,
        departure_time=world.now + timedelta(hours=50),
        cabin="W",
        fare_class="G",
        seats_left={"C": 3},
    )
    reasons = explain(upgrade, facts, ExplainContext(trip=trip, now=world.now, city=world.pipeline.city))
    n = int(row[ProfileCol.TOP_ROUTE_CABIN_FLIGHTS])
    times = "twice" if n == 2 else f"{n} times"
    assert f"You flew {origin}–{dest} in Business {times} in the last 12 months" in reasons
    assert "Seats left in Business: 3" in reasons
    award = next(o for o in world.pipeline.catalogue.offers if o.category == "award_flight" and o.price_miles)
    rich = p[p[ProfileCol.MILES_BALANCE] >= (award.price_miles or 0)].iloc[0]
    rich_facts = MemberFacts.from_profile(world.store.get(rich[ProfileCol.MEMBER_ID]).profile)  # type: ignore[union-attr]
    text = explain(award, rich_facts, ExplainContext(trip=None, now=world.now, city=world.pipeline.city))
    assert f"You have {int(rich[ProfileCol.MILES_BALANCE]):,} miles — enough for" in text[0]


def test_cpu_cost_per_request(world: World) -> None:
    """CPU time per request over many members (wall time depends on the shared machine's load)."""
    reqs = make_requests(world, 1500, seed=2)
    for r in reqs[:100]:
        world.pipeline.recommend(r)
    cpu = []
    for r in reqs:
        t = time.thread_time()
        world.pipeline.recommend(r)
        cpu.append((time.thread_time() - t) * 1e3)
    p50, p99 = np.percentile(cpu, [50, 99])
    print(f"pipeline CPU per request: p50 {p50:.2f} ms, p99 {p99:.2f} ms over {len(cpu)} requests")
    assert p99 < 10.0


# -- Redis ---------------------------------------------------------------------------------------------------


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    client = redis_or_fail(REDIS_URL)
    prefix = unique_prefix("pl")
    yield prefix
    delete_prefix(client, prefix)  # the member store's keys and the caps' (``<prefix>-caps``)
    client.close()


class _CountingRedis(redis.Redis):
    """The real client, counting the commands it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]))
        return super().execute_command(*args, **options)


@pytest.mark.parametrize("count_on", ["event", "serve"])
def test_a_request_is_one_redis_round_trip_for_profile_and_caps(
    world: World, redis_prefix: str, count_on: str
) -> None:
    # a generous timeout: this test counts calls, not latency (the shared test machine is busy)
    clients = RedisClients(RedisConfig(REDIS_URL, policy=RedisCallPolicy(timeout_ms=2000)))
    counting = _CountingRedis.from_url(REDIS_URL, socket_timeout=2)
    clients._sync = counting  # the real client, instrumented
    store = RedisMemberStore(clients, prefix=redis_prefix, pointer_refresh_s=3600)
    publish_profiles(store, world.profiles, world.bundle, "1")
    policy = load_policy(POLICY_FILE).model_copy(update={"count_on": count_on})
    caps = build_enforcer(REDIS_URL, policy, key_prefix=f"{redis_prefix}-caps", clients=clients)
    try:
        pipe = OfferPipeline(world.bundle, store, cap_enforcer=caps, config=PipelineConfig())
        members = world.profiles[ProfileCol.MEMBER_ID].tolist()
        trip = pek_ctu_economy(world.now)
        warm = RecommendRequest(member_id=members[0], placement="booking", trip=trip, now=world.now, limit=3)
        pipe.recommend(warm)  # loads the scripts (NOSCRIPT) once
        for i in range(1, 4):  # a member each: every request has offers to record
            req = RecommendRequest(
                member_id=members[i], placement="booking", trip=trip, now=world.now, limit=3
            )
            counting.commands.clear()
            res = pipe.recommend(req)
            assert res.offers and res.cap_degraded is None and res.store_degraded is None
            # event: the member read brings the cap state, nothing else; serve: plus the commit of the picks
            expected = ["EVALSHA"] if count_on == "event" else ["EVALSHA", "EVALSHA"]
            assert counting.commands == expected, (i, counting.commands)
        # Every key the two stores wrote expires (the member records, the pointer, the cap hashes).
        check = redis_or_fail(REDIS_URL)
        keys = list(check.scan_iter(match=f"{redis_prefix}*", count=1000))
        assert any(b"-caps:{" in k for k in keys) == (count_on == "serve")
        assert keys and [k for k in keys if check.pttl(k) < 0] == []
        check.close()
    finally:
        clients.close()


def test_with_redis_member_store_and_redis_caps(world: World, redis_prefix: str) -> None:
    # a generous timeout: this test is about the caps stage, not outages (the shared test machine is busy)
    clients = RedisClients(RedisConfig(REDIS_URL, policy=RedisCallPolicy(timeout_ms=2000)))
    store = RedisMemberStore(clients, prefix=redis_prefix)
    publish_profiles(store, world.profiles, world.bundle, "1")
    # Counted on serve: this test is about the atomic check-and-record in Redis (the file counts events).
    policy = load_policy(POLICY_FILE).model_copy(update={"count_on": "serve"})
    caps = build_enforcer(REDIS_URL, policy, key_prefix=f"{redis_prefix}-caps", clients=clients)
    try:
        pipe = OfferPipeline(world.bundle, store, cap_enforcer=caps, config=PipelineConfig())
        member = world.profiles[ProfileCol.MEMBER_ID].iloc[0]
        tier = world.profiles[ProfileCol.TIER].iloc[0]
        trip = pek_ctu_economy(world.now)
        shown = 0
        capped: Counter[str] = Counter()
        for i in range(20):
            placement = ("post_booking", "home", "booking")[i % 3]
            req = RecommendRequest(
                member_id=member,
                placement=placement,
                trip=trip,
                now=world.now + timedelta(minutes=i),
                limit=5,
            )
            res = pipe.recommend(req)
            assert res.cap_degraded is None
            # exempt service offers (free special meals) are neither capped nor counted
            shown += sum(
                1 for o in res.offers if not pipe.catalogue[pipe.catalogue.index_of[o.offer_id]].exempt
            )
            capped.update(s.reason for s in res.suppressed if s.stage == Stage.CAPS)
        cap = policy.resolved(tier).cap("member_daily")
        assert cap is not None
        daily = cap.limit
        assert 0 < shown <= daily  # member_daily cap of config/caps.yaml, counted in Redis
        assert any(r.startswith("cap:") for r in capped)
    finally:
        clients.close()


def test_the_member_stores_embedding_is_used_only_for_the_model_version_it_was_published_for(
    small_world: Path, world: World
) -> None:
    """``recsys members publish`` stores each member's vector under a version named after the model version;
    the pipeline scores with the stored vector when that version matches the bundle it serves, else with the
    bundle's own. Here member X's stored vector is member Y's, so the answer shows which one was used."""
    from recsys.stores.member_store import model_version_prefix

    bundle = ModelBundle.train(small_world, "als", {"model": {"factors": 8, "iterations": 3}}, seed=7)
    bundle.registered_as = ("offers", "3")
    known = [m for m in world.profiles[ProfileCol.MEMBER_ID].astype(str) if bundle.is_known(m)]
    vectors = {m: bundle.member_embedding(m) for m in known[:50]}
    x = known[0]
    y = next(m for m in known[1:50] if not np.allclose(vectors[m], vectors[x], atol=1e-3))
    offer_ids = [str(o) for o in bundle.offers["offer_id"]]

    def served_scores(version: str) -> dict[str, float]:
        store = EmbeddedMemberStore()
        store.publish(world.profiles, {x: vectors[y]}, version)
        result = OfferPipeline(bundle, store).recommend(
            RecommendRequest(member_id=x, placement="home", now=world.now, limit=20)
        )
        assert result.offers and not result.cold_start
        return {o.offer_id: o.score for o in result.offers}

    def bundle_scores(member: str) -> dict[str, float]:
        return dict(zip(offer_ids, bundle.for_member(member).score(offer_ids)[0].tolist(), strict=True))

    as_y, as_x = bundle_scores(y), bundle_scores(x)
    matching = served_scores(model_version_prefix("offers", "3") + "20261122T000000Z")
    assert all(matching[o] == pytest.approx(as_y[o], abs=1e-5) for o in matching)
    assert any(abs(matching[o] - as_x[o]) > 1e-3 for o in matching)
    # published for another model version: ignored, the bundle's own vector of X serves
    other = served_scores(model_version_prefix("offers", "2") + "20261122T000000Z")
    assert all(other[o] == pytest.approx(as_x[o], abs=1e-5) for o in other)
    # an embedding of the wrong dimension is ignored too (logged), never an error
    store = EmbeddedMemberStore()
    store.publish(
        world.profiles, {x: np.ones(3, dtype=np.float32)}, model_version_prefix("offers", "3") + "t"
    )
    res = OfferPipeline(bundle, store).recommend(
        RecommendRequest(member_id=x, placement="home", now=world.now)
    )
    assert res.offers
