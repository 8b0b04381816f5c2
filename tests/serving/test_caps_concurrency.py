"""Frequency caps hold under concurrency: 200 simultaneous requests for ONE member, spread over TWO uvicorn
worker processes sharing the real Redis (the shared standalone Redis and the tests' own Redis Cluster of three
masters and three replicas), never together serve more than any cap allows.

The service runs as real processes (``python -m serving`` with ``RECSYS_WORKERS=2``); the caps are the
shipped policy (``config/caps.yaml``, counted on serve), resolved for the member's tier, so the check is: for
every cap and every key it counts (offer, category, family, placement or the member), the offers served
across all 200 answers are at most the cap's limit. All requests land within seconds, inside every window of
the policy.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from bench.launcher import run_service
from tests.serving.conftest import RedisDeployment, Registry, serve_counting_policy, service_env
from tests.serving.test_api import rec_body, trip

N_REQUESTS = 200
# The key a cap counts under, by scope: read from the policy file here, not from the service's policy code.
SCOPE_KEY = {
    "member": lambda offer, placement: "-",
    "member_offer": lambda offer, placement: offer["offer_id"],
    "member_category": lambda offer, placement: offer["category"],
    "member_family": lambda offer, placement: offer["family"],
    "member_placement": lambda offer, placement: placement,
}
FILTERS = {"families": "family", "categories": "category", "offers": "offer_id"}


def counts_under(cap: dict[str, Any], offer: dict[str, Any], placement: str) -> bool:
    """Whether one served offer counts under ``cap`` (a cap of the policy file) by the cap's own filters."""
    if cap.get("placements") is not None and placement not in cap["placements"]:
        return False
    return all(cap.get(f) is None or offer[field] in cap[f] for f, field in FILTERS.items())


async def fire(url: str, bodies: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=N_REQUESTS, max_keepalive_connections=N_REQUESTS)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as http:
        return list(await asyncio.gather(*(http.post("/v1/recommendations", json=b) for b in bodies)))


@pytest.mark.slow
def test_200_concurrent_requests_on_two_workers_never_exceed_a_cap(
    registry: Registry, serving_world: Path, tmp_path: Path, redis_deployment: RedisDeployment
) -> None:
    members = pd.read_parquet(serving_world / "members.parquet")
    member = members.iloc[42]
    member_id, tier = str(member["member_id"]), str(member["tier"])
    offers = pd.read_parquet(serving_world / "offers.parquet").set_index("offer_id")
    # Counted on serve: the atomic check-and-record is what this test is about (the shipped file counts the
    # impressions the app reports).
    policy_path = serve_counting_policy(tmp_path)
    raw = yaml.safe_load(policy_path.read_text())
    overrides = ((raw.get("tiers") or {}).get(tier) or {}).get("caps") or {}
    caps = [{**c, **overrides.get(c["name"], {})} for c in raw["caps"]]
    assert {c["scope"] for c in caps} <= set(SCOPE_KEY), "every scope of the policy is known to this test"

    # A mix of screens so that every cap scope is exercised; trips depart in 2-6 days.
    bodies = []
    for i in range(N_REQUESTS):
        placement = ("home", "booking", "check_in", "post_booking", "in_trip")[i % 5]
        body = rec_body(member_id, placement=placement, limit=10)
        body["trip"] = trip(departure_time=(datetime.now(UTC) + timedelta(days=2 + i % 5)).isoformat())
        if placement == "home":
            del body["trip"]
        bodies.append(body)

    # A generous Redis timeout: this test is about atomic enforcement, not the outage policy (its own test).
    # The timeout bounds a call as a whole, waiting for its turn on a busy event loop included: 100 requests
    # landing at once on one worker of a loaded shared machine keep a loop busy for seconds.
    env = service_env(
        registry,
        serving_world,
        tmp_path,
        redis_deployment.prefix,
        RECSYS_REDIS_URL=redis_deployment.url,
        RECSYS_CAPPING_ENABLED="true",
        RECSYS_REDIS_TIMEOUT_MS="15000",
        RECSYS_CAPPING_POLICY_PATH=str(policy_path),
    )
    with run_service(env, workers=2, ready_timeout_s=240) as svc:
        # Both workers must be up (each loads the model) before the burst.
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=svc.url, timeout=10) as http:
            while time.monotonic() < deadline:
                if http.get("/readyz").status_code == 200 and len(svc.worker_pids()) >= 3:
                    break
                time.sleep(0.2)
        assert len(svc.worker_pids()) >= 3, "expected a supervisor and two worker processes"
        responses = asyncio.run(fire(svc.url, bodies))
        log = svc.log()
    assert [r.status_code for r in responses] == [200] * N_REQUESTS, log[-3000:]
    assert log.count("Application startup complete") >= 2, "two workers served"

    served = [(o, b["placement"]) for r, b in zip(responses, bodies, strict=True) for o in r.json()["offers"]]
    assert served, "the burst served something"
    degraded = {r.json()["cap_degraded"] for r in responses} - {None}
    assert not degraded, f"Redis answered throughout: {degraded}"
    exempt = raw.get("exempt") or {}
    counts: dict[str, Counter[str]] = {cap["name"]: Counter() for cap in caps}
    for offer, placement in served:
        if (
            offer["offer_id"] in (exempt.get("offers") or [])
            or offer["category"] in (exempt.get("categories") or [])
            or (exempt.get("honour_offer_flag", True) and bool(offers.loc[offer["offer_id"], "exempt"]))
        ):
            continue
        for cap in caps:
            if counts_under(cap, offer, placement):
                counts[cap["name"]][SCOPE_KEY[cap["scope"]](offer, placement)] += 1
    for cap in caps:
        worst = max(counts[cap["name"]].values(), default=0)
        assert worst <= cap["limit"], (
            f"cap {cap['name']} ({cap['scope']}, limit {cap['limit']}) exceeded: {counts[cap['name']]}"
        )
    member_cap = min((c["limit"] for c in caps if c["scope"] == "member"), default=None)
    assert member_cap is not None, "the shipped policy has a member-wide cap"
    total = sum(1 for o, _ in served if not offers.loc[o["offer_id"], "exempt"])
    assert total <= member_cap
