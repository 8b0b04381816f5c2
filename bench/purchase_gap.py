"""Why ranking by expected value loses purchases, and what policies that know more reach (issue 11).

Reads the phase-1 cache of ``bench/pipeline_stages.py`` (the replay, the default ranker trained before the
cut-off, its P(purchase) of every candidate and one recorded pass of the service's pipeline) and reports:

1. **Calibration** of the ranker's P(purchase) per offer family and per margin decile (deciles of the
   candidate pairs' margins), on every candidate pair of the test requests, on the pipeline's eligible pairs
   and on the slates shown by expected value (the ranker alone, the ranker through the pipeline, the EV
   oracle): mean predicted p against mean true p, fatigue-free (the policy table's truth) and with the
   logged fatigue. An over-estimated p of a high-margin offer pulls an EV ranking toward it (winner's curse).
2. **Ceilings** under the EV objective, alone and through the pipeline (the recorded eligible offers
   re-ranked by the pipeline's own value and diversity stages with the policy's p in place of the ranker's):

   - ``obs_oracle``: the true acceptance model with the hidden destination-taste term replaced by its offer
     average and the hidden trip purpose by the member's purpose mix (its average over that member's trips),
     ranked by that p x margin; ``no_taste_oracle`` and ``no_purpose_oracle`` replace one term each;
   - ``recal_oracle``: the ranker's p rescaled per (family, margin decile) so that each group's mean equals
     the group's true mean on the test requests themselves (a calibration no learner can have; the most a
     per-family / per-margin-band recalibration could earn); ``recal_offer_oracle`` the same per (offer,
     placement): the most a per-offer correction of the level (e.g. shrinkage toward a family mean) earns;
   - any p saved by ``bench/ranker_ceiling.py --save-p`` or ``bench/ranker_levers.py --save-p``
     (``--extra-p``), e.g. the ranker given the hidden terms as features, or a lever's ranker;
   - ``--blend b``: the ranker's p x margin^b (not the default objective; where purchases and value trade).

Values are true fatigue-free purchases and EV per request (a redemption the member cannot afford at the
request is no purchase), with x segment popularity and shares of the oracles.

    .venv/bin/python bench/pipeline_stages.py --data var/data/world-50k --cache var/stages   # phase 1
    .venv/bin/python bench/purchase_gap.py --data var/data/world-50k --cache var/stages \
        --extra-p var/runs/ceiling_p.npz
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd
from pipeline_stages import Recorded, Replayer, Variant

from recsys.evaluation.policy import top_k_inclusion
from recsys.evaluation.replay import Replay
from recsys.pipeline.types import PipelineConfig

DEFAULT = Variant("default", PipelineConfig(require_seat_inventory=False))


def _load(path: Path) -> Any:
    with path.open("rb") as f:
        return pickle.load(f)


def observable_p(root: Path, replay: Replay, *, taste: bool, purpose: bool) -> np.ndarray:
    """True fatigue-free P(purchase) of every replayed pair with the destination-taste term (``taste``
    False) and/or the trip purpose (``purpose`` False) replaced by their averages; 0 where the member
    cannot afford the redemption at the request, as in the replay's truth."""
    from recsys.data.layout import read_table
    from recsys.data.truth import REQUEST_CONTEXT_DIR, TRUTH_DIR, acceptance_parameters, member_traits
    from recsys.data.world import acceptance as acc

    batch = replay.batch
    params = acceptance_parameters(root)
    offers = read_table(root, "offers")
    oa = acc.offer_arrays(offers, params)
    members = np.asarray(batch.pair_column("member_id"), dtype=object).astype(str)
    uniq, midx = np.unique(members, return_inverse=True)
    traits = acc.member_arrays(member_traits(root, list(uniq)))
    oidx = pd.Index(offers["offer_id"]).get_indexer(np.asarray(batch.offer_id, dtype=object))
    req_ids = batch.requests["request_id"].astype(str).to_numpy(object)[batch.request_row]
    ctx = pd.read_parquet(root / TRUTH_DIR / REQUEST_CONTEXT_DIR)
    pos = pd.Index(ctx["request_id"]).get_indexer(req_ids)
    codes = {p: i for i, p in enumerate(acc.PURPOSES)}
    trip = np.asarray([codes.get(p, -1) for p in ctx["trip_purpose"].to_numpy(object)])[pos]
    place_codes = {p: i for i, p in enumerate(acc.PLACEMENTS)}
    place = np.asarray([place_codes[p] for p in batch.pair_column("placement")], dtype=np.int64)
    logit = acc.pair_logit(
        params, traits, oa, midx, oidx,
        purpose=trip if purpose else np.full(len(trip), -1),  # -1: the member's purpose mix
        long_haul=ctx["long_haul"].to_numpy(bool)[pos],
        premium=ctx["premium"].to_numpy(bool)[pos],
        placement=place,
        destination_average=None if taste else acc.destination_term_average(params, traits, oa),
    )  # fmt: skip
    p = acc.sigmoid(logit)
    assert replay.responder is not None
    blocked = replay.responder.blocked
    return p if blocked is None else np.where(blocked, 0.0, p)


