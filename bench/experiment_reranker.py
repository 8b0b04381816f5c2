"""Experiment: how far can a feature-based re-ranker go past popularity on the 50k world? (not a benchmark)

Issue 3 asks for a champion at >= 1.3x popularity's NDCG@10. The registered models reach ~1.09x. This script
tests whether the gap is the models' or the world's, with the strongest kind of model industry uses on top of
candidate generators: a gradient-boosted re-ranker over hand-made features of every (member, offer) pair —

* exposure and response history: impressions (all / 90 / 365 days / decayed), clicks, purchases, dismissals
  of the offer and of its category, days since the last impression, the member's share of impressions;
* eligibility the member will probably meet: flights of the last year whose cabin, fare class, origin and
  lounge match the offer's rules, home airport in the offer's origins, miles balance at the cut-off against
  the offer's minimum, the offer's validity during the next 90 days;
* the scores of the ALS and segment-popularity bundles trained before the cut-off; offer and tier ids.

Labels are purchases in the 90 days after a cut-off. The re-ranker is trained on one period and judged on the
next, like the registered models: trained at ``validation cut-off - 90 days``, judged on the validation
period; trained at the validation cut-off, judged on the test period (never reading the test period). Every
figure is NDCG@10 over members who accepted an offer in the judged period, all 93 offers ranked.

    .venv/bin/python bench/experiment_reranker.py [--data var/data/world-50k]

Findings are in the README ("How to read the comparison table") and the issue notes.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402

from recsys.data.layout import read_table  # noqa: E402
from recsys.evaluation.metrics import metric_name, metrics_at  # noqa: E402
from recsys.evaluation.split import TimeSplit, time_split  # noqa: E402
from recsys.models.bundle import ModelBundle  # noqa: E402
from recsys.schema import Col  # noqa: E402

K = 10
NDCG = metric_name("ndcg", K)


class World:
    """The tables the features read, with member and offer indices resolved once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.offers = read_table(root, "offers")
        self.offer_ids = self.offers[Col.OFFER_ID].to_numpy(dtype=object)
        self.category = pd.Categorical(self.offers[Col.CATEGORY]).codes
        self.members = read_table(root, "members")
        self.member_index = pd.Index(self.members[Col.MEMBER_ID].astype(str))
        inter = read_table(
            root, "interactions", columns=[Col.MEMBER_ID, Col.OFFER_ID, Col.EVENT_TYPE, Col.EVENT_TIME]
        )
        self.inter = pd.DataFrame(
            {
                "m": self.member_index.get_indexer(inter[Col.MEMBER_ID].astype(str)),
                "o": pd.Index(self.offer_ids).get_indexer(inter[Col.OFFER_ID]),
                "kind": inter[Col.EVENT_TYPE].astype(str).to_numpy(),
                "t": pd.to_datetime(inter[Col.EVENT_TIME]),
            }
        )
        fl = read_table(
            root,
            "flights",
            columns=[
                Col.MEMBER_ID,
                Col.DEPARTURE_TIME,
                Col.ORIGIN,
                Col.CABIN,
                Col.FARE_CLASS,
                "miles_earned",
            ],
        )
        fl["m"] = self.member_index.get_indexer(fl[Col.MEMBER_ID].astype(str))
        fl["t"] = pd.to_datetime(fl[Col.DEPARTURE_TIME])
        self.flights = fl
        red = read_table(root, "redemptions", columns=[Col.MEMBER_ID, Col.REDEEM_TIME, "miles_spent"])
        red["m"] = self.member_index.get_indexer(red[Col.MEMBER_ID].astype(str))
        red["t"] = pd.to_datetime(red[Col.REDEEM_TIME])
        self.redemptions = red
        airports = pd.read_parquet(root / "network" / "airports.parquet")
        self.lounges = set(airports.loc[airports["has_lounge"], "iata"])

    def features(self, cutoff: pd.Timestamp, members: np.ndarray) -> dict[str, np.ndarray]:
        """(members x offers) feature matrices from history strictly before ``cutoff``."""
        n, n_off = len(members), len(self.offer_ids)
        row_of = pd.Series(np.arange(n), index=members)
        h = self.inter[self.inter["t"] < cutoff]
        r = row_of.reindex(h["m"].to_numpy()).to_numpy()
        keep = ~np.isnan(r) & (h["o"].to_numpy() >= 0)
        r, o = r[keep].astype(int), h["o"].to_numpy()[keep]
        kind = h["kind"].to_numpy()[keep]
        age = (cutoff - h["t"]).dt.total_seconds().to_numpy()[keep] / 86_400
        f: dict[str, np.ndarray] = {}

        def count(name: str, mask: np.ndarray, weight: np.ndarray | None = None) -> None:
            mat = np.zeros((n, n_off))
            np.add.at(mat, (r[mask], o[mask]), 1.0 if weight is None else weight[mask])
            f[name] = mat

        imp = kind == "impression"
        count("impressions", imp)
        count("impressions_90d", imp & (age < 90))
        count("impressions_365d", imp & (age < 365))
        count("impressions_decayed", imp, 0.5 ** (age / 60))
        count("clicks", kind == "click")
        count("purchases", kind == "purchase")
        count("purchases_decayed", kind == "purchase", 0.5 ** (age / 180))
        count("dismissals", kind == "dismiss")
        last = np.full((n, n_off), 9999.0)
        np.minimum.at(last, (r[imp], o[imp]), age[imp])
        f["days_since_impression"] = last
        for name in ("impressions", "impressions_90d", "purchases"):
            by_cat = np.zeros((n, self.category.max() + 1))
            for c in range(by_cat.shape[1]):
                by_cat[:, c] = f[name][:, self.category == c].sum(axis=1)
            f[f"category_{name}"] = by_cat[:, self.category]
        f["member_impressions_90d"] = np.repeat(f["impressions_90d"].sum(axis=1, keepdims=True), n_off, 1)
        f["member_purchases"] = np.repeat(f["purchases"].sum(axis=1, keepdims=True), n_off, 1)
        f["impression_share_365d"] = f["impressions_365d"] / np.maximum(
            f["impressions_365d"].sum(axis=1, keepdims=True), 1
        )
        # eligibility the member will probably meet, from last year's flights
        fl = self.flights[(self.flights["t"] < cutoff) & (self.flights["t"] >= cutoff - timedelta(days=365))]
        fr = row_of.reindex(fl["m"].to_numpy()).to_numpy()
        fl, fr = fl[~np.isnan(fr)], fr[~np.isnan(fr)].astype(int)
        n_flights = np.bincount(fr, minlength=n).astype(float)
        matching = np.zeros((n, n_off))
        home = self.members[Col.HOME_AIRPORT].to_numpy()[self.member_index.get_indexer(members)]
        home_ok = np.ones((n, n_off))
        for j, offer in enumerate(self.offers.itertuples(index=False)):
            ok = np.ones(len(fl), dtype=bool)
            if len(offer.eligible_cabins):
                ok &= fl[Col.CABIN].isin(list(offer.eligible_cabins)).to_numpy()
            if len(offer.eligible_fare_classes):
                ok &= fl[Col.FARE_CLASS].isin(list(offer.eligible_fare_classes)).to_numpy()
            if len(offer.eligible_origins):
                ok &= fl[Col.ORIGIN].isin(list(offer.eligible_origins)).to_numpy()
                home_ok[:, j] = np.isin(home, list(offer.eligible_origins))
            if offer.requires_lounge:
                ok &= fl[Col.ORIGIN].isin(self.lounges).to_numpy()
            matching[:, j] = np.bincount(fr[ok], minlength=n)
        f["matching_flights"] = matching
        f["matching_share"] = matching / np.maximum(n_flights[:, None], 1)
        f["flights_365d"] = np.repeat(n_flights[:, None], n_off, 1)
        f["home_airport_ok"] = home_ok
        # miles balance at the cut-off: today's balance less what was earned since, plus what was spent since
        idx = self.member_index.get_indexer(members)
        earned = self.flights[self.flights["t"] >= cutoff].groupby("m")["miles_earned"].sum()
        spent = self.redemptions[self.redemptions["t"] >= cutoff].groupby("m")["miles_spent"].sum()
        balance = (
            self.members[Col.MILES_BALANCE].to_numpy()[idx]
            - earned.reindex(idx).fillna(0).to_numpy()
            + spent.reindex(idx).fillna(0).to_numpy()
        )
        min_miles = self.offers[Col.MIN_MILES].to_numpy(dtype=float)
        f["miles_balance"] = np.repeat(balance[:, None], n_off, 1)
        f["miles_ok"] = (balance[:, None] >= min_miles[None, :]).astype(float)
        f["miles_log_ratio"] = np.log1p(np.maximum(balance, 0))[:, None] - np.log1p(min_miles)[None, :]
        end = cutoff + timedelta(days=90)
        valid_from = pd.to_datetime(self.offers[Col.VALID_FROM]).fillna(pd.Timestamp("2000-01-01"))
        valid_to = pd.to_datetime(self.offers[Col.VALID_TO]).fillna(pd.Timestamp("2100-01-01"))
        overlap = (valid_to.clip(upper=end) - valid_from.clip(lower=cutoff)).dt.total_seconds() / (
            90 * 86_400
        )
        f["valid_share_next_90d"] = np.repeat(overlap.clip(0, 1).to_numpy()[None, :], n, 0)
        f["offer"] = np.repeat(np.arange(n_off, dtype=float)[None, :], n, 0)
        tier = pd.Categorical(self.members[Col.TIER]).codes[idx].astype(float)
        f["tier"] = np.repeat(tier[:, None], n_off, 1)
        return f

    def model_scores(self, kind: str, split: TimeSplit, members: np.ndarray) -> np.ndarray:
        bundle = ModelBundle.train(self.root, kind, None, before=split.before, seed=42)
        rec = bundle.recommend(list(members), k=len(self.offer_ids))
        scores = np.full((len(members), len(self.offer_ids)), -1e9)
        rows = pd.Index(members).get_indexer(rec[Col.MEMBER_ID])
        scores[rows, pd.Index(self.offer_ids).get_indexer(rec[Col.OFFER_ID])] = rec["score"].to_numpy()
        return scores


