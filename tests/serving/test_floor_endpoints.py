"""The benchmark's floor endpoints (``bench/floor_app.py``): the product has none; in the benchmark's app the
recommend I/O floor really reads the member store and checks and records caps in Redis (so
``make bench-serve``'s upper bound is honest)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from bench.floor_app import floor_app
from tests.serving.conftest import Registry, make_settings, serve_counting_policy
from tests.serving.test_api import rec_body

IO_FLOOR = "/v1/_floor/recommend-io"
VALIDATE_FLOOR = "/v1/_floor/recommend-validate"


@pytest.fixture(scope="module")
def floor_client(
    registry: Registry, serving_world: Path, tmp_path_factory: pytest.TempPathFactory, module_prefix: str
) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("svc-floor")
    settings = make_settings(
        registry,
        serving_world,
        tmp,
        module_prefix,
        capping_policy_path=serve_counting_policy(tmp),
    )
    with TestClient(floor_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_the_product_has_no_floor_endpoints(client: TestClient, world_members: list[str]) -> None:
    assert client.get("/v1/_floor").status_code == 404
    assert client.post(IO_FLOOR, json=rec_body(world_members[0])).status_code == 404
    assert client.post(VALIDATE_FLOOR, json=rec_body(world_members[0])).status_code == 404


def test_io_floor_checks_and_records_caps_in_redis(
    floor_client: TestClient, world_members: list[str], world_offers: pd.DataFrame
) -> None:
    exempt = set(world_offers.loc[world_offers["exempt"].astype(bool), "offer_id"])
    member = world_members[11]
    first = floor_client.post(IO_FLOOR, json=rec_body(member, limit=3))
    assert first.status_code == 200, first.text
    body = first.json()
    assert len(body["offers"]) == 3
    selected = body["selected"]
    assert 0 < len(selected) <= 3
    assert set(selected) - exempt, "at least one capped (non-exempt) offer was selected"
    state = floor_client.get(f"/v1/members/{member}/caps").json()["state"]
    for offer_id in set(selected) - exempt:
        assert offer_id in str(state), f"{offer_id} was recorded against the member's caps"
    # the policy shows the same offer at most once in 7 days: a second call cannot select them again
    again = floor_client.post(IO_FLOOR, json=rec_body(member, limit=3)).json()["selected"]
    assert not (set(again) & set(selected)) - exempt


@pytest.mark.parametrize("path", [IO_FLOOR, VALIDATE_FLOOR])
def test_floors_validate_the_body_like_recommend(
    floor_client: TestClient, world_members: list[str], path: str
) -> None:
    resp = floor_client.post(path, json=rec_body(world_members[0], placement="lobby"))
    assert resp.status_code == 422
    assert "placement" in resp.text
    unknown = rec_body(world_members[0])
    unknown["trip"]["origin"] = "QQQ"
    resp = floor_client.post(path, json=unknown)
    assert resp.status_code == 422 and "trip.origin" in resp.text
    resp = floor_client.post(path, content=b"member_id=M1", headers={"content-type": "text/plain"})
    assert resp.status_code == 415


def test_validate_floor_touches_no_store(floor_client: TestClient, world_members: list[str]) -> None:
    """It answers ``limit`` floor offers and records nothing: the member's caps stay as they were."""
    member = world_members[23]
    before = floor_client.get(f"/v1/members/{member}/caps").json()["state"]
    resp = floor_client.post(VALIDATE_FLOOR, json=rec_body(member, limit=4))
    assert resp.status_code == 200, resp.text
    assert [o["rank"] for o in resp.json()["offers"]] == [1, 2, 3, 4]
    assert floor_client.get(f"/v1/members/{member}/caps").json()["state"] == before
