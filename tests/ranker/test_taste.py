"""The ranker's taste features: destination-taste factors (fold-in against the ``implicit`` library's own user
step, shared tastes recovered from co-travel), the travel block by hand, and the travel history from a dataset
against a plain count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.data.layout import read_table
from recsys.data.network import load_network
from recsys.ranker.features import TRAVEL_FEATURES, FeatureSpace, member_travel, travel_block
from recsys.ranker.taste import DestinationFactors


def test_fold_in_equals_implicits_own_user_step():
    from implicit.als import AlternatingLeastSquares

    counts = sp.random(300, 40, density=0.08, random_state=1, format="csr")
    counts.data = np.round(counts.data * 5) + 1
    conf = counts.copy()
    conf.data = 20.0 * np.log1p(conf.data)
    model = AlternatingLeastSquares(
        factors=6, regularization=0.1, iterations=10, random_state=0, num_threads=1
    )
    model.fit(conf.astype(np.float32), show_progress=False)
    factors = DestinationFactors(
        tuple(f"D{j}" for j in range(40)), np.asarray(model.item_factors, dtype=np.float64), 0.1, 20.0
    )
    for u in (0, 3, 17, 250):
        row = counts[u]
        travel = {"flights": {f"D{j}": float(v) for j, v in zip(row.indices, row.data, strict=True)}}
        want = np.asarray(model.recalculate_user(u, conf[u].astype(np.float32))).ravel()
        np.testing.assert_allclose(factors.member_vector(travel), want, rtol=1e-4, atol=1e-5)
    assert not factors.member_vector(None).any()
    assert not factors.member_vector({"flights": {"NOWHERE": 3}}).any()


def test_factors_carry_a_shared_taste_to_destinations_never_visited():
    # Two tastes, five destinations each; every member travels to three destinations of their own taste.
    rng = np.random.default_rng(7)
    groups = {"A": [f"A{i}" for i in range(5)], "B": [f"B{i}" for i in range(5)]}
    travel = {}
    for m in range(400):
        taste = "A" if m % 2 else "B"
        picks = rng.choice(groups[taste], 3, replace=False)
        travel[f"M{m}"] = {"flights": {str(d): int(rng.integers(1, 4)) for d in picks}}
    factors = DestinationFactors.fit(travel, factors=4, seed=3)
    member = {"flights": {"A0": 2, "A1": 1}}  # never went to A2..A4
    s = factors.scores([member], np.zeros(6, dtype=np.int64), ["A2", "A3", "A4", "B2", "B3", "B4"])
    assert s[:3, 0].min() > s[3:, 0].max()
    assert s[:3, 1].min() > s[3:, 1].max()
    # unknown destinations and members without travel
    s = factors.scores([None, member], np.asarray([0, 1, -1]), ["A2", "XXX", "A2"])
    assert s[0, 0] == 0.0 and np.isnan(s[1]).all() and s[2, 0] == 0.0
    again = DestinationFactors.from_json(factors.to_json())
    np.testing.assert_array_equal(again.item, factors.item)


def test_travel_block_by_hand(small_world: Path):
    offers = read_table(small_world, "offers")
    space = FeatureSpace.build(offers, pd.DataFrame({"member_id": []}), load_network())
    arrays = space.bind_offers(offers)
    award = offers.index[offers["category"] == "award_flight"][0]
    dest = str(offers.loc[award, "destination"])
    region = space.airports[dest][2]
    other_region = next(c for c, a in space.airports.items() if a[2] >= 0 and a[2] != region)
    same_region = next(c for c, a in space.airports.items() if a[2] == region and c != dest)
    travel = {"flights": {dest: 3, same_region: 1, other_region: 4}, "places": {dest: 2, other_region: 5}}
    ancillary = offers.index[offers["family"] == "ancillary"][0]
    rows = np.asarray([award, ancillary, award])
    out = travel_block([travel, None], np.asarray([0, 0, 1]), arrays, rows, space.airports)
    assert out.shape == (3, len(TRAVEL_FEATURES))
    np.testing.assert_allclose(out[0], [3.0, 4.0 / 8.0, 2.0])
    assert np.isnan(out[1]).all()  # no destination
    assert out[2, 0] == 0.0 and np.isnan(out[2, 1]) and out[2, 2] == 0.0  # no travel: no share


def test_member_travel_counts_flights_partner_places_and_awards_before_the_time(small_world: Path):
    as_of = pd.Timestamp("2026-01-01")
    travel = member_travel(small_world, as_of)
    flights = read_table(small_world, "flights")
    members = read_table(small_world, "members").set_index("member_id")
    partner = read_table(small_world, "partner_activities")
    redemptions = read_table(small_world, "redemptions")
    checked = awards = 0
    for member in list(travel)[:60]:
        home = members.loc[member, "home_airport"]
        f = flights[(flights["member_id"] == member) & (flights["departure_time"] < as_of)]
        f = f[f["destination"] != home]
        want = f["destination"].value_counts().to_dict()
        assert travel[member].get("flights", {}) == want
        p = partner[(partner["member_id"] == member) & (partner["activity_time"] < as_of)]
        p = p[p["place"].notna() & (p["place"] != home)]
        assert travel[member].get("places", {}) == p["place"].value_counts().to_dict()
        r = redemptions[(redemptions["member_id"] == member) & (redemptions["redeem_time"] < as_of)]
        r = r[r["destination"].notna() & (r["destination"] != home)]
        assert travel[member].get("awards", {}) == r["destination"].value_counts().to_dict()
        awards += bool(len(r))
        checked += 1
    assert checked == 60 and awards > 0
