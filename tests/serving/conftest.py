"""Fixtures of the service tests: a small world with a registered champion, real Redis, the app.

Everything real: the dataset comes from the generator, the champion is trained (popularity model, the
fastest) and registered in a throw-away MLflow SQLite store, caps and the member store use the machine's
Redis under a key prefix of their own (removed afterwards), the event log is a SQLite file or a PostgreSQL
schema of the test's own. A Redis or PostgreSQL that is not running FAILS the test with how to start it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.config import Settings
from tests.conftest import LocalCluster, delete_prefix, unique_prefix
from tests.conftest import pg_schema_or_fail as _pg_schema_or_fail
from tests.conftest import redis_or_fail as _redis_or_fail

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

REDIS_URL = os.environ.get("RECSYS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("RECSYS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MODEL_NAME = "svc-test-offers"
DEBUG_TOKEN = "test-debug-token-0123456789"
ADMIN_KEY = "test-admin-key-0123456789"
ADMIN_HEADERS = {"X-Api-Key": ADMIN_KEY}
TRACKING_SECRET = "test-tracking-secret-0123456789"
ROOT = Path(__file__).resolve().parents[2]
CAPS_POLICY = ROOT / "config" / "caps.yaml"


# Member profiles are published once per session under this prefix (every app of the session reads them);
# cap counters get a prefix per test or module. The test modules import this file as
# ``tests.serving.conftest`` while pytest loads it as its conftest: two module objects. The prefix is kept in
# the environment so both use the same one and the session fixture below deletes what the apps published.
# One variable per pytest-xdist worker: given paths under tests/serving, the controlling process loads this
# file too, before it starts the workers with its environment; one shared prefix let the first worker to
# finish delete the profiles the other was still reading.
MEMBERS_PREFIX = os.environ.setdefault(
    "RECSYS_TEST_MEMBERS_PREFIX_" + os.environ.get("PYTEST_XDIST_WORKER", "main"),
    f"test-svc-members-{uuid.uuid4().hex[:10]}",
)


@pytest.fixture(scope="session", autouse=True)
def _drop_session_members() -> Iterator[None]:
    yield
    client = redis.Redis.from_url(REDIS_URL)
    try:
        delete_prefix(client, MEMBERS_PREFIX)
    except redis.RedisError:
        pass
    finally:
        client.close()


@dataclass(frozen=True)
class Registry:
    tracking_uri: str
    model_name: str
    first_version: str


def redis_or_fail() -> redis.Redis:
    return _redis_or_fail(REDIS_URL)


def pg_schema_or_fail() -> tuple[sa.Engine, str]:
    return _pg_schema_or_fail("test_svc", PG_URL)


@pytest.fixture(scope="session")
def serving_world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared small world when the suite provides one, else a 1,000-member world of our own."""
    try:
        return Path(request.getfixturevalue("small_world"))
    except pytest.FixtureLookupError:
        from recsys.data.generator import generate_world

        return generate_world(tmp_path_factory.mktemp("svc-world") / "world", 1000, seed=11, progress=False)


