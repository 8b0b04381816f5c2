"""Model reloads: a promoted version is picked up under load with zero failed requests; readiness is 503 until
a model loads; a failed reload keeps the last good model serving."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bench.launcher import run_service
from serving.app import create_app
from tests.serving.conftest import ADMIN_HEADERS, DEBUG_TOKEN, Registry, make_settings, service_env
from tests.serving.test_api import rec_body


def private_registry(registry: Registry, tmp: Path) -> Registry:
    """A copy of the session registry (same artefacts) that this test may promote in freely."""
    src = Path(registry.tracking_uri.removeprefix("sqlite:///"))
    dst = tmp / "mlflow.db"
    shutil.copy(src, dst)
    return Registry(f"sqlite:///{dst}", registry.model_name, registry.first_version)


def publish_and_promote(reg: Registry) -> str:
    """Register the champion's bundle again as a new version and move ``champion`` to it."""
    from recsys.registry import load_bundle, promote, publish

    bundle, _ = load_bundle(reg.tracking_uri, reg.model_name, "champion")
    result = publish(reg.tracking_uri, bundle, model_name=reg.model_name, model_metrics={"ndcg_at_10": 0.99})
    assert result.version is not None
    promote(reg.tracking_uri, reg.model_name, result.version.version, force=True)
    return result.version.version


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll ``condition`` (every 50 ms) until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_promoted_model_is_picked_up_under_load_without_a_failed_request(
    registry: Registry, serving_world: Path, tmp_path: Path, redis_prefix: str, world_members: list[str]
) -> None:
    reg = private_registry(registry, tmp_path)
    env = service_env(
        reg,
        serving_world,
        tmp_path,
        redis_prefix,
        RECSYS_RELOAD_INTERVAL_S="0.5",
        RECSYS_CAPPING_ENABLED="false",
    )
    statuses: Counter[int] = Counter()
    versions: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    with run_service(env, workers=1, ready_timeout_s=180) as svc:

        def hammer(worker: int) -> None:
            with httpx.Client(base_url=svc.url, timeout=10.0) as http:
                i = worker
                while not stop.is_set():
                    body = rec_body(world_members[i % len(world_members)])
                    i += 4
                    try:
                        resp = http.post("/v1/recommendations", json=body)
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                        continue
                    statuses[resp.status_code] += 1
                    if resp.status_code == 200:
                        versions.append(resp.json()["model"]["version"])
                    else:
                        failures.append(resp.text[:300])

        threads = [threading.Thread(target=hammer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: len(versions) >= 50 or bool(failures), "50 answers before the switch")
            assert versions and set(versions) == {reg.first_version}
            new_version = publish_and_promote(reg)
            wait_for(lambda: new_version in versions[-20:], "the promoted version served", timeout_s=60)
            # keep the load on after the switch: 50 more answers
            switched = len(versions)
            wait_for(lambda: len(versions) >= switched + 50 or bool(failures), "50 answers after the switch")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        log = svc.log()
    assert failures == [], failures[:5]
    assert set(statuses) == {200}
    assert new_version in versions, f"version {new_version} was never served:\n{log[-3000:]}"
    first_new = versions.index(new_version)
    assert versions[first_new:].count(reg.first_version) <= 4, "old version served long after the switch"
    assert all(v == new_version for v in versions[-20:])
    assert sum(statuses.values()) > 50


class FlakyLoader:
    """The real registry loader, made to fail on demand (a registry outage or a damaged artefact)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fail = False
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        if self.fail:
            raise OSError("registry unreachable")
        return self.inner()


def test_not_ready_until_a_model_loads_and_failed_reload_keeps_serving(
    registry: Registry, serving_world: Path, tmp_path: Path, redis_prefix: str, world_members: list[str]
) -> None:
    from serving.app import registry_loader

    settings = make_settings(registry, serving_world, tmp_path, redis_prefix)
    loader = FlakyLoader(registry_loader(settings))
    loader.fail = True
    app = create_app(settings, bundle_loader=loader, version_resolver=lambda: None)
    with TestClient(app, raise_server_exceptions=False) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "not loaded" in ready.json()["checks"]["model"]
        resp = client.post("/v1/recommendations", json=rec_body(world_members[0]))
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "model_not_loaded"

        loader.fail = False
        ok = client.post("/v1/admin/reload", headers=ADMIN_HEADERS)
        assert ok.status_code == 200 and ok.json()["status"] == "loaded"
        assert client.get("/readyz").status_code == 200

        loader.fail = True
        failed = client.post("/v1/admin/reload?force=true", headers=ADMIN_HEADERS)
        assert failed.status_code == 502
        assert failed.json()["status"] == "failed" and "registry unreachable" in failed.json()["error"]
        assert client.get("/readyz").status_code == 200
        still = client.post("/v1/recommendations", json=rec_body(world_members[0]))
        assert still.status_code == 200 and still.json()["model"]["version"] == registry.first_version


def test_cap_policy_reload_rejects_a_bad_file_and_keeps_the_running_policy(
    registry: Registry, serving_world: Path, tmp_path: Path, redis_prefix: str
) -> None:
    from tests.serving.conftest import CAPS_POLICY

    policy = tmp_path / "caps.yaml"
    good = CAPS_POLICY.read_text()
    policy.write_text(good)
    settings = make_settings(
        registry, serving_world, tmp_path, redis_prefix, capping_policy_path=policy, capping_policy_poll_s=0
    )
    headers = ADMIN_HEADERS
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/admin/caps-policy/reload").status_code == 401
        debug_only = client.post("/v1/admin/caps-policy/reload", headers={"X-Debug-Token": DEBUG_TOKEN})
        assert debug_only.status_code == 401  # the debug token opens no admin path
        first = client.post("/v1/admin/caps-policy/reload", headers=headers)
        assert first.status_code == 200 and first.json()["ok"] is True
        version = first.json()["version"]
        policy.write_text(good.replace("limit: 16", "limit: -16", 1))
        bad = client.post("/v1/admin/caps-policy/reload", headers=headers)
        assert bad.status_code == 422
        assert bad.json()["ok"] is False and bad.json()["version"] == version
        assert "line" in bad.json()["error"] and "limit" in bad.json()["error"]
        assert client.post("/v1/recommendations", json=rec_body("M0000001")).status_code == 200
