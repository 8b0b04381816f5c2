"""The loyalty world generator: domain figures, schema, integrity, determinism, hidden behaviour."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from recsys.data.generator import AS_OF, GeneratorError, compute_tiers, generate_world
from recsys.data.layout import TRUTH_DIR, DatasetError, read_manifest, read_table
from recsys.data.network import load_network
from recsys.data.truth import member_traits, true_acceptance
from recsys.schema import (
    BOOKING_COLUMNS,
    CATEGORY_FAMILY,
    FARE_CLASS_CABIN,
    NULLABLE,
    OPTIONAL_COLUMNS,
    SPECIAL_MEALS,
    TABLES,
    TIER_ORDER,
    TIER_RULES,
    Cabin,
    Col,
    EventType,
    MealCode,
    OfferCategory,
    OfferFamily,
    Placement,
    RedemptionKind,
    SeatType,
    Tier,
    next_cabin,
)
from training.cli import app

MEDIUM_MEMBERS = 20_000
END = pd.Timestamp(AS_OF) + pd.Timedelta(days=1)
WINDOW_START = END - pd.Timedelta(days=round(365.25 * 3))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20,000-member world: large enough for stable shares (elite share is ~150 members)."""
    return generate_world(tmp_path_factory.mktemp("gen") / "w20k", MEDIUM_MEMBERS, 11, progress=False)


@pytest.fixture(scope="module")
def tables(world: Path) -> dict[str, pd.DataFrame]:
    return {name: read_table(world, name) for name in TABLES}


