"""LRFMC: the README's derivation from aggregates, the textbook cleaning, and LRFMC from flights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.features.lrfmc import (
    C_CAP,
    CABIN_LEVEL_FALLBACK,
    FareReference,
    LrfmcError,
    clean_textbook,
    lrfmc_from_aggregates,
    lrfmc_from_flights,
    read_air_data_csv,
    route_keys,
)
from recsys.schema import Col


def _aggregates(**overrides: list) -> pd.DataFrame:
    base = {
        Col.MEMBER_ID: ["m1", "m2"],
        Col.FFP_DATE: pd.to_datetime(["2013-03-31", "2010-01-01"]),
        Col.LOAD_TIME: pd.to_datetime(["2014-03-31", "2014-03-31"]),
        Col.FLIGHT_COUNT: [10, 2],
        Col.SEG_KM_SUM: [15_000, 368],
        Col.LAST_TO_END: [60, 731],
        Col.AVG_DISCOUNT: [0.8, 1.2],
    }
    base.update(overrides)
    return pd.DataFrame(base)


# -- the textbook cleaning --


def test_textbook_cleaning_of_data_selected_leaves_62044_rows(data_selected: Path) -> None:
    aggregates = read_air_data_csv(data_selected)
    assert len(aggregates) == 62_051
    cleaned = clean_textbook(aggregates)
    assert len(cleaned) == 62_044
    # exactly the zero-discount rows (zero fares with flown km) went
    dropped = aggregates.loc[~aggregates.index.isin(cleaned.index)]
    assert (dropped[Col.AVG_DISCOUNT] == 0).all() and (dropped[Col.SEG_KM_SUM] > 0).all()


def test_textbook_rule_with_raw_fare_columns() -> None:
    rows = pd.DataFrame(
        {
            "SUM_YR_1": [100.0, 0.0, 0.0, np.nan, 0.0, 0.0],
            "SUM_YR_2": [0.0, 50.0, 0.0, 10.0, 0.0, 0.0],
            Col.SEG_KM_SUM: [1000, 1000, 0, 1000, 1000, 0],
            Col.AVG_DISCOUNT: [0.5, 0.5, 0.0, 0.5, 0.0, 0.3],
        }
    )
    kept = clean_textbook(rows)
    # fare in year 1 / year 2 kept; zero fare with km 0 and discount 0 kept; null fare dropped;
    # zero fare with km flown dropped; zero fare, km 0 but a discount is not the "genuinely nothing" case
    assert kept.index.tolist() == [0, 1, 2]


def test_textbook_rule_without_fares_uses_zero_discount() -> None:
    rows = _aggregates(
        **{
            Col.MEMBER_ID: ["a", "b"],
            Col.SEG_KM_SUM: [1000, 0],
            Col.AVG_DISCOUNT: [0.0, 0.0],
        }
    )
    assert clean_textbook(rows)[Col.MEMBER_ID].tolist() == ["b"]


def test_cleaning_names_missing_columns() -> None:
    with pytest.raises(LrfmcError, match="avg_discount"):
        clean_textbook(pd.DataFrame({Col.SEG_KM_SUM: [1]}))


# -- LRFMC from aggregates --


def test_lrfmc_from_aggregates_matches_hand_computed_values() -> None:
    out = lrfmc_from_aggregates(_aggregates())
    assert out[Col.MEMBER_ID].tolist() == ["m1", "m2"]
    # m1: 365 days of membership, 60 days since the last flight
    assert out.loc[0, "L"] == pytest.approx(365 / 30)
    assert out.loc[0, "R"] == pytest.approx(2.0)
    assert out.loc[0, ["F", "M", "C"]].tolist() == [10, 15_000, 0.8]
    # m2: 2010-01-01 -> 2014-03-31 is 1550 days
    assert out.loc[1, "L"] == pytest.approx(1550 / 30)
    assert out.loc[1, "R"] == pytest.approx(731 / 30)


def test_lrfmc_from_aggregates_rejects_negative_and_missing() -> None:
    with pytest.raises(LrfmcError, match=r"column R.*member 'm2'"):
        lrfmc_from_aggregates(_aggregates(**{Col.LAST_TO_END: [1, -5]}))
    with pytest.raises(LrfmcError, match="last_to_end"):
        lrfmc_from_aggregates(_aggregates().drop(columns=[Col.LAST_TO_END]))


def test_read_air_data_csv_parses_both_date_formats(tmp_path: Path) -> None:
    path = tmp_path / "raw.csv"
    path.write_bytes(
        "\ufeffMEMBER_NO,FFP_DATE,LOAD_TIME,FLIGHT_COUNT,SEG_KM_SUM,LAST_TO_END,avg_discount,SUM_YR_1,SUM_YR_2\r\n"
        "7,11/2/2006,3/31/2014,3,900,10,0.5,100,\r\n".encode()
    )
    out = read_air_data_csv(path)
    assert out[Col.MEMBER_ID].tolist() == ["7"]
    assert out[Col.FFP_DATE].iloc[0] == pd.Timestamp("2006-11-02")
    assert out[Col.LOAD_TIME].iloc[0] == pd.Timestamp("2014-03-31")
    assert "SUM_YR_1" in out.columns


def test_read_air_data_csv_names_a_bad_date(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "FFP_DATE,LOAD_TIME,FLIGHT_COUNT,SEG_KM_SUM,LAST_TO_END,avg_discount\n2006/13/45,2014/3/31,1,1,1,1\n"
    )
    with pytest.raises(LrfmcError, match=r"ffp_date.*2006/13/45.*row 1"):
        read_air_data_csv(path)


# -- LRFMC from flights --


def _flight(member: str, when: str, o: str, d: str, cabin: str, fc: str, km: int, fare: float) -> dict:
    return {
        Col.MEMBER_ID: member,
        Col.DEPARTURE_TIME: pd.Timestamp(when),
        Col.ORIGIN: o,
        Col.DESTINATION: d,
        Col.CABIN: cabin,
        Col.FARE_CLASS: fc,
        Col.DISTANCE_KM: km,
        Col.FARE_PAID: fare,
    }


def test_fare_reference_uses_route_median_then_per_km() -> None:
    ys = [_flight("x", "2024-01-01", "PEK", "CTU", "Y", "Y", 1500, f) for f in (900, 1000, 1100, 1000, 1000)]
    other = [_flight("x", "2024-01-02", "SHA", "CAN", "Y", "Y", 1000, 500.0)]
    ref = FareReference.fit(pd.DataFrame(ys + other))
    assert ref.route_fares == {"CTU-PEK": 1000.0}  # 5 full fares on PEK-CTU; SHA-CAN has only one
    # per-km rate: median of 900/1500 .. 1100/1500 and 500/1000 -> the 1000/1500 value
    assert ref.per_km == pytest.approx(1000 / 1500)
    probe = pd.DataFrame(
        [
            _flight("x", "2024-01-03", "CTU", "PEK", "C", "J", 1500, 1200.0),  # route reference 1000
            _flight("x", "2024-01-03", "SHA", "CAN", "Y", "M", 1000, 400.0),  # per-km reference 666.7
            _flight("x", "2024-01-03", "CTU", "PEK", "F", "F", 1500, 9000.0),  # capped
            _flight("x", "2024-01-03", "CTU", "PEK", "W", "G", 1500, np.nan),  # no fare: cabin fallback
        ]
    )
    levels = ref.levels(probe)
    assert levels == pytest.approx([1.2, 400 / (1000 * 1000 / 1500), C_CAP, CABIN_LEVEL_FALLBACK["W"]])


def test_route_keys_are_undirected() -> None:
    keys = route_keys(pd.Series(["PEK", "CTU", "SHA"]), pd.Series(["CTU", "PEK", "CAN"]))
    assert keys.tolist() == ["CTU-PEK", "CTU-PEK", "CAN-SHA"]


def test_lrfmc_from_flights_matches_hand_computed_values() -> None:
    members = pd.DataFrame(
        {
            Col.MEMBER_ID: ["a", "b", "new"],
            Col.ENROL_DATE: pd.to_datetime(["2020-01-01", "2019-01-01", "2023-12-02"]),
        }
    )
    as_of = pd.Timestamp("2024-01-01")
    flights = pd.DataFrame(
        [
            _flight("a", "2023-12-22", "PEK", "CTU", "Y", "B", 1500, 750.0),
            _flight("a", "2023-06-01", "CTU", "PEK", "C", "J", 1500, 3000.0),
            _flight("a", "2021-06-01", "PEK", "SHA", "Y", "Y", 1000, 1000.0),  # before the 2-year window
            _flight("a", "2024-02-01", "PEK", "SHA", "Y", "Y", 1000, 1000.0),  # after as_of: ignored
            _flight("b", "2021-01-01", "PEK", "SHA", "Y", "Y", 1000, 1000.0),  # only an old flight
        ]
    )
    ref = FareReference(per_km=1.0)  # full fare = 1 CNY per km
    out = lrfmc_from_flights(members, flights, as_of, ref).set_index(Col.MEMBER_ID)
    assert out.loc["a", "L"] == pytest.approx(1461 / 30)  # 2020-01-01 -> 2024-01-01
    assert out.loc["a", "R"] == pytest.approx(10 / 30)  # last flight 10 days before as_of
    assert out.loc["a", "F"] == 2 and out.loc["a", "M"] == 3000
    assert out.loc["a", "C"] == pytest.approx((750 / 1500 + C_CAP) / 2)  # 0.5 and 3000/1500 = 2 capped
    # b flew only before the window: F, M, C zero, R from the old flight
    assert out.loc["b", ["F", "M", "C"]].tolist() == [0, 0, 0]
    assert out.loc["b", "R"] == pytest.approx((as_of - pd.Timestamp("2021-01-01")).days / 30)
    # never flown: R = L, nothing NaN
    assert out.loc["new", "R"] == out.loc["new", "L"] == pytest.approx(30 / 30)
    assert not out.isna().any().any()
