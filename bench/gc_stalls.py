"""Where an open-loop tail comes from: the service served by ``bench/gc_probe.py`` (every garbage collection
recorded), saturated by ``wrk`` for a while, then driven at a fixed rate by bench-serve's load generator; the
slow answers are printed beside the full collections that ran meanwhile.

    .venv/bin/python bench/gc_stalls.py --alias bench-ranker [--wrk 10] [--rate 300] [--duration 20]

Uses bench-serve's request mix, world (``RECSYS_DATA_DIR``, default var/data/world-50k) and registry
(``RECSYS_MLFLOW_TRACKING_URI``, default var/mlflow.db; ``bench_serve.py --ranker only`` registers the
``bench-als`` and ``bench-ranker`` aliases). Redis keys under a prefix of the run's own, deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_serve as bs  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alias", default="bench-ranker")
    p.add_argument("--wrk", type=float, default=10.0, help="seconds of wrk saturation before the open loop")
    p.add_argument("--rate", type=float, default=300.0)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--members", type=int, default=5000)
    p.add_argument("--no-freeze", action="store_true", help="the service without serving/heap.py's freeze")
    args = p.parse_args()

    sb = bs.service_bench("gc", args.members, 42)
    client, prefix, work, bodies_file = sb.client, sb.prefix, sb.work, sb.bodies_file
    lua = bs.lua_for_posts("/v1/recommendations", sb.bodies, work / "recommend.lua")
    wrk = bs.ensure_wrk()
    env = {
        **sb.base_env,
        "RECSYS_CAPPING_ENABLED": "true",
        "RECSYS_MODEL_ALIAS": args.alias,
        "RECSYS_REDIS_TIMEOUT_MS": "1000",  # a loaded host's slow Redis calls are not answered by the policy
        "BENCH_GC_LOG": str(work / "gc.json"),
        "BENCH_GC_NO_FREEZE": "1" if args.no_freeze else "0",
    }
    from bench.launcher import run_service

    out: dict[str, Any] = {"alias": args.alias, "load_before": os.getloadavg()}
    try:
        with run_service(
            env,
            workers=1,
            ready_timeout_s=900,
            log_path=work / "service.log",
            command=[sys.executable, str(ROOT / "bench" / "gc_probe.py")],
        ) as svc:
            bs.run_wrk(wrk, f"{svc.url}/v1/recommendations", lua, 3, 32)  # warm-up
            if args.wrk > 0:
                cpu0 = bs.cpu_seconds(svc.pid)
                run = bs.run_wrk(wrk, f"{svc.url}/v1/recommendations", lua, args.wrk, 32)
                run["cpu_ms_per_request"] = (bs.cpu_seconds(svc.pid) - cpu0) * 1000 / max(run["requests"], 1)
                out["wrk"] = run
            out["open_loop_start"] = time.time()
            out["open_loop"] = bs.run_open_loop(svc.port, bodies_file, args.rate, args.duration)
    finally:
        bs.delete_prefix(client, prefix)
    out["load_after"] = os.getloadavg()
    gc = json.loads((work / "gc.json").read_text())
    out["gc"] = gc
    (work / "result.json").write_text(json.dumps(out))
    start = out["open_loop_start"]
    o = out["open_loop"]
    print(
        f"{args.alias}{' (no freeze)' if args.no_freeze else ''}: results in {work}/result.json; "
        f"load {out['load_before'][0]:.1f} -> {out['load_after'][0]:.1f}"
    )
    if "wrk" in out:
        w = out["wrk"]
        print(
            f"wrk: {w['rps']:.0f} req/s, p99 {w['p99_ms']:.1f} ms, "
            f"{w['cpu_ms_per_request']:.2f} ms CPU per answer"
        )
    print(
        f"open loop {o['rate']:.0f} req/s for {args.duration:.0f} s: achieved {o['achieved_rps']:.0f}, "
        f"p50 {o['p50_ms']:.2f} ms, p99 {o['p99_ms']:.2f} ms, max {o['max_ms']:.1f} ms"
    )
    print("latency histogram (ms):", o["histogram_ms"])
    print(f"objects frozen out of collections: {gc['frozen']:,}; per generation: {gc['per_generation']}")
    full = [c for c in gc["collections"] if c["generation"] == 2 and c["t"] >= start - args.wrk - 3]
    print("full collections while loaded (s from the open loop's start, ms):")
    print("  " + ", ".join(f"{c['t'] - start:+.1f}s {c['ms']:.1f}" for c in full))
    slow = o["slow"]
    print(f"answers slower than {bs.SLOW_S * 1000:.0f} ms: {len(slow)}; first sends of each burst (s, ms):")
    bursts, last = [], -1e9
    for t, ms in slow:
        if t - last > 0.5:
            bursts.append((t - start, ms))
        last = t
    print("  " + ", ".join(f"{t:+.1f}s {ms:.0f}" for t, ms in bursts[:30]))


if __name__ == "__main__":
    main()
