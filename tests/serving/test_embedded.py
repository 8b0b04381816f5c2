"""The embedded defaults (what `make run` uses): no Redis — in-process member store and cap counters, a SQLite
event log — serve the same API."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.serving.conftest import Registry, make_settings, serve_counting_policy
from tests.serving.test_api import rec_body


def test_embedded_stores_serve_the_api(
    registry: Registry,
    serving_world: Path,
    tmp_path: Path,
    world_members: list[str],
    world_offers: pd.DataFrame,
) -> None:
    settings = make_settings(
        registry, serving_world, tmp_path, None, capping_policy_path=serve_counting_policy(tmp_path)
    )
    assert settings.redis_url is None
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready" and "redis" not in ready["checks"]
        member = world_members[30]
        profile = client.get(f"/v1/members/{member}/profile")
        assert profile.status_code == 200 and profile.json()["member_id"] == member
        first = client.post("/v1/recommendations", json=rec_body(member, placement="post_booking", limit=5))
        assert first.status_code == 200 and first.json()["offers"]
        caps = client.get(f"/v1/members/{member}/caps").json()["state"]
        assert caps["store"] == "memory"
        # The same (non-exempt) offer is not shown twice within the per-offer window: the embedded counters
        # cap too. Exempt offers (service messages) are never capped.
        exempt = set(world_offers.loc[world_offers["exempt"].astype(bool), "offer_id"])
        shown = {o["offer_id"] for o in first.json()["offers"]} - exempt
        assert shown
        again = client.post("/v1/recommendations", json=rec_body(member, placement="post_booking", limit=5))
        assert shown.isdisjoint(o["offer_id"] for o in again.json()["offers"])
    assert (tmp_path / "events.db").exists()