class Period:
    """One judged period: its members, feature matrix (rows = member x offer) and labels."""

    def __init__(self, world: World, split: TimeSplit) -> None:
        self.split = split
        self.members = pd.unique(split.relevant[Col.MEMBER_ID].astype(str))
        f = world.features(pd.Timestamp(split.cutoff), self.members)
        f["als"] = world.model_scores("als", split, self.members)
        f["popularity"] = world.model_scores("popularity", split, self.members)  # per segment: the baseline
        self.names = sorted(f)
        self.scores = {k: f[k] for k in ("als", "popularity")}
        self.x = np.stack([f[k].ravel() for k in self.names], axis=1)
        y = np.zeros((len(self.members), len(world.offer_ids)))
        y[
            pd.Index(self.members).get_indexer(split.relevant[Col.MEMBER_ID]),
            pd.Index(world.offer_ids).get_indexer(split.relevant[Col.OFFER_ID]),
        ] = 1.0
        self.y = y.ravel()
        self.offer_ids = world.offer_ids

    def ndcg(self, scores: np.ndarray) -> float:
        top = np.argsort(-scores.reshape(len(self.members), -1), axis=1)[:, :K]
        rec = pd.DataFrame(
            {
                Col.MEMBER_ID: np.repeat(self.members, K),
                Col.OFFER_ID: self.offer_ids[top].ravel(),
                "rank": np.tile(np.arange(1, K + 1), len(self.members)),
            }
        )
        return float(metrics_at(rec, self.split.relevant, [K], catalogue_size=len(self.offer_ids))[NDCG])


