"""What each lever of the contextual ranker is worth on a generated world's test period (issues 11 and 16).

Trains one ranker per variant (a JSON ranker config, e.g. ``'{"cf_features": false}'``) before the time
cut-off, scores every replayed test request with it (:class:`recsys.ranker.policy.RankerScorer`: the member's
exposures as of each request) and values its top-k slates under the hidden acceptance model, beside segment
popularity, the oracle, the EV oracle and the oracle without the destination-taste term. Prints one row per
policy and objective, and the purchases per offer family and placement.

    .venv/bin/python bench/ranker_levers.py --data var/data/world-50k \
        --variant base='{}' --variant nocf='{"cf_features": false}'
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.evaluation.policy import top_k_inclusion
from recsys.evaluation.replay import Replay, load_replay
from recsys.features.miles import BALANCE_AT_REQUEST


def _replay(root: Path, cutoff: pd.Timestamp, end: pd.Timestamp, cache: Path | None) -> Replay:
    """The replay, from the ``cache`` pickle when it is there and current (else built and pickled there)."""
    if cache is not None and cache.is_file():
        with cache.open("rb") as f:
            cached: Replay = pickle.load(f)
        if BALANCE_AT_REQUEST in cached.batch.requests:
            return cached
        # pickled by an older load_replay: the balance's readers need the column
        print(
            f"{cache}: a replay without '{BALANCE_AT_REQUEST}' (older code); rebuilding it", file=sys.stderr
        )
    replay = load_replay(root, cutoff, end, progress=True)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with cache.open("wb") as f:
            pickle.dump(replay, f)
    return replay


# Members by their trips before the cut-off (flights to a destination other than home): how much history
# reveals their tastes.
_TRIP_BUCKETS = ((0, 0), (1, 2), (3, 5), (6, 10**9))
_MEMBER_TRIPS: np.ndarray | None = None  # per replayed pair, the member's trips before the cut-off


def _values(replay: Replay, pi: np.ndarray) -> dict[str, float]:
    n = replay.batch.n_requests
    out = {
        "purchases": float(pi @ replay.p_true) / n,
        "ev": float(pi @ (replay.p_true * replay.margin)) / n,
    }
    for fam in ("ancillary", "redemption", "upsell"):
        out[f"purchases_{fam}"] = float((pi * (replay.family == fam)) @ replay.p_true) / n
        out[f"ev_{fam}"] = float((pi * (replay.family == fam)) @ (replay.p_true * replay.margin)) / n
    place = replay.batch.pair_column("placement")
    for p in sorted(set(place)):
        out[f"purchases@{p}"] = float((pi * (place == p)) @ replay.p_true) / n
    if _MEMBER_TRIPS is not None:
        for lo, hi in _TRIP_BUCKETS:
            sel = (lo <= _MEMBER_TRIPS) & (hi >= _MEMBER_TRIPS)
            out[f"purchases@trips{lo}+"] = float((pi * sel) @ replay.p_true) / n
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cutoff", default="2026-04-02")
    ap.add_argument("--end", default="2026-07-01")
    ap.add_argument("--variant", action="append", default=[], help="name=JSON ranker config")
    ap.add_argument("--cache", type=Path, default=None, help="pickle of the replay (reused when present)")
    ap.add_argument("--out", type=Path, default=None, help="append rows as JSON lines")
    ap.add_argument("--blend", type=float, action="append", default=[], help="also rank by p x margin^b")
    ap.add_argument("--by-trips", action="store_true", help="also split purchases by the member's trips")
    ap.add_argument(
        "--save-p", type=Path, default=None, help="npz of each variant's P(purchase) per replayed pair"
    )
    ap.add_argument("--seed", type=int, default=42, help="the rankers' seed (CF models, sampling, trees)")
    args = ap.parse_args()

    from recsys.models.bundle import ModelBundle
    from recsys.ranker.policy import RankerScorer
    from recsys.ranker.training import train_ranker_bundle

    root = args.data
    cutoff, end = pd.Timestamp(args.cutoff), pd.Timestamp(args.end)
    t0 = time.perf_counter()
    replay = _replay(root, cutoff, end, args.cache)
    batch = replay.batch
    assert replay.p_true is not None
    if args.by_trips:
        from recsys.ranker.features import member_travel

        global _MEMBER_TRIPS
        travel = member_travel(root, cutoff)
        trips = {m: sum((t.get("flights") or {}).values()) for m, t in travel.items()}
        _MEMBER_TRIPS = np.asarray([trips.get(str(m), 0) for m in batch.pair_column("member_id")])
    print(
        f"replay: {batch.n_requests:,} requests, {batch.n_pairs:,} pairs ({time.perf_counter() - t0:.0f} s)"
    )
    rows: dict[str, dict[str, float]] = {}
    rows["oracle"] = _values(replay, top_k_inclusion(batch, replay.p_true))
    rows["ev_oracle"] = _values(replay, top_k_inclusion(batch, replay.p_true * replay.margin))
    assert replay.p_no_taste is not None
    p_nt = replay.p_no_taste
    rows["oracle_no_taste"] = _values(replay, top_k_inclusion(batch, p_nt))
    rows["ev_oracle_no_taste"] = _values(replay, top_k_inclusion(batch, p_nt * replay.margin))
    pop = ModelBundle.train(root, "popularity", {"groups": ["segment"]}, before=cutoff.to_pydatetime())
    scores, _ = pop.score_pairs(batch.pair_column("member_id"), batch.offer_id)
    rows["popularity"] = _values(replay, top_k_inclusion(batch, scores))
    saved: dict[str, np.ndarray] = {}

    def write(names: list[str]) -> None:
        # rows go out as each variant ends, so a run stopped early keeps the variants it finished
        if args.out is not None:
            with args.out.open("a") as f:
                for name in names:
                    f.write(json.dumps({"policy": name, **rows[name]}) + "\n")

    write(list(rows))
    for spec in args.variant:
        name, _, cfg = spec.partition("=")
        t1 = time.perf_counter()
        bundle, training = train_ranker_bundle(
            root,
            {"model": {"ranker": json.loads(cfg or "{}")}},
            before=cutoff.to_pydatetime(),
            seed=args.seed,
        )
        t2 = time.perf_counter()
        p = RankerScorer(bundle, root, seed=args.seed).probabilities(batch)
        saved[name] = p
        t3 = time.perf_counter()
        print(
            f"{name}: trained in {t2 - t1:.0f} s ({training.ranker.info.get('rounds')} trees), "
            f"scored in {t3 - t2:.0f} s"
        )
        rows[f"{name}_ev"] = _values(replay, top_k_inclusion(batch, p * replay.margin))
        rows[f"{name}_acceptance"] = _values(replay, top_k_inclusion(batch, p))
        for b in args.blend:
            rows[f"{name}_blend{b:g}"] = _values(replay, top_k_inclusion(batch, p * replay.margin**b))
        write([r for r in rows if r == name or r.startswith(f"{name}_")])
    table = pd.DataFrame(rows).T
    base, orc, evo = rows["popularity"], rows["oracle"], rows["ev_oracle"]
    table.insert(0, "x_pop", table["purchases"] / base["purchases"])
    table.insert(1, "/oracle", table["purchases"] / orc["purchases"])
    table.insert(2, "EV/ev_oracle", table["ev"] / evo["ev"])
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    print(table.round(4).to_string())
    taste = orc["purchases"] - rows["oracle_no_taste"]["purchases"]
    taste_r = orc["purchases_redemption"] - rows["oracle_no_taste"]["purchases_redemption"]
    print(
        f"taste term: {taste:.5f} purchases/req ({taste / orc['purchases']:.1%} of the oracle's); "
        f"redemption {taste_r:.5f}"
    )
    if args.save_p is not None:
        np.savez_compressed(args.save_p, **saved)


if __name__ == "__main__":
    main()
