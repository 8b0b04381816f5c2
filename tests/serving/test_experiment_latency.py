"""The p99 latency guardrail covers every worker of the service and survives a restart: two apps (two
workers' runtimes) share one experiment store; a third, started after both stopped, reports the same."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fastapi.testclient import TestClient

from recsys.experiments import ExperimentStore
from serving.app import create_app
from serving.config import Settings
from tests.serving.conftest import Registry, make_settings
from tests.serving.test_api import rec_body

API_KEY = "test-admin-api-key-0123456789"
H = {"X-Api-Key": API_KEY}


def p99s(client: TestClient, key: str) -> dict[str, float | None]:
    report = client.get(f"/v1/experiments/{key}/report", headers=H)
    assert report.status_code == 200, report.text
    return {g["variant"]: g["p99_latency_ms"] for g in report.json()["guardrails"]}


def serve(client: TestClient, members: list[str]) -> Counter[str]:
    arms: Counter[str] = Counter()
    for member in members:
        answer = client.post("/v1/recommendations", json=rec_body(member)).json()
        arms[answer["experiment"]["variant"]] += 1
    return arms


def test_p99_guardrail_is_shared_by_workers_and_durable(
    registry: Registry, serving_world: Path, world_members: list[str], tmp_path: Path
) -> None:
    settings: Settings = make_settings(
        registry,
        serving_world,
        tmp_path,
        None,
        admin_api_key=API_KEY,
        experiments_poll_s=0,
        capping_enabled=False,
    )
    body = {
        "key": "latency",
        "placements": ["booking"],
        "variants": [
            {"key": "control", "weight": 0.5, "model": {"alias": "champion"}},
            {"key": "acc", "weight": 0.5, "model": {"alias": "champion"}, "objective": "acceptance"},
        ],
    }
    served: Counter[str] = Counter()
    store = ExperimentStore(settings.database_url)  # what the workers stored, read on its own
    with TestClient(create_app(settings), raise_server_exceptions=False) as a:
        assert a.post("/v1/experiments", json=body, headers=H).status_code == 201
        assert a.post("/v1/experiments/latency/start", headers=H).status_code == 200
        with TestClient(create_app(settings), raise_server_exceptions=False) as b:  # a second worker
            served += serve(a, world_members[:30])
            served += serve(b, world_members[30:50])
            # Worker a has stored nothing yet (no poll in this test): b's report covers b's requests only.
            assert sum(h.count for h in store.latency("latency").values()) == 0
            from_b = p99s(b, "latency")
            assert sum(h.count for h in store.latency("latency").values()) == 20
            assert set(from_b) == {"control", "acc"}
        # b has stopped; a's report now adds a's requests to what b stored.
        both = p99s(a, "latency")
        counts = {arm: h.count for arm, h in store.latency("latency").items()}
        assert counts == dict(served) and sum(counts.values()) == 50, (counts, served)
        assert all(v is not None and v > 0 for v in both.values()), both
    # Every worker gone: a restarted service reports the same p99 from the store.
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        assert p99s(c, "latency") == both
    store.close()