def _with_probs(rp: Replayer, recorded: list[Recorded | None], p: np.ndarray) -> list[Recorded | None]:
    """The recorded requests with the candidates' P(accept) replaced by ``p`` (per replayed pair); eligible
    offers outside the logged candidate set keep the ranker's (they are never shown, but take part in the
    diversity stage)."""
    out: list[Recorded | None] = []
    for i, r in enumerate(recorded):
        if r is None:
            out.append(None)
            continue
        pairs = rp.pair_of[i]
        probs = [
            float(p[pairs[o]]) if (o := rp.offers[e].offer_id) in pairs else q
            for e, q in zip(r.eligible, r.probs, strict=True)
        ]
        out.append(dataclasses.replace(r, probs=probs))
    return out


def _pipeline_pi(rp: Replayer, recorded: list[Recorded | None], p: np.ndarray | None) -> np.ndarray:
    saved = rp.recorded
    rp.recorded = recorded if p is None else _with_probs(rp, recorded, p)
    try:
        return rp.inclusion(DEFAULT, check=p is None)
    finally:
        rp.recorded = saved


def _groups(replay: Replay) -> tuple[np.ndarray, pd.DataFrame]:
    """Per pair, its margin decile (0-9, deciles of the candidate pairs' margins, ties broken by order)."""
    m = replay.margin
    dec = np.minimum((pd.Series(m).rank(method="first").to_numpy() - 1) * 10 // len(m), 9).astype(int)
    bounds = pd.DataFrame({"decile": dec, "margin": m}).groupby("decile")["margin"].agg(["min", "max"])
    return dec, bounds


def calibration_table(
    replay: Replay, p: np.ndarray, masks: dict[str, np.ndarray], dec: np.ndarray
) -> pd.DataFrame:
    assert replay.p_true is not None and replay.p_true_fatigue is not None
    rows = []
    keys: list[tuple[str, np.ndarray]] = [("all", np.ones(len(p), dtype=bool))]
    keys += [(f"family {f}", replay.family == f) for f in ("ancillary", "redemption", "upsell")]
    keys += [(f"margin decile {d + 1}", dec == d) for d in range(10)]
    for gname, g in keys:
        row: dict[str, Any] = {"group": gname, "margin CNY": float(replay.margin[g].mean())}
        for mname, mask in masks.items():
            sel = g & mask
            n = int(sel.sum())
            pp, pt, pf = p[sel].mean(), replay.p_true[sel].mean(), replay.p_true_fatigue[sel].mean()
            row[f"{mname} pairs"] = n
            row[f"{mname} pred"] = pp
            row[f"{mname} true"] = pt
            row[f"{mname} pred/true"] = pp / pt if pt > 0 else np.nan
            row[f"{mname} pred/true fatigue"] = pp / pf if pf > 0 else np.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("group")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True, help="bench/pipeline_stages.py's phase-1 cache")
    ap.add_argument("--extra-p", type=Path, action="append", default=[], help="npz of per-pair p arrays")
    ap.add_argument(
        "--blend", type=float, action="append", default=[], help="also rank the ranker's p x margin^b"
    )
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON lines")
    args = ap.parse_args()

    from recsys.models.bundle import ModelBundle

    c0 = time.process_time()
    root, cache = args.data, args.cache
    replay: Replay = _load(cache / "replay.pkl")
    bundle = _load(cache / "ranker.pkl")
    p_rank: np.ndarray = _load(cache / "ranker_p.pkl")
    recorded: list[Recorded | None] = _load(cache / "pipeline.pkl")
    batch = replay.batch
    assert replay.p_true is not None
    rp = Replayer(replay, recorded, bundle)
    margin = replay.margin
    n = batch.n_requests
    eligible = np.zeros(batch.n_pairs, dtype=bool)
    for i, rec in enumerate(recorded):
        if rec is not None:
            ids = {rp.offers[e].offer_id for e in rec.eligible}
            for o, j in rp.pair_of[i].items():
                eligible[j] = o in ids

    # 1. calibration
    dec, bounds = _groups(replay)
    pi_rank = top_k_inclusion(batch, p_rank * margin).astype(bool)
    pi_pipe = _pipeline_pi(rp, recorded, None).astype(bool)
    pi_evo = top_k_inclusion(batch, replay.p_true * margin).astype(bool)
    masks = {
        "candidates": np.ones(batch.n_pairs, dtype=bool),
        "eligible": eligible,
        "ranker slate": pi_rank,
        "pipeline slate": pi_pipe,
        "EV-oracle slate": pi_evo,
    }
    cal = calibration_table(replay, p_rank, masks, dec)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 40)
    pd.set_option("display.max_rows", 200)
    print("margin deciles (CNY):")
    print(bounds.round(2).T.to_string())
    for mname in masks:
        cols = [c for c in cal.columns if c.startswith(mname + " ")]
        print(f"\ncalibration on {mname}:")
        print(cal[["margin CNY", *cols]].round(4).to_string())
    sums = {}
    for mname, mask in (("ranker slate", pi_rank), ("pipeline slate", pi_pipe)):
        sums[mname] = {
            "predicted purchases/req": float(p_rank[mask].sum()) / n,
            "true purchases/req": float(replay.p_true[mask].sum()) / n,
            "predicted EV/req": float((p_rank * margin)[mask].sum()) / n,
            "true EV/req": float((replay.p_true * margin)[mask].sum()) / n,
        }
    print("\nthe shown slates, predicted against true:")
    print(pd.DataFrame(sums).T.round(4).to_string())

    # 2. ceilings
    t_obs = time.perf_counter()
    policies: dict[str, np.ndarray] = {
        "ranker": p_rank,
        "obs_oracle": observable_p(root, replay, taste=False, purpose=False),
        "no_taste_oracle": observable_p(root, replay, taste=False, purpose=True),
        "no_purpose_oracle": observable_p(root, replay, taste=True, purpose=False),
    }
    print(f"\nobservable oracles computed in {time.perf_counter() - t_obs:.0f} s")
    assert replay.p_no_taste is not None
    assert np.allclose(policies["no_taste_oracle"], replay.p_no_taste), "no_taste differs from the replay's"
    place = batch.pair_column("placement")
    for name, key in (
        ("recal_oracle", pd.factorize(replay.family)[0] * 10 + dec),
        ("recal_offer_oracle", pd.factorize(pd.Series(batch.offer_id).astype(str) + "|" + place)[0]),
    ):
        pred = np.bincount(key, weights=p_rank)
        true = np.bincount(key, weights=replay.p_true)
        policies[name] = p_rank * np.divide(true, pred, out=np.ones_like(true), where=pred > 0)[key]
    for path in args.extra_p:
        with np.load(path) as z:
            for name in z.files:
                policies[name] = z[name]
                assert len(z[name]) == batch.n_pairs, (name, len(z[name]))
    pop = ModelBundle.train(root, "popularity", {"groups": ["segment"]}, before=replay.cutoff.to_pydatetime())
    pop_scores, _ = pop.score_pairs(batch.pair_column("member_id"), batch.offer_id)

    def val(pi: np.ndarray) -> dict[str, float]:
        pi = pi.astype(float)
        out = {
            "purchases": float(pi @ replay.p_true) / n,
            "ev": float(pi @ (replay.p_true * margin)) / n,
        }
        for fam in ("ancillary", "redemption", "upsell"):
            out[f"purchases_{fam}"] = float((pi * (replay.family == fam)) @ replay.p_true) / n
        return out

    rows: dict[str, dict[str, float]] = {
        "popularity": val(top_k_inclusion(batch, pop_scores)),
        "oracle": val(top_k_inclusion(batch, replay.p_true)),
        "ev_oracle": val(pi_evo),
        "ev_oracle_pipeline": val(_pipeline_pi(rp, recorded, replay.p_true)),
    }
    for name, p in policies.items():
        rows[f"{name}_ev"] = val(top_k_inclusion(batch, p * margin))
        rows[f"{name}_ev_pipeline"] = val(_pipeline_pi(rp, recorded, None if name == "ranker" else p))
    for b in args.blend:
        # p x margin^b is the EV of p x margin^(b-1): the pipeline's value stage then ranks by the blend
        scaled = np.where(margin > 0, p_rank * np.power(np.maximum(margin, 1e-9), b - 1.0), p_rank)
        rows[f"ranker_blend{b:g}"] = val(top_k_inclusion(batch, p_rank * np.power(margin, b)))
        rows[f"ranker_blend{b:g}_pipeline"] = val(_pipeline_pi(rp, recorded, scaled))
    table = pd.DataFrame(rows).T
    base, orc, evo = rows["popularity"], rows["oracle"], rows["ev_oracle"]
    table.insert(0, "x_pop", table["purchases"] / base["purchases"])
    table.insert(1, "/ev_oracle purchases", table["purchases"] / evo["purchases"])
    table.insert(2, "EV/ev_oracle", table["ev"] / evo["ev"])
    table.insert(3, "/oracle", table["purchases"] / orc["purchases"])
    print(table.round(4).to_string())
    print(f"CPU {time.process_time() - c0:.0f} s; load average {os.getloadavg()}")
    if args.out is not None:
        with args.out.open("w") as f:
            for name, values in rows.items():
                f.write(json.dumps({"policy": name, **values}) + "\n")
            for group, c in cal.iterrows():
                f.write(json.dumps({"calibration": group, **c.to_dict()}) + "\n")


if __name__ == "__main__":
    main()
