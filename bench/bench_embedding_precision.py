"""What storing member embeddings as float16 (the member store's default) or int8 changes in the ranking.

For a seeded sample of the members the champion knows, each offer of the catalogue is scored with the learned
vector (float32, the reference) and with the vector as the member store returns it (float16; int8 with one
scale per vector, for comparison). Reported per precision: the mean overlap of the top-k offers (k = 5, 10)
by model score and by expected value (P(accept) x margin, what the pipeline ranks by), NDCG@10 of the
quantised ranking with the reference's scores as gains, the share of members whose top 5 by value is
unchanged in order, the largest absolute score difference, and the bytes per vector.

    .venv/bin/python bench/bench_embedding_precision.py --tracking-uri sqlite:///var/mlflow.db \\
        --data var/data/world-50k --members 5000
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable

import numpy as np
import pandas as pd

from recsys.pipeline.catalogue import Catalogue
from recsys.pipeline.value import offer_values
from recsys.registry import load_bundle


def _float16(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float16).astype(np.float32)


def _int8(v: np.ndarray) -> np.ndarray:
    scale = float(np.abs(v).max()) / 127.0 or 1.0
    return (np.round(v / scale).clip(-127, 127).astype(np.int8).astype(np.float32)) * scale


def _ndcg(reference: np.ndarray, ranking: np.ndarray, k: int) -> float:
    """NDCG@k of ``ranking`` (offer positions) with the reference scores, shifted to >= 0, as gains."""
    gains = reference - reference.min()
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = float(np.sort(gains)[::-1][:k] @ disc)
    return float(gains[ranking[:k]] @ disc) / ideal if ideal > 0 else 1.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--data", required=True, help="the world (members.parquet) the champion was trained on")
    p.add_argument("--model-name", default="loyalty-offers")
    p.add_argument("--alias", default="champion")
    p.add_argument("--members", type=int, default=5000)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()

    bundle, info = load_bundle(args.tracking_uri, args.model_name, args.alias)
    catalogue = Catalogue(bundle.offers)
    offer_ids = [o.offer_id for o in catalogue.offers]
    values = offer_values(catalogue, 0.005)
    members = pd.read_parquet(f"{args.data}/members.parquet", columns=["member_id"])["member_id"].astype(str)
    known = [m for m in members if bundle.is_known(m)]
    sample = random.Random(args.seed).sample(known, min(args.members, len(known)))
    precisions: dict[str, Callable[[np.ndarray], np.ndarray]] = {"float16": _float16, "int8": _int8}
    stats: dict[str, dict[str, list[float]]] = {name: {} for name in precisions}
    for mid in sample:
        v = bundle.member_embedding(mid)
        assert v is not None
        ref_scores, ref_probs = bundle.for_vector(v).score(offer_ids)
        ref_ev = ref_probs * values
        ref_by_score, ref_by_ev = np.argsort(-ref_scores, kind="stable"), np.argsort(-ref_ev, kind="stable")
        for name, quantise in precisions.items():
            scores, probs = bundle.for_vector(quantise(v)).score(offer_ids)
            ev = probs * values
            by_score, by_ev = np.argsort(-scores, kind="stable"), np.argsort(-ev, kind="stable")
            s = stats[name]
            for k in (5, 10):
                s.setdefault(f"top{k}_overlap_by_score", []).append(
                    len(set(by_score[:k]) & set(ref_by_score[:k])) / k
                )
                s.setdefault(f"top{k}_overlap_by_value", []).append(
                    len(set(by_ev[:k]) & set(ref_by_ev[:k])) / k
                )
            s.setdefault("ndcg10_by_value", []).append(_ndcg(ref_ev, by_ev, 10))
            s.setdefault("top5_by_value_identical", []).append(
                float(np.array_equal(by_ev[:5], ref_by_ev[:5]))
            )
            s.setdefault("max_abs_score_diff", []).append(float(np.abs(scores - ref_scores).max()))
    dim = int(np.asarray(bundle.member_embedding(sample[0])).size)
    out = {
        "model": f"{info.name} v{info.version}",
        "members": len(sample),
        "offers": len(offer_ids),
        "dim": dim,
        "bytes_per_vector": {"float32": 4 * dim, "float16": 2 * dim, "int8": dim + 4},
    }
    for name, s in stats.items():
        out[name] = {
            key: round(max(vals) if key.startswith("max") else float(np.mean(vals)), 6)
            for key, vals in s.items()
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
