"""How close the ranker could get to the ALS ranking's throughput if its own work cost nothing (issue 11).

Serves ``bench_serve.py``'s request mix through two ASGI apps in one process (no server, no network): the
ALS ranking (``bench-als``) and the contextual ranker (``bench-ranker``), both registered by
``bench_serve.py --ranker only``. It measures the process CPU per answer in interleaved rounds of five
variants:

- ``als`` and ``ranker``, as served;
- ``ranker rows free``: each request's feature rows replaced by rows built once per candidate count, so
  they cost a dictionary lookup;
- ``ranker trees free``: the trees replaced by fixed probabilities;
- ``ranker rows+trees free``: both.

Each variant's ALS-to-variant ratio is taken round by round, and the median is printed. A free stage is a
ceiling: no implementation of it can do better. The free variants rank by made-up numbers, so their answers
are not the ranker's. They only count what the rest of the request costs.

    .venv/bin/python bench/ranker_cost_ceiling.py [--rounds 10] [--requests 1000]

Inputs come from the same environment as the other serve benchmarks (``bench_serve.bench_inputs``). The
services' member profiles and cap counters are written under prefixes of the run's own and deleted at the
end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_serve import RANKED_ALIASES, bench_inputs, delete_prefix, request_mix  # noqa: E402
from profile_recommend import call, in_process_settings, redis_nodes  # noqa: E402

Rows = Callable[..., np.ndarray]
Predict = Callable[[np.ndarray], np.ndarray]


async def run(args: argparse.Namespace) -> None:
    from serving.app import create_app

    world, _, redis_url = bench_inputs()
    bodies = [json.dumps(b).encode() for b in request_mix(world, args.members, 42)]
    prefixes: list[str] = []
    apps: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, alias in RANKED_ALIASES.items():
            prefix = f"ceiling-{uuid.uuid4().hex[:8]}"
            prefixes.append(prefix)
            apps[kind] = create_app(in_process_settings(prefix, f"sqlite:///{tmp}/{kind}.db", alias))
        try:
            async with contextlib.AsyncExitStack() as stack:
                for app in apps.values():
                    await stack.enter_async_context(app.router.lifespan_context(app))
                    for body in bodies[:300]:  # warm-up
                        await call(app, body)
                await measure(apps, bodies, args)
        finally:
            client = redis_nodes(redis_url)[0]
            for prefix in prefixes:
                delete_prefix(client, prefix)


async def measure(apps: dict[str, Any], bodies: list[bytes], args: argparse.Namespace) -> None:
    ranker = apps["ranker"].state.services.holder.current.pipeline.bundle.context_ranker
    if ranker is None:
        raise SystemExit(f"{RANKED_ALIASES['ranker']} is not a contextual ranker")
    space = ranker.space
    real_rows: Rows = space.request_matrix
    built: dict[int, np.ndarray] = {}

    def free_rows(offers: Any, rows: np.ndarray, context: Any, cf: Any, known: bool) -> np.ndarray:
        if len(rows) not in built:
            built[len(rows)] = real_rows(offers, rows, context, cf, known)
        return built[len(rows)]

    def free_trees(x: np.ndarray) -> np.ndarray:
        return 0.05 + np.arange(x.shape[0]) * 1e-4  # distinct, so the ranking's ties do not change the work

    variants: dict[str, tuple[str, Rows | None, Predict | None]] = {
        "als": ("als", None, None),
        "ranker": ("ranker", None, None),
        "ranker rows free": ("ranker", free_rows, None),
        "ranker trees free": ("ranker", None, free_trees),
        "ranker rows+trees free": ("ranker", free_rows, free_trees),
    }
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, (kind, rows, trees) in variants.items():
            # instance attributes shadow the methods; popping them restores the real ones
            if rows is None:
                space.__dict__.pop("request_matrix", None)
            else:
                space.request_matrix = rows
            if trees is None:
                ranker.__dict__.pop("predict", None)
            else:
                ranker.predict = trees
            start = r * 997  # each round its own slice of the mix
            c0 = time.process_time()
            for i in range(args.requests):
                status, out = await call(apps[kind], bodies[(start + i) % len(bodies)])
                if status != 200:
                    raise SystemExit(f"{name}: status {status}: {out[:300]!r}")
            cpu[name].append((time.process_time() - c0) / args.requests * 1e3)
    print(f"{args.rounds} interleaved rounds of {args.requests} answers each; load {os.getloadavg()[0]:.1f}")
    print(f"{'variant':24s} {'CPU ms/answer':>14s} {'ALS / variant':>14s}   rounds of the ratio")
    for name, values in cpu.items():
        ratios = [a / v for a, v in zip(cpu["als"], values, strict=True)]
        print(
            f"{name:24s} {statistics.median(values):14.3f} {statistics.median(ratios):13.3f}x   "
            + ", ".join(f"{x:.2f}" for x in ratios)
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--requests", type=int, default=1000, help="answers per variant and round")
    p.add_argument("--members", type=int, default=5000)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
