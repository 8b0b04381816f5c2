"""What each stage of the service's pipeline costs the contextual ranker, and what diversity settings cost
(issue 11).

Phase 1 (cached in ``--cache``, reused when present): the test period's replay, the ranker trained before
the cut-off (as ``recsys evaluate --model ranker`` trains it), its P(purchase) of every candidate pair with
the member's exposures as of each request (``RankerScorer``: the ``ranker`` rows of the policy table), and
one pass of the service's ``OfferPipeline`` over every request (as the policy evaluation's
``ranker_pipeline`` replays it: member store with exposures and travel, caps off) that records, per
request, the eligible offers, their P(accept) and model score, which are "you're close" redemptions, and
the pipeline's own ranking.

Phase 2: each variant re-ranks the recorded eligible offers with the pipeline's own stage functions and a
variant ``PipelineConfig`` (value: objective, close discount, dropping worthless offers; diversity: repeat
penalty, per-category and per-family limits); the slate is its first ``k`` offers that are in the logged
candidate set, as ``PipelinePolicy`` takes it. The default variant must reproduce the recorded ranking of
every request (checked). Slates are valued with the hidden truth, beside the ranker alone,
the oracle and the EV oracle, fatigue-free as the policy table values them (a redemption the member cannot
afford at the request is no purchase, as in the world); "families/answer" is the mean number of distinct
offer families in an answer of two or more offers.
``--why N`` runs every N-th request through the pipeline again and sums, per eligibility reason, what it
drops of the ranker's own slates.

    .venv/bin/python bench/pipeline_stages.py --data /work/main/var/data/world-50k --cache var/bench-stages \
        --why 10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from ranker_levers import _replay  # noqa: E402  # bench/ is the script's directory

from recsys.evaluation.policy import top_k_inclusion  # noqa: E402
from recsys.evaluation.replay import Replay  # noqa: E402
from recsys.pipeline import pipeline as pipeline_module  # noqa: E402
from recsys.pipeline.diversity import diversify  # noqa: E402
from recsys.pipeline.types import PipelineConfig  # noqa: E402
from recsys.pipeline.value import expected_values, rank_by_value, ranking_keys  # noqa: E402


def _cached(path: Path | None, make: Callable[[], Any]) -> Any:
    if path is not None and path.is_file():
        with path.open("rb") as f:
            return pickle.load(f)
    value = make()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
    return value


@dataclasses.dataclass
class Recorded:
    """One request through the pipeline: eligible catalogue indices, P(accept), score, close, ranking."""

    eligible: list[int]
    probs: list[float]
    scores: list[float]
    close: dict[int, int]
    ranking: tuple[str, ...]


def _ranker_pipeline(root: Path, replay: Replay, bundle: Any) -> Any:
    """The policy evaluation's ``ranker_pipeline`` policy: profiles and travel as of the cut-off, the replay's
    exposures."""
    from recsys.evaluation.policies import pipeline_policy, replay_exposures
    from recsys.features.profiles import build_member_profiles
    from recsys.ranker.features import with_travel

    cutoff = replay.cutoff.to_pydatetime()
    profiles = with_travel(build_member_profiles(root, as_of=cutoff), root, cutoff)
    return pipeline_policy(
        "ranker_pipeline", bundle, profiles, exposures=replay_exposures(root, replay), balance_at_request=True
    )


def record_pipeline(root: Path, replay: Replay, bundle: Any) -> list[Recorded | None]:
    """Run the policy evaluation's ``ranker_pipeline`` once, recording each request's value-stage inputs."""
    policy = _ranker_pipeline(root, replay, bundle)
    real = policy.pipeline
    batch = replay.batch
    starts = batch.starts
    current: dict[str, Any] = {}
    out: list[Recorded | None] = []

    def ev_spy(indices: Sequence[int], probabilities: Sequence[float], values: Any, close: Any = None,
               close_value_factor: float = 0.5) -> list[float]:  # fmt: skip
        current.update(eligible=list(indices), probs=list(probabilities), close=dict(close or {}))
        return expected_values(indices, probabilities, values, close, close_value_factor)

    def rank_spy(expected: Sequence[float], scores: Sequence[float]) -> list[int]:
        current["scores"] = list(scores)
        return rank_by_value(expected, scores)

    class Recorder:
        def rank(self, request: Any) -> tuple[str, ...]:
            current.clear()
            ranking = real.rank(request)
            if "eligible" in current:
                out.append(Recorded(ranking=tuple(ranking), **current))
            else:
                out.append(None)
            return ranking

    policy.pipeline = Recorder()
    policy.progress = True
    pipeline_module.expected_values = ev_spy  # type: ignore[assignment]
    pipeline_module.rank_by_value = rank_spy  # type: ignore[assignment]
    try:
        policy.inclusion(batch)
    finally:
        pipeline_module.expected_values = expected_values  # type: ignore[assignment]
        pipeline_module.rank_by_value = rank_by_value  # type: ignore[assignment]
    # requests without candidates are never ranked: align the records with the request rows
    nonempty = [i for i in range(batch.n_requests) if starts[i] < starts[i + 1]]
    assert len(nonempty) == len(out), (len(nonempty), len(out))
    aligned: list[Recorded | None] = [None] * batch.n_requests
    for i, r in zip(nonempty, out, strict=True):
        aligned[i] = r
    return aligned


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    config: PipelineConfig
    objective: str = "expected_value"
    close_discount: bool = True  # value "close" redemptions at close_value_factor
    diversity: bool = True
    diversity_over_candidates: bool = False  # diversity among the logged candidates only (caps first)


class Replayer:
    """Re-ranks the recorded requests under a variant and values its slates."""

    def __init__(self, replay: Replay, recorded: list[Recorded | None], bundle: Any) -> None:
        from recsys.pipeline.catalogue import Catalogue
        from recsys.pipeline.value import offer_values

        self.replay = replay
        self.recorded = recorded
        self.catalogue = Catalogue(bundle.offers)
        self.offers = self.catalogue.offers
        self.values = offer_values(self.catalogue, 0.005).tolist()
        batch = replay.batch
        starts = batch.starts.tolist()
        self.pair_of: list[dict[str, int]] = [
            {str(batch.offer_id[j]): j for j in range(starts[i], starts[i + 1])}
            for i in range(batch.n_requests)
        ]
        self.slots = batch.slots.tolist()
        self.placements = batch.requests["placement"].astype(str).tolist()

    def ranking(self, r: Recorded, v: Variant, i: int) -> list[str]:
        cfg = v.config
        elig = r.eligible
        close = r.close if v.close_discount else {}
        ev = expected_values(elig, r.probs, self.values, close, cfg.close_value_factor)
        beta = 0.0 if v.objective == "acceptance" else 1.0
        key = ranking_keys(r.probs, ev, beta)
        order = rank_by_value(key, r.scores)
        if cfg.drop_worthless:
            order = [p for p in order if ev[p] > 0 or (self.offers[elig[p]].exempt and r.probs[p] > 0)]
        if v.diversity_over_candidates:
            cands = self.pair_of[i]
            order = [p for p in order if self.offers[elig[p]].offer_id in cands]
        if v.diversity:
            div = diversify(
                [self.offers[elig[p]].family for p in order],
                [self.offers[elig[p]].category for p in order],
                [key[p] for p in order],
                cfg.max_per_category,
                cfg.max_per_family,
                cfg.family_repeat_penalty,
            )
            order = [order[p] for p in div.order]
        return [self.offers[elig[p]].offer_id for p in order]

    def inclusion(self, v: Variant, check: bool = False) -> np.ndarray:
        pi = np.zeros(self.replay.batch.n_pairs)
        mismatches = 0
        for i, r in enumerate(self.recorded):
            if r is None:
                continue
            ranking = self.ranking(r, v, i)
            if check and tuple(ranking) != r.ranking:
                mismatches += 1
            cands = self.pair_of[i]
            chosen = [cands[o] for o in ranking if o in cands][: self.slots[i]]
            pi[chosen] = 1.0
        if check:
            assert mismatches == 0, f"{v.name}: {mismatches} rankings differ from the pipeline's own"
        return pi

    def row(self, pi: np.ndarray) -> dict[str, float]:
        rp = self.replay
        batch = rp.batch
        n = batch.n_requests
        assert rp.p_true is not None
        shown = np.bincount(batch.request_row, weights=pi, minlength=n)
        fam = pd.DataFrame({"r": batch.request_row[pi > 0], "f": rp.family[pi > 0]})
        cat_of = {o.offer_id: o.category for o in self.offers}
        cats = np.asarray([cat_of.get(str(o), "") for o in batch.offer_id[pi > 0]], dtype=object)
        fam["c"] = cats
        multi = fam.groupby("r").agg(n=("f", "size"), fams=("f", "nunique"), cats=("c", "nunique"))
        multi = multi[multi["n"] >= 2]
        out = {
            "purchases": float(pi @ rp.p_true) / n,
            "ev": float(pi @ (rp.p_true * rp.margin)) / n,
            "offers/answer": float(shown.mean()),
            "families/answer": float(multi["fams"].mean()),
            "categories/answer": float(multi["cats"].mean()),
        }
        place = batch.pair_column("placement")
        for p in sorted(set(place)):
            sel = place == p
            out[f"ev@{p}"] = float((pi * sel) @ (rp.p_true * rp.margin)) / n
        return out


def _variants() -> list[Variant]:
    base = PipelineConfig(require_seat_inventory=False)
    none = dataclasses.replace(base, drop_worthless=False)
    out: list[Variant] = []
    for obj, sfx in (("expected_value", ""), ("acceptance", "_acc")):
        out += [
            Variant(f"eligible{sfx}", none, obj, close_discount=False, diversity=False),
            Variant(f"+close_discount{sfx}", none, obj, diversity=False),
            Variant(f"+drop_worthless{sfx}", base, obj, diversity=False),
            Variant(f"+repeat_penalty_only{sfx}", dataclasses.replace(base, max_per_category=99), obj),
            Variant(f"+category_limit_only{sfx}", dataclasses.replace(base, family_repeat_penalty=1.0), obj),
            Variant(f"default{sfx}", base, obj),
            Variant(f"default_over_candidates{sfx}", base, obj, diversity_over_candidates=True),
        ]
        for pen in (0.95, 0.9, 0.85):
            for cat in (2, 3):
                cfg = dataclasses.replace(base, family_repeat_penalty=pen, max_per_category=cat)
                out.append(Variant(f"penalty{pen:g}_cat{cat}{sfx}", cfg, obj))
        out.append(
            Variant(f"penalty1_cat3{sfx}", dataclasses.replace(base, family_repeat_penalty=1.0,
                                                               max_per_category=3), obj)
        )  # fmt: skip
    return out


def why_dropped(
    root: Path, replay: Replay, bundle: Any, shown: np.ndarray, every: int, affordable: np.ndarray
) -> pd.DataFrame:
    """Every ``every``-th request again through the pipeline, with its suppressions: per eligibility
    reason, the pairs of the logged candidate set the ranker alone shows (``shown``) that the pipeline's
    eligibility drops, and their true purchases and value per request (scaled to all requests)."""
    from recsys.pipeline.types import Stage

    policy = _ranker_pipeline(root, replay, bundle)
    real = policy.pipeline
    batch = replay.batch
    rows = np.arange(0, batch.n_requests, every)
    sub = batch.take(rows)
    sub_pairs = np.flatnonzero(np.isin(batch.request_row, rows))  # sub's pairs in batch order
    reasons: list[str | None] = []

    class Why:
        def rank(self, request: Any) -> tuple[str, ...]:
            result = real._drive(real._steps(request, rank_only=True))
            reasons.append(
                {s.offer_id: s.reason for s in result.suppressed if s.stage == Stage.ELIGIBILITY}  # type: ignore[arg-type]
            )
            return tuple(result.ranking or ())

    policy.pipeline = Why()
    policy.progress = True
    policy.inclusion(sub)
    starts = sub.starts
    nonempty = [i for i in range(sub.n_requests) if starts[i] < starts[i + 1]]
    out: dict[str, list[float]] = {}
    assert replay.p_true is not None
    ev = replay.p_true * replay.margin
    for i, why in zip(nonempty, reasons, strict=True):
        for j in range(starts[i], starts[i + 1]):
            pair = sub_pairs[j]
            reason = why.get(str(batch.offer_id[pair]))  # type: ignore[union-attr]
            if reason is None or not shown[pair]:
                continue
            if reason == "insufficient_miles":
                reason += " (affordable at the request)" if affordable[pair] else " (not affordable then)"
            acc = out.setdefault(reason, [0.0, 0.0, 0.0])
            acc[0] += 1
            acc[1] += replay.p_true[pair]
            acc[2] += ev[pair]
    n = len(rows)
    table = pd.DataFrame(out, index=["shown pairs", "purchases/req", "EV/req"]).T
    table["shown pairs"] *= every
    table[["purchases/req", "EV/req"]] /= n
    return table.sort_values("EV/req", ascending=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cutoff", default="2026-04-02")
    ap.add_argument("--end", default="2026-07-01")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--cache", type=Path, default=None, help="directory of the phase-1 pickles")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        help="name=JSON PipelineConfig fields (+ 'objective'), added to the built-in variants",
    )
    ap.add_argument("--why", type=int, default=0, help="eligibility reasons on every N-th request (0: off)")
    ap.add_argument("--out", type=Path, default=None, help="write the table as JSON lines")
    args = ap.parse_args()

    from recsys.ranker.policy import RankerScorer
    from recsys.ranker.training import train_ranker_bundle

    root = args.data
    cutoff, end = pd.Timestamp(args.cutoff), pd.Timestamp(args.end)
    cache = args.cache
    c0 = time.process_time()
    replay = _replay(root, cutoff, end, cache and cache / "replay.pkl")
    batch = replay.batch
    assert replay.p_true is not None
    bundle = _cached(
        cache and cache / "ranker.pkl",
        lambda: train_ranker_bundle(root, None, before=cutoff.to_pydatetime(), seed=args.seed)[0],
    )
    p_rank = _cached(
        cache and cache / "ranker_p.pkl", lambda: RankerScorer(bundle, root).probabilities(batch)
    )
    recorded = _cached(cache and cache / "pipeline.pkl", lambda: record_pipeline(root, replay, bundle))
    c1 = time.process_time()
    print(f"phase 1: {c1 - c0:.0f} s CPU; {batch.n_requests:,} requests, {batch.n_pairs:,} pairs")

    rp = Replayer(replay, recorded, bundle)
    # the replay's truth: a redemption the member cannot afford at the request is no purchase
    assert replay.responder is not None and replay.responder.blocked is not None
    afford = ~replay.responder.blocked
    margin = np.asarray([rp.values[rp.catalogue.index_of[str(o)]] for o in batch.offer_id])
    rows: dict[str, dict[str, float]] = {}
    rows["oracle"] = rp.row(top_k_inclusion(batch, replay.p_true).astype(float))
    rows["ev_oracle"] = rp.row(top_k_inclusion(batch, replay.p_true * replay.margin).astype(float))
    rows["ranker"] = rp.row(top_k_inclusion(batch, p_rank * margin).astype(float))
    rows["ranker_acc"] = rp.row(top_k_inclusion(batch, p_rank).astype(float))
    # the ranker alone on the candidates the pipeline's eligibility keeps
    eligible = np.zeros(batch.n_pairs, dtype=bool)
    for i, r in enumerate(recorded):
        if r is not None:
            ids = {rp.offers[e].offer_id for e in r.eligible}
            for o, j in rp.pair_of[i].items():
                eligible[j] = o in ids
    rows["ranker_on_eligible"] = rp.row(
        top_k_inclusion(batch, np.where(eligible, p_rank * margin, -np.inf)).astype(float)
    )
    rows["ranker_on_eligible_acc"] = rp.row(
        top_k_inclusion(batch, np.where(eligible, p_rank, -np.inf)).astype(float)
    )
    variants = _variants()
    for spec in args.variant:
        name, _, cfg = spec.partition("=")
        fields = json.loads(cfg or "{}")
        obj = fields.pop("objective", "expected_value")
        variants.append(Variant(name, PipelineConfig(require_seat_inventory=False, **fields), obj))
    for v in variants:
        rows[v.name] = rp.row(rp.inclusion(v, check=v.name == "default"))
    table = pd.DataFrame(rows).T
    evo, orc = rows["ev_oracle"], rows["oracle"]
    table.insert(0, "EV/ev_oracle", table["ev"] / evo["ev"])
    table.insert(1, "purchases/oracle", table["purchases"] / orc["purchases"])
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    pd.set_option("display.max_rows", 200)
    print(table.round(4).to_string())
    print(f"phase 2: {time.process_time() - c1:.0f} s CPU; load average {os.getloadavg()}")
    if args.why:
        for label, key in (("ranker", p_rank * margin), ("ranker_acc", p_rank)):
            shown = top_k_inclusion(batch, key)
            print(
                f"\nwhat the pipeline's eligibility drops of the {label} slates (every {args.why}th request):"
            )
            print(why_dropped(root, replay, bundle, shown, args.why, afford).round(4).to_string())
    if args.out is not None:
        with args.out.open("w") as f:
            for name, r in rows.items():
                f.write(json.dumps({"policy": name, **r}) + "\n")


if __name__ == "__main__":
    main()
