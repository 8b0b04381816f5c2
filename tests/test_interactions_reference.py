"""The interaction matrix, the calibration rows and the connecting legs of a generated world against an
independent construction: whole tables read as plain strings, the module docstring's rules applied row by
row with pandas and per-member loops, nothing of the vectorised build reused."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.layout import DatasetWriter, read_table
from recsys.data.trips import connecting_legs
from recsys.features.flyers import load_flights
from recsys.interactions import InteractionConfig, build_interactions
from recsys.models.bundle import CalibrationConfig, _calibration_rows
from recsys.schema import Col

CUTOFF = datetime(2026, 3, 1)
EVENT_WEIGHT = {"purchase": 5.0, "click": 2.0, "impression": 0.05, "dismiss": -2.0}


def _window(df: pd.DataFrame, col: str, before: datetime | None) -> pd.DataFrame:
    t = pd.to_datetime(df[col])
    keep = t.notna() if before is None else t < pd.Timestamp(before)
    return df.loc[keep].assign(_t=t[keep])


def _connecting(flights: pd.DataFrame) -> pd.Series:
    """Per flight: the same member departs again from its destination within 24 h, not back to its origin."""
    out = pd.Series(False, index=flights.index)
    for _, legs in flights.groupby(Col.MEMBER_ID, sort=False):
        legs = legs.sort_values("_t", kind="stable")
        idx, rows = legs.index.to_list(), legs.to_dict("records")
        for i in range(len(rows) - 1):
            leg, nxt = rows[i], rows[i + 1]
            gap_h = (nxt["_t"].floor("s") - leg["_t"].floor("s")).total_seconds() / 3600
            out[idx[i]] = (
                nxt[Col.ORIGIN] == leg[Col.DESTINATION]
                and nxt[Col.DESTINATION] != leg[Col.ORIGIN]
                and 0 <= gap_h <= 24
            )
    return out


def _reference(world: Path, before: datetime | None) -> tuple[dict, set, list[str]]:
    """{(member, item): weight} of the positive cells, the bought (member, offer) pairs, the offer ids."""
    members = set(read_table(world, "members")[Col.MEMBER_ID].astype(str))
    offers = read_table(world, "offers")[Col.OFFER_ID].astype(str).to_list()
    tables = {
        "interactions": (Col.EVENT_TIME, read_table(world, "interactions")),
        "ancillaries": (Col.PURCHASE_TIME, read_table(world, "ancillaries")),
        "redemptions": (Col.REDEEM_TIME, read_table(world, "redemptions")),
        "partner_activities": (Col.ACTIVITY_TIME, read_table(world, "partner_activities")),
        "flights": (Col.DEPARTURE_TIME, read_table(world, "flights")),
    }
    if before is not None:
        reference = pd.Timestamp(before)
    else:
        reference = max(pd.to_datetime(df[col]).max() for col, df in tables.values())
    w = {name: _window(df, col, before) for name, (col, df) in tables.items()}

    def decay(t: pd.Series) -> np.ndarray:
        age = (reference - t).dt.total_seconds().to_numpy() / 86_400.0
        return 0.5 ** (np.maximum(age, 0.0) / 180.0)

    cells: dict[tuple[str, str], float] = defaultdict(float)
    bought: set[tuple[str, str]] = set()

    def add(member: pd.Series, item: pd.Series, weight: np.ndarray) -> None:
        for m, i, v in zip(member.astype(str), item, weight, strict=True):
            if m in members and isinstance(i, str):
                cells[(m, i)] += float(v)

    known_offer = set(offers)
    ev = w["interactions"]
    ev = ev[ev[Col.OFFER_ID].astype(str).isin(known_offer)]
    add(ev[Col.MEMBER_ID], "offer:" + ev[Col.OFFER_ID].astype(str),
        ev[Col.EVENT_TYPE].map(EVENT_WEIGHT).to_numpy() * decay(ev["_t"]))  # fmt: skip
    pe = ev[ev[Col.EVENT_TYPE] == "purchase"]
    with_event = set(zip(pe[Col.MEMBER_ID].astype(str), pe[Col.OFFER_ID].astype(str), strict=True))
    bought |= {p for p in with_event if p[0] in members}
    for name, weight in (("ancillaries", 5.0), ("redemptions", 5.0)):
        df = w[name]
        df = df[df[Col.OFFER_ID].notna() & df[Col.OFFER_ID].astype(str).isin(known_offer)]
        pairs = list(zip(df[Col.MEMBER_ID].astype(str), df[Col.OFFER_ID].astype(str), strict=True))
        bought |= {p for p in pairs if p[0] in members}
        no_event = np.array([p not in with_event for p in pairs], dtype=bool)
        add(df[Col.MEMBER_ID][no_event], "offer:" + df[Col.OFFER_ID][no_event].astype(str),
            weight * decay(df["_t"][no_event]))  # fmt: skip
    anc = w["ancillaries"]
    add(anc[Col.MEMBER_ID], "category:" + anc[Col.CATEGORY].astype(str), 1.0 * decay(anc["_t"]))
    red = w["redemptions"]
    hotel = red[Col.KIND] == "hotel"
    add(red[Col.MEMBER_ID], np.where(hotel, "hotel:", "dest:") + red[Col.DESTINATION], 2.0 * decay(red["_t"]))
    pa = w["partner_activities"]
    for kind, prefix, weight in (("hotel", "hotel:", 1.0), ("car_rental", "dest:", 0.5)):
        df = pa[pa[Col.KIND] == kind]
        add(df[Col.MEMBER_ID], prefix + df[Col.PLACE], weight * decay(df["_t"]))
    fl = w["flights"]
    d = decay(fl["_t"])
    ends = ~_connecting(fl).to_numpy()
    add(fl[Col.MEMBER_ID][ends], "dest:" + fl[Col.DESTINATION][ends], 1.0 * d[ends])
    add(fl[Col.MEMBER_ID], "route:" + fl[Col.ORIGIN] + "-" + fl[Col.DESTINATION], 1.0 * d)
    add(fl[Col.MEMBER_ID], "cabin:" + fl[Col.CABIN], 0.5 * d)
    meal = ~fl[Col.MEAL_CODE].isin(["STD", "NONE"]) & fl[Col.MEAL_CODE].notna()
    add(fl[Col.MEMBER_ID][meal], "meal:" + fl[Col.MEAL_CODE][meal], 1.0 * d[meal.to_numpy()])
    return {k: v for k, v in cells.items() if v > 0}, bought, offers


@pytest.mark.parametrize("before", [None, CUTOFF], ids=["all", "cutoff"])
def test_matrix_equals_an_independent_construction(small_world: Path, before: datetime | None) -> None:
    expected, bought, offers = _reference(small_world, before)
    inter = build_interactions(small_world, InteractionConfig(), before)
    items = inter.item_ids.external_ids
    assert list(items[: len(offers)]) == ["offer:" + o for o in offers]  # catalogue order first
    assert list(items[len(offers) :]) == sorted(items[len(offers) :])  # then the tokens, sorted
    m = inter.matrix.tocoo()
    ids = inter.member_ids.external_ids
    got = {(ids[r], items[c]): float(v) for r, c, v in zip(m.row, m.col, m.data, strict=True)}
    assert len(got) > 10_000 and any(k[1].startswith("dest:") for k in got)  # a real world, every source
    assert got.keys() == expected.keys()
    keys = list(expected)
    np.testing.assert_allclose([got[k] for k in keys], [expected[k] for k in keys], rtol=2e-6, atol=1e-7)
    p = inter.purchased.tocoo()
    got_bought = {(ids[r], items[c][len("offer:") :]) for r, c in zip(p.row, p.col, strict=True)}
    assert got_bought == bought


def test_calibration_rows_equal_an_independent_labelling(small_world: Path) -> None:
    cfg = CalibrationConfig(max_impressions=10_000_000)  # every impression: no sampling to reproduce
    inter = build_interactions(small_world, InteractionConfig(), CUTOFF)
    rows = _calibration_rows(small_world, inter, CUTOFF, cfg, seed=0)
    ev = _window(read_table(small_world, "interactions"), Col.EVENT_TIME, CUTOFF)
    ev = ev.assign(m=ev[Col.MEMBER_ID].astype(str), o="offer:" + ev[Col.OFFER_ID].astype(str))
    purchases: dict[tuple[str, str], list[pd.Timestamp]] = defaultdict(list)
    for m, o, t in ev.loc[ev[Col.EVENT_TYPE] == "purchase", ["m", "o", "_t"]].itertuples(index=False):
        purchases[(m, o)].append(t)
    imp = ev[ev[Col.EVENT_TYPE] == "impression"].sort_values("_t", kind="stable")
    member_row = dict(zip(inter.member_ids.external_ids, range(len(inter.member_ids)), strict=True))
    item_col = dict(zip(inter.item_ids.external_ids, range(len(inter.item_ids)), strict=True))
    window = pd.Timedelta(days=cfg.window_days)
    expected = [
        (member_row[m], item_col[o], int(any(t <= p <= t + window for p in purchases[(m, o)])))
        for m, o, t in imp[["m", "o", "_t"]].itertuples(index=False)
        if m in member_row and o in item_col
    ]
    assert len(expected) > 1_000 and 0 < sum(e[2] for e in expected) < len(expected)
    assert list(rows[["row", "col", "label"]].itertuples(index=False, name=None)) == expected


def test_connecting_legs_of_categorical_and_string_columns_agree(small_world: Path) -> None:
    flights = _window(read_table(small_world, "flights"), Col.DEPARTURE_TIME, None)
    expected = _connecting(flights).to_numpy()
    assert 0 < expected.sum() < len(expected)
    cols = (Col.MEMBER_ID, Col.ORIGIN, Col.DESTINATION)
    for frame in (flights, flights.astype({c: "category" for c in cols})):
        got = connecting_legs(*(frame[c] for c in cols), frame[Col.DEPARTURE_TIME])
        np.testing.assert_array_equal(got, expected)


def test_profile_flights_have_the_categories_of_string_parts(small_world: Path, tmp_path: Path) -> None:
    """Each part's observed values sorted, new ones appended part by part: what the profiles' code was
    written against (``astype("category")`` per part, then ``union_categoricals``)."""
    plain = read_table(small_world, "flights")
    with DatasetWriter(tmp_path / "two-parts") as w:
        w.write_table("members", read_table(small_world, "members"))
        w.write_table("offers", read_table(small_world, "offers"))
        w.write_table("flights", plain.iloc[: len(plain) // 3])
        w.write_table("flights", plain.iloc[len(plain) // 3 :])
        w.commit({"source": "test"})
    flights = load_flights(tmp_path / "two-parts")
    parts = sorted((tmp_path / "two-parts" / "flights").glob("part-*.parquet"))
    assert len(parts) == 2
    for col in (Col.MEMBER_ID, Col.ORIGIN, Col.MEAL_CODE):
        expected: list[str] = []
        for part in parts:
            values = pd.read_parquet(part, columns=[col])[col]
            expected += [v for v in sorted(values.dropna().unique()) if v not in set(expected)]
        assert list(flights[col].cat.categories) == expected
        assert flights[col].astype(object).equals(plain[col].astype(object))
