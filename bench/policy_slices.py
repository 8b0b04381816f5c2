"""Analysis (not a benchmark): where the ranker's gap to the oracles lies, by offer family and placement.

Trains the contextual ranker before the test cut-off (as ``recsys evaluate --model ranker`` does), scores
every test-period request with the member's exposures as of its time (``RankerScorer``, by expected value
and by acceptance) and puts its true fatigue-free expected purchases and value per request beside the
oracle's and the EV oracle's, per offer family and per placement. Run it on two worlds to see where a share
moved.

    .venv/bin/python bench/policy_slices.py --data /work/main/var/data/world-50k
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from recsys.evaluation import time_split  # noqa: E402
from recsys.evaluation.policies import ArrayScorer  # noqa: E402
from recsys.evaluation.policy import ScoredPolicy, check_inclusion  # noqa: E402
from recsys.evaluation.replay import load_replay  # noqa: E402
from recsys.evaluation.report import to_markdown  # noqa: E402
from recsys.ranker.policy import RankerScorer  # noqa: E402
from recsys.ranker.training import train_ranker_bundle  # noqa: E402
from recsys.schema import Col  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "data" / "world-50k")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    split = time_split(args.data)
    replay = load_replay(args.data, split.cutoff, split.end)
    assert replay.p_true is not None
    bundle, _ = train_ranker_bundle(args.data, None, before=split.before, seed=args.seed)
    batch, n = replay.batch, replay.batch.n_requests
    policies = [
        ScoredPolicy(RankerScorer(bundle, args.data, objective="expected_value", name="ranker")),
        ScoredPolicy(RankerScorer(bundle, args.data, objective="acceptance", name="ranker_acceptance")),
        ScoredPolicy(ArrayScorer("oracle", replay.p_true)),
        ScoredPolicy(ArrayScorer("ev_oracle", replay.p_true * replay.margin)),
    ]
    pis = {p.name: check_inclusion(p.name, batch, p.inclusion(batch)) for p in policies}
    ev = replay.p_true * replay.margin
    slices = {
        "all": np.ones(batch.n_pairs, dtype=bool),
        **{f"family {f}": replay.family == f for f in sorted(set(replay.family))},
        **{
            f"placement {p}": batch.pair_column(Col.PLACEMENT) == p
            for p in sorted(set(batch.requests[Col.PLACEMENT]))
        },
    }
    rows = []
    for label, mask in slices.items():
        row: dict[str, object] = {"slice": label}
        for name, pi in pis.items():
            row[f"{name} purchases"] = float((pi * mask) @ replay.p_true) / n
            row[f"{name} EV"] = float((pi * mask) @ ev) / n
        row["ranker_acceptance / oracle purchases"] = row["ranker_acceptance purchases"] / max(
            row["oracle purchases"], 1e-12
        )
        row["ranker / EV oracle EV"] = row["ranker EV"] / max(row["ev_oracle EV"], 1e-12)
        rows.append(row)
    table = pd.DataFrame(rows)
    # each slice's share of the whole gap: where the missing purchases and value are
    total = table.iloc[0]
    table["share of purchase gap"] = (table["oracle purchases"] - table["ranker_acceptance purchases"]) / (
        total["oracle purchases"] - total["ranker_acceptance purchases"]
    )
    table["share of EV gap"] = (table["ev_oracle EV"] - table["ranker EV"]) / (
        total["ev_oracle EV"] - total["ranker EV"]
    )
    print(f"{args.data}: {n:,} test-period requests, true fatigue-free values per request\n")
    print(to_markdown(table))


if __name__ == "__main__":
    main()