@pytest.fixture(scope="module")
def impressions(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per impression, with whether it was purchased / dismissed and its exposure number."""
    ev = tables["interactions"]
    imp = ev[ev[Col.EVENT_TYPE] == EventType.IMPRESSION.value].copy()
    key = _key(imp)

    def keys(kind: EventType) -> pd.Series:
        return _key(ev[ev[Col.EVENT_TYPE] == kind.value])

    imp["bought"] = key.isin(keys(EventType.PURCHASE)).to_numpy()
    imp["dismissed"] = key.isin(keys(EventType.DISMISS)).to_numpy()
    imp = imp.sort_values([Col.MEMBER_ID, Col.OFFER_ID, Col.EVENT_TIME, Col.EVENT_ID])
    imp["exposure"] = imp.groupby([Col.MEMBER_ID, Col.OFFER_ID]).cumcount()
    imp["pair_total"] = imp.groupby([Col.MEMBER_ID, Col.OFFER_ID])[Col.EVENT_ID].transform("size")
    offers = tables["offers"][[Col.OFFER_ID, Col.CATEGORY, Col.FAMILY]]
    return imp.merge(offers, on=Col.OFFER_ID, how="left")


def _key(events: pd.DataFrame) -> pd.Series:
    """request id | offer id (object dtype: pandas' isin is much faster on it than on Arrow strings)."""
    return events[Col.REQUEST_ID].astype(object) + "|" + events[Col.OFFER_ID].astype(object)


def _flights_per_member(tables: dict[str, pd.DataFrame]) -> tuple[np.ndarray, np.ndarray]:
    members = tables["members"]
    counts = tables["flights"][Col.MEMBER_ID].value_counts().reindex(members[Col.MEMBER_ID], fill_value=0)
    enrol = pd.to_datetime(members[Col.ENROL_DATE].astype(str))
    years = ((END - enrol.clip(lower=WINDOW_START)).dt.days / 365.25).clip(lower=0.25).to_numpy()
    return counts.to_numpy(), years


# ---- domain figures (domain.md) ----------------------------------------------------------------------------


def test_flying_frequency_matches_domain_figures(tables: dict[str, pd.DataFrame]) -> None:
    counts, years = _flights_per_member(tables)
    never = np.mean(counts == 0)
    assert never == pytest.approx(0.244, abs=0.02)  # 75.6 % flew at least once
    rate = counts[counts > 0] / years[counts > 0]
    assert np.mean((rate >= 1) & (rate < 4)) == pytest.approx(0.70, abs=0.03)
    assert np.mean((rate >= 4) & (rate < 8)) == pytest.approx(0.16, abs=0.025)
    assert np.mean(rate >= 8) == pytest.approx(0.10, abs=0.025)
    assert rate.max() > 40  # a heavy tail of very frequent flyers


def test_elite_share_and_tiers_follow_the_rules(tables: dict[str, pd.DataFrame]) -> None:
    members, flights = tables["members"], tables["flights"]
    tier = members[Col.TIER]
    elite = tier.isin([Tier.SILVER.value, Tier.GOLD.value, Tier.PLATINUM.value]).mean()
    assert 0.005 <= elite <= 0.01
    counts = tier.value_counts()
    assert (
        counts.get(Tier.SILVER.value, 0) > counts.get(Tier.GOLD.value, 0) > counts.get(Tier.PLATINUM.value, 0)
    )
    # recompute each member's qualification from the flights, independently of the generator
    dep = pd.to_datetime(flights[Col.DEPARTURE_TIME])
    last = dep >= END - pd.Timedelta(days=365)
    prev = (dep >= END - pd.Timedelta(days=730)) & ~last
    idx = pd.Index(members[Col.MEMBER_ID])

    def agg(sel: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        f = flights[sel.to_numpy()]
        seg = f.groupby(Col.MEMBER_ID).size().reindex(idx, fill_value=0).to_numpy()
        km = f.groupby(Col.MEMBER_ID)[Col.DISTANCE_KM].sum().reindex(idx, fill_value=0).to_numpy()
        return seg, km

    seg1, km1 = agg(last)
    seg0, km0 = agg(prev)
    level = tier.map({t.value: i for i, t in enumerate(TIER_ORDER)}).to_numpy()
    for rule in TIER_RULES:
        r = TIER_ORDER.index(rule.tier)
        qualifies = (seg1 >= rule.qualify_segments) | (km1 >= rule.qualify_km)
        assert (level[qualifies] >= r).all(), f"members qualifying for {rule.tier} hold a lower tier"
        held = level >= r
        earned_before = (seg0 >= rule.qualify_segments) | (km0 >= rule.qualify_km)
        retains = (seg1 >= rule.retain_segments) | (km1 >= rule.retain_km)
        assert (qualifies | (earned_before & retains))[held].all(), f"{rule.tier} held without qualifying"


def test_compute_tiers_retention() -> None:
    # qualified Gold last year (40 segments); this year 36 segments retains Gold, 30 only Silver
    got = compute_tiers(
        np.array([40, 40, 0]), np.array([0, 0, 0]), np.array([36, 30, 30]), np.array([0, 0, 0])
    )
    assert [TIER_ORDER[g] for g in got] == [Tier.GOLD, Tier.SILVER, Tier.SILVER]


def test_cabins_meals_and_miles_are_plausible(tables: dict[str, pd.DataFrame], world: Path) -> None:
    f = tables["flights"]
    mix = f[Col.CABIN].value_counts(normalize=True)
    assert mix[Cabin.Y.value] > 0.8 and 0.02 < mix[Cabin.C.value] < 0.15 and mix.get(Cabin.F.value, 0) > 0
    assert (f[Col.FARE_CLASS].map(FARE_CLASS_CABIN).astype(str) == f[Col.CABIN]).all()
    assert (f[Col.MILES_EARNED] <= 1.5 * f[Col.DISTANCE_KM] + 1).all() and (f[Col.MILES_EARNED] > 0).all()
    # special-meal members order their meal; nobody else orders special meals
    traits = member_traits(world)[[Col.MEMBER_ID, "special_meal", "comfort"]]
    fm = f.merge(traits, on=Col.MEMBER_ID)
    special_codes = {m.value for m in SPECIAL_MEALS}
    has_special = fm["special_meal"].notna()
    assert fm.loc[~has_special, Col.MEAL_CODE].isin(special_codes).sum() == 0
    assert (fm.loc[has_special, Col.MEAL_CODE] == fm.loc[has_special, "special_meal"]).mean() > 0.8
    # comfort-seekers fly premium cabins more often
    premium = fm[Col.CABIN].isin([Cabin.C.value, Cabin.F.value])
    hi = fm["comfort"] >= fm["comfort"].quantile(2 / 3)
    lo = fm["comfort"] <= fm["comfort"].quantile(1 / 3)
    assert premium[hi].mean() > 3 * premium[lo].mean()


# ---- the offer catalogue -----------------------------------------------------------------------------------


def test_catalogue_covers_families_and_categories(tables: dict[str, pd.DataFrame]) -> None:
    offers = tables["offers"]
    assert len(offers) >= 60 and offers[Col.OFFER_ID].is_unique
    assert ((offers[Col.PRICE_CASH] > 0) & (offers[Col.PRICE_MILES] > 0)).any()  # miles plus cash
    assert set(offers[Col.CATEGORY]) == {c.value for c in OfferCategory}
    assert set(offers[Col.FAMILY]) == {f.value for f in OfferFamily}
    for cat, fam in zip(offers[Col.CATEGORY], offers[Col.FAMILY], strict=True):
        assert CATEGORY_FAMILY[OfferCategory(cat)].value == fam
    airports = set(load_network().airports["iata"])
    awards = offers[offers[Col.CATEGORY] == OfferCategory.AWARD_FLIGHT.value]
    assert len(awards) >= 10 and set(awards[Col.DESTINATION]) <= airports
    assert (awards[Col.PRICE_MILES] > 0).all() and (awards[Col.MIN_MILES] == awards[Col.PRICE_MILES]).all()
    assert all(len(b) > 0 for b in awards[Col.BLACKOUT_MONTHS])
    # long haul costs more miles than short haul, business more than economy
    price = awards.set_index(Col.OFFER_ID)[Col.PRICE_MILES]
    assert price["RD-AWD-FRA-Y"] > price["RD-AWD-HKG-Y"] and price["RD-AWD-FRA-C"] > price["RD-AWD-FRA-Y"]
    upgrades = offers[
        offers[Col.CATEGORY].isin([OfferCategory.CABIN_UPGRADE.value, OfferCategory.AWARD_UPGRADE.value])
    ]
    for cabins, target, classes in zip(
        upgrades[Col.ELIGIBLE_CABINS],
        upgrades[Col.TARGET_CABIN],
        upgrades[Col.ELIGIBLE_FARE_CLASSES],
        strict=True,
    ):
        assert len(cabins) == 1 and next_cabin(cabins[0]) == Cabin(target)
        assert len(classes) > 0 and all(FARE_CLASS_CABIN[c] == Cabin(cabins[0]) for c in classes)
    meals = offers[offers[Col.CATEGORY] == OfferCategory.MEAL.value]
    assert {m.value for m in SPECIAL_MEALS} <= set(meals[Col.MEAL])
    assert meals.loc[meals[Col.MEAL].isin([m.value for m in SPECIAL_MEALS]), Col.EXEMPT].all()
    assert (meals[Col.WINDOW_CLOSE_HOURS] >= 24).all()  # meal orders close a day before departure
    lounge = offers[offers[Col.REQUIRES_LOUNGE]]
    assert len(lounge) and (lounge[Col.CATEGORY] == OfferCategory.LOUNGE.value).all()
    for placements in offers[Col.PLACEMENTS]:
        assert len(placements) > 0 and set(placements) <= {p.value for p in Placement}
    assert (
        (offers[Col.PRICE_CASH] > 0)
        | (offers[Col.PRICE_MILES] > 0)
        | offers[Col.EXEMPT]
        | (offers[Col.CATEGORY] == OfferCategory.MILES_PROMOTION.value)
    ).all()


# ---- schema conformance and referential integrity ----------------------------------------------------------

_KINDS = {
    "str": lambda s: pd.api.types.is_string_dtype(s) or s.dtype == object,
    "int": lambda s: pd.api.types.is_integer_dtype(s),
    "float": lambda s: pd.api.types.is_float_dtype(s),
    "bool": lambda s: pd.api.types.is_bool_dtype(s),
    "datetime": lambda s: pd.api.types.is_datetime64_dtype(s),
    "date": lambda s: (
        "date32" in str(s.dtype)
        or (s.dtype == object and s.dropna().map(type).eq(__import__("datetime").date).all())
    ),
    "list[str]": lambda s: s.map(lambda v: all(isinstance(x, str) for x in v)).all(),
    "list[int]": lambda s: s.map(lambda v: all(isinstance(x, int | np.integer) for x in v)).all(),
}


def test_every_table_conforms_to_the_schema(tables: dict[str, pd.DataFrame]) -> None:
    for name, spec in TABLES.items():
        df = tables[name]
        optional = OPTIONAL_COLUMNS.get(name, {})
        written = [c for c in optional if c in df.columns]  # the optional columns the generator writes
        assert list(df.columns) == [*spec.columns, *written], name
        assert len(df) > 0, name
        for col, kind in (spec.columns | {c: optional[c] for c in written}).items():
            assert _KINDS[kind](df[col]), f"{name}.{col} is {df[col].dtype}, expected {kind}"
            if col not in NULLABLE[name]:
                assert df[col].notna().all(), f"{name}.{col} has nulls"
        if spec.key:
            assert df[spec.key].is_unique, f"{name}.{spec.key} not unique"
    m = tables["members"]
    assert m[Col.MEMBER_ID].str.fullmatch(r"M\d{7}").all()
    assert set(m[Col.TIER]) <= {t.value for t in Tier}
    f = tables["flights"]
    assert set(BOOKING_COLUMNS) <= set(f.columns)
    assert set(f[Col.MEAL_CODE]) <= {c.value for c in MealCode}
    assert set(f[Col.SEAT_TYPE].dropna()) <= {s.value for s in SeatType}
    assert f[Col.FLIGHT_NUMBER].str.fullmatch(r"CA\d{4}").all()
    dep = pd.to_datetime(f[Col.DEPARTURE_TIME])
    assert dep.min() >= WINDOW_START and dep.max() < END
    flight_day = pd.to_datetime(f[Col.FLIGHT_DATE].astype("datetime64[s]"))
    assert (dep.dt.normalize() == flight_day).all()
    ev = tables["interactions"]
    assert set(ev[Col.EVENT_TYPE]) == {e.value for e in EventType}
    assert set(ev[Col.PLACEMENT]) == {p.value for p in Placement}
    assert pd.to_datetime(ev[Col.EVENT_TIME]).max() < END


def test_referential_integrity_and_purchase_consistency(tables: dict[str, pd.DataFrame]) -> None:
    members = set(tables["members"][Col.MEMBER_ID])
    offers = tables["offers"].set_index(Col.OFFER_ID)
    flights = tables["flights"].set_index(Col.FLIGHT_ID)
    airports = set(load_network().airports["iata"])
    f = tables["flights"]
    assert set(f[Col.MEMBER_ID]) <= members
    assert set(f[Col.ORIGIN]) <= airports and set(f[Col.DESTINATION]) <= airports
    ev = tables["interactions"]
    assert set(ev[Col.MEMBER_ID]) <= members and set(ev[Col.OFFER_ID]) <= set(offers.index)
    with_flight = ev[ev[Col.FLIGHT_ID].notna()]
    assert (
        flights.loc[with_flight[Col.FLIGHT_ID], Col.MEMBER_ID].to_numpy() == with_flight[Col.MEMBER_ID]
    ).all()
    # every click/purchase/dismiss follows an impression of the same offer in the same request
    keys = _key(ev[ev[Col.EVENT_TYPE] == EventType.IMPRESSION.value])
    assert _key(ev[ev[Col.EVENT_TYPE] != EventType.IMPRESSION.value]).isin(keys).all()
    # purchases land in ancillaries (upsell + ancillary families) and in redemptions (miles offers)
    buys = ev[ev[Col.EVENT_TYPE] == EventType.PURCHASE.value].join(offers, on=Col.OFFER_ID)
    anc = tables["ancillaries"]
    assert set(anc[Col.MEMBER_ID]) <= members
    assert (flights.loc[anc[Col.FLIGHT_ID], Col.MEMBER_ID].to_numpy() == anc[Col.MEMBER_ID]).all()
    via_offer = anc[anc[Col.OFFER_ID].notna()]
    cash_buys = buys[buys[Col.FAMILY] != OfferFamily.REDEMPTION.value]
    assert len(via_offer) == len(cash_buys) > 0
    assert sorted(via_offer[Col.MEMBER_ID] + via_offer[Col.OFFER_ID]) == sorted(
        cash_buys[Col.MEMBER_ID] + cash_buys[Col.OFFER_ID]
    )
    red = tables["redemptions"]
    assert set(red[Col.MEMBER_ID]) <= members
    assert set(red[Col.KIND]) <= {k.value for k in RedemptionKind}
    via_offer = red[red[Col.OFFER_ID].notna()]
    miles_buys = buys[(buys[Col.FAMILY] == OfferFamily.REDEMPTION.value) & (buys[Col.PRICE_MILES] > 0)]
    assert len(via_offer) == len(miles_buys) > 0
    assert (
        via_offer[Col.MILES_SPENT].to_numpy()
        == offers.loc[via_offer[Col.OFFER_ID], Col.PRICE_MILES].to_numpy()
    ).all()
    assert (red[Col.OFFER_ID].isna()).sum() > 0  # members also redeem directly, without an offer
    award = red[red[Col.KIND] == RedemptionKind.AWARD_FLIGHT.value]
    assert len(award) and award[Col.DESTINATION].isin(airports).all()
    # nobody spends miles they have not earned: every balance (earned - spent) is non-negative
    assert (tables["members"][Col.MILES_BALANCE] >= 0).all()
    assert (tables["members"][Col.MILES_BALANCE] > 0).mean() > 0.6


# ---- hidden behaviour --------------------------------------------------------------------------------------


def test_comfort_seekers_accept_cabin_upgrades_far_more_often(impressions: pd.DataFrame, world: Path) -> None:
    traits = member_traits(world)[[Col.MEMBER_ID, "comfort"]]
    up = impressions[impressions[Col.CATEGORY] == OfferCategory.CABIN_UPGRADE.value].merge(
        traits, on=Col.MEMBER_ID
    )
    assert len(up) > 2000
    lo = up[up["comfort"] <= up["comfort"].quantile(1 / 3)]["bought"].mean()
    hi = up[up["comfort"] >= up["comfort"].quantile(2 / 3)]["bought"].mean()
    assert hi >= 2 * lo and hi > 0.02


def test_fatigue_lowers_acceptance_and_raises_dismissal(impressions: pd.DataFrame) -> None:
    # same member x offer pairs, early exposures against late ones: traits are held fixed
    rep = impressions[impressions["pair_total"] >= 5]
    early = rep[rep["exposure"] <= 1]
    late = rep[rep["exposure"] >= 4]
    assert len(late) > 1000
    assert late["bought"].mean() < 0.6 * early["bought"].mean()
    assert late["dismissed"].mean() > 1.5 * early["dismissed"].mean()


def test_true_acceptance_reflects_hidden_traits(world: Path, tables: dict[str, pd.DataFrame]) -> None:
    traits = member_traits(world)
    vg = traits[traits["special_meal"] == "VGML"][Col.MEMBER_ID].head(20).tolist()
    other = traits[traits["special_meal"].isna()][Col.MEMBER_ID].head(20).tolist()
    offers = ["AN-MEAL-VGML-01", "UP-CAB-Y2W-01", "RD-AWD-SYX-Y"]
    p = true_acceptance(world, vg + other, offers)
    assert p.shape == (40, 3) and ((p > 0) & (p < 1)).all()
    assert p[:20, 0].min() > 5 * p[20:, 0].max()  # only VGML members want the VGML meal
    with pytest.raises(KeyError, match="NOPE"):
        true_acceptance(world, ["NOPE"], offers)
    with pytest.raises(KeyError, match="XX-1"):
        true_acceptance(world, vg[:1], ["XX-1"])


def test_truth_stays_out_of_the_observable_tables(world: Path, tables: dict[str, pd.DataFrame]) -> None:
    assert (world / TRUTH_DIR / "acceptance.json").is_file()
    observable = {c for df in tables.values() for c in df.columns}
    assert not observable & {"comfort", "price_sensitivity", "archetype", "fatigue_tolerance"}
    manifest = read_manifest(world)
    assert manifest["as_of"] == AS_OF.date().isoformat() and manifest["seed"] == 11
    assert manifest["row_counts"]["members"] == MEDIUM_MEMBERS


# ---- determinism -------------------------------------------------------------------------------------------


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    a = generate_world(tmp_path / "a", 1500, 3, progress=False)
    b = generate_world(tmp_path / "b", 1500, 3, progress=False)
    c = generate_world(tmp_path / "c", 1500, 4, progress=False)
    ha, hb, hc = _hashes(a), _hashes(b), _hashes(c)
    assert len(ha) > 10 and ha == hb
    assert ha["members.parquet"] != hc["members.parquet"]
    assert read_manifest(a)["fingerprint"] != read_manifest(c)["fingerprint"]


def test_same_seed_is_identical_across_processes(tmp_path: Path) -> None:
    """Another interpreter with another string-hash seed writes byte-identical files (no set-order leaks)."""
    a = generate_world(tmp_path / "a", 300, 9, progress=False)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    cmd = [
        sys.executable,
        "-m",
        "training.cli",
        "data",
        "generate",
        "--members",
        "300",
        "--seed",
        "9",
        "--out",
        str(tmp_path / "b"),
        "--no-progress",
    ]
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    assert _hashes(a) == _hashes(tmp_path / "b")


@pytest.mark.parametrize("seed", [3, 11])
def test_one_member_worlds_without_flights(tmp_path: Path, seed: int) -> None:
    """Edge chunks: a member who never flew (seed 3: home impressions only; seed 11: no impression at all)."""
    out = generate_world(tmp_path / "w", 1, seed, progress=False)
    tables = {name: read_table(out, name) for name in TABLES}
    assert len(tables["members"]) == 1 and len(tables["flights"]) == 0
    assert (len(tables["interactions"]) > 0) == (seed == 3)
    for name, spec in TABLES.items():
        booking = list(BOOKING_COLUMNS) if name == "flights" else []
        assert list(tables[name].columns) == [*spec.columns, *booking]


# ---- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, -5])
def test_generate_rejects_non_positive_members(tmp_path: Path, n: int) -> None:
    with pytest.raises(GeneratorError, match="n_members"):
        generate_world(tmp_path / "w", n, 1, progress=False)
    assert not (tmp_path / "w").exists()


def test_generate_refuses_to_overwrite_without_flag(tmp_path: Path) -> None:
    out = tmp_path / "w"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(DatasetError, match="already exists"):
        generate_world(out, 10, 1, progress=False)
    assert (out / "keep.txt").read_text() == "precious"
    assert generate_world(out, 10, 1, overwrite=True, progress=False) == out.resolve()
    assert not (out / "keep.txt").exists() and (out / "members.parquet").is_file()


def test_cli_generate_errors_and_success(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "w"
    res = runner.invoke(app, ["data", "generate", "--members", "0", "--seed", "1", "--out", str(out)])
    assert res.exit_code != 0 and "--members" in res.output
    assert not out.exists()
    res = runner.invoke(
        app, ["data", "generate", "--members", "50", "--seed", "1", "--out", str(out), "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    assert read_manifest(out)["row_counts"]["members"] == 50
    res = runner.invoke(app, ["data", "generate", "--members", "50", "--seed", "2", "--out", str(out)])
    assert res.exit_code == 1 and "already exists" in res.output and "--overwrite" in res.output
    assert read_manifest(out)["seed"] == 1  # untouched
    res = runner.invoke(app, ["data", "generate", "--members", "x", "--out", str(out)])
    assert res.exit_code != 0


# ---- the request log ---------------------------------------------------------------------------------------


def test_requests_table_ties_every_impression_to_its_request_and_candidates(
    world: Path, tables: dict[str, pd.DataFrame]
) -> None:
    from recsys.requestlog import check_slate
    from recsys.schema import REQUESTS

    req = read_table(world, REQUESTS.name)
    assert (
        list(req.columns) == [*REQUESTS.columns, *OPTIONAL_COLUMNS[REQUESTS.name]]
        and req[Col.REQUEST_ID].is_unique
    )
    assert set(req[Col.POLICY]) == {"legacy"} and not req[Col.EXPLORATION].any()
    for row in req.head(3000).itertuples(index=False):
        check_slate(list(row.candidates), list(row.shown), list(row.propensities), request_id=row.request_id)
    # the shown slates are exactly the logged impressions, in slot order
    imp = tables["interactions"]
    imp = imp[imp[Col.EVENT_TYPE] == EventType.IMPRESSION.value]
    shown = req[[Col.REQUEST_ID, Col.SHOWN]].explode(Col.SHOWN).dropna()
    assert sorted(_key(imp)) == sorted(shown[Col.REQUEST_ID].astype(object) + "|" + shown[Col.SHOWN])
    # the slate size is the placement's slot count, unless fewer offers were eligible
    slots = {"booking": 3, "post_booking": 2, "check_in": 2, "in_trip": 1, "home": 2}
    n_shown = req[Col.SHOWN].map(len)
    want = np.minimum(req[Col.CANDIDATES].map(len), req[Col.PLACEMENT].map(slots))
    assert (n_shown == want).all()
    # trip requests carry their flight's context
    flights = tables["flights"].set_index(Col.FLIGHT_ID)
    trip = req[req[Col.FLIGHT_ID].notna()]
    assert (trip[Col.CABIN].to_numpy() == flights.loc[trip[Col.FLIGHT_ID], Col.CABIN].to_numpy()).all()
    assert req.loc[req[Col.PLACEMENT] == "home", Col.FLIGHT_ID].isna().all()


def test_requests_record_the_exact_legacy_inclusion_probabilities(world: Path) -> None:
    """Recomputed request by request by enumerating every ordered draw of the legacy popularity weights."""
    import itertools
    import json

    from recsys.schema import REQUESTS

    popularity = json.loads((world / TRUTH_DIR / "acceptance.json").read_text())["legacy_policy"][
        "popularity"
    ]
    req = read_table(world, REQUESTS.name).head(4000)
    slots = {"booking": 3, "post_booking": 2, "check_in": 2, "in_trip": 1, "home": 2}
    for row in req.itertuples(index=False):
        cand = list(row.candidates)
        k = min(slots[row.placement], len(cand))
        if not cand:
            continue
        w = {o: popularity[o] for o in cand}
        incl = dict.fromkeys(cand, 0.0)
        for seq in itertools.permutations(cand, k) if len(cand) <= 7 else ():
            p, left = 1.0, sum(w.values())
            for o in seq:
                p *= w[o] / left
                left -= w[o]
            for o in seq:
                incl[o] += p
        if len(cand) <= 7:
            np.testing.assert_allclose(list(row.propensities), [incl[o] for o in row.shown], rtol=1e-9)


def test_truth_records_each_request_trip_purpose(world: Path) -> None:
    from recsys.schema import REQUESTS

    req = read_table(world, REQUESTS.name, columns=[Col.REQUEST_ID, Col.FLIGHT_ID])
    ctx = pd.read_parquet(world / TRUTH_DIR / "request_context")
    assert ctx[Col.REQUEST_ID].tolist() == req[Col.REQUEST_ID].tolist()
    assert (ctx["trip_purpose"].notna() == req[Col.FLIGHT_ID].notna()).all()
    assert set(ctx["trip_purpose"].dropna()) == {"business", "leisure", "family"}


def test_the_booking_follows_the_trip_purpose(world: Path) -> None:
    """Business bookings are made late, for one traveller, without children, for weekday trips; family ones
    early, for parties with children; only a one-way booking has no stay."""
    from recsys.schema import REQUESTS

    req = read_table(world, REQUESTS.name)
    ctx = pd.read_parquet(world / TRUTH_DIR / "request_context")
    req = req.merge(ctx, on=Col.REQUEST_ID)
    trips = req.loc[req[Col.FLIGHT_ID].notna()]
    home = req.loc[req[Col.FLIGHT_ID].isna()]
    assert home[list(BOOKING_COLUMNS)].isna().all().all()
    assert trips[[Col.BOOKING_LEAD_DAYS, Col.PARTY_SIZE, Col.CHILDREN]].notna().all().all()
    by = trips.groupby("trip_purpose")
    lead = by[Col.BOOKING_LEAD_DAYS].median()
    assert lead["business"] < 20 < lead["leisure"] < lead["family"]
    solo = by[Col.PARTY_SIZE].apply(lambda s: float((s == 1).mean()))
    assert solo["business"] > 0.75 and solo["leisure"] < 0.45 and solo["family"] < 0.2
    kids = by[Col.CHILDREN].apply(lambda s: float((s > 0).mean()))
    assert kids["business"] == 0 and kids["leisure"] < 0.15 and kids["family"] > 0.8
    assert (trips[Col.CHILDREN] <= trips[Col.PARTY_SIZE]).all()
    assert by[Col.STAY_NIGHTS].median()["business"] < by[Col.STAY_NIGHTS].median()["family"]
    weekend = by[Col.DEPARTURE_TIME].apply(lambda s: float((pd.to_datetime(s).dt.weekday >= 5).mean()))
    assert weekend["business"] < 0.2 < weekend["leisure"]
    # the booking request is the booking: logged that many whole days before departure
    booking = trips.loc[trips[Col.PLACEMENT] == Placement.BOOKING.value]
    days = (booking[Col.DEPARTURE_TIME] - booking[Col.REQUEST_TIME]).dt.total_seconds() / 86_400
    assert (np.floor(days) == booking[Col.BOOKING_LEAD_DAYS].astype(float)).all()
    flights = read_table(world, "flights")
    one_way = flights[Col.STAY_NIGHTS].isna()
    assert 0 < one_way.mean() < 0.2 and (flights.loc[~one_way, Col.STAY_NIGHTS] >= 1).all()
