"""What the open-loop p99 at 300 req/s is made of: the generator, the framework, and the service's variants.

One or more services (``bench/floor_app.py``, one uvicorn worker each, caps on, bench-serve's champion,
request mix and cap policy, the request log as shipped unless a variant says otherwise) are driven in turn,
in every round, at a fixed rate by bench-serve's open-loop generator on two event loops (asyncio's default
and uvloop) against two paths:

- ``/v1/_floor/recommend-validate``: the recommend request parsed and validated, a fixed body answered, no
  I/O: the p99 of this path is what the generator, the network stack and the framework add to any answer;
- ``/v1/recommendations``: the service's answer.

Variants are services with extra environment (``--variant gc5k=RECSYS_GC_YOUNG_THRESHOLD=5000``; the
service as shipped is always ``shipped``); ``BENCH_WORKERS=2`` in a variant runs it on two uvicorn
workers. A slow spell of the shared machine hits every cell of a round alike; medians over the rounds are
printed.

    python bench/open_loop_floor.py [--rounds 3] [--duration 15] [--rate 300] [--variant NAME=K=V[,K=V]]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_serve import (  # noqa: E402
    delete_prefix,
    floor_services,
    log,
    run_open_loop,
    service_bench,
    write_figures,
)

PATHS = {"validate": "/v1/_floor/recommend-validate", "recommend": "/v1/recommendations"}
LOOPS = ("asyncio", "uvloop")


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, assignments = text.partition("=")
    env = dict(a.split("=", 1) for a in assignments.split(",") if a)
    if not name or not env:
        raise SystemExit(f"--variant {text!r}: expected NAME=KEY=VALUE[,KEY=VALUE]")
    return name, env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=15.0, help="seconds per open-loop run")
    p.add_argument("--rate", type=float, default=300.0)
    p.add_argument("--members", type=int, default=5000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--warmup", type=float, default=10.0, help="seconds of open loop per service before round 1"
    )
    p.add_argument("--variant", action="append", default=[], help="NAME=KEY=VALUE[,KEY=VALUE] (repeatable)")
    p.add_argument("--loops", default=",".join(LOOPS), help="generator loops, comma-separated")
    p.add_argument(
        "--paths", default=",".join(PATHS), help="paths driven (validate, recommend), comma-separated"
    )
    args = p.parse_args()
    variants = {"shipped": {}, **dict(parse_variant(v) for v in args.variant)}
    loops = [x for x in args.loops.split(",") if x]
    paths = {x: PATHS[x] for x in args.paths.split(",") if x}

    sb = service_bench("olf", args.members, args.seed)
    bodies_file = sb.bodies_file
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "load_before": os.getloadavg()}
    cells: dict[str, list[dict[str, Any]]] = {}
    try:
        with floor_services(sb.base_env, sb.work, variants) as svcs:
            for svc in svcs.values():  # warm-up: models, connections, the writer child
                run_open_loop(svc.port, bodies_file, args.rate, args.warmup)
            for i in range(args.rounds):
                for name, svc in svcs.items():
                    for what, path in paths.items():
                        for loop in loops:
                            key = f"{name} {what} {loop}"
                            log(f"round {i + 1}/{args.rounds}: {key}")
                            env = {**os.environ, "BENCH_LOADGEN_LOOP": loop}
                            r = run_open_loop(svc.port, bodies_file, args.rate, args.duration, path, env)
                            cells.setdefault(key, []).append(r)
    finally:
        log(f"removed {delete_prefix(sb.client, sb.prefix)} benchmark keys from Redis")
    results["load_after"] = os.getloadavg()
    results["cells"] = cells
    print(
        f"\nopen loop at {args.rate:.0f} req/s, {args.duration:.0f} s per run;"
        f" medians of {args.rounds} rounds"
    )
    print(f"  {'service path loop':34}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  p99 per round")
    for key, runs in cells.items():
        med = {m: statistics.median(r[m] for r in runs) for m in ("p50_ms", "p99_ms", "max_ms")}
        per = ", ".join(f"{r['p99_ms']:.2f}" for r in runs)
        print(f"  {key:34}{med['p50_ms']:>9.2f}{med['p99_ms']:>9.2f}{med['max_ms']:>9.1f}  ({per})")
    print(f"\nload average before {results['load_before']}, after {results['load_after']}")
    write_figures(results, "open_loop_floor.json")


if __name__ == "__main__":
    main()
