"""How far the contextual ranker could get with what the world hides: the same ranker (same training rows,
same learner) given hidden truth as extra features, valued on every test request under the hidden acceptance
model. Bounds what better features of the observable history can recover.

Extra features (from the generator's ``truth/``, never available to the product):

- ``true_dest``: the member's true destination term for the offer (region affinity, favourites, tastes);
- ``true_trip``: the request's hidden trip purpose (business / leisure / family), long haul and premium.

    .venv/bin/python bench/ranker_ceiling.py --data var/data/world-50k --cache var/replay-50k.pkl
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ranker_levers import _replay, _values  # bench/ is the script's directory

from recsys.evaluation.policy import top_k_inclusion


def _truth_columns(
    root: Path, member_ids: np.ndarray, offer_ids: np.ndarray, request_ids: np.ndarray
) -> dict[str, np.ndarray]:
    from recsys.data.layout import read_table
    from recsys.data.truth import REQUEST_CONTEXT_DIR, TRUTH_DIR, acceptance_parameters, member_traits
    from recsys.data.world import acceptance as acc

    params = acceptance_parameters(root)
    offers = read_table(root, "offers")
    oa = acc.offer_arrays(offers, params)
    uniq, midx = np.unique(np.asarray(member_ids, dtype=object), return_inverse=True)
    traits = acc.member_arrays(member_traits(root, list(uniq)))
    oidx = pd.Index(offers["offer_id"]).get_indexer(np.asarray(offer_ids, dtype=object))
    dest = acc.destination_term(params, traits, oa, midx, oidx)
    dest = np.where(oa.region[oidx] >= 0, dest, np.nan)
    ctx = pd.read_parquet(root / TRUTH_DIR / REQUEST_CONTEXT_DIR)
    pos = pd.Index(ctx["request_id"]).get_indexer(np.asarray(request_ids, dtype=object))
    purpose = {p: i for i, p in enumerate(acc.PURPOSES)}
    trip = np.column_stack(
        [
            np.asarray([purpose.get(p, -1) for p in ctx["trip_purpose"].to_numpy(object)], float)[pos],
            ctx["long_haul"].to_numpy(float)[pos],
            ctx["premium"].to_numpy(float)[pos],
        ]
    )
    trip[pos < 0] = np.nan
    return {"true_dest": dest[:, None], "true_trip": trip}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cutoff", default="2026-04-02")
    ap.add_argument("--end", default="2026-07-01")
    ap.add_argument("--config", default="{}", help="JSON ranker config")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--save-p", type=Path, default=None, help="npz of each variant's P(purchase) per replayed pair"
    )
    args = ap.parse_args()

    from recsys.data.layout import read_table
    from recsys.data.network import load_network
    from recsys.features.miles import balances_column
    from recsys.features.profiles import build_member_profiles
    from recsys.models.bundle import ModelBundle
    from recsys.ranker.features import TRAVEL_KEY, FeatureSpace, booking_inputs, member_travel, to_seconds
    from recsys.ranker.model import RankerConfig, fit_booster
    from recsys.ranker.taste import DestinationFactors
    from recsys.ranker.training import impression_table, pair_features, read_events

    root = args.data
    cutoff, end = pd.Timestamp(args.cutoff), pd.Timestamp(args.end)
    replay = _replay(root, cutoff, end, args.cache)
    batch = replay.batch
    assert replay.p_true is not None
    cfg = RankerConfig.model_validate(json.loads(args.config))
    t0 = time.perf_counter()
    # The training rows exactly as recsys.ranker.training builds them.
    start = cutoff - pd.Timedelta(days=cfg.window_days)
    cf_bundle = ModelBundle.train(root, "als", None, before=start.to_pydatetime())
    as_of = start.to_pydatetime() - timedelta(microseconds=1)

    def profiles_at(when: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
        travel = member_travel(root, when)
        prof = build_member_profiles(root, when)
        return prof.assign(**{TRAVEL_KEY: [travel.get(m) for m in prof["member_id"].astype(str)]}), travel

    profiles, travel = profiles_at(as_of)
    offers = read_table(root, "offers")
    taste = DestinationFactors.fit(travel, factors=cfg.taste_factors) if cfg.cf_features else None
    space = FeatureSpace.build(
        offers, profiles, load_network(), cf=cfg.cf_features, taste=taste, booking=cfg.booking_features
    )
    events = read_events(root, cutoff)
    table = impression_table(root, space, offers, events, profiles, cf_bundle, start, cutoff)
    truth_train = _truth_columns(root, table.member_id, table.offer_id, table.request_id)
    # The replayed pairs: profiles as of the cut-off, the CF model refitted up to it (as the served ranker).
    serve_bundle = ModelBundle.train(root, "als", None, before=cutoff.to_pydatetime())
    serve_profiles, _ = profiles_at(cutoff.to_pydatetime() - timedelta(microseconds=1))
    dep = batch.pair_column("departure_time")
    dep_s = np.full(batch.n_pairs, np.nan)
    has_dep = pd.notna(dep)
    dep_s[has_dep] = to_seconds(pd.Series(dep[has_dep]))

    def obj(column: str) -> np.ndarray:
        return np.asarray(
            [v if isinstance(v, str) and v else None for v in batch.pair_column(column)], object
        )

    pair_members = np.asarray(batch.pair_column("member_id"), dtype=object).astype(str)
    balances = balances_column(batch.requests)  # as of each request
    pair_times = pd.Series(pd.to_datetime(batch.pair_column("request_time")))
    x_replay = pair_features(
        space, offers, read_events(root, end), serve_profiles, serve_bundle,
        pair_members,
        np.asarray(batch.offer_id, dtype=object).astype(str),
        to_seconds(pair_times),
        obj("placement"), obj("origin"), obj("destination"), dep_s, obj("cabin"),
        booking=booking_inputs(batch.requests, batch.request_row),
        miles_balance=None if balances is None else balances[batch.request_row],  # as RankerScorer
    )  # fmt: skip
    req_ids = batch.requests["request_id"].astype(str).to_numpy(object)[batch.request_row]
    truth_replay = _truth_columns(root, batch.pair_column("member_id"), batch.offer_id, req_ids)
    print(f"tables built in {time.perf_counter() - t0:.0f} s: {len(table):,} training rows")

    order = np.argsort(table.time, kind="stable")
    n_cal = max(1, round(len(order) * cfg.calibration_share))
    fit_idx, cal_idx = order[:-n_cal], order[-n_cal:]
    y_fit = table.y[fit_idx].astype(np.float64)
    if cfg.click_label_weight > 0:
        y_fit = np.maximum(y_fit, cfg.click_label_weight * table.click[fit_idx])
    rows: dict[str, dict[str, float]] = {
        "oracle": _values(replay, top_k_inclusion(batch, replay.p_true)),
        "ev_oracle": _values(replay, top_k_inclusion(batch, replay.p_true * replay.margin)),
    }
    saved: dict[str, np.ndarray] = {}
    for name, extra in (
        ("ranker", ()),
        ("ranker+true_dest", ("true_dest",)),
        ("ranker+true_trip", ("true_trip",)),
        ("ranker+true_dest+trip", ("true_dest", "true_trip")),
    ):
        cols = [truth_train[e] for e in extra]
        names = [f"{e}_{j}" for e in extra for j in range(truth_train[e].shape[1])]
        x = np.hstack([table.x, *cols]) if cols else table.x
        xr = np.hstack([x_replay, *[truth_replay[e] for e in extra]]) if cols else x_replay
        shim = _Names(space, tuple(names))
        ranker = fit_booster(
            shim,  # type: ignore[arg-type]
            x[fit_idx], y_fit, x[cal_idx], table.y[cal_idx], cfg, 42,
        )  # fmt: skip
        p = ranker.predict(xr.astype(np.float32))
        saved[name] = p
        rows[f"{name}_ev"] = _values(replay, top_k_inclusion(batch, p * replay.margin))
        rows[f"{name}_acceptance"] = _values(replay, top_k_inclusion(batch, p))
        print(f"{name}: {ranker.info['rounds']} trees")
    out = pd.DataFrame(rows).T
    out.insert(0, "/oracle", out["purchases"] / rows["oracle"]["purchases"])
    out.insert(1, "EV/ev_oracle", out["ev"] / rows["ev_oracle"]["ev"])
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    print(out.round(4).to_string())
    if args.out is not None:
        with args.out.open("a") as f:
            for name, r in rows.items():
                f.write(json.dumps({"policy": name, **r}) + "\n")
    if args.save_p is not None:
        np.savez_compressed(args.save_p, **saved)


class _Names:
    """A feature space's names plus extra columns (what fit_booster reads of a space)."""

    def __init__(self, space: Any, extra: tuple[str, ...]) -> None:
        self.names = (*space.names, *extra)


if __name__ == "__main__":
    main()
