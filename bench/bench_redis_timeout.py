"""What the Redis call timeout (``RECSYS_REDIS_TIMEOUT_MS``) costs under load: false timeouts.

A call's timeout bounds its wait on the event loop too, so a busy worker can time out a call Redis answered in
time; the outage policy then answers (fail_closed: exempt offers only) and the breaker stays open for its
back-off, degrading the worker's next answers as well. This starts one service (as shipped: one worker, caps
and request log on, the benchmark's standalone Redis) per timeout, then drives each in interleaved rounds with
the same open loop (``--rate`` req/s for ``--duration`` s, latency from each request's scheduled send) and
counts the answers the cap store degraded (``recsys_cap_degraded_total``) against the answers.

    .venv/bin/python bench/bench_redis_timeout.py                      # 20, 50, 100, 250, 500 ms
    .venv/bin/python bench/bench_redis_timeout.py --timeouts 50,250 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_serve import (
    delete_prefix,
    log,
    run_open_loop,
    service_bench,
    service_counters,
)
from bench.launcher import run_service


def _degraded(counters: dict[str, float]) -> float:
    return sum(v for k, v in counters.items() if k.startswith("recsys_cap_degraded_total"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timeouts", default="20,50,100,250,500", help="RECSYS_REDIS_TIMEOUT_MS values")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--rate", type=float, default=300.0)
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--members", type=int, default=5000)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    timeouts = [float(t) for t in args.timeouts.split(",")]
    sb = service_bench("timeout", args.members, args.seed)
    client, prefix, work, bodies_file, base = sb.client, sb.prefix, sb.work, sb.bodies_file, sb.base_env
    runs: dict[float, list[dict[str, Any]]] = {t: [] for t in timeouts}
    load: list[float] = []
    try:
        with contextlib.ExitStack() as stack:
            services = {}
            for t in timeouts:  # one after the other: the first publishes the member store
                log(f"starting the service with RECSYS_REDIS_TIMEOUT_MS={t:g}")
                env = {
                    **base,
                    "RECSYS_REDIS_TIMEOUT_MS": f"{t:g}",
                    "RECSYS_CAPS_KEY_PREFIX": f"{prefix}:caps-{t:g}",
                    "RECSYS_DATABASE_URL": f"sqlite:///{work}/events-{t:g}.db",
                }
                services[t] = stack.enter_context(
                    run_service(env, ready_timeout_s=600, log_path=work / f"service-{t:g}.log")
                )
                run_open_loop(services[t].port, bodies_file, args.rate, 3.0)  # warm-up
            for r in range(args.rounds):
                for t in timeouts:
                    svc = services[t]
                    load.append(os.getloadavg()[0])
                    before = service_counters(svc.url)
                    res = run_open_loop(svc.port, bodies_file, args.rate, args.duration)
                    after = service_counters(svc.url)
                    answers = float(res["ok"])
                    degraded = _degraded(after) - _degraded(before)
                    run = {
                        "round": r,
                        "answers": answers,
                        "degraded": degraded,
                        "degraded_share": round(degraded / answers, 4) if answers else None,
                        "achieved_rps": res.get("achieved_rps"),
                        "p50_ms": res.get("p50_ms"),
                        "p99_ms": res.get("p99_ms"),
                        "load": round(load[-1], 1),
                    }
                    runs[t].append(run)
                    log(f"timeout {t:g} ms, round {r}: {json.dumps(run)}")
    finally:
        delete_prefix(client, prefix)
    summary = {
        f"{t:g}": {
            "degraded": (degraded := sum(x["degraded"] for x in rs)),
            "answers": (answers := sum(x["answers"] for x in rs)),
            "degraded_share": round(degraded / max(answers, 1), 4),
            "p99_ms_median": statistics.median(x["p99_ms"] for x in rs if x["p99_ms"] is not None)
            if any(x["p99_ms"] is not None for x in rs)
            else None,
        }
        for t, rs in runs.items()
    }
    out = {"rate": args.rate, "duration_s": args.duration, "load": load, "runs": runs, "summary": summary}
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
