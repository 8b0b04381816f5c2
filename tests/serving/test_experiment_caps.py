"""An experiment arm's own cap policy sees the events of the offers it served (embedded caps and Redis)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from recsys.experiments import assign_member
from recsys.experiments.model import from_json
from serving.app import create_app
from tests.conftest import delete_prefix, unique_prefix
from tests.serving.conftest import Registry, make_settings, redis_or_fail
from tests.serving.test_api import rec_body

API_KEY = "test-admin-api-key-0123456789"
H = {"X-Api-Key": API_KEY}

# The arm's policy counts on events like the service's (config/caps.yaml) but shows one offer in any 24 hours,
# service messages included (a rolling window: a calendar day would end at the member's local midnight
# mid-test).
ARM_POLICY = """
version: arm-one-a-day
count_on: event
exempt: {honour_offer_flag: false}
caps:
  - {name: arm_daily, scope: member, limit: 1, window: 24h}
"""


@pytest.fixture(params=["memory", "redis"])
def client(
    request: pytest.FixtureRequest, registry: Registry, serving_world: Path, tmp_path: Path
) -> Iterator[TestClient]:
    prefix = None
    if request.param == "redis":
        redis_or_fail().close()
        prefix = unique_prefix("svc")
    settings = make_settings(
        registry, serving_world, tmp_path, prefix, admin_api_key=API_KEY, experiments_poll_s=0
    )
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            yield c
    finally:
        if prefix is not None:
            r = redis_or_fail()
            delete_prefix(r, prefix)
            r.close()


def impressions(member: str, offers: list[dict[str, Any]]) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "events": [
            {
                "event_id": uuid.uuid4().hex,
                "event_type": "impression",
                "member_id": member,
                "offer_id": o["offer_id"],
                "placement": "booking",
                "event_time": now,
                "tracking_token": o["tracking_token"],
            }
            for o in offers
        ]
    }


def test_an_arms_cap_policy_counts_the_impressions_it_served(
    client: TestClient, registry: Registry, world_members: list[str], tmp_path: Path
) -> None:
    policy = tmp_path / "arm-caps.yaml"
    policy.write_text(ARM_POLICY)
    body = {
        "key": "arm-caps",
        "placements": ["booking"],
        "variants": [
            {"key": "control", "weight": 0.5, "model": {"alias": "champion"}},
            {"key": "one-a-day", "weight": 0.5, "model": {"alias": "champion"}, "cap_policy": str(policy)},
        ],
    }
    assert client.post("/v1/experiments", json=body, headers=H).status_code == 201, body
    started = client.post("/v1/experiments/arm-caps/start", headers=H)
    assert started.status_code == 200, started.text
    exp = from_json(started.json())
    arm_of = {m: assign_member(exp, m) for m in world_members[:200]}
    capped = [m for m, a in arm_of.items() if a is not None and a.variant == "one-a-day"][:3]
    control = [m for m, a in arm_of.items() if a is not None and a.variant == "control"][:3]
    assert len(capped) == 3 and len(control) == 3

    for member in capped:
        first = client.post("/v1/recommendations", json=rec_body(member)).json()
        assert first["experiment"] == {"key": "arm-caps", "variant": "one-a-day"}
        assert len(first["offers"]) == 1, first  # the arm's cap of one, within the request
        resp = client.post("/v1/events", json=impressions(member, first["offers"]))
        assert resp.status_code == 200 and resp.json()["apply_errors"] == 0, resp.text
        # The impression is the arm's one offer in 24 hours: nothing more now.
        again = client.post("/v1/recommendations", json=rec_body(member)).json()
        assert again["offers"] == [], again

    for member in control:  # the service's policy (several offers a day) still applies to the control
        first = client.post("/v1/recommendations", json=rec_body(member)).json()
        assert first["experiment"] == {"key": "arm-caps", "variant": "control"}
        assert len(first["offers"]) > 1, first
        assert client.post("/v1/events", json=impressions(member, first["offers"][:1])).status_code == 200
        assert client.post("/v1/recommendations", json=rec_body(member)).json()["offers"], member
