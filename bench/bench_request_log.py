"""The request log's writers side by side: p99 at 300 req/s and throughput, process writer vs thread writer vs
log off, on the standalone Redis and on a Redis Cluster of the benchmark's own.

Three services run at once (``bench/floor_app.py``, one uvicorn worker each, caps on, the same champion,
request mix and cap policy as ``make bench-serve``; each its own cap counters and SQLite logs):
``RECSYS_REQUEST_LOG_WRITER=process``, ``=thread`` and ``RECSYS_REQUEST_LOG_ENABLED=false``. In each round
``wrk`` drives the bare floor (``GET /v1/_floor``) and each service's recommend in turn, then the open-loop
generator of ``bench_serve.py`` sends 300 req/s to each in turn (latency from each request's scheduled send
time). A slow spell of the shared machine therefore hits every variant of a round alike. Afterwards (clean
shutdown) every answer of the logging services must have its request record.

Printed per round and as the median of the rounds: p99/p50 at 300 req/s, wrk throughput and its ratio to the
same round's floor, the service's CPU per answer (and the writer child's, for the process writer).

    python bench/bench_request_log.py [--rounds 3] [--duration 10] [--fixed-duration 20] [--no-cluster]

Environment as ``bench_serve.py`` (``REDIS_URL``, ``RECSYS_DATA_DIR``, ``RECSYS_MLFLOW_TRACKING_URI``).
Figures go to ``var/bench/request_log.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_serve import (  # noqa: E402
    count_request_records,
    cpu_seconds,
    delete_prefix,
    ensure_wrk,
    floor_services,
    log,
    lua_for_get,
    lua_for_posts,
    run_open_loop,
    run_wrk,
    service_bench,
    service_counters,
    write_figures,
)


def children_cpu_seconds(pid: int) -> float:
    """CPU time of a process's children (the process writer's child), from /proc."""
    total = 0.0
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(OSError):
                total += cpu_seconds(int(child))
    return total


# Each variant's service: the process writer, the thread writer, the log off.
VARIANT_ENV: dict[str, dict[str, str]] = {
    "process": {"RECSYS_REQUEST_LOG_WRITER": "process"},
    "thread": {"RECSYS_REQUEST_LOG_WRITER": "thread"},
    "log_off": {"RECSYS_REQUEST_LOG_ENABLED": "false"},
}
VARIANTS = tuple(VARIANT_ENV)


def measure(
    args: argparse.Namespace, wrk: str, base_env: dict[str, str], work: Path, tag: str, bodies: Path
) -> dict[str, Any]:
    rec_lua = work / "recommend.lua"
    get_lua = work / "floor.lua"
    out: dict[str, Any] = {"rounds": []}
    with floor_services(base_env, work, VARIANT_ENV, tag) as svcs:
        for svc in svcs.values():  # warm-up: models, connections, the writer child
            run_wrk(wrk, f"{svc.url}/v1/recommendations", rec_lua, 3, args.connections)
        for i in range(args.rounds):
            rnd: dict[str, Any] = {}
            log(f"wrk: floor ({tag}, round {i + 1}/{args.rounds})")
            rnd["floor"] = run_wrk(wrk, f"{svcs['process'].url}/v1/_floor", get_lua, args.duration, 32)
            for variant, svc in svcs.items():
                log(f"wrk: recommend ({tag}, {variant}, round {i + 1}/{args.rounds})")
                cpu0, child0 = cpu_seconds(svc.pid), children_cpu_seconds(svc.pid)
                run = run_wrk(wrk, f"{svc.url}/v1/recommendations", rec_lua, args.duration, args.connections)
                n = max(run["requests"], 1)
                run["cpu_ms_per_request"] = (cpu_seconds(svc.pid) - cpu0) * 1000 / n
                run["child_cpu_ms_per_request"] = (children_cpu_seconds(svc.pid) - child0) * 1000 / n
                rnd[f"wrk_{variant}"] = run
            for variant, svc in svcs.items():
                log(f"open loop: {args.rate:.0f} req/s for {args.fixed_duration:.0f}s ({tag}, {variant})")
                rnd[f"fixed_{variant}"] = run_open_loop(svc.port, bodies, args.rate, args.fixed_duration)
            out["rounds"].append(rnd)
            report_round(tag, i, rnd)
        answered = {}
        for variant, svc in svcs.items():
            counters = service_counters(svc.url)
            out[f"counters_{variant}"] = counters
            answered[variant] = sum(
                v
                for k, v in counters.items()
                if k.startswith("recsys_http_requests_total")
                and "recommendations" in k
                and 'status="200"' in k
            )
        out["answered"] = answered
    for variant in ("process", "thread"):  # stopped: every writer drained
        out[f"rows_{variant}"] = count_request_records(work / f"events-{tag}-{variant}.db")
    return out


def report_round(tag: str, i: int, rnd: dict[str, Any]) -> None:
    floor = rnd["floor"]["rps"]
    print(f"\n{tag}, round {i + 1}: floor {floor:.0f} req/s")
    print(
        f"  {'':10}{'p99 ms':>9}{'p50 ms':>9}{'max ms':>9}{'req/s':>9}{'x floor':>9}{'CPU ms':>9}{'child':>8}"
    )
    for v in VARIANTS:
        f, w = rnd[f"fixed_{v}"], rnd[f"wrk_{v}"]
        print(
            f"  {v:10}{f['p99_ms']:>9.2f}{f['p50_ms']:>9.2f}{f['max_ms']:>9.1f}{w['rps']:>9.0f}"
            f"{w['rps'] / floor:>9.3f}{w['cpu_ms_per_request']:>9.2f}{w['child_cpu_ms_per_request']:>8.2f}"
        )
    sys.stdout.flush()


def report(tag: str, r: dict[str, Any]) -> None:
    rounds = r["rounds"]
    print(
        f"\n{tag}: medians of {len(rounds)} rounds (p99 at the fixed rate; throughput over the round's floor)"
    )
    for v in VARIANTS:
        p99 = [x[f"fixed_{v}"]["p99_ms"] for x in rounds]
        ratio = [x[f"wrk_{v}"]["rps"] / x["floor"]["rps"] for x in rounds]
        rps = [x[f"wrk_{v}"]["rps"] for x in rounds]
        print(
            f"  {v:10} p99 {statistics.median(p99):6.2f} ms ({', '.join(f'{p:.2f}' for p in p99)})  "
            f"{statistics.median(rps):6.0f} req/s  x floor {statistics.median(ratio):.3f} "
            f"({', '.join(f'{x:.3f}' for x in ratio)})"
        )
    for v in ("process", "thread"):
        print(f"  {v}: {r[f'rows_{v}']} request records for {r['answered'][v]:.0f} answers (200)")
    counters = r["counters_process"]
    dropped = sum(v for k, v in counters.items() if k.startswith("recsys_request_log_dropped_total"))
    print(f"  process writer: {dropped:.0f} records dropped")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument("--fixed-duration", type=float, default=20.0, help="seconds per open-loop run")
    p.add_argument("--rate", type=float, default=300.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--members", type=int, default=5000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-cluster", dest="cluster", action="store_false")
    p.add_argument("--no-standalone", dest="standalone", action="store_false")
    args = p.parse_args()

    from bench.redis_servers import start_cluster

    wrk = ensure_wrk()
    sb = service_bench("rl", args.members, args.seed)
    redis_url, client, prefix, work = sb.redis_url, sb.client, sb.prefix, sb.work
    bodies, bodies_file, base_env = sb.bodies, sb.bodies_file, sb.base_env
    lua_for_posts("/v1/recommendations", bodies, work / "recommend.lua")
    lua_for_get(work / "floor.lua")
    log(f"{len(bodies)} distinct requests; Redis {redis_url} prefix {prefix}; logs in {work}")
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "load_before": os.getloadavg()}
    try:
        if args.standalone:
            results["standalone"] = measure(args, wrk, base_env, work, "standalone", bodies_file)
        if args.cluster:
            log("starting a Redis Cluster of three masters and three replicas")
            cluster = start_cluster(work / "redis-cluster")
            try:
                env = {**base_env, "RECSYS_REDIS_URL": cluster.url}
                results["cluster"] = measure(args, wrk, env, work, "cluster", bodies_file)
            finally:
                for node in cluster.nodes:
                    node.stop()
    finally:
        log(f"removed {delete_prefix(client, prefix)} benchmark keys from Redis")
    results["load_after"] = os.getloadavg()
    for tag in ("standalone", "cluster"):
        if tag in results:
            report(tag, results[tag])
    print(f"\nload average before {results['load_before']}, after {results['load_after']}")
    write_figures(results, "request_log.json")


if __name__ == "__main__":
    main()
