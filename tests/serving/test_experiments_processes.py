"""Assignment is sticky across service processes and restarts, and a started experiment reaches every
process without a restart (each polls the shared store)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bench.launcher import run_service
from recsys.experiments import assign_member
from recsys.experiments.model import from_json
from tests.serving.conftest import Registry, service_env
from tests.serving.test_api import rec_body

API_KEY = "test-admin-api-key-0123456789"
H = {"X-Api-Key": API_KEY}


def arms(url: str, members: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    with httpx.Client(base_url=url, timeout=20) as http:
        for m in members:
            resp = http.post("/v1/recommendations", json=rec_body(m))
            assert resp.status_code == 200, resp.text
            exp = resp.json()["experiment"]
            out[m] = exp["variant"] if exp else None
    return out


def wait_until_routed(url: str, member: str, timeout_s: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if arms(url, [member])[member] is not None:
            return
        time.sleep(0.25)
    raise AssertionError(f"{url} never routed {member} into the experiment")


@pytest.mark.slow
def test_assignment_stable_across_two_processes_and_a_restart(
    registry: Registry, serving_world: Path, tmp_path: Path, redis_prefix: str, world_members: list[str]
) -> None:
    env = service_env(
        registry,
        serving_world,
        tmp_path,
        redis_prefix,
        RECSYS_ADMIN_API_KEY=API_KEY,
        RECSYS_EXPERIMENTS_POLL_S="0.5",
        RECSYS_CAPPING_ENABLED="false",
    )
    members = world_members[:150]
    body = {
        "key": "sticky-processes",
        "placements": ["booking"],
        "variants": [
            {"key": "control", "weight": 0.6, "model": {"version": registry.first_version}},
            {"key": "treatment", "weight": 0.4, "model": {"alias": "champion"}, "objective": "acceptance"},
        ],
        "holdout": 0.1,
    }
    with run_service(env, ready_timeout_s=240) as a, run_service(env, ready_timeout_s=240) as b:
        with httpx.Client(base_url=a.url, timeout=20) as http:
            assert http.post("/v1/experiments", json=body, headers=H).status_code == 201
            started = http.post("/v1/experiments/sticky-processes/start", headers=H)
            assert started.status_code == 200, started.text
        exp = from_json(started.json())
        wait_until_routed(b.url, members[0])  # B took it up from the store, no restart
        first_a, first_b = arms(a.url, members), arms(b.url, members)
        again_a = arms(a.url, members)
    expected = {m: assign_member(exp, m).variant for m in members}  # type: ignore[union-attr]
    assert first_a == expected
    assert first_b == expected
    assert again_a == expected
    assert set(expected.values()) == {"control", "treatment", "holdout"}
    # A restarted process loads the running experiment from the store and assigns the same.
    with run_service(env, ready_timeout_s=240) as restarted:
        assert arms(restarted.url, members) == expected
