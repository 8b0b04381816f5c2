"""Shared fixtures.

``small_world``: a generated loyalty world of 2,000 members (seed 20260630), built once per test session into
a temporary directory. Read-only for tests: copy it if a test must modify a dataset.

``data_selected``: the real customer-value file (the project's copy, else ``../shared``'s).

``tracking_uri``: a fresh SQLite MLflow tracking + registry store for one test (a copy of one migrated store).

``redis_client`` / ``prefix``: the machine's real Redis (db 14) and a key prefix unique to the test whose keys
are deleted afterwards. When Redis is not running the test FAILS (never skips) with the command that starts
it. Every Redis fixture of the suite (capping: db 15, service: db 0) is built on :func:`redis_or_fail` and
:func:`delete_prefix` here.

``redis_cluster`` / ``cluster``: a Redis Cluster of the session's own (three masters, three replicas on spare
loopback ports, ``bench/redis_servers.py``), whole again after each test that kills a node. ``own_redis``: a
standalone redis-server of the session's own, free to freeze (SIGSTOP) or kill. Both are torn down after the
session; without redis-server / redis-cli the tests FAIL saying how to install them.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from bench.redis_servers import (
    LocalCluster,
    RedisProcess,
    RedisServersUnavailable,
    redis_bins,
    spare_ports,
    start_cluster,
    wait_until,
)

__all__ = ["LocalCluster", "RedisProcess", "spare_ports", "wait_until"]

REPO = Path(__file__).resolve().parents[1]
DATA_SELECTED_CANDIDATES = (
    REPO / "data" / "reference" / "air_data_lrfmc" / "data_selected.csv",
    REPO.parent / "shared" / "data" / "air_data_lrfmc" / "data_selected.csv",
)
REDIS_URL = "redis://127.0.0.1:6379/14"
START_REDIS = 'redis-server --daemonize yes --port 6379 --save "" --appendonly no'

SMALL_WORLD_MEMBERS = 2_000
SMALL_WORLD_SEED = 20260630


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a ~2,000-member generated world (fixed seed); treat it as read-only."""
    from recsys.data.generator import generate_world

    out = tmp_path_factory.mktemp("small_world") / "world"
    return generate_world(out, SMALL_WORLD_MEMBERS, SMALL_WORLD_SEED, progress=False)


PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pg_schema_or_fail(prefix: str, url: str = PG_URL) -> tuple[sa.Engine, str]:
    """An engine on the shared PostgreSQL and a fresh schema of this test's own (drop it with drop_schema)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # never skip: the PostgreSQL path must be tested
        pytest.fail(
            f"PostgreSQL is not reachable at {url} ({type(exc).__name__}: {exc}). Start it, e.g. "
            "`service postgresql start` (trust auth for user postgres, database `test`)."
        )
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    return engine, schema


def drop_schema(engine: sa.Engine, schema: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


def redis_or_fail(url: str = REDIS_URL) -> redis.Redis:
    """A client of the real Redis at ``url``; FAILS the test (never skips) with how to start Redis."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.RedisError as e:
        client.close()
        pytest.fail(f"Redis is not reachable at {url} ({e}); start it with: {START_REDIS}", pytrace=False)
    return client


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete every key whose name starts with ``prefix`` (``prefix:...`` and ``prefix-caps:...`` alike)."""
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for i in range(0, len(keys), 500):
        client.unlink(*keys[i : i + 500])


def unique_prefix(kind: str) -> str:
    """A key prefix no other test (or concurrent run) uses."""
    return f"test-{kind}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """A client of the real Redis (db 14); fails with how to start Redis when it is not running."""
    client = redis_or_fail(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: redis.Redis, request: pytest.FixtureRequest) -> Iterator[str]:
    """A key prefix unique to this test; every key under it is removed afterwards."""
    module = request.node.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    p = unique_prefix(module)
    yield p
    delete_prefix(redis_client, p)


@pytest.fixture(scope="session")
def data_selected() -> Path:
    """The project's ``data_selected.csv``, falling back to ``../shared``; fails the test if neither."""
    for path in DATA_SELECTED_CANDIDATES:
        if path.is_file():
            return path
    pytest.fail(f"data_selected.csv not found (looked in {[str(p) for p in DATA_SELECTED_CANDIDATES]})")


@pytest.fixture(scope="session")
def _migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite store: creating one costs seconds, copying it does not."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture()
def tracking_uri(tmp_path: Path, _migrated_store: Path) -> str:
    """A fresh SQLite tracking + registry store for one test."""
    shutil.copy(_migrated_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


# ------------------------------------------------------------------------------------------------------------
# Redis servers of the tests' own (bench/redis_servers.py): a Redis Cluster (3 masters, 3 replicas) and a
# standalone Redis to freeze or kill, torn down after the session. `make test` installs redis-server and
# redis-cli (Debian packages redis-server and redis-tools); missing, the tests FAIL saying how to get them.
# ------------------------------------------------------------------------------------------------------------


def _servers_or_fail() -> None:
    try:
        redis_bins()
    except RedisServersUnavailable as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A Redis Cluster of the session's own (3 masters, 3 replicas); torn down after the session. A test that
    kills a node calls ``restore()`` when done (``cluster`` does it for every test)."""
    _servers_or_fail()
    cluster = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        for n in cluster.nodes:
            n.stop()


@pytest.fixture
def cluster(redis_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The session's cluster, whole before and after the test (killed or frozen nodes restored)."""
    redis_cluster.restore()
    yield redis_cluster
    redis_cluster.restore()


@pytest.fixture(scope="session")
def _own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    _servers_or_fail()
    server = RedisProcess(spare_ports(1)[0], tmp_path_factory.mktemp("own-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A standalone redis-server of this test's own, empty at the start and stopped after it (for tests that
    kill, freeze or restart it and must not see another test's keys)."""
    _servers_or_fail()
    server = RedisProcess(spare_ports(1)[0], tmp_path / "own-redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis(_own_redis: RedisProcess) -> Iterator[RedisProcess]:
    """A standalone redis-server of the session's own, free to SIGSTOP (``freeze``), SIGCONT (``thaw``) or
    kill; running and thawed again after every test."""
    if not _own_redis.alive:
        _own_redis.start()
    yield _own_redis
    _own_redis.thaw()
    if not _own_redis.alive:
        _own_redis.start()
