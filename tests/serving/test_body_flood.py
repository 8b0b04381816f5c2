"""Junk bodies cannot knock the service over: a real uvicorn process on loopback refuses a 0.6 MB and a
6 MB body of `{}` items at once (413, from the declared length, before a byte of the body is read), and
/healthz keeps answering quickly while other connections flood it with such bodies."""

from __future__ import annotations

import contextlib
import multiprocessing
import socket
import statistics
import threading
import time
from typing import Any

import httpx
import pytest

from bench.launcher import LiveService

FLOOD_SECONDS = 4.0
FLOODERS = 3


def junk(size: int) -> bytes:
    """A JSON batch of empty items, ``size`` bytes long."""
    n = (size - 12) // 4
    return b'{"events": [' + b"{}, " * n + b"{}]}"


def raw_post(port: int, body: bytes, timeout: float = 10.0) -> tuple[float, bytes]:
    """POST ``body`` to /v1/events on a fresh connection; (seconds to the status line, the response head).
    The body is sent from another thread: the server may answer before it has all arrived."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()

    def upload() -> None:
        with contextlib.suppress(OSError):  # the server answered and closed: it need not read the rest
            sock.sendall(body)

    t0 = time.perf_counter()
    sock.sendall(head)
    sender = threading.Thread(target=upload, daemon=True)
    sender.start()
    got = b""
    try:
        while b"\r\n\r\n" not in got:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
    finally:
        elapsed = time.perf_counter() - t0
        sock.close()
        sender.join(timeout=timeout)
    return elapsed, got


@pytest.fixture(scope="module")
def live(live_service: LiveService) -> LiveService:
    return live_service


@pytest.mark.parametrize("size", [600_000, 6_000_000], ids=["0.6MB", "6MB"])
def test_junk_body_is_refused_at_once(live: LiveService, size: int) -> None:
    times = []
    for _ in range(5):
        elapsed, head = raw_post(live.port, junk(size))
        assert head.startswith(b"HTTP/1.1 413"), head[:200]
        times.append(elapsed)
    print(f"{size} B junk body refused in {min(times) * 1e3:.1f}-{max(times) * 1e3:.1f} ms")
    assert max(times) < 0.1, times


def flood(port: int, seconds: float, refused: Any, failed: Any) -> None:
    """Post junk bodies (0.6 MB and 6 MB, alternately) from :data:`FLOODERS` connections at a time for
    ``seconds``; count the 413s and anything else. Runs in its own process, so the probe's timings are the
    service's, not this client's."""
    bodies = [junk(600_000), junk(6_000_000)]
    stop = time.monotonic() + seconds

    def loop(k: int) -> None:
        while time.monotonic() < stop:
            try:
                _, head = raw_post(port, bodies[k % 2], timeout=5)
                ok = head.startswith(b"HTTP/1.1 413")
            except OSError:
                ok = False
            with (refused if ok else failed).get_lock():
                (refused if ok else failed).value += 1
            k += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(FLOODERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.mark.slow
def test_healthz_answers_during_a_flood_of_junk_bodies(live: LiveService) -> None:
    ctx = multiprocessing.get_context("fork")
    refused, failed = ctx.Value("i", 0), ctx.Value("i", 0)
    flooder = ctx.Process(target=flood, args=(live.port, FLOOD_SECONDS, refused, failed))
    latencies: list[float] = []
    with httpx.Client(base_url=live.url, timeout=2) as http:
        http.get("/healthz")  # a warm keep-alive connection, as a load balancer's probe has
        flooder.start()
        time.sleep(0.2)  # the flood is on
        deadline = time.monotonic() + FLOOD_SECONDS - 0.4
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            resp = http.get("/healthz")
            latencies.append(time.perf_counter() - t0)
            assert resp.status_code == 200
            time.sleep(0.02)
        flooder.join(timeout=30)
    ms = sorted(x * 1e3 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(
        f"flood: {refused.value} junk bodies refused ({failed.value} other answers) in {FLOOD_SECONDS:g} s; "
        f"/healthz {len(ms)} probes, median {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, "
        f"max {ms[-1]:.1f} ms"
    )
    assert failed.value == 0
    assert refused.value >= 20
    # p99, not max: on a shared 2-core machine a single probe can wait out another process's time slice
    # (make test with others' suites running: median 5 ms, p99 35 ms, one probe 179 ms).
    assert p99 < 50, ms[-10:]
