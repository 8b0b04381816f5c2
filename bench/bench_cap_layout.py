"""CPU of one cap decision (``run_plan``, 50 candidates, k = 5) on a member's month of state written in each
per-offer layout (the policy's ``state_layout`` 1: a field per offer; 2: a field per time bucket), in
interleaved rounds; and the state's fields and characters.

    .venv/bin/python bench/bench_cap_layout.py [--world var/data/world-50k]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from recsys.capping.api import CapCandidate, CapMember, build_enforcer, load_policy
from recsys.capping.engine import build_plan, run_plan

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", type=Path, default=ROOT / "var" / "data" / "world-50k")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    offers = pd.read_parquet(
        args.world / "offers.parquet", columns=["offer_id", "family", "category", "exempt"]
    )
    cat = [
        CapCandidate(str(r.offer_id), str(r.family), str(r.category), bool(r.exempt))
        for r in offers.itertuples(index=False)
    ]
    base = load_policy(ROOT / "config" / "caps.yaml")
    member = CapMember("M1", "basic", "UTC")
    start = datetime(2026, 11, 1, tzinfo=UTC)
    now = start + timedelta(days=30)
    cases = {}
    for layout in (1, 2):
        policy = base.model_copy(update={"state_layout": layout})
        e = build_enforcer(None, policy)
        rng = random.Random(1)  # the same month of requests for both layouts
        for day in range(30):
            for _ in range(rng.choice((1, 2, 3))):
                t = start + timedelta(days=day, seconds=rng.uniform(0, 86_400))
                ranked = rng.sample(cat, 20)
                shown = {c.offer_id: c for c in ranked}
                for o in e.select_and_record(member, ranked, 5, "home", t).selected:
                    e.record_event(member, shown[o], "impression", "home", t)
        store = e.inner.store  # type: ignore[attr-defined]
        fields = store.read(store.key(member.member_id)).fields
        rng = random.Random(2)
        plans = [
            build_plan(policy, policy.resolved("basic"), member, rng.sample(cat, 50), "home", now)
            for _ in range(200)
        ]
        cases[layout] = (fields, plans)
    rounds: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for layout, (fields, plans) in cases.items():
            t0 = time.process_time()
            for _ in range(5):
                for plan in plans:
                    run_plan(plan, fields, 5, "check")
            rounds[layout].append((time.process_time() - t0) / (5 * len(plans)) * 1e6)
    for layout, (fields, _) in cases.items():
        chars = sum(len(k) + len(v) for k, v in fields.items())
        cpu = statistics.median(rounds[layout])
        print(f"state_layout {layout}: {len(fields)} fields, {chars} characters; run_plan {cpu:.1f} us CPU")
    print(
        "layout 2 / layout 1 CPU by round:",
        [round(b / a, 2) for a, b in zip(rounds[1], rounds[2], strict=True)],
    )


if __name__ == "__main__":
    main()