@pytest.fixture(scope="session")
def registry(serving_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A throw-away MLflow store with a trained popularity champion."""
    from recsys.registry import promote
    from training.pipeline import train_pipeline

    uri = f"sqlite:///{tmp_path_factory.mktemp('svc-mlflow')}/mlflow.db"
    result = train_pipeline(serving_world, "popularity", tracking_uri=uri, model_name=MODEL_NAME, seed=3)
    assert result.published is not None and result.published.version is not None
    version = result.published.version.version
    promote(uri, MODEL_NAME, version, force=True)
    return Registry(uri, MODEL_NAME, version)


@pytest.fixture(scope="session")
def world_members(serving_world: Path) -> list[str]:
    return (
        pd.read_parquet(serving_world / "members.parquet", columns=["member_id"])["member_id"]
        .astype(str)
        .tolist()
    )


@pytest.fixture(scope="session")
def world_offers(serving_world: Path) -> pd.DataFrame:
    return pd.read_parquet(serving_world / "offers.parquet")


@pytest.fixture()
def redis_prefix() -> Iterator[str]:
    client = redis_or_fail()
    prefix = unique_prefix("svc")
    yield prefix
    delete_prefix(client, prefix)
    client.close()


@dataclass(frozen=True)
class RedisDeployment:
    """Where a service test's Redis state lives: the shared standalone Redis or the tests' own Cluster."""

    name: str  # "standalone" | "cluster"
    url: str
    prefix: str  # the cap counters' key prefix of this test
    cluster: LocalCluster | None = None


@pytest.fixture(params=["standalone", "cluster"])
def redis_deployment(request: pytest.FixtureRequest) -> Iterator[RedisDeployment]:
    """Each test twice: on the shared Redis (db 0, a prefix of its own) and on the session's Redis Cluster
    (3 masters, 3 replicas; whole again after the test). The test's keys are removed afterwards."""
    prefix = unique_prefix("svc")
    if request.param == "standalone":
        client = redis_or_fail()
        try:
            yield RedisDeployment("standalone", REDIS_URL, prefix)
        finally:
            delete_prefix(client, prefix)
            client.close()
        return
    cluster: LocalCluster = request.getfixturevalue("cluster")
    try:
        yield RedisDeployment("cluster", cluster.url, prefix, cluster)
    finally:
        cluster.restore()
        for node in cluster.masters():
            c = node.client()
            try:  # one key at a time: a node refuses a multi-key UNLINK across slots
                for key in list(c.scan_iter(match=f"{prefix}*", count=1000)):
                    c.unlink(key)
            finally:
                c.close()


def serve_counting_policy(tmp: Path) -> Path:
    """The default policy counting on serve with each offer once a week: for tests of the atomic
    check-and-record, where a second request may not repeat the first one's offers."""
    text = CAPS_POLICY.read_text().replace("count_on: event", "count_on: serve")
    text = text.replace("    limit: 3\n    window: 7d", "    limit: 1\n    window: 7d")
    assert "count_on: serve" in text and "limit: 1\n    window: 7d" in text
    path = tmp / "caps-serve.yaml"
    path.write_text(text)
    return path


def make_settings(registry: Registry, world: Path, tmp: Path, prefix: str | None, **over: Any) -> Settings:
    values: dict[str, Any] = {
        "mlflow_tracking_uri": registry.tracking_uri,
        "model_name": registry.model_name,
        "database_url": f"sqlite:///{tmp}/events.db",
        "redis_url": REDIS_URL if prefix else None,
        "members_key_prefix": MEMBERS_PREFIX,
        "caps_key_prefix": f"{prefix}:caps" if prefix else "caps",
        "capping_policy_path": CAPS_POLICY,
        "data_dir": world,
        "reload_interval_s": 0,
        "debug_token": DEBUG_TOKEN,
        "admin_api_key": ADMIN_KEY,
        "tracking_secret": TRACKING_SECRET,
        "exploration_share": 0.0,  # deterministic slates unless a test explores on purpose
    }
    values.update(over)
    return Settings(**values)


def service_env(registry: Registry, world: Path, tmp: Path, prefix: str, **over: str) -> dict[str, str]:
    """Environment for a service process (``bench.launcher.run_service``)."""
    env = {
        "RECSYS_MLFLOW_TRACKING_URI": registry.tracking_uri,
        "RECSYS_MODEL_NAME": registry.model_name,
        "RECSYS_DATABASE_URL": f"sqlite:///{tmp}/events.db",
        "RECSYS_REDIS_URL": REDIS_URL,
        "RECSYS_MEMBERS_KEY_PREFIX": MEMBERS_PREFIX,
        "RECSYS_CAPS_KEY_PREFIX": f"{prefix}:caps",
        "RECSYS_CAPPING_POLICY_PATH": str(CAPS_POLICY),
        "RECSYS_DATA_DIR": str(world),
        "RECSYS_RELOAD_INTERVAL_S": "0",
        "RECSYS_DEBUG_TOKEN": DEBUG_TOKEN,
        "RECSYS_ADMIN_API_KEY": ADMIN_KEY,
        "RECSYS_TRACKING_SECRET": TRACKING_SECRET,
        "RECSYS_LOG_LEVEL": "info",
        "RECSYS_EXPLORATION_SHARE": "0",
    }
    env.update(over)
    return env


@pytest.fixture(scope="module")
def module_prefix() -> Iterator[str]:
    client = redis_or_fail()
    prefix = unique_prefix("svc")
    yield prefix
    delete_prefix(client, prefix)
    client.close()


@pytest.fixture(scope="module")
def client(
    registry: Registry, serving_world: Path, tmp_path_factory: pytest.TempPathFactory, module_prefix: str
) -> Iterator[TestClient]:
    """The app over real Redis (own prefix) and a SQLite event log; shared by a test module."""
    settings = make_settings(registry, serving_world, tmp_path_factory.mktemp("svc-app"), module_prefix)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def live_service(
    registry: Registry, serving_world: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """One real uvicorn process (real Redis, a SQLite event log, the admin key set), shared by the tests
    that only need a live service: starting one costs a model load."""
    from bench.launcher import run_service

    client = redis_or_fail()
    prefix = f"test-svc-live-{uuid.uuid4().hex[:10]}"
    env = service_env(registry, serving_world, tmp_path_factory.mktemp("live"), prefix)
    try:
        with run_service(env, workers=1, ready_timeout_s=180) as svc:
            yield svc
    finally:
        delete_prefix(client, prefix)
        client.close()
