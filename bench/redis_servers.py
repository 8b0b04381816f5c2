"""Redis servers of a test's or a benchmark's own: a standalone ``redis-server`` to freeze (SIGSTOP), thaw or
kill, and a Redis Cluster of three masters and three replicas (``--cluster-enabled yes``, joined by
``redis-cli --cluster create --cluster-replicas 1``). Processes on spare loopback ports with ``--save ""
--appendonly no``, each in a directory of its own; the caller stops them. Never the shared server on 6379.

Debian packages: redis-server and redis-tools (``make redis-tools``).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

REDIS_SERVER_BIN = "redis-server"
REDIS_CLI_BIN = "redis-cli"
INSTALL_REDIS = "apt-get install -y redis-server redis-tools (or `make redis-tools`)"
CLUSTER_NODE_TIMEOUT_MS = 1000  # how long a silent master lasts before its replica takes over


class RedisServersUnavailable(RuntimeError):
    """redis-server / redis-cli missing, or no spare ports."""


def redis_bins() -> tuple[str, str]:
    server, cli = shutil.which(REDIS_SERVER_BIN), shutil.which(REDIS_CLI_BIN)
    if server is None or cli is None:
        raise RedisServersUnavailable(
            f"redis-server / redis-cli not found on PATH; install them: {INSTALL_REDIS}"
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
    raise RedisServersUnavailable(f"no {n} spare loopback ports found in 20000-29000")


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
        server, _ = redis_bins()
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

    def dbsize(self) -> int:
        c = self.client()
        try:
            return int(c.dbsize())
        finally:
            c.close()

    def shutdown_saving(self) -> None:
        """``SHUTDOWN SAVE``, as an operator's restart does: the next :meth:`start` (same port and directory)
        loads the data back. Returns once the process has exited."""
        assert self.process is not None
        c = self.client()
        try:
            c.shutdown(save=True)
        except redis.exceptions.ConnectionError:
            pass  # the server closes the connection as it exits
        finally:
            c.close()
        self.process.wait(timeout=20)

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


def start_cluster(root: Path) -> LocalCluster:
    """Three masters and three replicas under ``root``, ready (``cluster_state:ok``, replicas in sync)."""
    _, cli = redis_bins()
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
