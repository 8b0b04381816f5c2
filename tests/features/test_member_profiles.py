"""Member profiles: tier progress, value score, habits, defaults, and offline batch = online single member."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.layout import read_manifest, read_table
from recsys.data.times import as_of_end
from recsys.features.lrfmc import FareReference
from recsys.features.profiles import (
    PROFILE_COLUMNS,
    PROFILE_VOCABULARIES,
    ProfileCol,
    ProfileContext,
    ProfileError,
    build_member_profiles,
    build_member_profiles_with_context,
    compute_profiles,
    decode_profile,
    profile_for_member,
    profile_records,
    profile_row,
    tier_progress,
    value_score,
)
from recsys.schema import Col, Segment

AS_OF = pd.Timestamp("2024-06-01")


def _members(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            Col.MEMBER_ID: [r[0] for r in rows],
            Col.ENROL_DATE: pd.to_datetime(["2020-01-01"] * len(rows)),
            Col.TIER: [r[1] for r in rows],
            Col.HOME_AIRPORT: [r[2] for r in rows],
            Col.TIME_ZONE: ["Asia/Shanghai"] * len(rows),
            Col.MILES_BALANCE: [1000] * len(rows),
            Col.CHANNEL: ["app"] * len(rows),
        }
    )


def _flights(rows: list[tuple]) -> pd.DataFrame:
    """rows: (member, departure, origin, destination, cabin, km, meal)."""
    return pd.DataFrame(
        {
            Col.MEMBER_ID: [r[0] for r in rows],
            Col.DEPARTURE_TIME: pd.to_datetime([r[1] for r in rows]),
            Col.ORIGIN: [r[2] for r in rows],
            Col.DESTINATION: [r[3] for r in rows],
            Col.CABIN: [r[4] for r in rows],
            Col.FARE_CLASS: ["Y" if r[4] == "Y" else "J" for r in rows],
            Col.DISTANCE_KM: [r[5] for r in rows],
            Col.FARE_PAID: [float(r[5]) for r in rows],
            Col.MEAL_CODE: [r[6] for r in rows],
            Col.BAGS: [1] * len(rows),
            Col.LOUNGE_USED: [False] * len(rows),
        }
    )


def _context() -> ProfileContext:
    return ProfileContext(as_of=AS_OF, fare_reference=FareReference(per_km=1.0))


# -- tier progress --


def test_tier_progress_basic_member_needs_km_or_segments_for_silver() -> None:
    p = tier_progress("basic", 30_000, 20)
    assert (p.next_tier, p.km_to_next_tier, p.segments_to_next_tier) == ("silver", 10_000, 5)
    assert (p.km_to_retain, p.segments_to_retain) == (0, 0)  # nothing to retain at Basic


def test_tier_progress_retention_and_top_tier() -> None:
    silver = tier_progress("silver", 30_000, 20)
    assert (silver.next_tier, silver.km_to_next_tier, silver.segments_to_next_tier) == ("gold", 50_000, 20)
    assert (silver.km_to_retain, silver.segments_to_retain) == (5_000, 3)  # retain 35,000 km / 23
    plat = tier_progress("platinum", 150_000, 85)
    assert (plat.next_tier, plat.km_to_next_tier, plat.segments_to_next_tier) == ("none", 0, 0)
    assert (plat.km_to_retain, plat.segments_to_retain) == (0, 0)  # 150k >= 145k, 85 >= 80
    over = tier_progress("gold", 200_000, 100)
    assert (over.km_to_next_tier, over.segments_to_next_tier) == (0, 0)  # never negative


def test_batch_tier_progress_counts_only_the_last_12_months() -> None:
    members = _members([("s", "silver", "PEK")])
    km_each = 1_500
    recent = [("s", f"2024-0{m}-10 08:00", "PEK", "CTU", "Y", km_each, "STD") for m in range(1, 6)]
    old = [("s", "2023-05-01 08:00", "PEK", "CTU", "Y", 50_000, "STD")]  # 13 months ago: not qualifying
    row = compute_profiles(members, _flights(recent + old), _context()).iloc[0]
    assert row[ProfileCol.QUALIFYING_KM_12M] == 5 * km_each
    assert row[ProfileCol.QUALIFYING_SEGMENTS_12M] == 5
    expected = tier_progress("silver", 5 * km_each, 5)
    assert row[ProfileCol.NEXT_TIER] == "gold"
    assert row[ProfileCol.KM_TO_NEXT_TIER] == expected.km_to_next_tier == 80_000 - 7_500
    assert row[ProfileCol.SEGMENTS_TO_RETAIN] == expected.segments_to_retain == 18
    assert row[ProfileCol.FLIGHTS_TOTAL] == 6


def test_unknown_tier_is_a_clear_error() -> None:
    with pytest.raises(ProfileError, match="unknown tier 'diamond' for member 'x'"):
        compute_profiles(_members([("x", "diamond", "PEK")]), _flights([]), _context())


# -- value score --


def test_value_score_weights_frequency_30_distance_30_cabin_40() -> None:
    assert value_score(0, 0, 0.0) == 0.0
    assert value_score(0, 0, 1.0) == pytest.approx(40.0)  # cabin only
    assert value_score(90, 0, 0.0) == pytest.approx(30.0)  # Platinum segments, no km
    assert value_score(0, 160_000, 0.0) == pytest.approx(30.0)  # Platinum km only
    assert value_score(90, 160_000, 1.0) == pytest.approx(100.0)
    assert value_score(500, 1_000_000, 1.0) == pytest.approx(100.0)  # capped
    # log scaling: 9 segments (log 10 / log 91 of the frequency part)
    assert value_score(9, 0, 0.0) == pytest.approx(30 * np.log(10) / np.log(91))


def test_value_score_in_profiles_uses_12_month_cabins() -> None:
    members = _members([("f", "basic", "PEK")])
    flights = _flights([("f", "2024-05-01 08:00", "PEK", "CTU", "F", 1000, "SIG")])
    row = compute_profiles(members, flights, _context()).iloc[0]
    assert row[ProfileCol.VALUE_SCORE] == pytest.approx(value_score(1, 1000, 1.0), abs=1e-4)
    # 30 log 2 / log 91 = 4.6, 30 log 1001 / log 160001 = 17.3, 40 for First: 61.9
    assert row[ProfileCol.VALUE_SCORE] == pytest.approx(61.91, abs=0.01)
    assert row[ProfileCol.VALUE_BAND] == "v60_80"


# -- habits, routes, trip purpose --


def test_habits_routes_and_trip_purpose_on_a_hand_made_member() -> None:
    members = _members([("m", "basic", "PEK")])
    flights = _flights(
        [
            # Mon out, Wed back: a short business stay between two business centres, in Business
            ("m", "2024-03-04 08:00", "PEK", "CTU", "C", 1500, "STD"),
            ("m", "2024-03-06 18:00", "CTU", "PEK", "C", 1500, "VGML"),
            ("m", "2024-04-01 08:00", "PEK", "CTU", "Y", 1500, "VGML"),
            # Saturday leisure trip, two weeks away
            ("m", "2024-04-13 08:00", "PEK", "SYX", "Y", 2600, "NONE"),
            ("m", "2024-04-27 08:00", "SYX", "PEK", "Y", 2600, "NONE"),
        ]
    )
    row = compute_profiles(members, flights, _context()).iloc[0]
    assert row[ProfileCol.TOP_ROUTE] == "PEK-CTU"  # home airport first, though CTU sorts first
    assert row[ProfileCol.TOP_ROUTE_FLIGHTS] == 3
    assert (row[ProfileCol.TOP_ROUTE_CABIN], row[ProfileCol.TOP_ROUTE_CABIN_FLIGHTS]) == ("C", 2)
    assert (row[ProfileCol.TOP_DESTINATION], row[ProfileCol.TOP_DESTINATION_FLIGHTS]) == ("CTU", 2)
    assert row[ProfileCol.CABIN_SHARE_C] == pytest.approx(0.4)
    assert row[ProfileCol.CABIN_SHARE_Y] == pytest.approx(0.6)
    assert row[ProfileCol.DOMINANT_CABIN] == "Y"
    assert row[ProfileCol.TOP_MEAL] == "VGML"  # NONE is not a meal habit
    assert row[ProfileCol.SPECIAL_MEAL] == "VGML"
    assert row[ProfileCol.WEEKDAY_SHARE] == pytest.approx(3 / 5)
    assert row[ProfileCol.SHORT_STAY_SHARE] == pytest.approx(2 / 5)  # the two legs of the Mon-Wed trip
    assert row[ProfileCol.BUSINESS_HUB_SHARE] == pytest.approx(3 / 5)  # PEK-CTU legs; SYX is not a centre
    assert row[ProfileCol.DAYS_SINCE_LAST_FLIGHT] == pytest.approx(34 + 16 / 24)  # 2024-04-27 08:00 -> 06-01
    assert row[ProfileCol.RECENCY_BAND] == "d030_090"
    assert bool(row[ProfileCol.HAS_FLOWN])


def test_never_flown_member_gets_defaults_not_nan() -> None:
    members = _members([("flyer", "basic", "PEK"), ("never", "gold", None)])
    flights = _flights([("flyer", "2024-05-01 08:00", "PEK", "CTU", "Y", 1500, "STD")])
    out = compute_profiles(members, flights, _context())
    assert not out.isna().any().any()
    row = out.set_index(ProfileCol.MEMBER_ID).loc["never"]
    assert row[ProfileCol.HOME_AIRPORT] == "unknown"
    assert not row[ProfileCol.HAS_FLOWN]
    assert row[ProfileCol.SEGMENT] == Segment.LOW_VALUE
    assert row[ProfileCol.RECENCY_BAND] == "never"
    assert row[ProfileCol.VALUE_SCORE] == 0.0
    assert (row[ProfileCol.TOP_ROUTE], row[ProfileCol.TOP_ROUTE_FLIGHTS]) == ("none", 0)
    assert (row[ProfileCol.TOP_MEAL], row[ProfileCol.DOMINANT_CABIN]) == ("none", "none")
    assert row[ProfileCol.KM_TO_RETAIN] == 70_000  # gold with nothing flown
    assert row[ProfileCol.LRFMC_R] == row[ProfileCol.LRFMC_L]


def test_no_flights_at_all() -> None:
    out = compute_profiles(_members([("a", "basic", "PEK")]), _flights([]), _context())
    assert list(out.columns) == list(PROFILE_COLUMNS)
    assert not out.isna().any().any()
    assert out.iloc[0][ProfileCol.SEGMENT] == Segment.LOW_VALUE


def test_end_of_a_bare_date_is_the_next_midnight() -> None:
    assert as_of_end("2026-06-30") == pd.Timestamp("2026-07-01")
    assert as_of_end("2026-06-30T12:00:00") == pd.Timestamp("2026-06-30 12:00")


# -- on a generated world --


@pytest.fixture(scope="module")
def built(features_world: Path) -> tuple[pd.DataFrame, ProfileContext]:
    return build_member_profiles_with_context(features_world)


def test_world_profiles_are_complete_and_consistent(
    features_world: Path, built: tuple[pd.DataFrame, ProfileContext]
) -> None:
    profiles, context = built
    members = read_table(features_world, "members")
    assert profiles[ProfileCol.MEMBER_ID].tolist() == members[Col.MEMBER_ID].astype(str).tolist()
    assert list(profiles.columns) == list(PROFILE_COLUMNS)
    assert not profiles.isna().any().any()
    # as_of: the manifest names the last day of history
    assert context.as_of == pd.Timestamp(read_manifest(features_world)["as_of"]) + pd.Timedelta(days=1)
    # categorical columns stay inside their documented vocabularies
    for col, vocab in PROFILE_VOCABULARIES.items():
        if vocab is not None:
            assert set(profiles[col]) <= set(vocab), col
    assert set(profiles[ProfileCol.SEGMENT]) == {str(s) for s in Segment}
    flyers = profiles[profiles[ProfileCol.HAS_FLOWN]]
    shares = flyers[[ProfileCol.CABIN_SHARE_F, ProfileCol.CABIN_SHARE_C, ProfileCol.CABIN_SHARE_W]].sum(
        axis=1
    )
    assert np.allclose(shares + flyers[ProfileCol.CABIN_SHARE_Y], 1.0)
    assert profiles[ProfileCol.VALUE_SCORE].between(0, 100).all()


def test_world_12_month_km_matches_an_independent_count(
    features_world: Path, built: tuple[pd.DataFrame, ProfileContext]
) -> None:
    profiles, context = built
    flights = read_table(features_world, "flights")
    t = pd.to_datetime(flights[Col.DEPARTURE_TIME])
    last_year = flights[(t > context.as_of - pd.Timedelta(days=365)) & (t <= context.as_of)]
    expected = last_year.groupby(Col.MEMBER_ID)[Col.DISTANCE_KM].sum()
    got = profiles.set_index(ProfileCol.MEMBER_ID)[ProfileCol.QUALIFYING_KM_12M]
    assert (got.reindex(expected.index) == expected).all()
    assert (got.drop(expected.index) == 0).all()


def test_offline_batch_equals_online_single_member(
    features_world: Path, built: tuple[pd.DataFrame, ProfileContext]
) -> None:
    profiles, context = built
    members = read_table(features_world, "members")
    flights = read_table(features_world, "flights")
    # the context travels as JSON with the model: use the reloaded one, as the service would
    context = ProfileContext.from_dict(json.loads(json.dumps(context.to_dict())))
    rng = np.random.default_rng(0)
    flyers = profiles.loc[profiles[ProfileCol.HAS_FLOWN], ProfileCol.MEMBER_ID].to_numpy()
    never = profiles.loc[~profiles[ProfileCol.HAS_FLOWN], ProfileCol.MEMBER_ID].to_numpy()
    sample = [*rng.choice(flyers, 15, replace=False), *never[:3]]
    for member_id in sample:
        member = members[members[Col.MEMBER_ID] == member_id].iloc[0].to_dict()
        own = flights[flights[Col.MEMBER_ID] == member_id]
        assert profile_for_member(member, own, context) == profile_row(profiles, member_id), member_id


def test_records_round_trip_through_strings(built: tuple[pd.DataFrame, ProfileContext]) -> None:
    profiles, _ = built
    records = profile_records(profiles.head(20))
    for record in records:
        as_strings = {k.encode(): str(v).encode() for k, v in record.items()}  # what a Redis hash returns
        assert decode_profile(as_strings) == record


def test_build_member_profiles_accepts_a_saved_context(
    features_world: Path, built: tuple[pd.DataFrame, ProfileContext], tmp_path: Path
) -> None:
    profiles, context = built
    path = context.save(tmp_path / "profile_context.json")
    again = build_member_profiles(features_world, context=ProfileContext.load(path))
    pd.testing.assert_frame_equal(again, profiles)


def test_profiles_of_imported_customer_value_data(data_selected: Path, tmp_path: Path) -> None:
    from recsys.data.layout import DatasetWriter
    from recsys.features.lrfmc import lrfmc_from_aggregates, read_air_data_csv

    aggregates = read_air_data_csv(data_selected).iloc[::10].reset_index(drop=True)
    with DatasetWriter(tmp_path / "air") as writer:
        writer.write_table("member_aggregates", aggregates)
        writer.commit({"import_format": "air-data"})
    profiles = build_member_profiles(tmp_path / "air")
    assert len(profiles) == len(aggregates) and not profiles.isna().any().any()
    expected = lrfmc_from_aggregates(aggregates)
    assert np.allclose(profiles[ProfileCol.LRFMC_M], expected["M"])
    assert np.allclose(profiles[ProfileCol.LRFMC_R], expected["R"])
    assert (profiles[ProfileCol.FLIGHTS_TOTAL] == aggregates[Col.FLIGHT_COUNT]).all()
    assert set(profiles[ProfileCol.SEGMENT]) == {str(s) for s in Segment}
    assert profiles[ProfileCol.AS_OF].eq("2014-03-31T00:00:00").all()  # LOAD_TIME


def test_online_profile_of_a_brand_new_member_without_flights() -> None:
    member = {Col.MEMBER_ID: "new", Col.ENROL_DATE: "2024-05-01", Col.TIER: "silver"}
    record = profile_for_member(member, pd.DataFrame(), _context())  # no flights frame at all
    assert record[ProfileCol.SEGMENT] == "low_value" and record[ProfileCol.HAS_FLOWN] is False
    assert (record[ProfileCol.KM_TO_RETAIN], record[ProfileCol.SEGMENTS_TO_RETAIN]) == (35_000, 23)
    assert record[ProfileCol.HOME_AIRPORT] == "unknown" and record[ProfileCol.MILES_BALANCE] == 0


def test_flights_without_the_needed_columns_are_named() -> None:
    with pytest.raises(ProfileError, match=r"flights: missing column\(s\) \['origin', 'destination'"):
        compute_profiles(_members([("a", "basic", "PEK")]), pd.DataFrame({Col.MEMBER_ID: ["a"]}), _context())
    with pytest.raises(ProfileError, match="duplicated member ids"):
        compute_profiles(_members([("a", "basic", "PEK"), ("a", "basic", "PEK")]), _flights([]), _context())
