"""CPU per recommend request, in-process: the pipeline alone and the whole ASGI app (no server, no network).

Measures process CPU time (not wall time: the machine is shared) over the request mix ``bench_serve.py``
uses (the 50,000-member world's champion, real Redis for the member store and caps), and optionally writes
a cProfile of the app path. It also prints the percentiles of the app's wall time per answer, one request at a
time: what the slowest answers cost on their own, before any queue, generator or network adds to an open-loop
p99.

    .venv/bin/python bench/profile_recommend.py [--requests 3000] [--no-caps] [--threadpool]
        [--alias champion] [--profile var/bench/app.prof] [--profile-pipeline var/bench/pipeline.prof]

``--alias`` picks the registered version served (e.g. the ALS champion against a ranker challenger).
The world, the tracking URI and Redis come from ``RECSYS_DATA_DIR``, ``RECSYS_MLFLOW_TRACKING_URI`` and
``REDIS_URL`` as for the other serve benchmarks (``bench_serve.bench_inputs``), else var/'s defaults.
``REDIS_URL`` may name a cluster (``redis+cluster://host:port,...``, its masters): Redis CPU is then summed
over them.

The service's start-up bootstrap publishes the member profiles under a prefix of the run's own; those keys and
the run's cap counters are deleted at its end (the shared Redis keeps nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_serve import bench_inputs, delete_prefix, request_mix  # noqa: E402

from recsys.stores.redis import RedisConfig  # noqa: E402

if TYPE_CHECKING:
    from serving.config import Settings


async def call(app: Any, body: bytes) -> tuple[int, bytes]:
    """One POST /v1/recommendations through the ASGI app; (status, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/recommendations",
        "raw_path": b"/v1/recommendations",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    status = 0
    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def redis_nodes(url: str) -> list[Any]:
    """Plain clients of the server, or of each master a ``redis+cluster://`` URL names."""
    import redis

    config = RedisConfig(url)
    if config.resolved_mode == "cluster":
        return [redis.Redis(host=n.host, port=n.port) for n in config.cluster_nodes()]
    return [redis.Redis.from_url(url)]


def redis_cpu(url: str) -> float:
    """CPU seconds the Redis server(s) have used (user + sys; other clients' work included)."""
    total = 0.0
    for node in redis_nodes(url):
        info = node.info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


def in_process_settings(prefix: str, database_url: str, alias: str, **overrides: Any) -> Settings:
    """The service's settings for an app served in this process: the benchmark inputs
    (:func:`bench_serve.bench_inputs`), member profiles and cap counters under ``prefix``, no model
    reloads."""
    from serving.config import Settings

    world, tracking, redis_url = bench_inputs()
    return Settings(
        redis_url=redis_url,
        mlflow_tracking_uri=tracking,
        database_url=database_url,
        members_key_prefix=f"{prefix}:members",
        caps_key_prefix=f"{prefix}:caps",
        capping_policy_path=ROOT / "config" / "caps.yaml",
        data_dir=world,
        reload_interval_s=0,
        model_alias=alias,
        log_level="warning",
        tracking_secret="x" * 32,
        **overrides,
    )


async def run(args: argparse.Namespace) -> None:
    from serving.app import create_app

    world, _, redis_url = bench_inputs()
    run_prefix = f"profile-recsys-{uuid.uuid4().hex[:6]}"
    settings = in_process_settings(
        run_prefix,
        f"sqlite:///{ROOT}/var/profile-recommend-{run_prefix}.db",
        args.alias,
        capping_enabled=not args.no_caps,
        pipeline_in_threadpool=args.threadpool,
    )
    bodies = [json.dumps(b).encode() for b in request_mix(world, args.members, 42)]
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            services = app.state.services
            for b in bodies[:200]:  # warm-up
                status, out = await call(app, b)
                assert status == 200, out[:300]
            n = args.requests
            # the pipeline alone (member store + caps included)
            from serving.api.schemas import RecommendationRequest
            from serving.recommendations import to_domain

            model = services.holder.current
            reqs = [
                to_domain(
                    RecommendationRequest.model_validate_json(bodies[i % len(bodies)]),
                    now=services.clock(),
                    debug=False,
                )
                for i in range(n)
            ]
            stages: dict[str, float] = {}
            c0 = time.process_time()
            for r in reqs:
                for name, ms in model.pipeline.recommend(r).timings_ms.items():
                    stages[name] = stages.get(name, 0.0) + ms
            pipe_ms = (time.process_time() - c0) / n * 1e3
            # the same requests through the asyncio path the service runs on the loop (asyncio Redis clients)
            c0 = time.process_time()
            for r in reqs:
                await model.pipeline.arecommend(r)
            apipe_ms = (time.process_time() - c0) / n * 1e3
            print(
                "pipeline stages (wall ms/request): "
                + ", ".join(f"{k} {v / n:.3f}" for k, v in stages.items())
            )
            if args.profile_pipeline:
                pprof = cProfile.Profile(time.process_time)  # CPU time: wall time is mostly waiting
                pprof.enable()
                for r in reqs:
                    model.pipeline.recommend(r)
                pprof.disable()
                pprof.dump_stats(args.profile_pipeline)
            prof = cProfile.Profile(time.process_time) if args.profile else None
            rcpu0 = redis_cpu(redis_url)
            c0 = time.process_time()
            w0 = time.perf_counter()
            if prof:
                prof.enable()
            each = np.empty(n)  # wall time of each answer on its own: no queue, no network
            for i in range(n):
                t0 = time.perf_counter()
                status, out = await call(app, bodies[(i + 7) % len(bodies)])
                each[i] = time.perf_counter() - t0
                if status != 200:
                    raise SystemExit(f"status {status}: {out[:300]!r}")
            if prof:
                prof.disable()
                prof.dump_stats(args.profile)
            app_ms = (time.process_time() - c0) / n * 1e3
            redis_ms = (redis_cpu(redis_url) - rcpu0) / n * 1e3
            wall_ms = (time.perf_counter() - w0) / n * 1e3
            # the framework and route alone: the pipeline replaced by a canned result
            canned = model.pipeline.recommend(reqs[0])
            real, areal = model.pipeline.recommend, model.pipeline.arecommend

            async def canned_async(_request: Any) -> Any:
                return canned

            model.pipeline.recommend = lambda _request: canned
            model.pipeline.arecommend = canned_async
            c0 = time.process_time()
            for i in range(n):
                await call(app, bodies[(i + 7) % len(bodies)])
            frame_ms = (time.process_time() - c0) / n * 1e3
            model.pipeline.recommend, model.pipeline.arecommend = real, areal
            degraded = sum(services.metrics.cap_degraded.values())
            where = "in the threadpool" if args.threadpool else "on the loop"
            print(
                f"{args.alias} ({getattr(model.pipeline.bundle, 'kind', '?')}): "
                f"caps {'off' if args.no_caps else 'on'}, app pipeline {where}: "
                f"pipeline {pipe_ms:.2f} ms CPU/request (blocking Redis), {apipe_ms:.2f} ms (asyncio Redis); "
                f"ASGI app {app_ms:.2f} ms CPU/request (wall {wall_ms:.2f}); "
                f"framework+route (canned pipeline result) {frame_ms:.2f} ms; "
                f"Redis server {redis_ms:.2f} ms CPU/request (shared server: others' load included); "
                f"{n} requests; cap degraded {degraded}; load {os.getloadavg()[0]:.1f}"
            )
            p50, p90, p99 = np.percentile(each, [50, 90, 99]) * 1e3
            print(
                f"  one answer at a time, wall ms: p50 {p50:.2f}, p90 {p90:.2f}, p99 {p99:.2f}, "
                f"max {each.max() * 1e3:.2f}"
            )
    finally:
        if RedisConfig(redis_url).resolved_mode == "cluster":
            for node in redis_nodes(redis_url):  # a cluster's keys live on their master; one slot per call
                for key in node.scan_iter(match=f"{run_prefix}:*", count=1000):
                    node.unlink(key)
        else:
            delete_prefix(redis_nodes(redis_url)[0], run_prefix)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--members", type=int, default=5000)
    p.add_argument("--no-caps", action="store_true")
    p.add_argument("--alias", default="champion", help="registry alias of the model served")
    p.add_argument(
        "--threadpool",
        action="store_true",
        help="run the app's pipeline in the threadpool (RECSYS_PIPELINE_IN_THREADPOOL); default: on the "
        "event loop, as the service ships",
    )
    p.add_argument("--on-loop", action="store_true", help="the default (kept for old command lines)")
    p.add_argument("--profile", default="", help="write a cProfile of the app path here")
    p.add_argument("--profile-pipeline", default="", help="write a cProfile of the pipeline alone here")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
