"""Interaction matrix: weights checked against values computed by hand on a tiny dataset."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from recsys.data.layout import DatasetWriter
from recsys.interactions import InteractionConfig, build_interactions
from recsys.schema import Col

T = datetime(2026, 1, 1)


def _d(days: float) -> pd.Timestamp:
    return pd.Timestamp(T - timedelta(days=days))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("tiny") / "world"
    members = pd.DataFrame({Col.MEMBER_ID: ["m1", "m2", "m3"], Col.TIER: ["gold", "basic", "basic"]})
    offers = pd.DataFrame({Col.OFFER_ID: ["o1", "o2", "o3"]})
    events = pd.DataFrame(
        [
            ("m1", "o1", "impression", _d(10)),
            ("m1", "o1", "click", _d(10)),
            ("m1", "o1", "purchase", _d(20)),
            ("m1", "o2", "impression", _d(10)),
            ("m1", "o2", "dismiss", _d(10)),
            ("m2", "o2", "purchase", _d(-1)),  # after the cut-off
            ("m2", "o3", "click", _d(30)),
            ("mX", "o1", "click", _d(5)),  # unknown member
            ("m2", "zz", "click", _d(5)),  # unknown offer
        ],
        columns=[Col.MEMBER_ID, Col.OFFER_ID, Col.EVENT_TYPE, Col.EVENT_TIME],
    )
    flights = pd.DataFrame(
        [
            ("m1", "PEK", "CTU", "C", "VGML", _d(10)),
            ("m1", "PEK", "CTU", "Y", "STD", _d(20)),
            ("m2", "CTU", "PEK", "Y", "NONE", _d(10)),
        ],
        columns=[Col.MEMBER_ID, Col.ORIGIN, Col.DESTINATION, Col.CABIN, Col.MEAL_CODE, Col.DEPARTURE_TIME],
    )
    ancillaries = pd.DataFrame(
        [("m2", "o3", "seat", _d(10)), ("m1", "o1", "meal", _d(20))],  # m1/o1: also a purchase event
        columns=[Col.MEMBER_ID, Col.OFFER_ID, Col.CATEGORY, Col.PURCHASE_TIME],
    )
    redemptions = pd.DataFrame(
        [("m1", "o2", "CTU", _d(20))],
        columns=[Col.MEMBER_ID, Col.OFFER_ID, Col.DESTINATION, Col.REDEEM_TIME],
    )
    with DatasetWriter(dest) as w:
        w.write_table("members", members)
        w.write_table("offers", offers)
        w.write_table("interactions", events.iloc[:4])  # two parts: the build must sum across parts
        w.write_table("interactions", events.iloc[4:])
        w.write_table("flights", flights)
        w.write_table("ancillaries", ancillaries)
        w.write_table("redemptions", redemptions)
        w.commit({"source": "test"})
    return dest


def _dense(result) -> dict[tuple[str, str], float]:
    m = result.matrix.tocoo()
    return {
        (result.member_ids.external_ids[r], result.item_ids.external_ids[c]): float(v)
        for r, c, v in zip(m.row, m.col, m.data, strict=True)
    }


def test_hand_computed_weights_with_cutoff_and_half_life(tiny: Path) -> None:
    cfg = InteractionConfig(half_life_days=10.0)
    res = build_interactions(tiny, cfg, before=T)
    cells = _dense(res)
    # offer:o1 for m1: impression 0.05*0.5 + click 2*0.5 + purchase 5*0.25
    expected = {
        ("m1", "offer:o1"): 0.025 + 1.0 + 1.25,
        # o2: impression 0.025, dismiss -1.0, redemption 5*0.25 = 1.25 -> 0.275
        ("m1", "offer:o2"): 0.025 - 1.0 + 1.25,
        ("m2", "offer:o3"): 2 * 0.125 + 5 * 0.5,  # click 30 days back + the ancillary purchase
        ("m2", "category:seat"): 0.5,
        ("m1", "category:meal"): 0.25,  # the m1/o1 ancillary row: its offer part is the purchase event's
        ("m1", "dest:CTU"): 0.5 + 0.25 + 2 * 0.25,  # two flights + the redemption's destination
        ("m1", "route:PEK-CTU"): 0.5 + 0.25,
        ("m1", "cabin:C"): 0.25,
        ("m1", "cabin:Y"): 0.125,
        ("m1", "meal:VGML"): 0.5,  # STD is skipped
        ("m2", "dest:PEK"): 0.5,
        ("m2", "route:CTU-PEK"): 0.5,
        ("m2", "cabin:Y"): 0.25,  # meal NONE skipped
    }
    assert cells.keys() == expected.keys()
    for key, value in expected.items():
        assert cells[key] == pytest.approx(value, rel=1e-6), key
    assert list(res.item_ids.external_ids) == [
        "offer:o1", "offer:o2", "offer:o3",
        "cabin:C", "cabin:Y", "category:meal", "category:seat", "dest:CTU", "dest:PEK", "meal:VGML",
        "route:CTU-PEK", "route:PEK-CTU",
    ]  # fmt: skip
    assert res.n_offers == 3
    assert list(res.member_has_history()) == [True, True, False]
    assert res.stats["interactions.unknown_member"] == 1
    assert res.stats["interactions.unknown_offer"] == 1
    bought = res.purchased.tocoo()
    pairs = {
        (res.member_ids.external_ids[r], res.item_ids.external_ids[c])
        for r, c in zip(bought.row, bought.col, strict=True)
    }
    assert pairs == {("m1", "offer:o1"), ("m1", "offer:o2"), ("m2", "offer:o3")}  # m2/o2 is after the cut-off


def test_dismiss_only_cell_is_dropped_not_negative(tiny: Path) -> None:
    cfg = InteractionConfig(half_life_days=None, sources={"redemption_offer": 0.0})
    cells = _dense(build_interactions(tiny, cfg, before=T))
    assert ("m1", "offer:o2") not in cells  # impression 0.05 + dismiss -2 < 0
    assert min(cells.values()) > 0


def test_without_cutoff_reads_everything_and_decays_from_latest_event(tiny: Path) -> None:
    cfg = InteractionConfig(half_life_days=None)
    res = build_interactions(tiny, cfg)
    cells = _dense(res)
    assert cells[("m2", "offer:o2")] == pytest.approx(5.0)  # the purchase after T is now in
    assert cells[("m1", "offer:o1")] == pytest.approx(0.05 + 2.0 + 5.0)
    assert res.reference_time == pd.Timestamp(_d(-1))


def test_config_is_strict_and_flattens(tiny: Path) -> None:
    with pytest.raises(ValidationError):
        InteractionConfig(half_life=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        InteractionConfig(events={"purchse": 1.0})
    flat = InteractionConfig().flat()
    assert flat["interactions.events.purchase"] == 5.0
    assert flat["interactions.meal_skip"] == "STD,NONE"


def test_matrix_is_float32_csr_with_sorted_indices(tiny: Path) -> None:
    res = build_interactions(tiny, before=T)
    assert res.matrix.dtype == np.float32
    assert res.matrix.has_sorted_indices
    assert res.matrix.shape == (3, 12)


def test_offer_availability_is_the_recency_weighted_share_of_the_window(small_world: Path) -> None:
    """An offer that started shortly before the cut-off had little time to collect interactions; its share of
    the (recency-weighted) window is what popularity divides by. Hand-computed with the half-life."""
    from recsys.data.layout import read_table
    from recsys.interactions import offer_availability

    before = datetime(2026, 4, 1)
    inter = build_interactions(small_world, {"half_life_days": 30.0}, before)
    offers = read_table(small_world, "offers")
    assert inter.offer_log_start is not None
    start, end = inter.offer_log_start, inter.reference_time
    window = (end - start).total_seconds() / 86_400
    new, old = offers[Col.OFFER_ID].iloc[0], offers[Col.OFFER_ID].iloc[1]
    offers.loc[0, Col.VALID_FROM] = pd.Timestamp(before) - pd.Timedelta(days=20)  # 20 days before the cut
    offers.loc[0, Col.VALID_TO] = None
    offers.loc[1, Col.VALID_FROM] = pd.Timestamp(start) - pd.Timedelta(days=400)  # before the log: the window
    offers.loc[1, Col.VALID_TO] = None
    offers.loc[2, Col.VALID_FROM] = pd.Timestamp(before) - pd.Timedelta(days=1)  # counts min_days=7
    offers.loc[2, Col.VALID_TO] = None
    av = offer_availability(offers, inter)
    col = {str(i): n for n, i in enumerate(inter.item_ids.external_ids)}
    k = np.log(2) / 30.0
    whole = (1 - np.exp(-k * window)) / k
    assert av[col[f"offer:{new}"]] == pytest.approx((1 - np.exp(-k * 20)) / k / whole, rel=1e-6)
    assert av[col[f"offer:{old}"]] == pytest.approx(1.0)
    third = offers[Col.OFFER_ID].iloc[2]
    assert av[col[f"offer:{third}"]] == pytest.approx((1 - np.exp(-k * 7)) / k / whole, rel=1e-6)
    tokens = [n for i, n in col.items() if not i.startswith("offer:")]
    assert np.all(av[tokens] == 1.0)
    # the floor is the matrix's interactions.new_offer_min_days: with 0.5 the one-day-old offer counts its day
    inter_half = build_interactions(small_world, {"half_life_days": 30.0, "new_offer_min_days": 0.5}, before)
    av_half = offer_availability(offers, inter_half)
    assert av_half[col[f"offer:{third}"]] == pytest.approx((1 - np.exp(-k * 1)) / k / whole, rel=1e-6)
    assert av_half[col[f"offer:{new}"]] == pytest.approx(av[col[f"offer:{new}"]])  # 20 days > either floor


def test_popularity_is_weight_per_available_time() -> None:
    """Item B has a fifth of A's interactions but was available a tenth of the time: B is the more popular."""
    import scipy.sparse as sp

    from recsys.ids import IdMap
    from recsys.models.base import RecDataset, popularity_block

    ui = sp.csr_matrix(
        np.array([[1, 0], [1, 0], [1, 0], [1, 0], [1, 0], [1, 1], [0, 0]] * 2, dtype=np.float32)
    )
    members = IdMap(np.asarray([f"M{i}" for i in range(ui.shape[0])], dtype=object))
    items = IdMap(np.asarray(["offer:A", "offer:B"], dtype=object))
    plain = popularity_block(RecDataset(ui, members, items), shrinkage=0.0)[:, -1]
    assert plain[0] > plain[1]
    avail = np.array([1.0, 0.1])
    per_time = popularity_block(RecDataset(ui, members, items, item_availability=avail), shrinkage=0.0)[:, -1]
    assert per_time[1] > per_time[0] and per_time[1] == pytest.approx(1.0)
    assert per_time[0] == pytest.approx((12 / 1.0) / (2 / 0.1))
    with pytest.raises(ValueError, match="item_availability"):
        RecDataset(ui, members, items, item_availability=np.array([1.0, 0.0]))


