"""The air-data (airline customer-value, LRFMC) importer on the project's copy of the real files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from recsys.data.importers import ImportFailed, import_dataset
from recsys.data.importers._common import read_csv_text
from recsys.data.layout import REJECTS_FILE, read_manifest, read_table
from recsys.data.validate import validate_dataset
from recsys.schema import MEMBER_AGGREGATES, Col
from training.cli import app

REFERENCE = Path(__file__).resolve().parents[2] / "data" / "reference" / "air_data_lrfmc"
HEAD = REFERENCE / "flight_head.csv"
TAIL = REFERENCE / "flight_tail.csv"
SELECTED = REFERENCE / "data_selected.csv"
BAD = Path(__file__).parent / "fixtures" / "air_data_bad.csv"

runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def test_reference_files_are_the_unmodified_shared_copies() -> None:
    """The tests rely on the quirks of the real files: BOM, CRLF, the cut last row of the head."""
    head = HEAD.read_bytes()
    assert len(head) == 1_048_576 and not head.endswith(b"\n")
    assert TAIL.read_bytes().count(b"\r\n") == 7_989
    assert (
        SELECTED.read_bytes().startswith(b"\xef\xbb\xbfFFP_DATE,") and b"\r\n" in SELECTED.read_bytes()[:80]
    )
    assert hashlib.sha256(head).hexdigest()  # present and readable


def test_csv_reader_handles_bom_crlf_and_the_truncated_row() -> None:
    selected = read_csv_text(SELECTED)
    assert selected.header[0] == "FFP_DATE"  # BOM stripped
    assert len(selected.frame) == 62_051 and not selected.bad_rows
    assert not selected.frame["avg_discount"].str.contains("\r").any()  # CRLF stripped
    tail = read_csv_text(TAIL)
    assert len(tail.frame) == 7_988 and not tail.bad_rows
    assert tail.frame["Point_NotFlight"].iloc[-1] == "0"
    head = read_csv_text(HEAD)
    assert len(head.frame) == 6_963
    number, expected, actual, text = head.bad_rows[0]
    assert (number, expected, actual) == (6_964, 23, 18) and text.startswith("1697,5/8/2012")


def test_the_truncated_head_row_fails_the_import_naming_file_row_and_column(tmp_path: Path) -> None:
    out = tmp_path / "air"
    code, output = run("data", "import", HEAD, "--format", "air-data", "--out", out)
    assert code != 0
    assert "flight_head.csv row 6964, column MAX_INTERVAL: truncated row: 18 of 23 fields" in output
    assert "nothing was written" in output
    assert not out.exists()
    assert [p for p in tmp_path.iterdir()] == []


def test_skip_invalid_imports_the_6963_complete_head_rows_and_rejects_the_cut_one(tmp_path: Path) -> None:
    out = tmp_path / "air"
    code, output = run("data", "import", HEAD, "--format", "air-data", "--out", out, "--skip-invalid")
    assert code == 0, output
    assert "rejected: 1 rows" in output
    assert len(read_table(out, "members")) == 6_963
    assert len(read_table(out, "member_aggregates")) == 6_963
    rejects = pd.read_csv(out / REJECTS_FILE)
    assert len(rejects) == 1
    reject = rejects.iloc[0]
    assert (reject["file"], reject["row"], reject["column"]) == ("flight_head.csv", 6964, "MAX_INTERVAL")
    assert reject["message"].startswith("truncated row: 18 of 23 fields")
    manifest = read_manifest(out)
    assert manifest["import_format"] == "air-data" and manifest["rejected_rows"] == 1
    assert manifest["as_of"] == "2014-03-31"  # LOAD_TIME, the end of the observation window
    assert validate_dataset(out).ok


def test_raw_rows_map_into_members_and_member_aggregates(tmp_path: Path) -> None:
    out = tmp_path / "air"
    import_dataset([HEAD], out, fmt="air-data", skip_invalid=True)
    members = read_table(out, "members").set_index(Col.MEMBER_ID)
    # 54993,11/2/2006,12/24/2008,Male,6,.,beijing,CN,31.0,3/31/2014,210,...,580717,...,1,...,0.961639043
    first = members.loc["54993"]
    assert first[Col.ENROL_DATE] == pd.Timestamp("2006-11-02").date()
    assert first[Col.TIER] == "gold"
    assert first[Col.GENDER] == "M"
    assert first[Col.BIRTH_YEAR] == 2014 - 31
    assert pd.isna(first[Col.HOME_AIRPORT])  # WORK_CITY '.' maps to nothing
    assert first[Col.TIME_ZONE] == "Asia/Shanghai"
    assert pd.isna(first[Col.MILES_BALANCE]) and pd.isna(first[Col.CHANNEL])
    # 21189,8/22/2008,...,Male,5,Los Angeles,CA,US,64.0 -> silver
    assert members.at["21189", Col.TIER] == "silver"
    assert members[Col.TIER].value_counts().to_dict() == {"basic": 3_615, "silver": 2_324, "gold": 1_024}
    # WORK_CITY -> the network airport of that city, with its time zone
    assert members.at["62751", Col.HOME_AIRPORT] == "PEK"  # beijing
    assert members.at["21189", Col.HOME_AIRPORT] == "LAX"  # Los Angeles, CA, US
    assert members.at["21189", Col.TIME_ZONE] == "America/Los_Angeles"

    aggregates = read_table(out, "member_aggregates")
    assert list(aggregates.columns) == list(MEMBER_AGGREGATES.columns)
    row = aggregates.set_index(Col.MEMBER_ID).loc["54993"]
    assert row[Col.FLIGHT_COUNT] == 210 and row[Col.SEG_KM_SUM] == 580_717 and row[Col.LAST_TO_END] == 1
    assert row[Col.AVG_DISCOUNT] == pytest.approx(0.9616390429999999)
    assert row[Col.LOAD_TIME] == pd.Timestamp("2014-03-31").date()
    assert aggregates[Col.FLIGHT_COUNT].dtype == "int64"


def test_tail_with_crlf_imports_every_row(tmp_path: Path) -> None:
    out = tmp_path / "air"
    code, output = run("data", "import", TAIL, "--format", "air-data", "--out", out)
    assert code == 0, output
    aggregates = read_table(out, "member_aggregates").set_index(Col.MEMBER_ID)
    assert len(aggregates) == 7_988
    # last line:
    # 61340,2/17/2013,2/17/2013,Female,4,shanghai,.,CN,29,3/31/2014,2,0,,0,4222,2/23/2013,403,...,0\r\n
    last = aggregates.loc["61340"]
    assert (last[Col.FLIGHT_COUNT], last[Col.SEG_KM_SUM], last[Col.LAST_TO_END]) == (2, 4222, 403)
    assert last[Col.AVG_DISCOUNT] == 0.0
    members = read_table(out, "members").set_index(Col.MEMBER_ID)
    assert members.at["61340", Col.GENDER] == "F" and members.at["61340", Col.BIRTH_YEAR] == 1985
    assert members.at["27355", Col.HOME_AIRPORT] == "NKG"  # nanjing
    assert members.at["4032", Col.HOME_AIRPORT] == "CGQ"  # changchunshi: "shi" (city) dropped
    assert validate_dataset(out).ok


def test_cleaned_file_gets_stable_synthetic_ids_and_yyyy_m_d_dates(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    import_dataset([SELECTED], a, fmt="air-data")
    import_dataset([SELECTED], b, fmt="air-data")
    aggregates = read_table(a, "member_aggregates")
    assert len(aggregates) == 62_051
    assert len(read_table(a, "members")) == 0  # no member profile in the cleaned file
    first = aggregates.iloc[0]
    # 2006/11/2,2014/3/31,210,580717,1,0.961639043
    assert first[Col.MEMBER_ID] == "data_selected-000001"
    assert first[Col.FFP_DATE] == pd.Timestamp("2006-11-02").date()
    assert first[Col.LOAD_TIME] == pd.Timestamp("2014-03-31").date()
    assert (first[Col.FLIGHT_COUNT], first[Col.SEG_KM_SUM], first[Col.LAST_TO_END]) == (210, 580_717, 1)
    assert first[Col.AVG_DISCOUNT] == pytest.approx(0.961639043)
    assert aggregates[Col.MEMBER_ID].is_unique
    pd.testing.assert_frame_equal(aggregates, read_table(b, "member_aggregates"))
    assert validate_dataset(a).ok


def test_head_and_tail_import_together(tmp_path: Path) -> None:
    out = tmp_path / "air"
    code, output = run("data", "import", HEAD, TAIL, "--format", "air-data", "--out", out, "--skip-invalid")
    assert code == 0, output
    assert len(read_table(out, "members")) == 6_963 + 7_988


def test_raw_and_cleaned_files_are_not_mixed(tmp_path: Path) -> None:
    code, output = run("data", "import", REFERENCE, "--format", "air-data", "--out", tmp_path / "air")
    assert code != 0
    assert "cannot be linked" in output
    assert not (tmp_path / "air").exists()


def test_bad_air_data_rows_name_the_source_file_row_and_column(tmp_path: Path) -> None:
    with pytest.raises(ImportFailed) as err:
        import_dataset([BAD], tmp_path / "air", fmt="air-data")
    lines = [str(p) for p in err.value.report.problems()]
    assert sorted(lines) == sorted(
        [
            "air_data_bad.csv row 2, column FFP_DATE: malformed date '2006-11-02' (expected m/d/yyyy)",
            "air_data_bad.csv row 3, column FFP_TIER: unknown card tier '7' (known: 4, 5, 6)",
            "air_data_bad.csv row 4, column MEMBER_NO: duplicated MEMBER_NO '101' "
            "(first at air_data_bad.csv row 1)",
            "air_data_bad.csv row 5, column FLIGHT_COUNT: missing value (the column is required)",
        ]
    )
    assert not (tmp_path / "air").exists()


def test_bad_air_data_rows_are_rejected_whole_with_skip_invalid(tmp_path: Path) -> None:
    out = tmp_path / "air"
    import_dataset([BAD], out, fmt="air-data", skip_invalid=True)
    assert read_table(out, "members")[Col.MEMBER_ID].tolist() == ["101"]
    assert read_table(out, "member_aggregates")[Col.MEMBER_ID].tolist() == ["101"]
    rejects = pd.read_csv(out / REJECTS_FILE)
    assert rejects["row"].tolist() == [2, 3, 4, 5]


def test_a_file_that_is_not_air_data_is_refused(tmp_path: Path) -> None:
    code, output = run(
        "data", "import", REFERENCE / "column_summary.csv", "--format", "air-data", "--out", tmp_path / "air"
    )
    assert code != 0
    assert "column_summary.csv: not an air-data file" in output


def test_an_air_data_dataset_reimports_as_canonical_keeping_its_null_rules(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    import_dataset([TAIL], first, fmt="air-data")
    import_dataset(first, second)  # canonical: a dataset directory
    assert read_manifest(second)["import_format"] == "air-data"
    assert validate_dataset(second).ok
    for table in ("members", "member_aggregates"):
        pd.testing.assert_frame_equal(read_table(first, table), read_table(second, table))
