"""The experiments admin API over the real app: the key, create/update/start/stop, refusals, routing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from recsys.experiments import assign_member
from recsys.experiments.model import from_json
from serving.app import create_app
from tests.serving.conftest import Registry, make_settings
from tests.serving.test_api import error_fields, rec_body

API_KEY = "test-admin-api-key-0123456789"
H = {"X-Api-Key": API_KEY}


@pytest.fixture(scope="module")
def exp_client(
    registry: Registry, serving_world: Path, tmp_path_factory: pytest.TempPathFactory, module_prefix: str
) -> Iterator[TestClient]:
    settings = make_settings(
        registry,
        serving_world,
        tmp_path_factory.mktemp("svc-exp"),
        module_prefix,
        admin_api_key=API_KEY,
        experiments_poll_s=0,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def definition(registry: Registry, key: str, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": key,
        "description": "popularity by value against popularity by acceptance",
        "placements": ["booking"],
        "variants": [
            {"key": "control", "weight": 0.5, "model": {"version": registry.first_version}},
            {
                "key": "acceptance",
                "weight": 0.5,
                "model": {"alias": "champion"},
                "objective": "acceptance",
            },
        ],
        "holdout": 0.1,
        "end": "2099-01-01T00:00:00Z",
    }
    body.update(over)
    return body


def keys(client: TestClient) -> list[str]:
    return [e["key"] for e in client.get("/v1/experiments", headers=H).json()["experiments"]]


ROUTES = [
    ("get", "/v1/experiments"),
    ("post", "/v1/experiments"),
    ("get", "/v1/experiments/x"),
    ("patch", "/v1/experiments/x"),
    ("post", "/v1/experiments/x/start"),
    ("post", "/v1/experiments/x/stop"),
    ("get", "/v1/experiments/x/report"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_admin_without_the_key_is_401(exp_client: TestClient, method: str, path: str) -> None:
    for headers in ({}, {"X-Api-Key": "wrong-key-0123456789"}, {"X-Api-Key": API_KEY + "x"}):
        kwargs: dict[str, Any] = {"headers": headers}
        if method in ("post", "patch"):
            kwargs["json"] = {}
        resp = getattr(exp_client, method)(path, **kwargs)
        assert resp.status_code == 401, (path, headers, resp.text)
        assert error_fields(resp) == ["x-api-key"]


def test_admin_api_disabled_without_a_configured_key(
    registry: Registry, serving_world: Path, tmp_path: Path
) -> None:
    settings = make_settings(
        registry, serving_world, tmp_path, None, capping_enabled=False, admin_api_key=None
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        resp = c.get("/v1/experiments", headers=H)
        assert resp.status_code == 401
        assert "RECSYS_ADMIN_API_KEY" in resp.json()["error"]["message"]


def test_create_start_route_stop(
    exp_client: TestClient, registry: Registry, world_members: list[str]
) -> None:
    body = definition(registry, "route-test")
    resp = exp_client.post("/v1/experiments", json=body, headers=H)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["status"] == "draft" and created["revision"] == 1
    # A draft routes nobody.
    r = exp_client.post("/v1/recommendations", json=rec_body(world_members[0])).json()
    assert r["experiment"] is None

    started = exp_client.post("/v1/experiments/route-test/start", headers=H)
    assert started.status_code == 200, started.text
    assert started.json()["status"] == "running"
    assert started.json()["variants"][1]["model"]["pinned_version"] == registry.first_version
    exp = from_json(started.json())
    services = exp_client.app.state.services  # type: ignore[attr-defined]
    arms = services.experiments.snapshot.arms
    # Both arms serve the version the service already holds: one bundle in memory, two pipelines.
    assert arms[("route-test", "control")].bundle is services.holder.current.bundle
    assert arms[("route-test", "acceptance")].bundle is services.holder.current.bundle
    assert arms[("route-test", "acceptance")].pipeline.config.objective == "acceptance"
    assert arms[("route-test", "control")].pipeline.config.objective == "expected_value"
    seen: dict[str, int] = {}
    for member in world_members[:60]:
        r = exp_client.post("/v1/recommendations", json=rec_body(member)).json()
        want = assign_member(exp, member)
        assert want is not None  # traffic 1.0: everyone is in
        assert r["experiment"] == {"key": "route-test", "variant": want.variant}
        seen[want.variant] = seen.get(want.variant, 0) + 1
        if want.variant == "holdout":
            assert r["offers"] == []
        elif want.variant == "control":
            assert r["model"]["version"] == registry.first_version
    assert set(seen) == {"control", "acceptance", "holdout"}, seen
    # The other placement is not in the experiment.
    r = exp_client.post("/v1/recommendations", json=rec_body(world_members[0], placement="home", trip=None))
    assert r.json()["experiment"] is None

    stopped = exp_client.post("/v1/experiments/route-test/stop", headers=H)
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    r = exp_client.post("/v1/recommendations", json=rec_body(world_members[0])).json()
    assert r["experiment"] is None
    # A stopped experiment never runs again.
    again = exp_client.post("/v1/experiments/route-test/start", headers=H)
    assert again.status_code == 409


BAD_INPUT = [
    (
        "weights not summing to 1",
        {
            "variants": [
                {"key": "a", "weight": 0.5, "model": {"alias": "champion"}},
                {"key": "b", "weight": 0.4, "model": {"alias": "champion"}},
            ]
        },
        422,
        "variants.weight",
    ),
    (
        "unknown alias",
        {
            "variants": [
                {"key": "a", "weight": 0.5, "model": {"alias": "champion"}},
                {"key": "b", "weight": 0.5, "model": {"alias": "no-such-alias"}},
            ]
        },
        422,
        "variants[1].model",
    ),
    (
        "unknown version",
        {
            "variants": [
                {"key": "a", "weight": 0.5, "model": {"version": "999"}},
                {"key": "b", "weight": 0.5, "model": {"alias": "champion"}},
            ]
        },
        422,
        "variants[0].model",
    ),
    (
        "unknown model name",
        {
            "variants": [
                {"key": "a", "weight": 0.5, "model": {"name": "no-such-model", "alias": "champion"}},
                {"key": "b", "weight": 0.5, "model": {"alias": "champion"}},
            ]
        },
        422,
        "variants[0].model",
    ),
    (
        "missing cap policy file",
        {
            "variants": [
                {"key": "a", "weight": 0.5, "model": {"alias": "champion"}},
                {"key": "b", "weight": 0.5, "model": {"alias": "champion"}, "cap_policy": "/nope/caps.yaml"},
            ]
        },
        422,
        "variants[1].cap_policy",
    ),
    (
        "popularity baseline that is not a popularity model",
        {"holdout_serving": "popularity", "holdout_model": {"alias": "no-such-alias"}},
        422,
        "holdout_model",
    ),
    ("end before start", {"start": "2099-02-01T00:00:00Z", "end": "2099-01-01T00:00:00Z"}, 422, "end"),
    ("holdout above half", {"holdout": 0.6}, 422, "holdout"),
    ("unknown placement", {"placements": ["lounge"]}, 422, "placements[0]"),
]


@pytest.mark.parametrize(("name", "change", "status", "field"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_is_refused_and_leaves_nothing(
    exp_client: TestClient, registry: Registry, name: str, change: dict[str, Any], status: int, field: str
) -> None:
    key = "bad-" + name.replace(" ", "-")
    resp = exp_client.post("/v1/experiments", json=definition(registry, key, **change), headers=H)
    assert resp.status_code == status, resp.text
    assert field in error_fields(resp), resp.json()
    assert key not in keys(exp_client)
    assert exp_client.get(f"/v1/experiments/{key}", headers=H).status_code == 404


@pytest.mark.parametrize("action", ["get", "start", "stop", "report", "patch"])
def test_unknown_experiment_is_404(exp_client: TestClient, action: str) -> None:
    if action == "get":
        resp = exp_client.get("/v1/experiments/nope", headers=H)
    elif action == "report":
        resp = exp_client.get("/v1/experiments/nope/report", headers=H)
    elif action == "patch":
        resp = exp_client.patch("/v1/experiments/nope", json={"description": "x"}, headers=H)
    else:
        resp = exp_client.post(f"/v1/experiments/nope/{action}", headers=H)
    assert resp.status_code == 404, resp.text
    assert "nope" in resp.json()["error"]["message"]


def test_overlap_and_reweight_refused(exp_client: TestClient, registry: Registry) -> None:
    a = definition(registry, "overlap-a", placements=["check_in", "in_trip"])
    b = definition(registry, "overlap-b", placements=["in_trip"])
    c = definition(registry, "overlap-c", placements=["in_trip"], namespace_range=[0.5, 1.0])
    for body in (a, b, c):
        assert exp_client.post("/v1/experiments", json=body, headers=H).status_code == 201
    assert exp_client.post("/v1/experiments/overlap-a/start", headers=H).status_code == 200
    try:
        resp = exp_client.post("/v1/experiments/overlap-b/start", headers=H)
        assert resp.status_code == 409, resp.text
        assert "overlap-a" in resp.json()["error"]["message"]
        assert exp_client.get("/v1/experiments/overlap-b", headers=H).json()["status"] == "draft"
        resp = exp_client.post("/v1/experiments/overlap-c/start", headers=H)
        assert resp.status_code == 409  # same namespace, ranges overlap ([0, 1) and [0.5, 1))

        before = exp_client.get("/v1/experiments/overlap-a", headers=H).json()
        reweight = [dict(v) for v in a["variants"]]
        reweight[0]["weight"], reweight[1]["weight"] = 0.7, 0.3
        resp = exp_client.patch("/v1/experiments/overlap-a", json={"variants": reweight}, headers=H)
        assert resp.status_code == 409, resp.text
        assert error_fields(resp) == ["variants"]
        assert exp_client.get("/v1/experiments/overlap-a", headers=H).json() == before
        # A change that keeps the split is taken.
        resp = exp_client.patch("/v1/experiments/overlap-a", json={"description": "now described"}, headers=H)
        assert resp.status_code == 200 and resp.json()["description"] == "now described"
        assert resp.json()["revision"] == before["revision"] + 1
    finally:
        exp_client.post("/v1/experiments/overlap-a/stop", headers=H)
    # With a stopped, the other can start.
    assert exp_client.post("/v1/experiments/overlap-b/start", headers=H).status_code == 200
    assert exp_client.post("/v1/experiments/overlap-b/stop", headers=H).status_code == 200


def test_report_shape(exp_client: TestClient, registry: Registry) -> None:
    body = definition(registry, "report-shape", placements=["post_booking"])
    assert exp_client.post("/v1/experiments", json=body, headers=H).status_code == 201
    resp = exp_client.get("/v1/experiments/report-shape/report", headers=H)
    assert resp.status_code == 200, resp.text
    report = resp.json()
    assert {"experiment", "arms", "metrics", "srm", "guardrails", "timeline", "offline_estimate"} <= set(
        report
    )
    assert [a["variant"] for a in report["arms"]] == ["control", "acceptance", "holdout"]
    assert report["metrics"][0]["metric"] == "conversion" and report["metrics"][0]["primary"]


def test_popularity_baseline_and_holdout_served_popularity(
    exp_client: TestClient, registry: Registry, world_members: list[str]
) -> None:
    pop = {"version": registry.first_version}  # the session's registry holds a popularity model
    body = definition(
        registry,
        "pop-holdout",
        placements=["home"],
        variants=[
            {"key": "popularity", "weight": 0.5, "model": pop, "baseline": "popularity"},
            {"key": "acceptance", "weight": 0.5, "model": pop, "objective": "acceptance"},
        ],
        holdout=0.3,
        holdout_serving="popularity",
        holdout_model=pop,
    )
    resp = exp_client.post("/v1/experiments", json=body, headers=H)
    assert resp.status_code == 201, resp.text
    assert exp_client.post("/v1/experiments/pop-holdout/start", headers=H).status_code == 200
    try:
        served = set()
        for member in world_members[:40]:
            r = exp_client.post(
                "/v1/recommendations", json=rec_body(member, placement="home", trip=None)
            ).json()
            served.add(r["experiment"]["variant"])
            assert r["model"]["version"] == registry.first_version
        assert "holdout" in served
    finally:
        exp_client.post("/v1/experiments/pop-holdout/stop", headers=H)
