"""CPU of compiling one recommend request's cap plan (``recsys.capping.engine.build_plan``), no Redis.

Plans for random slates of ``--candidates`` offers of the world's catalogue at one of the offer's own
placements, under ``config/caps.yaml``, for a member of each tier; prints the best of ``--repeats`` runs in
process CPU time. Compare two commits by running this file from an export of each, one after the other:

    .venv/bin/python bench/bench_cap_plan.py [--world var/data/world-50k] [--candidates 30]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from recsys.capping.engine import build_plan  # noqa: E402
from recsys.capping.policy import parse_policy  # noqa: E402
from recsys.capping.types import CapCandidate, CapMember  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", type=Path, default=ROOT / "var" / "data" / "world-50k")
    p.add_argument("--policy", type=Path, default=ROOT / "config" / "caps.yaml")
    p.add_argument("--candidates", type=int, default=30)
    p.add_argument("--plans", type=int, default=500)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    policy = parse_policy(args.policy.read_text(), str(args.policy))
    offers = pd.read_parquet(
        args.world / "offers.parquet", columns=["offer_id", "family", "category", "placements"]
    )
    rows = list(offers.itertuples(index=False))
    rng = random.Random(args.seed)
    tiers = [t.value for t in policy.tiers] or ["base"]
    now = datetime(2026, 12, 5, 12, tzinfo=UTC)
    work = []
    for i in range(args.plans):
        slate = rng.sample(rows, min(args.candidates, len(rows)))
        placement = str(rng.choice(list(slate[0].placements) or ["home"]))
        member = CapMember(f"m{i}", tiers[i % len(tiers)])
        cands = [CapCandidate(str(r.offer_id), str(r.family), str(r.category)) for r in slate]
        work.append((policy.resolved(member.tier), member, cands, placement))
    for rp, member, cands, placement in work:  # warm-up: the policy's per-combination caches
        build_plan(policy, rp, member, cands, placement, now)
    best = float("inf")
    for _ in range(args.repeats):
        c0 = time.process_time()
        for rp, member, cands, placement in work:
            build_plan(policy, rp, member, cands, placement, now)
        best = min(best, (time.process_time() - c0) / len(work))
    print(
        f"build_plan: {best * 1e6:.1f} us CPU per plan of {args.candidates} candidates "
        f"(best of {args.repeats})"
    )


if __name__ == "__main__":
    main()
