"""``recsys data import``: canonical and interactions formats, bad input, atomicity, rejects, round trips."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from recsys.data.importers import ImportFailed, import_dataset
from recsys.data.layout import REJECTS_FILE, read_manifest, read_table
from recsys.data.validate import validate_dataset
from recsys.schema import TABLES, Col
from training.cli import app

FIXTURES = Path(__file__).parent / "fixtures"
CANONICAL = FIXTURES / "canonical"
INTERACTIONS = FIXTURES / "interactions"

runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        f"traceback instead of a CLI error: {result.exception!r}"
    )
    return result.exit_code, result.output


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the SHA-256 of its bytes."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def copy_source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(CANONICAL, src)
    return src


def edit_cell(path: Path, row: int, column: str, value: str) -> None:
    """Set one cell of a CSV file (row = 1-based data row) without touching anything else."""
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[row].split(",")
    cells[header.index(column)] = value
    lines[row] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


def drop_column(path: Path, column: str) -> None:
    lines = [line.split(",") for line in path.read_text().splitlines()]
    idx = lines[0].index(column)
    path.write_text("\n".join(",".join(c[:idx] + c[idx + 1 :]) for c in lines) + "\n")


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------------------------------------
# A clean import
# ------------------------------------------------------------------------------------------------------------


def test_canonical_csv_import_writes_typed_tables_that_validate(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    code, output = run("data", "import", CANONICAL, "--out", out)
    assert code == 0, output
    assert "flights: 5 rows" in output
    assert validate_dataset(out).ok
    manifest = read_manifest(out)
    assert manifest["import_format"] == "canonical"
    assert manifest["row_counts"]["members"] == 4

    flights = read_table(out, "flights")
    assert flights[Col.DEPARTURE_TIME].iloc[0] == pd.Timestamp("2024-03-01 08:30:00")
    assert flights[Col.LOUNGE_USED].tolist() == [False, False, True, True, False]
    assert flights[Col.DISTANCE_KM].dtype == np.int64
    assert pd.isna(flights[Col.SEAT_TYPE].iloc[2])

    offers = read_table(out, "offers").set_index(Col.OFFER_ID)
    # list cells: '|'-separated, a JSON array, or empty (= empty list)
    assert list(offers.at["UP-Y2W", Col.ELIGIBLE_FARE_CLASSES]) == ["Y", "B", "M", "U", "H"]
    assert list(offers.at["AN-MEAL-VG", Col.PLACEMENTS]) == ["booking", "post_booking"]
    assert list(offers.at["UP-Y2W", Col.ELIGIBLE_TIERS]) == []
    assert list(offers.at["RD-AWD-CAN", Col.BLACKOUT_MONTHS]) == [7, 8]
    assert pd.isna(offers.at["UP-Y2W", Col.VALID_TO])
    assert not (out / REJECTS_FILE).exists()
    assert leftovers(tmp_path) == []


def test_every_canonical_table_exists_even_when_the_source_lacks_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(CANONICAL / "members.csv", src)
    import_dataset(src, tmp_path / "ds")
    for table in TABLES:
        assert len(read_table(tmp_path / "ds", table)) == (4 if table == "members" else 0)


# ------------------------------------------------------------------------------------------------------------
# Bad input: a precise message naming file, row and column; non-zero exit; nothing written
# ------------------------------------------------------------------------------------------------------------

BAD_INPUTS = {
    "missing column": (
        lambda src: drop_column(src / "flights.csv", "cabin"),
        "flights.csv, column cabin: missing column 'cabin'",
    ),
    "malformed date": (
        lambda src: edit_cell(src / "flights.csv", 2, "departure_time", "2024-13-01T10:00:00"),
        "flights.csv row 2, column departure_time: malformed datetime (expected ISO 8601, e.g. "
        "2024-03-01T08:30:00): '2024-13-01T10:00:00'",
    ),
    "malformed plain date": (
        lambda src: edit_cell(src / "members.csv", 3, "enrol_date", "20/01/2020"),
        "members.csv row 3, column enrol_date: malformed date (expected YYYY-MM-DD): '20/01/2020'",
    ),
    "unknown airport": (
        lambda src: edit_cell(src / "flights.csv", 3, "origin", "XXX"),
        "flights.csv row 3, column origin: unknown airport 'XXX' (not an airport of the route network)",
    ),
    "unknown cabin": (
        lambda src: edit_cell(src / "flights.csv", 1, "cabin", "Q"),
        "flights.csv row 1, column cabin: unknown cabin 'Q' (allowed: C, F, W, Y)",
    ),
    "flight of an unknown member": (
        lambda src: edit_cell(src / "flights.csv", 4, "member_id", "M999"),
        "flights.csv row 4, column member_id: unknown member 'M999' (no such member_id in members)",
    ),
    "duplicated id": (
        lambda src: edit_cell(src / "members.csv", 3, "member_id", "M001"),
        "members.csv row 3, column member_id: duplicated member_id 'M001' (first at members.csv row 1)",
    ),
    "negative price": (
        lambda src: edit_cell(src / "ancillaries.csv", 2, "price_cash", "-300.0"),
        "ancillaries.csv row 2, column price_cash: negative value -300 (must be >= 0)",
    ),
    "category of another family": (
        lambda src: edit_cell(src / "offers.csv", 2, "family", "upsell"),
        "offers.csv row 2, column family: category lounge belongs to family ancillary, not upsell",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_with_a_precise_message_and_writes_nothing(tmp_path: Path, case: str) -> None:
    corrupt, message = BAD_INPUTS[case]
    src = copy_source(tmp_path)
    corrupt(src)
    out = tmp_path / "out" / "ds"
    code, output = run("data", "import", src, "--out", out)
    assert code != 0
    assert message in output, output
    assert "Traceback" not in output
    assert not out.exists()
    assert not out.parent.exists() or leftovers(out.parent) == []


@pytest.mark.parametrize("case", ["malformed date", "unknown airport", "duplicated id"])
def test_failed_import_over_an_existing_dataset_leaves_it_byte_for_byte(tmp_path: Path, case: str) -> None:
    out = tmp_path / "ds"
    import_dataset(CANONICAL, out)
    before = snapshot(out)
    corrupt, message = BAD_INPUTS[case]
    src = copy_source(tmp_path)
    corrupt(src)
    code, output = run("data", "import", src, "--out", out, "--overwrite")
    assert code != 0
    assert message in output
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []


def test_existing_destination_is_refused_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    import_dataset(CANONICAL, out)
    before = snapshot(out)
    code, output = run("data", "import", CANONICAL, "--out", out)
    assert code != 0
    assert "already exists" in output and "--overwrite" in output
    assert snapshot(out) == before


def test_every_problem_is_listed(tmp_path: Path) -> None:
    src = copy_source(tmp_path)
    edit_cell(src / "flights.csv", 1, "cabin", "Q")
    edit_cell(src / "flights.csv", 5, "bags", "two")
    edit_cell(src / "members.csv", 2, "tier", "diamond")
    edit_cell(src / "interactions.csv", 6, "offer_id", "NOPE")
    with pytest.raises(ImportFailed) as err:
        import_dataset(src, tmp_path / "ds")
    lines = {str(p) for p in err.value.report.problems()}
    assert "flights.csv row 5, column bags: not an integer: 'two'" in lines
    assert "flights.csv row 1, column cabin: unknown cabin 'Q' (allowed: C, F, W, Y)" in lines
    assert (
        "members.csv row 2, column tier: unknown tier 'diamond' (allowed: basic, gold, platinum, silver)"
        in lines
    )
    assert (
        "interactions.csv row 6, column offer_id: unknown offer 'NOPE' (no such offer_id in offers)" in lines
    )
    assert len(lines) == 4


def test_printed_problems_are_capped_per_file_column_and_kind(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    members = pd.read_csv(CANONICAL / "members.csv", dtype=str, keep_default_na=False)
    many = pd.concat([members.iloc[[0]]] * 30, ignore_index=True)
    many[Col.MEMBER_ID] = [f"M{i:03d}" for i in range(30)]
    many[Col.TIER] = "diamond"
    many.to_csv(src / "members.csv", index=False)
    code, output = run("data", "import", src, "--out", tmp_path / "ds", "--limit", "3")
    assert code != 0
    assert output.count("unknown tier 'diamond'") == 3
    assert "members.csv, column tier: ... and 27 more 'unknown code' problems" in output


def test_missing_source_and_unknown_format_are_clear_cli_errors(tmp_path: Path) -> None:
    code, output = run("data", "import", tmp_path / "nowhere", "--out", tmp_path / "ds")
    assert code != 0 and "does not exist" in output
    code, output = run("data", "import", CANONICAL, "--out", tmp_path / "ds", "--format", "excel")
    assert code != 0 and "excel" in output
    assert not (tmp_path / "ds").exists()


def test_a_truncated_csv_row_is_named_with_its_row_and_first_missing_column(tmp_path: Path) -> None:
    src = copy_source(tmp_path)
    text = (src / "members.csv").read_text().rstrip("\n")
    (src / "members.csv").write_text(text + "\nM005,2019-01-01,basic,PEK")  # cut mid-row, no newline
    code, output = run("data", "import", src, "--out", tmp_path / "ds")
    assert code != 0
    assert "members.csv row 5, column time_zone: truncated row: 4 of 9 fields" in output


# ------------------------------------------------------------------------------------------------------------
# --skip-invalid
# ------------------------------------------------------------------------------------------------------------


def test_skip_invalid_imports_valid_rows_and_lists_rejects_with_reasons(tmp_path: Path) -> None:
    src = copy_source(tmp_path)
    edit_cell(src / "flights.csv", 1, "cabin", "Q")
    edit_cell(
        src / "members.csv", 2, "tier", "diamond"
    )  # M002: its flight F003, purchase A002, X002, E003/E004 go
    out = tmp_path / "ds"
    code, output = run("data", "import", src, "--out", out, "--skip-invalid")
    assert code == 0, output
    assert validate_dataset(out).ok
    assert sorted(read_table(out, "members")[Col.MEMBER_ID]) == ["M001", "M003", "M004"]
    assert sorted(read_table(out, "flights")[Col.FLIGHT_ID]) == ["F002", "F004", "F005"]
    assert sorted(read_table(out, "ancillaries")[Col.PURCHASE_ID]) == []  # A001 was on F001, A002 by M002
    rejects = pd.read_csv(out / REJECTS_FILE)
    assert list(rejects.columns) == ["file", "row", "column", "kind", "message"]
    reasons = {(r.file, r.row, r.column): r.message for r in rejects.itertuples()}
    assert reasons[("flights.csv", 1, "cabin")] == "unknown cabin 'Q' (allowed: C, F, W, Y)"
    assert reasons[("members.csv", 2, "tier")].startswith("unknown tier 'diamond'")
    assert reasons[("flights.csv", 3, "member_id")] == "unknown member 'M002' (no such member_id in members)"
    assert (
        reasons[("ancillaries.csv", 1, "flight_id")] == "unknown flight 'F001' (no such flight_id in flights)"
    )
    assert read_manifest(out)["rejected_rows"] == len(rejects[["file", "row"]].drop_duplicates())


def test_skip_invalid_cannot_skip_a_missing_column(tmp_path: Path) -> None:
    src = copy_source(tmp_path)
    drop_column(src / "flights.csv", "cabin")
    code, output = run("data", "import", src, "--out", tmp_path / "ds", "--skip-invalid")
    assert code != 0
    assert "whole-file problems cannot be skipped" in output
    assert not (tmp_path / "ds").exists()


# ------------------------------------------------------------------------------------------------------------
# Generic interactions
# ------------------------------------------------------------------------------------------------------------


def test_interactions_format_maps_users_items_and_keeps_weights(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    code, output = run("data", "import", INTERACTIONS, "--format", "interactions", "--out", out)
    assert code == 0, output
    assert validate_dataset(out).ok
    events = read_table(out, "interactions")
    assert events[Col.MEMBER_ID].tolist() == ["u1", "u1", "u2", "u3", "u2"]
    assert events[Col.WEIGHT].tolist() == [3.0, 1.0, 5.0, 0.5, 2.0]
    assert set(events[Col.EVENT_TYPE]) == {"click"}
    # epoch seconds, ISO 8601 and epoch milliseconds
    assert events[Col.EVENT_TIME].tolist()[::2] == [
        pd.Timestamp("2023-11-14 22:13:20"),
        pd.Timestamp("2023-11-15 10:00:00"),
        pd.Timestamp("2023-11-16 02:00:00"),
    ]
    assert sorted(read_table(out, "members")[Col.MEMBER_ID]) == ["u1", "u2", "u3"]  # u3 only in interactions
    offers = read_table(out, "offers").set_index(Col.OFFER_ID)
    assert offers.at["i2", Col.TITLE] == "Travel pillow"
    assert set(offers[Col.FAMILY]) == {"generic"} and set(offers[Col.CATEGORY]) == {"generic"}
    items = pd.read_parquet(out / "features" / "item_features.parquet")
    assert items.set_index(Col.OFFER_ID).at["i3", "price"] == pytest.approx(39.9)
    users = pd.read_parquet(out / "features" / "user_features.parquet")
    assert users.set_index(Col.MEMBER_ID).at["u2", "country"] == "JP"


def test_interactions_without_event_type_weight_or_timestamp_say_what_they_assume(tmp_path: Path) -> None:
    src = tmp_path / "events.csv"
    src.write_text("user_id,item_id\nu1,i1\nu2,i1\n")
    code, output = run("data", "import", src, "--format", "interactions", "--out", tmp_path / "ds")
    assert code == 0, output
    assert "note: events.csv: no 'event_type' column: every row is imported as a 'click'" in output
    assert "note: events.csv: no 'weight' column: every row counts once" in output
    assert "note: events.csv: no 'timestamp' column: event_time is left empty" in output
    events = pd.read_parquet(tmp_path / "ds" / "interactions")
    assert events[Col.EVENT_TYPE].tolist() == ["click", "click"]
    assert events[Col.EVENT_TIME].isna().all()
    code, output = run("data", "validate", tmp_path / "ds")
    assert code == 0, output


def test_interactions_with_a_timestamp_column_need_a_time_in_every_row(tmp_path: Path) -> None:
    src = tmp_path / "events.csv"
    src.write_text("user_id,item_id,timestamp\nu1,i1,2024-01-01T00:00:00\nu2,i1,\n")
    code, output = run("data", "import", src, "--format", "interactions", "--out", tmp_path / "ds")
    assert code != 0
    assert "events.csv row 2, column timestamp: missing value" in output
    assert not (tmp_path / "ds").exists()


def test_interactions_bad_rows_name_the_source_columns(tmp_path: Path) -> None:
    src = tmp_path / "events.csv"
    src.write_text(
        "user_id,item_id,event_type,timestamp\nu1,i1,click,2024-01-01T00:00:00\n"
        "u2,i2,like,2024-01-02T00:00:00\n,i3,click,yesterday\n"
    )
    with pytest.raises(ImportFailed) as err:
        import_dataset(src, tmp_path / "ds", fmt="interactions")
    lines = {str(p) for p in err.value.report.problems()}
    assert any(
        line.startswith("events.csv row 2, column event_type: unknown event type 'like'") for line in lines
    )
    assert "events.csv row 3, column user_id: missing value (the column is required)" in lines
    assert any(line.startswith("events.csv row 3, column timestamp: malformed datetime") for line in lines)


def test_rows_past_the_source_manifests_as_of_are_refused(tmp_path: Path) -> None:
    src = copy_source(tmp_path)
    (src / "manifest.json").write_text('{"as_of": "2024-05-31"}')  # F005 departs on 2024-06-02
    with pytest.raises(ImportFailed) as err:
        import_dataset(src, tmp_path / "ds")
    lines = {str(p) for p in err.value.report.problems()}
    assert (
        "flights.csv row 5, column departure_time: departure_time '2024-06-02T07:05:00' is past the end "
        "of the dataset's history (manifest as_of 2024-05-31: the history ends at 2024-06-01T00:00:00)"
    ) in lines
    assert not (tmp_path / "ds").exists()
    (src / "manifest.json").write_text('{"as_of": "2024-12-31"}')
    import_dataset(src, tmp_path / "ds")
    assert read_manifest(tmp_path / "ds")["as_of"] == "2024-12-31"
    assert validate_dataset(tmp_path / "ds").ok


# ------------------------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------------------------


def test_reimporting_an_imported_dataset_gives_identical_tables(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    import_dataset(CANONICAL, first)
    import_dataset(first, second)
    for table in TABLES:
        pd.testing.assert_frame_equal(read_table(first, table), read_table(second, table))
    assert read_manifest(first)["fingerprint"] == read_manifest(second)["fingerprint"]
