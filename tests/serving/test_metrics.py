"""``/metrics`` on prometheus_client: the request histogram and suppression counters of one app, and the
whole service's totals when it runs with two worker processes (each scrape is answered by one worker, yet
reports the requests both served)."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from bench.launcher import run_service
from serving.app import create_app
from serving.metrics import Metrics
from tests.serving.conftest import Registry, make_settings, service_env
from tests.serving.test_api import rec_body

ROUTE = "/v1/recommendations"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text page: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(page: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in page.items() if n == name and want <= ls)


@pytest.fixture()
def app_client(
    registry: Registry, serving_world: Path, tmp_path: Path, redis_prefix: str
) -> Iterator[TestClient]:
    """An app of this test's own (its counters start at zero)."""
    with TestClient(create_app(make_settings(registry, serving_world, tmp_path, redis_prefix))) as c:
        yield c


def test_recommend_requests_fill_the_histogram_and_suppression_counters(
    app_client: TestClient, world_members: list[str], registry: Registry
) -> None:
    n = 7
    for i in range(n):
        assert app_client.post(ROUTE, json=rec_body(world_members[100 + i])).status_code == 200
    resp = app_client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    page = samples(resp.text)
    route = {"method": "POST", "route": ROUTE}
    assert total(page, "recsys_http_request_seconds_count", **route) == n
    assert total(page, "recsys_http_request_seconds_bucket", **route, le="+Inf") == n
    assert 0 < total(page, "recsys_http_request_seconds_sum", **route) < n * 2.5
    assert total(page, "recsys_http_requests_total", **route, status="200") == n
    assert total(page, "recsys_suppressed_candidates_total") > 0
    assert total(page, "recsys_offers_served_total") > 0
    assert total(page, "recsys_model_loaded") == 1
    assert total(page, "recsys_model_version") == float(registry.first_version)
    assert total(page, "recsys_model_reloads_total") == 1
    assert ("recsys_cap_store_breaker_open", frozenset()) in page
    # A scrape does not count itself before it is answered; the next one sees it.
    page = samples(app_client.get("/metrics").text)
    assert total(page, "recsys_http_requests_total", method="GET", route="/metrics") == 1


def test_suppressions_are_counted_per_candidate_with_one_increment_per_label_set() -> None:
    metrics = Metrics()
    sup = [SimpleNamespace(stage="eligibility", reason="tier")] * 30 + [
        SimpleNamespace(stage="caps", reason="cap:offer_daily")
    ] * 20
    metrics.record_suppressed(sup)
    metrics.record_suppressed(sup[:5])
    page = samples(metrics.render().decode())
    assert total(page, "recsys_suppressed_candidates_total", stage="eligibility", reason="tier") == 35
    assert total(page, "recsys_suppressed_candidates_total", stage="caps", reason="cap:offer_daily") == 20


def worker_counts(path: str, pids: list[int]) -> dict[int, float]:
    """Recommend requests each worker recorded, read from its own histogram file."""
    out = {}
    for pid in pids:
        files = glob.glob(os.path.join(path, f"histogram_{pid}.db"))
        out[pid] = sum(
            s.value
            for m in MultiProcessCollector.merge(files)
            for s in m.samples
            if s.name == "recsys_http_request_seconds_count" and s.labels.get("route") == ROUTE
        )
    return out


def recorded(path: str, pids: list[int], sent: int) -> dict[int, float]:
    """Per-worker counts once all ``sent`` requests are recorded (a worker records a request just after
    sending its answer)."""
    deadline = time.monotonic() + 10
    while True:
        counts = worker_counts(path, pids)
        if sum(counts.values()) >= sent or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def multiproc_dir_of(pid: int) -> str:
    """The process's PROMETHEUS_MULTIPROC_DIR ("" when unset or the process is gone)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return ""
    found = [e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    return found[0] if found else ""


async def burst(url: str, bodies: list[dict]) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
        return [r.status_code for r in await asyncio.gather(*(http.post(ROUTE, json=b) for b in bodies))]


@pytest.mark.slow
def test_two_workers_every_scrape_reports_the_whole_service(
    registry: Registry, serving_world: Path, tmp_path: Path, redis_prefix: str, world_members: list[str]
) -> None:
    env = service_env(registry, serving_world, tmp_path, redis_prefix, RECSYS_CAPPING_ENABLED="true")
    with run_service(env, workers=2, ready_timeout_s=240) as svc:
        # The workers are the supervisor's children that write metric files (another child is
        # multiprocessing's resource tracker).
        path, workers = "", []
        for _ in range(200):
            children = svc.worker_pids()[1:]
            path = next((d for d in map(multiproc_dir_of, children) if d), "")
            workers = [p for p in children if path and os.path.exists(f"{path}/counter_{p}.db")]
            if len(workers) >= 2:
                break
            time.sleep(0.1)
        assert len(workers) == 2, f"expected two worker processes writing metrics to {path!r}"
        # each worker has a request log writer child of its own
        assert all(len(list(writer_children(w))) == 1 for w in workers), svc.log()[-2000:]
        assert all(multiproc_dir_of(p) == path for p in workers) and os.path.isdir(path)
        # Bursts of 20 concurrent requests until both workers have served some (usually the first burst),
        # so that one worker's share differs from the total.
        sent = 0
        for i in range(10):
            bodies = [rec_body(world_members[(20 * i + j) % len(world_members)]) for j in range(20)]
            assert asyncio.run(burst(svc.url, bodies)) == [200] * 20
            sent += 20
            per_worker = recorded(path, workers, sent)
            if sent >= 40 and all(per_worker.values()):
                break
        assert sum(per_worker.values()) == sent and all(per_worker.values()), per_worker
        pages = []
        for _ in range(6):  # a new connection each: scrapes land on either worker
            resp = httpx.get(f"{svc.url}/metrics", timeout=10)
            assert resp.status_code == 200
            pages.append(samples(resp.text))
        log = svc.log()
    for page in pages:
        route = {"method": "POST", "route": ROUTE}
        assert total(page, "recsys_http_request_seconds_count", **route) == sent, log[-2000:]
        assert total(page, "recsys_http_requests_total", **route, status="200") == sent
        assert total(page, "recsys_suppressed_candidates_total") > 0
        # one start-time series per live worker; the model is loaded in both (the gauge is their minimum)
        assert len([k for k in page if k[0] == "recsys_start_time_seconds"]) == 2
        assert total(page, "recsys_model_loaded") == 1
        assert total(page, "recsys_model_version") == float(registry.first_version)
    assert not os.path.exists(path), "the metrics directory is removed when the service stops"
    # Stopped (SIGTERM): both workers' writers drained, every answer has its request record.
    assert count_rows(tmp_path / "events.db", "request_log") == sent


def writer_children(pid: int) -> Iterator[int]:
    """The request log writer children of a process."""
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(OSError):
                if b"process_writer" in Path(f"/proc/{child}/cmdline").read_bytes():
                    yield int(child)


def count_rows(db: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute(f"select count(*) from {table}").fetchone()[0])
