"""How much of a request's hidden trip purpose (business / leisure / family) its observable context reveals.

For every trip request of a generated world (placement other than home), a multinomial LightGBM predicts the
hidden purpose (truth/request_context) from one set of observables; trained on half the members, judged on
the other half. Reported per feature set: log loss, accuracy and the share of the purpose's entropy it
explains, ``1 - log loss / H(purpose)`` (0: no better than the base rates; 1: the purpose is known). Feature
sets:

- ``trip``: the request context the ranker sees today: fare class, cabin, departure weekday and hour (UTC),
  distance, hours to departure, placement;
- ``trip+member``: plus the member's hidden purpose mix (an upper bound for what member history can say);
- ``booking``: the booking columns (lead time, party size, children, stay, Saturday-night stay), when the
  world has them; ``trip+booking``: both.

    .venv/bin/python bench/purpose_observables.py --data var/data/world-50k
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from recsys.data.layout import read_table
from recsys.data.truth import REQUEST_CONTEXT_DIR, TRUTH_DIR
from recsys.schema import BOOKING_COLUMNS, FARE_CLASS_CABIN, Col

PURPOSES = ("business", "leisure", "family")


def _frame(root: Path) -> pd.DataFrame:
    req = read_table(root, "requests")
    req = req.loc[req[Col.FLIGHT_ID].notna()].reset_index(drop=True)
    ctx = pd.read_parquet(root / TRUTH_DIR / REQUEST_CONTEXT_DIR)
    req = req.merge(ctx[[Col.REQUEST_ID, "trip_purpose"]], on=Col.REQUEST_ID, how="inner")
    flights = read_table(root, "flights", columns=[Col.FLIGHT_ID, Col.DISTANCE_KM])
    req = req.merge(flights, on=Col.FLIGHT_ID, how="left")
    traits = pd.read_parquet(root / TRUTH_DIR / "member_traits", columns=[Col.MEMBER_ID, *PURPOSES])
    req = req.merge(traits, on=Col.MEMBER_ID, how="left")
    dep = pd.to_datetime(req[Col.DEPARTURE_TIME])
    fcs = sorted(FARE_CLASS_CABIN)
    out = pd.DataFrame(
        {
            "member_id": req[Col.MEMBER_ID].astype(str),
            "y": req["trip_purpose"].map({p: i for i, p in enumerate(PURPOSES)}),
            "fare_class": req[Col.FARE_CLASS].map({f: i for i, f in enumerate(fcs)}),
            "cabin": req[Col.CABIN].map({"Y": 0, "W": 1, "C": 2, "F": 3}),
            "weekday": dep.dt.weekday,
            "hour": dep.dt.hour,
            "km": req[Col.DISTANCE_KM],
            "hours_to_departure": (dep - pd.to_datetime(req[Col.REQUEST_TIME])).dt.total_seconds() / 3600,
            "placement": pd.factorize(req[Col.PLACEMENT], sort=True)[0],
            "mix_business": req["business"],
            "mix_leisure": req["leisure"],
            "mix_family": req["family"],
        }
    )
    if all(c in req for c in BOOKING_COLUMNS):
        for c in BOOKING_COLUMNS:
            out[c] = pd.to_numeric(req[c], errors="coerce")
        nights = out[Col.STAY_NIGHTS]
        out["saturday_night"] = np.where(nights.isna(), np.nan, ((5 - out["weekday"]) % 7 < nights))
    return out.dropna(subset=["y"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    args = ap.parse_args()
    df = _frame(args.data)
    trip = ["fare_class", "cabin", "weekday", "hour", "km", "hours_to_departure", "placement"]
    member = ["mix_business", "mix_leisure", "mix_family"]
    booking = [*BOOKING_COLUMNS, "saturday_night"] if Col.PARTY_SIZE in df else []
    sets = {"trip": trip, "trip+member": trip + member}
    if booking:
        sets |= {
            "booking": booking,
            "trip+booking": trip + booking,
            "trip+booking+member": trip + booking + member,
        }
    members = df["member_id"].unique()
    rng = np.random.default_rng(42)
    test_members = set(rng.choice(members, len(members) // 2, replace=False))
    test = df["member_id"].isin(test_members).to_numpy()
    y = df["y"].to_numpy(int)
    prior = np.bincount(y[~test], minlength=3) / (~test).sum()
    h = -float(np.mean(np.log(prior[y[test]])))
    print(
        f"{len(df):,} trip requests, purposes {dict(zip(PURPOSES, np.bincount(y, minlength=3), strict=True))}"
    )
    print(f"base rates: log loss {h:.4f} (the purpose's entropy, nats)")
    print("| features | log loss | accuracy | share of the purpose's entropy explained |")
    print("|---|---|---|---|")
    for name, cols in sets.items():
        x = df[cols].to_numpy(np.float64)
        model = lgb.LGBMClassifier(
            objective="multiclass", n_estimators=200, learning_rate=0.1, num_leaves=31, verbose=-1,
            random_state=42, n_jobs=1,
        )  # fmt: skip
        model.fit(x[~test], y[~test])
        p = np.clip(model.predict_proba(x[test]), 1e-12, 1)
        ll = -float(np.mean(np.log(p[np.arange(test.sum()), y[test]])))
        acc = float(np.mean(p.argmax(axis=1) == y[test]))
        print(f"| {name} | {ll:.4f} | {acc:.3f} | {1 - ll / h:.3f} |")


if __name__ == "__main__":
    main()