@pytest.fixture(scope="module")
def weighted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generic implicit feedback: two members, play counts as weights, one undated-free timeline."""
    dest = tmp_path_factory.mktemp("weighted") / "world"
    events = pd.DataFrame(
        [
            ("e1", "m1", "o1", "click", _d(10), 3.0),
            ("e2", "m1", "o1", "click", _d(5), 4.0),
            ("e3", "m1", "o2", "purchase", _d(2), 2.0),
            ("e4", "m2", "o2", "click", _d(1), 100.0),
            ("e5", "m2", "o3", "click", _d(0), 0.0),  # a zero weight: no cell
        ],
        columns=[Col.EVENT_ID, Col.MEMBER_ID, Col.OFFER_ID, Col.EVENT_TYPE, Col.EVENT_TIME, Col.WEIGHT],
    )
    with DatasetWriter(dest) as w:
        w.write_table("members", pd.DataFrame({Col.MEMBER_ID: ["m1", "m2"]}))
        w.write_table("offers", pd.DataFrame({Col.OFFER_ID: ["o1", "o2", "o3"]}))
        w.write_table("interactions", events)
        w.commit({"source": "test"})
    return dest


def test_the_weight_column_multiplies_the_event_weight_and_transforms_apply(weighted: Path) -> None:
    raw = _dense(build_interactions(weighted, {"half_life_days": None}))
    assert raw == {("m1", "offer:o1"): 2.0 * 7, ("m1", "offer:o2"): 5.0 * 2, ("m2", "offer:o2"): 2.0 * 100}
    logged = _dense(build_interactions(weighted, {"half_life_days": None, "transform": "log1p"}))
    assert logged == pytest.approx({k: float(np.log1p(v)) for k, v in raw.items()})
    # BM25 by hand, items as documents (implicit's convention): N = 3 items, idf of member m =
    # log(3) - log(1 + items of m); length norm of item i = 0.2 + 0.8 * (its total / mean item total).
    bm25 = _dense(build_interactions(weighted, {"half_life_days": None, "transform": "bm25"}))
    totals = {"offer:o1": 14.0, "offer:o2": 210.0, "offer:o3": 0.0}
    mean_total = sum(totals.values()) / 3
    idf = {"m1": np.log(3) - np.log1p(2), "m2": np.log(3) - np.log1p(1)}
    for (member, item), value in raw.items():
        norm = 0.2 + 0.8 * totals[item] / mean_total
        expected = value * 101.0 / (100.0 * norm + value) * idf[member]
        if expected > 0:
            assert bm25[(member, item)] == pytest.approx(expected, rel=1e-5)
        else:
            assert (member, item) not in bm25  # m1 touched 2 of 3 items: idf 0, the cell is dropped


def test_a_holdout_keeps_per_member_cut_offs_and_held_out_pairs_out(weighted: Path) -> None:
    from recsys.interactions import Holdout

    cut = Holdout(member_cutoffs=pd.Series({"m1": _d(5)}))
    cells = _dense(build_interactions(weighted, {"half_life_days": None}, holdout=cut))
    assert cells == {("m1", "offer:o1"): 2.0 * 3, ("m2", "offer:o2"): 2.0 * 100}  # m1 from day -5 held out
    pairs = Holdout(pairs=pd.DataFrame({Col.MEMBER_ID: ["m2"], Col.OFFER_ID: ["o2"]}))
    cells = _dense(build_interactions(weighted, {"half_life_days": None}, holdout=pairs))
    assert cells == {("m1", "offer:o1"): 2.0 * 7, ("m1", "offer:o2"): 5.0 * 2}
