"""How much of the members' destination taste their observable history carries (issue 16), in a minute.

For every offer with a destination (award flights, hotels) and a seeded sample of members, the within-offer
rank correlation between the member's true destination term (hidden acceptance model) and

- ``taste_lift``: the destination-taste factors' lift (recsys.ranker.taste, fitted on the travel history
  before the cut-off, as the ranker's CF block fits it);
- ``flights_to``: the member's flights and partner activities at the offer's destination;

averaged over offers (weighted by each offer's spread of the true term), for all sampled members and for those
with some travel history. Also how much of the true term is the shared taste (its within-offer correlation
with the taste part alone) and the standard deviation of each part: what a world gives CF to learn before the
ranker is trained (``bench/ranker_levers.py`` is the real measure).

    .venv/bin/python bench/taste_signal.py --data var/data/world-50k
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata


def _within_offer_rho(x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> float:
    """Weighted mean over columns (offers) of the Spearman correlation of x[:, j] and y[:, j]."""
    rhos, ws = [], []
    for j in range(x.shape[1]):
        a, b = x[:, j], y[:, j]
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            continue
        rhos.append(np.corrcoef(rankdata(a), rankdata(b))[0, 1])
        ws.append(weight[j])
    return float(np.average(rhos, weights=ws)) if rhos else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cutoff", default="2026-04-02")
    ap.add_argument("--members", type=int, default=8000, help="members sampled (seeded)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--factors", type=int, default=6, help="taste factors (the ranker's taste_factors)")
    ap.add_argument("--alpha", type=float, default=20.0, help="ALS confidence scale of travel counts")
    ap.add_argument("--parts", default="", help="only these travel parts, comma-separated (default: all)")
    args = ap.parse_args()

    from recsys.data.layout import read_table
    from recsys.data.truth import acceptance_parameters, member_traits
    from recsys.data.world import acceptance as acc
    from recsys.ranker.features import member_travel
    from recsys.ranker.taste import TRAVEL_PARTS, DestinationFactors

    root = args.data
    params = acceptance_parameters(root)
    offers = read_table(root, "offers")
    oa = acc.offer_arrays(offers, params)
    dest_offers = np.flatnonzero(oa.region >= 0)
    traits = member_traits(root)
    travel = member_travel(root, pd.Timestamp(args.cutoff))
    if args.parts:
        keep = set(args.parts.split(","))
        travel = {k: {p: v for p, v in t.items() if p in keep} for k, t in travel.items()}
        travel = {k: t for k, t in travel.items() if t}
    factors = DestinationFactors.fit(travel, factors=args.factors, alpha=args.alpha, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    pick = np.sort(rng.choice(len(traits), size=min(args.members, len(traits)), replace=False))
    sample = traits.iloc[pick].reset_index(drop=True)
    ma = acc.member_arrays(sample)
    ids = sample["member_id"].astype(str).to_numpy(object)
    n, m = len(sample), len(dest_offers)
    mi = np.repeat(np.arange(n), m)
    oi = np.tile(dest_offers, n)
    true = acc.destination_term(params, ma, oa, mi, oi).reshape(n, m)
    no_taste = dict(params, taste={**params["taste"], "coefficient": 0.0})
    rest = acc.destination_term(no_taste, ma, oa, mi, oi).reshape(n, m)
    taste_part = true - rest
    hist = [travel.get(str(i)) for i in ids]
    lift = factors.scores(hist, mi, oa.destination[oi])[:, 1].reshape(n, m)
    lift = np.nan_to_num(lift)
    dests = oa.destination[dest_offers]
    count = np.zeros((n, m))
    for r, h in enumerate(hist):
        for part in TRAVEL_PARTS:
            for place, k in ((h or {}).get(part) or {}).items():
                count[r, dests == place] += k
    has = np.array([h is not None for h in hist])
    spread = true.std(axis=0)
    print(
        f"{n:,} members ({has.mean():.0%} with travel before {args.cutoff}), {m} destination offers; "
        f"within-offer sd of the true term {spread.mean():.3f} (taste part "
        f"{taste_part.std(axis=0).mean():.3f}, affinity + favourites {rest.std(axis=0).mean():.3f})"
    )
    print(f"  true term ~ taste part alone:  {_within_offer_rho(taste_part, true, spread):.3f}")
    for name, sel in (("all members", np.ones(n, bool)), ("with travel", has)):
        print(
            f"  {name:<12} taste_lift {_within_offer_rho(lift[sel], true[sel], spread):.3f}   "
            f"flights_to {_within_offer_rho(count[sel], true[sel], spread):.3f}"
        )
    events = np.array([sum(sum((h.get(p) or {}).values()) for p in TRAVEL_PARTS) if h else 0 for h in hist])
    print(
        f"  away events per member before the cut-off: mean {events.mean():.2f}, median "
        f"{np.median(events):.0f}, share with >=3: {(events >= 3).mean():.0%}"
    )


if __name__ == "__main__":
    main()
