"""``recsys data validate``: a generated world is clean; every kind of problem is found and located."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from recsys.data.importers import import_dataset
from recsys.data.layout import read_manifest, read_table
from recsys.data.validate import (
    Chunk,
    Rules,
    ValidationReport,
    check_values,
    coerce_chunk,
    validate_dataset,
)
from recsys.schema import ALL_TABLES, TABLES, Col
from training.cli import app

runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


@pytest.fixture()
def world_copy(small_world: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "world"
    shutil.copytree(small_world, dest)
    return dest


def rewrite(root: Path, relpath: str, change: object) -> None:
    path = root / relpath
    frame = pd.read_parquet(path)
    change(frame)  # type: ignore[operator]
    frame.to_parquet(path, index=False)


def lines_of(report: ValidationReport) -> set[str]:
    return {str(p) for p in report.problems()}


def test_a_generated_world_validates_clean(small_world: Path) -> None:
    code, output = run("data", "validate", small_world)
    assert code == 0, output
    assert "valid" in output


def test_problems_in_parquet_tables_are_located_by_part_file_row_and_column(world_copy: Path) -> None:
    flights = "flights/part-00000.parquet"
    first_member = read_table(world_copy, "members")[Col.MEMBER_ID].iloc[0]

    def corrupt_flights(f: pd.DataFrame) -> None:
        f.loc[16, Col.CABIN] = "Q"
        f.loc[4, Col.FARE_PAID] = -10.0
        f.loc[7, Col.ORIGIN] = "ZZZ"
        f.loc[9, Col.MEMBER_ID] = "NOBODY"
        f.loc[11, Col.DEPARTURE_TIME] = pd.Timestamp("2199-01-01 10:00")
        f.loc[12, Col.FLIGHT_ID] = f.loc[2, Col.FLIGHT_ID]

    rewrite(world_copy, flights, corrupt_flights)
    rewrite(
        world_copy,
        "members.parquet",
        lambda m: m.__setitem__(Col.TIER, m[Col.TIER].where(m.index != 2, "iron")),
    )
    rewrite(
        world_copy,
        "interactions/part-00000.parquet",
        lambda i: i.__setitem__(Col.OFFER_ID, i[Col.OFFER_ID].where(i.index != 0, "GHOST")),
    )
    report = validate_dataset(world_copy)
    lines = lines_of(report)
    dup = pd.read_parquet(world_copy / flights)[Col.FLIGHT_ID].iloc[2]
    expected = {
        f"{flights} row 17, column cabin: unknown cabin 'Q' (allowed: C, F, W, Y)",
        f"{flights} row 5, column fare_paid: negative value -10 (must be >= 0)",
        f"{flights} row 8, column origin: unknown airport 'ZZZ' (not an airport of the route network)",
        f"{flights} row 10, column member_id: unknown member 'NOBODY' (no such member_id in members)",
        f"{flights} row 12, column departure_time: datetime '2199-01-01T10:00:00' is in the far future "
        f"(after {(pd.Timestamp.now().normalize() + pd.DateOffset(years=10)).date()})",
        f"{flights} row 13, column flight_id: duplicated flight_id '{dup}' (first at {flights} row 3)",
        "members.parquet row 3, column tier: unknown tier 'iron' (allowed: basic, gold, platinum, silver)",
        "interactions/part-00000.parquet row 1, column offer_id: unknown offer 'GHOST' "
        "(no such offer_id in offers)",
    }
    assert expected <= lines, sorted(lines - expected)
    assert first_member  # the world has members
    code, output = run("data", "validate", world_copy)
    assert code != 0
    assert "unknown cabin 'Q'" in output and "problem(s)" in output


def test_a_missing_table_and_a_missing_column_are_reported(world_copy: Path) -> None:
    shutil.rmtree(world_copy / "redemptions")
    rewrite(world_copy, "offers.parquet", lambda o: o.drop(columns=[Col.MARGIN], inplace=True))
    lines = lines_of(validate_dataset(world_copy))
    assert "redemptions: missing table 'redemptions' (expected redemptions)" in lines
    assert any(line.startswith("offers.parquet, column margin: missing column 'margin'") for line in lines)


def test_references_of_ancillaries_and_member_aggregates(world_copy: Path) -> None:
    rewrite(
        world_copy,
        "ancillaries/part-00000.parquet",
        lambda a: a.__setitem__(Col.FLIGHT_ID, a[Col.FLIGHT_ID].where(a.index != 1, "F-NONE")),
    )
    aggregates = pd.DataFrame(
        {
            Col.MEMBER_ID: ["M-NONE"],
            Col.FFP_DATE: [pd.Timestamp("2010-01-01")],
            Col.LOAD_TIME: [pd.Timestamp("2014-03-31")],
            Col.FLIGHT_COUNT: [3],
            Col.SEG_KM_SUM: [4000],
            Col.LAST_TO_END: [20],
            Col.AVG_DISCOUNT: [0.7],
        }
    )
    aggregates.to_parquet(world_copy / "member_aggregates.parquet", index=False)
    lines = lines_of(validate_dataset(world_copy))
    assert (
        "ancillaries/part-00000.parquet row 2, column flight_id: unknown flight 'F-NONE' "
        "(no such flight_id in flights)"
    ) in lines
    assert (
        "member_aggregates.parquet row 1, column member_id: unknown member 'M-NONE' "
        "(no such member_id in members)"
    ) in lines


def test_validate_refuses_a_directory_that_is_not_a_dataset(tmp_path: Path) -> None:
    code, output = run("data", "validate", tmp_path / "nowhere")
    assert code != 0 and "not a dataset directory" in output
    code, output = run("data", "validate", tmp_path)
    assert code != 0 and "manifest.json" in output and "missing table 'members'" in output


def test_generated_world_reimports_identically_from_parquet(small_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "re"
    code, output = run("data", "import", small_world, "--out", out)
    assert code == 0, output
    for table in [*TABLES, "requests"]:
        pd.testing.assert_frame_equal(read_table(small_world, table), read_table(out, table))
    assert (out / "network" / "airports.parquet").is_file()
    assert not (out / "truth").exists()  # the hidden truth is never imported
    source, again = read_manifest(small_world), read_manifest(out)
    assert again["as_of"] == source["as_of"]  # the history ends where it ended
    assert again["source_manifest"]["fingerprint"] == source["fingerprint"]


def _as_csv_cell(value: object) -> object:
    if isinstance(value, list | tuple | np.ndarray):
        return "|".join(str(v) for v in value)
    return value


def test_generated_world_exported_to_csv_reimports_with_the_same_values(
    small_world: Path, tmp_path: Path
) -> None:
    src = tmp_path / "csv"
    src.mkdir()
    for table in [*TABLES, "requests"]:
        frame = read_table(small_world, table)
        for col, ltype in ALL_TABLES[table].columns.items():
            if ltype.startswith("list["):
                frame[col] = frame[col].map(_as_csv_cell)
            elif ltype == "datetime":
                frame[col] = frame[col].dt.strftime("%Y-%m-%dT%H:%M:%S")
        frame.to_csv(src / f"{table}.csv", index=False)
    out = tmp_path / "re"
    import_dataset(src, out)
    assert validate_dataset(out).ok
    for table in [*TABLES, "requests"]:
        original, again = read_table(small_world, table), read_table(out, table)
        for col, ltype in ALL_TABLES[table].columns.items():
            if ltype.startswith("list["):
                original[col] = original[col].map(lambda v: tuple(str(x) for x in v))
                again[col] = again[col].map(lambda v: tuple(str(x) for x in v))
            elif ltype == "datetime":
                original[col] = original[col].astype("datetime64[us]")
                again[col] = again[col].astype("datetime64[us]")
        pd.testing.assert_frame_equal(original, again, check_dtype=False)


def test_validation_is_vectorised_and_reports_every_bad_row_of_a_large_table() -> None:
    n, bad_every = 300_000, 300
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            Col.FLIGHT_ID: [f"F{i:07d}" for i in range(n)],
            Col.MEMBER_ID: "M1",
            Col.FLIGHT_DATE: pd.Timestamp("2024-01-01"),
            Col.DEPARTURE_TIME: pd.Timestamp("2024-01-01 08:00"),
            Col.FLIGHT_NUMBER: "CA1501",
            Col.ORIGIN: "PEK",
            Col.DESTINATION: "PVG",
            Col.CABIN: np.where(np.arange(n) % bad_every == 0, "Q", "Y"),
            Col.FARE_CLASS: "M",
            Col.DISTANCE_KM: 1078,
            Col.FARE_PAID: rng.uniform(300, 3000, n),
            Col.MILES_EARNED: 800,
            Col.MEAL_CODE: "STD",
            Col.SEAT_TYPE: "aisle",
            Col.BAGS: 1,
            Col.LOUNGE_USED: False,
        }
    )
    report = ValidationReport()
    started = time.perf_counter()
    typed = coerce_chunk(
        Chunk.of("flights", "flights.parquet", frame), Rules(airports=frozenset({"PEK", "PVG"})), report
    )
    check_values(typed, Rules(airports=frozenset({"PEK", "PVG"})), report)
    took = time.perf_counter() - started
    assert report.n_problems == n // bad_every
    printed = report.format(limit=5)
    assert len(printed) == 6
    assert (
        printed[-1]
        == f"flights.parquet, column cabin: ... and {n // bad_every - 5} more 'unknown code' problems"
    )
    assert took < 30, f"validating {n:,} rows took {took:.1f}s"


def test_a_duplicate_id_in_another_part_file_names_where_the_first_one_is(world_copy: Path) -> None:
    part0 = world_copy / "flights" / "part-00000.parquet"
    extra = pd.read_parquet(part0).iloc[[3]]
    extra.to_parquet(world_copy / "flights" / "part-99999.parquet", index=False)
    lines = lines_of(validate_dataset(world_copy))
    fid = extra[Col.FLIGHT_ID].iloc[0]
    assert (
        f"flights/part-99999.parquet row 1, column flight_id: duplicated flight_id '{fid}' "
        f"(first at flights/part-00000.parquet row 4)"
    ) in lines


def test_gender_flight_reference_flight_date_and_history_end(world_copy: Path) -> None:
    members, flights, events = (
        "members.parquet",
        "flights/part-00000.parquet",
        "interactions/part-00000.parquet",
    )
    as_of = read_manifest(world_copy)["as_of"]
    assert as_of == "2026-06-30"

    def corrupt_flights(f: pd.DataFrame) -> None:
        f.loc[3, Col.DEPARTURE_TIME] = pd.Timestamp("2024-08-06 19:55")
        f.loc[3, Col.FLIGHT_DATE] = dt.date(2024, 8, 9)  # three days off: no time zone explains it

    def corrupt_events(i: pd.DataFrame) -> None:
        i.loc[4, Col.FLIGHT_ID] = "F-NONE"
        i.loc[5, Col.EVENT_TIME] = pd.Timestamp("2026-07-01 00:00")  # the first instant after as_of's day

    rewrite(world_copy, members, lambda m: m.__setitem__(Col.GENDER, m[Col.GENDER].where(m.index != 2, "X")))
    rewrite(world_copy, flights, corrupt_flights)
    rewrite(world_copy, events, corrupt_events)
    report = validate_dataset(world_copy)
    expected = {
        f"{members} row 3, column gender: unknown gender 'X' (allowed: F, M)",
        f"{events} row 5, column flight_id: unknown flight 'F-NONE' (no such flight_id in flights)",
        f"{flights} row 4, column flight_date: flight_date 2024-08-09 is not the date of departure_time "
        "2024-08-06T19:55:00 (UTC; the local date of departure is between 2024-08-06 and 2024-08-07 in any "
        "time zone)",
        f"{events} row 6, column event_time: event_time '2026-07-01T00:00:00' is past the end of the "
        "dataset's history (manifest as_of 2026-06-30: the history ends at 2026-07-01T00:00:00)",
    }
    assert lines_of(report) == expected  # nothing else: the rest of the world is clean
    code, output = run("data", "validate", world_copy)
    assert code != 0
    assert "unknown gender 'X'" in output and "unknown flight 'F-NONE'" in output


@pytest.mark.parametrize(
    ("departure", "flight_date", "ok"),
    [
        ("2024-08-06 19:55", "2024-08-06", True),  # the UTC date (what the generator writes)
        ("2024-08-06 19:55", "2024-08-07", True),  # Beijing (UTC+8): already the 7th locally
        ("2024-08-06 03:00", "2024-08-05", True),  # New York (UTC-5): still the 5th locally
        ("2024-08-06 03:00", "2024-08-07", False),  # 17:00 at UTC+14 at the latest: never the 7th
        ("2024-08-06 13:00", "2024-08-05", False),  # 01:00 at UTC-12 at the earliest: never the 5th
    ],
)
def test_flight_date_may_be_the_local_date_of_departure(departure: str, flight_date: str, ok: bool) -> None:
    frame = pd.DataFrame(
        {
            Col.FLIGHT_ID: ["F1"],
            Col.MEMBER_ID: ["M1"],
            Col.FLIGHT_DATE: [flight_date],
            Col.DEPARTURE_TIME: [departure.replace(" ", "T")],
            Col.FLIGHT_NUMBER: ["CA1501"],
            Col.ORIGIN: ["PEK"],
            Col.DESTINATION: ["PVG"],
            Col.CABIN: ["Y"],
            Col.FARE_CLASS: ["M"],
            Col.DISTANCE_KM: ["1078"],
            Col.FARE_PAID: ["900"],
            Col.MILES_EARNED: ["800"],
            Col.MEAL_CODE: ["STD"],
            Col.SEAT_TYPE: ["aisle"],
            Col.BAGS: ["1"],
            Col.LOUNGE_USED: ["false"],
        }
    )
    rules, report = Rules(airports=frozenset({"PEK", "PVG"})), ValidationReport()
    check_values(
        coerce_chunk(Chunk.of("flights", "flights.csv", frame, from_text=True), rules, report), rules, report
    )
    assert report.ok == ok, lines_of(report)
    if not ok:
        assert [p.column for p in report.problems()] == [Col.FLIGHT_DATE]


def _flight_row(**booking: str) -> pd.DataFrame:
    row = {
        Col.FLIGHT_ID: "F1",
        Col.MEMBER_ID: "M1",
        Col.FLIGHT_DATE: "2024-08-06",
        Col.DEPARTURE_TIME: "2024-08-06T08:00:00",
        Col.FLIGHT_NUMBER: "CA1501",
        Col.ORIGIN: "PEK",
        Col.DESTINATION: "PVG",
        Col.CABIN: "Y",
        Col.FARE_CLASS: "M",
        Col.DISTANCE_KM: "1078",
        Col.FARE_PAID: "900",
        Col.MILES_EARNED: "800",
        Col.MEAL_CODE: "STD",
        Col.SEAT_TYPE: "aisle",
        Col.BAGS: "1",
        Col.LOUNGE_USED: "false",
    } | booking
    return pd.DataFrame({k: [v] for k, v in row.items()})


@pytest.mark.parametrize(
    ("booking", "column", "words"),
    [
        ({}, None, None),  # data without the booking columns is valid
        ({"booking_lead_days": "", "party_size": "", "children": "", "stay_nights": ""}, None, None),
        ({"booking_lead_days": "12", "party_size": "3", "children": "1", "stay_nights": "4"}, None, None),
        ({"booking_lead_days": "-2"}, "booking_lead_days", "booking_lead_days -2 outside 0..366"),
        ({"booking_lead_days": "400"}, "booking_lead_days", "outside 0..366"),
        ({"party_size": "0"}, "party_size", "party_size 0 outside 1..9"),
        ({"party_size": "12"}, "party_size", "outside 1..9"),
        ({"party_size": "two"}, "party_size", "not an integer"),
        ({"stay_nights": "1.5"}, "stay_nights", "not an integer"),
        ({"party_size": "2", "children": "3"}, "children", "children 3 is more than party_size 2"),
    ],
)
def test_booking_columns_are_optional_and_bad_values_are_named(
    booking: dict[str, str], column: str | None, words: str | None
) -> None:
    rules, report = Rules(airports=frozenset({"PEK", "PVG"})), ValidationReport()
    chunk = Chunk.of("flights", "flights.csv", _flight_row(**booking), from_text=True)
    check_values(coerce_chunk(chunk, rules, report), rules, report)
    if column is None:
        assert report.ok, lines_of(report)
    else:
        problems = list(report.problems())
        assert [p.column for p in problems] == [column], lines_of(report)
        assert words is not None and words in str(problems[0]), str(problems[0])


def test_an_unreadable_as_of_is_reported_and_the_tables_are_still_checked(world_copy: Path) -> None:
    manifest_path = world_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["as_of"] = "end of June"
    manifest_path.write_text(json.dumps(manifest))
    rewrite(
        world_copy,
        "members.parquet",
        lambda m: m.__setitem__(Col.GENDER, m[Col.GENDER].where(m.index != 0, "U")),
    )
    lines = lines_of(validate_dataset(world_copy))
    assert any(
        line.startswith("manifest.json, column as_of: as_of 'end of June' is not a date") for line in lines
    )
    assert "members.parquet row 1, column gender: unknown gender 'U' (allowed: F, M)" in lines


def test_bad_request_logs_name_file_row_and_column(world_copy: Path) -> None:
    part = "requests/part-00000.parquet"
    frame = pd.read_parquet(world_copy / part)
    with_two = np.flatnonzero(frame[Col.SHOWN].map(len).to_numpy() >= 2)[:6]
    r = [int(i) for i in with_two]

    def corrupt(f: pd.DataFrame) -> None:
        props = f[Col.PROPENSITIES].map(list)
        props[r[0]] = [0.0, *props[r[0]][1:]]
        props[r[1]] = [1.5, *props[r[1]][1:]]
        props[r[2]] = [None, *props[r[2]][1:]]
        props[r[3]] = props[r[3]][:1]
        f[Col.PROPENSITIES] = props
        shown = f[Col.SHOWN].map(list)
        shown[r[4]] = ["NOT-A-CANDIDATE", *shown[r[4]][1:]]
        f[Col.SHOWN] = shown

    rewrite(world_copy, part, corrupt)
    lines = lines_of(validate_dataset(world_copy))
    n3 = len(frame[Col.SHOWN].iloc[r[3]])
    expected = {
        f"{part} row {r[0] + 1}, column propensities: propensity 0 is not a probability in (0, 1] "
        "(a shown offer had some chance)",
        f"{part} row {r[1] + 1}, column propensities: propensity 1.5 is not a probability in (0, 1] "
        "(a shown offer had some chance)",
        f"{part} row {r[2] + 1}, column propensities: a shown offer has no propensity",
        f"{part} row {r[3] + 1}, column propensities: 1 propensities for {n3} shown offers (one per shown "
        "offer, in slot order)",
        f"{part} row {r[4] + 1}, column shown: shown offer 'NOT-A-CANDIDATE' is not in the request's "
        "candidate set",
    }
    assert expected <= lines, sorted(lines)
    code, output = run("data", "validate", world_copy)
    assert code != 0 and "not in the request's candidate set" in output


def test_a_requests_table_without_its_propensities_column_is_reported(world_copy: Path) -> None:
    rewrite(
        world_copy, "requests/part-00000.parquet", lambda f: f.drop(columns=[Col.PROPENSITIES], inplace=True)
    )
    lines = lines_of(validate_dataset(world_copy))
    assert any("missing column 'propensities'" in line for line in lines), sorted(lines)


def test_an_interaction_naming_a_request_not_in_the_log_is_reported(world_copy: Path) -> None:
    part = "interactions/part-00000.parquet"
    frame = pd.read_parquet(world_copy / part)
    row = int(np.flatnonzero(frame[Col.REQUEST_ID].notna().to_numpy())[0])
    rewrite(
        world_copy,
        part,
        lambda i: i.__setitem__(Col.REQUEST_ID, i[Col.REQUEST_ID].where(i.index != row, "R-NOWHERE")),
    )
    lines = lines_of(validate_dataset(world_copy))
    assert (
        f"{part} row {row + 1}, column request_id: unknown request 'R-NOWHERE' "
        "(no such request_id in requests)"
    ) in lines, sorted(lines)
    code, output = run("data", "validate", world_copy)
    assert code != 0 and "unknown request 'R-NOWHERE'" in output


def test_an_import_refuses_an_interaction_naming_a_request_not_in_the_log(
    world_copy: Path, tmp_path: Path
) -> None:
    part = "interactions/part-00000.parquet"
    frame = pd.read_parquet(world_copy / part)
    row = int(np.flatnonzero(frame[Col.REQUEST_ID].notna().to_numpy())[-1])
    rewrite(
        world_copy,
        part,
        lambda i: i.__setitem__(Col.REQUEST_ID, i[Col.REQUEST_ID].where(i.index != row, "R-NOWHERE")),
    )
    code, output = run("data", "import", world_copy, "--out", tmp_path / "imported")
    assert code != 0
    assert "unknown request 'R-NOWHERE' (no such request_id in requests)" in output, output