def fit(period: Period) -> HistGradientBoostingClassifier:
    categorical = [period.names.index("offer"), period.names.index("tier")]
    model = HistGradientBoostingClassifier(
        max_iter=150,
        learning_rate=0.05,
        max_leaf_nodes=15,
        min_samples_leaf=400,
        l2_regularization=1.0,
        categorical_features=categorical,
        early_stopping=False,
        random_state=0,
    )
    return model.fit(period.x, period.y)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / "var" / "data" / "world-50k")
    args = p.parse_args()
    world = World(args.data)
    test = time_split(args.data)
    validation = time_split(args.data, end=test.cutoff)
    earlier = time_split(args.data, cutoff=validation.cutoff - timedelta(days=90), end=validation.cutoff)
    periods = {
        name: Period(world, s) for name, s in (("train", earlier), ("validation", validation), ("test", test))
    }
    rows = []
    for judged, trained_on in (("validation", "train"), ("test", "validation")):
        period = periods[judged]
        segment = period.ndcg(period.scores["popularity"])
        reranker = period.ndcg(fit(periods[trained_on]).predict_proba(period.x)[:, 1])
        rows.append(
            {
                "judged period": f"{judged} (from {period.split.cutoff:%Y-%m-%d})",
                "popularity (segment)": segment,
                "als": period.ndcg(period.scores["als"]),
                "re-ranker": reranker,
                "re-ranker / popularity": reranker / segment,
            }
        )
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
