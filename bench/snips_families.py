"""Analysis (not a benchmark): does SNIPS's 95 % CI cover the true value per offer family; where not, why?

Issue 11 asks that each policy's SNIPS estimate lie within its 95 % CI of the fatigue-free true value for
upsell and ancillary offers. The logs were drawn *with* fatigue (an offer shown again and again is bought
less), so the estimand an off-policy estimator can reach from them is the value with the logged fatigue. This
script puts both truths beside the estimate, per family (upsell, ancillary, redemption), for the policies
that need no trained model (uniform random, the logging policy, per-offer conversion, the two oracles), and
checks the logs themselves: on the logged impressions, the purchases recorded against the sum of the true
purchase probabilities with and without fatigue.

    .venv/bin/python bench/snips_families.py --data /work/main/var/data/world-50k

The learned models' rows are in the policy table (`recsys evaluate ... --policy-out`), whose last columns say
whether SNIPS covers the fatigue-free and the with-fatigue truth per family.
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
from recsys.evaluation.ope import estimate  # noqa: E402
from recsys.evaluation.policies import ArrayScorer, ConversionScorer, LoggingPolicy, UniformRandom  # noqa: E402
from recsys.evaluation.policy import ScoredPolicy, check_inclusion  # noqa: E402
from recsys.evaluation.replay import load_replay  # noqa: E402
from recsys.evaluation.report import to_markdown  # noqa: E402

FAMILIES = ("upsell", "ancillary", "redemption")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "data" / "world-50k")
    args = parser.parse_args()
    split = time_split(args.data)
    replay = load_replay(args.data, split.cutoff, split.end)
    assert replay.p_true is not None and replay.p_true_fatigue is not None
    assert replay.logging_inclusion is not None
    batch, logged, n = replay.batch, replay.logged, replay.batch.n_requests
    cutoff = replay.cutoff.to_pydatetime()
    policies = [
        UniformRandom(),
        LoggingPolicy(replay.logging_inclusion),
        ScoredPolicy(ConversionScorer(replay.rates, cutoff)),
        ScoredPolicy(ArrayScorer("oracle", replay.p_true)),
        ScoredPolicy(ArrayScorer("ev_oracle", replay.p_true * replay.margin)),
    ]
    print(
        f"{n:,} requests, {batch.n_pairs:,} candidate pairs, {int(logged.shown.sum()):,} logged impressions\n"
    )

    # 1. the logs against the acceptance model, on what the logging policy showed
    shown = logged.shown.astype(bool)
    rows = []
    for fam in FAMILIES:
        m = shown & (replay.family == fam)
        free, tired = replay.p_true[m], replay.p_true_fatigue[m]
        sd = float(np.sqrt((tired * (1 - tired)).sum()))
        rows.append(
            {
                "family": fam,
                "impressions": int(m.sum()),
                "with earlier impressions": f"{(replay.prior_exposures[m] > 0).mean():.1%}",
                "purchases logged": int(logged.reward[m].sum()),
                "expected, fatigue-free": round(float(free.sum()), 1),
                "expected, with fatigue": round(float(tired.sum()), 1),
                "logged - with fatigue (sd)": round((float(logged.reward[m].sum()) - tired.sum()) / sd, 2),
            }
        )
    print("Logged impressions: purchases recorded against the acceptance model\n")
    print(to_markdown(pd.DataFrame(rows)))

    # 2. SNIPS per family against both truths
    rows = []
    for policy in policies:
        pi = check_inclusion(policy.name, batch, policy.inclusion(batch))
        for fam in FAMILIES:
            mask = replay.family == fam
            est = estimate(logged.with_reward(logged.reward * mask), pi * mask)["snips"]
            free = float((pi * mask) @ replay.p_true) / n
            tired = float((pi * mask) @ replay.p_true_fatigue) / n
            rows.append(
                {
                    "policy": policy.name,
                    "family": fam,
                    "true fatigue-free": round(free, 5),
                    "true with fatigue": round(tired, 5),
                    "SNIPS [95 % CI]": f"{est.value:.5f} [{est.low:.5f}, {est.high:.5f}]",
                    "covers free": est.covers(free),
                    "covers fatigue": est.covers(tired),
                    "(SNIPS - free) / se": round((est.value - free) / est.se, 2),
                    "(SNIPS - fatigue) / se": round((est.value - tired) / est.se, 2),
                }
            )
    print("\nSNIPS per family (purchases per request) against the fatigue-free and the with-fatigue truth\n")
    print(to_markdown(pd.DataFrame(rows), "{:.5f}"))


if __name__ == "__main__":
    main()
