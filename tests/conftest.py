"""Shared fixtures.

``small_world``: a generated loyalty world of 2,000 members (seed 20260630), built once per test session into
a temporary directory. Read-only for tests: copy it if a test must modify a dataset.

``data_selected``: the real customer-value file (the project's copy, else ``../shared``'s).

``tracking_uri``: a fresh SQLite MLflow tracking + registry store for one test (a copy of one migrated store).

``redis_client`` / ``prefix``: the machine's real Redis (db 14) and a key prefix unique to the test whose keys
are deleted afterwards. When Redis is not running the test FAILS (never skips) with the command that starts
it. Every Redis fixture of the suite (capping: db 15, service: db 0) is built on :func:`redis_or_fail` and
:func:`delete_prefix` here.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

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
# Redis servers of the tests' own: a Redis Cluster (3 masters, 3 replicas) and a standalone Redis to freeze or
# kill. Processes on spare loopback ports, in a temp dir, torn down after the session. `make test` installs
# redis-server and redis-cli (Debian packages redis-server and redis-tools).
# ------------------------------------------------------------------------------------------------------------

REDIS_SERVER_BIN = "redis-server"
REDIS_CLI_BIN = "redis-cli"
INSTALL_REDIS = "sudo apt-get install -y redis-server redis-tools (or `make redis-tools`)"
CLUSTER_NODE_TIMEOUT_MS = 1000  # how long a silent master lasts before its replica takes over


def _redis_bins_or_fail() -> tuple[str, str]:
    server, cli = shutil.which(REDIS_SERVER_BIN), shutil.which(REDIS_CLI_BIN)
    if server is None or cli is None:
        pytest.fail(
            f"redis-server / redis-cli not found on PATH; install them: {INSTALL_REDIS}", pytrace=False
        )
    return server, cli


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def spare_ports(n: int, *, bus: bool = False, seed: int | None = None) -> list[int]:
    """``n`` free loopback ports (with ``bus``, port + 10000 is free too: a cluster node's bus port)."""
    rng = random.Random(seed if seed is not None else os.getpid() ^ time.monotonic_ns())
    ports: list[int] = []
    for _ in range(2000):
        p = rng.randrange(20000, 29000)
        if p in ports or not _port_free(p) or (bus and not _port_free(p + 10000)):
            continue
        ports.append(p)
        if len(ports) == n:
            return ports
    pytest.fail(f"no {n} spare loopback ports found in 20000-29000")


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> None:
    """Poll ``check`` until true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except (redis.exceptions.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(interval_s)


@dataclass
class RedisProcess:
    """One redis-server of the tests' own (``--save "" --appendonly no``) in its own directory."""

    port: int
    workdir: Path
    args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kw: Any) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2, **kw)

    def start(self) -> None:
        server, _ = _redis_bins_or_fail()
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - the process keeps it
        self.process = subprocess.Popen(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                *self.args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        log.close()
        c = self.client()
        try:
            wait_until(f"redis-server on port {self.port} answers PING", lambda: bool(c.ping()), 20)
        finally:
            c.close()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process cannot die of SIGKILL before it runs
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@dataclass
class LocalCluster:
    """A Redis Cluster of three masters and three replicas on loopback ports."""

    nodes: list[RedisProcess]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def node(self, port: int) -> RedisProcess:
        return next(n for n in self.nodes if n.port == port)

    def info(self, node: RedisProcess) -> dict[str, str]:
        c = node.client(decode_responses=True)
        try:
            text = c.execute_command("CLUSTER INFO")
        finally:
            c.close()
        if isinstance(text, dict):
            return {str(k): str(v) for k, v in text.items()}
        return dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)

    def _nodes_view(self) -> dict[str, dict[str, Any]]:
        """``CLUSTER NODES`` as a live node sees it (redis-py parses it to {"host:port": {...}})."""
        live = next(n for n in self.nodes if n.alive)
        c = live.client(decode_responses=True)
        try:
            return dict(c.execute_command("CLUSTER NODES"))
        finally:
            c.close()

    def masters(self) -> list[RedisProcess]:
        """The live nodes that are masters holding slots, as the cluster sees it now."""
        out = []
        for addr, node in self._nodes_view().items():
            flags = node["flags"]
            if "master" in flags and "fail" not in flags and node["slots"]:
                proc = self.node(int(addr.rsplit(":", 1)[1]))
                if proc.alive:
                    out.append(proc)
        return out

    def replicas(self) -> list[RedisProcess]:
        """The live replicas whose link to their master is up."""
        out = []
        for addr, node in self._nodes_view().items():
            if "slave" in node["flags"] and "fail" not in node["flags"]:
                proc = self.node(int(addr.rsplit(":", 1)[1]))
                if not proc.alive:
                    continue
                c = proc.client(decode_responses=True)
                try:
                    if c.info("replication").get("master_link_status") == "up":
                        out.append(proc)
                finally:
                    c.close()
        return out

    def master_of(self, key: str) -> RedisProcess:
        """The node that is master of ``key``'s slot now."""
        live = next(n for n in self.nodes if n.alive)
        c = live.client()
        try:
            slot = int(c.execute_command("CLUSTER KEYSLOT", key))
            for start, end, master, *_ in c.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return self.node(int(master[1]))
        finally:
            c.close()
        raise LookupError(f"no master for {key}")

    def healthy(self) -> bool:
        """Every node up, state ok, three masters holding slots, every node agreeing."""
        if not all(n.alive for n in self.nodes):
            return False
        for n in self.nodes:
            info = self.info(n)
            if info.get("cluster_state") != "ok" or info.get("cluster_known_nodes") != "6":
                return False
        return len(self.masters()) == 3 and len(self.replicas()) == 3

    def wait_healthy(self, timeout_s: float = 60) -> None:
        wait_until(
            "the test Redis Cluster reports cluster_state:ok with 3 masters", self.healthy, timeout_s, 0.1
        )

    def restore(self) -> None:
        """Restart any node a test killed (it rejoins as a replica) and wait until the cluster is whole."""
        for n in self.nodes:
            n.thaw()
            if not n.alive:
                n.start()
        self.wait_healthy()

    def flush(self) -> None:
        """Empty the test cluster's own masters (never the shared server)."""
        for n in self.masters():
            c = n.client()
            try:
                c.flushall()
            finally:
                c.close()


def _start_cluster(root: Path) -> LocalCluster:
    _, cli = _redis_bins_or_fail()
    args = (
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        str(CLUSTER_NODE_TIMEOUT_MS),
    )
    nodes = [RedisProcess(p, root / f"node-{p}", args) for p in spare_ports(6, bus=True)]
    cluster = LocalCluster(nodes)
    try:
        for n in nodes:
            n.start()
        create = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *[f"127.0.0.1:{n.port}" for n in nodes],
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
        if create.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed:\n{create.stdout.decode()}{create.stderr.decode()}"
            )
        cluster.wait_healthy()
    except BaseException:
        for n in nodes:
            n.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A Redis Cluster of the session's own (3 masters, 3 replicas); torn down after the session. A test that
    kills a node calls ``restore()`` when done (``cluster`` does it for every test)."""
    cluster = _start_cluster(tmp_path_factory.mktemp("redis-cluster"))
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
    server = RedisProcess(spare_ports(1)[0], tmp_path_factory.mktemp("own-redis"))
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
