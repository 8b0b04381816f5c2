"""Real processes for the fault tests: a PostgreSQL of the test's own (a spare loopback port, a temporary
directory; the machine's shared server is never touched) and an open-loop load generator. A Redis of the
test's own is ``tests.conftest``'s ``fresh_redis`` (``bench/redis_servers.py``).

PostgreSQL's absence FAILS the test with how to install it; never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from bench.launcher import free_port


def wait_until(
    condition: Callable[[], bool], what: str, timeout_s: float = 30.0, every_s: float = 0.05
) -> None:
    """Poll ``condition`` until it holds; TimeoutError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail(
            f"{name} not found under /usr/lib/postgresql/*/bin (apt-get install postgresql)", pytrace=False
        )
    return found[-1]


class OwnPostgres:
    """A PostgreSQL cluster of the test's own (``initdb`` + ``pg_ctl`` in a temporary directory, trust auth,
    loopback, a spare port). PostgreSQL refuses to run as root: the binaries run as the ``postgres`` user
    when the test runs as root."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="recsys-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout_s: float = 60) -> None:
        out = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({out.returncode}): {out.stdout}{out.stderr}")

    def init(self) -> None:
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "pg.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: connections are cut, as when a database goes away)."""
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def count(self, sql: str) -> int:
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(sa.text(sql)).scalar_one())
        finally:
            engine.dispose()

    def cleanup(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ load


@dataclass
class Answer:
    sent_at: float  # seconds since the load started (its scheduled send time)
    path: str
    status: int | None  # None: no HTTP answer (connection refused, reset, timeout)
    body: Any
    latency_s: float  # from the scheduled send time (a stall is not hidden by the sender waiting)
    error: str | None = None


class OpenLoop:
    """Sends ``request(i)`` -> (path, JSON body) at a fixed ``rate`` for ``duration_s`` from its own thread
    and event loop (open loop: a slow answer does not slow the sending), keeping every answer."""

    def __init__(
        self,
        port: int,
        rate: float,
        duration_s: float,
        request: Callable[[int], tuple[str, Any]],
        *,
        connections: int = 48,
        timeout_s: float = 30.0,
    ) -> None:
        self.port = port
        self.rate = rate
        self.duration_s = duration_s
        self.request = request
        self.connections = connections
        self.timeout_s = timeout_s
        self.answers: list[Answer] = []
        self.started = 0.0
        self.elapsed_s = 0.0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="open-loop")

    def start(self) -> OpenLoop:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def now(self) -> float:
        """Seconds since the load started."""
        return time.monotonic() - self.started

    def join(self) -> list[Answer]:
        self._thread.join(self.duration_s + self.timeout_s + 30)
        assert not self._thread.is_alive(), "the load generator did not finish"
        return self.answers

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def _one(self, pool: asyncio.Queue[Any], path: str, payload: bytes, sent_at: float) -> None:
        conn = await pool.get()
        try:
            if conn is None:
                conn = await self._connect()
            reader, writer = conn
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout_s)
            status = int(head.split(b" ", 2)[1])
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = orjson.loads(await asyncio.wait_for(reader.readexactly(length), self.timeout_s))
            latency = time.monotonic() - self.started - sent_at
            self.answers.append(Answer(sent_at, path, status, body, latency))
            pool.put_nowait(conn)
        except Exception as exc:
            latency = time.monotonic() - self.started - sent_at
            self.answers.append(Answer(sent_at, path, None, None, latency, f"{type(exc).__name__}: {exc}"))
            if conn is not None:
                conn[1].close()
            pool.put_nowait(None)  # reconnect on next use

    async def _run(self) -> None:
        pool: asyncio.Queue[Any] = asyncio.Queue()
        for _ in range(self.connections):
            pool.put_nowait(None)
        tasks = []
        n = int(self.rate * self.duration_s)
        for i in range(n):
            at = i / self.rate
            delay = self.started + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            path, body = self.request(i)
            tasks.append(asyncio.create_task(self._one(pool, path, orjson.dumps(body), at)))
        await asyncio.gather(*tasks)
        self.elapsed_s = time.monotonic() - self.started
        while not pool.empty():
            conn = pool.get_nowait()
            if conn is not None:
                conn[1].close()


def probe_capacity(
    url: str, request: Callable[[int], tuple[str, Any]], *, seconds: float = 3.0, concurrency: int = 8
) -> tuple[float, set[str]]:
    """Answers per second the service gives ``concurrency`` clients that send as soon as they are answered
    (what the shared, noisy machine can do right now), and the request ids of those answers."""
    ids: set[str] = set()

    async def run() -> int:
        done = 0
        stop_at = time.monotonic() + seconds
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:

            async def client(k: int) -> None:
                nonlocal done
                i = k
                while time.monotonic() < stop_at:
                    path, body = request(1_000_000 + i)
                    resp = await http.post(path, json=body)
                    assert resp.status_code == 200, resp.text[:300]
                    ids.add(resp.json()["request_id"])
                    done += 1
                    i += concurrency

            await asyncio.gather(*(client(k) for k in range(concurrency)))
        return done

    started = time.monotonic()
    n = asyncio.run(run())
    return n / (time.monotonic() - started), ids
