"""``recsys data describe``: sections and figures of a generated world; imported data with missing tables."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from recsys.data.describe import describe, frequency_bands
from recsys.data.layout import DatasetWriter, read_table
from recsys.schema import MEMBER_AGGREGATES, MEMBERS, Col
from training.cli import app

SECTIONS = (
    "Tier distribution",
    "Flights per member per year",
    "Cabin mix",
    "Top 10 routes",
    "Meals",
    "Offers",
    "Acceptance per offer family",
)


def _members(ids: list[str]) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame(
        {
            Col.MEMBER_ID: ids,
            Col.ENROL_DATE: pd.to_datetime(["2020-01-01"] * n).date,
            Col.TIER: ["basic"] * n,
            Col.HOME_AIRPORT: ["PEK"] * n,
            Col.TIME_ZONE: ["Asia/Shanghai"] * n,
            Col.MILES_BALANCE: [10] * n,
            Col.BIRTH_YEAR: [1980] * n,
            Col.GENDER: ["F"] * n,
            Col.CHANNEL: ["app"] * n,
        }
    )


def test_describe_prints_every_section_with_figures(small_world: Path) -> None:
    text = describe(small_world)
    for section in SECTIONS:
        assert section in text
    members = read_table(small_world, MEMBERS.name)
    basic = int((members[Col.TIER] == "basic").sum())
    assert re.search(rf"basic\s+{basic:,}\s", text)
    never = (~members[Col.MEMBER_ID].isin(read_table(small_world, "flights")[Col.MEMBER_ID])).mean()
    assert f"never        {100 * never:6.2f} %" in text
    for family in ("upsell", "ancillary", "redemption"):
        assert re.search(rf"^\s+{family}\s+[\d,]+\s+[\d.]+%\s+[\d.]+%\s+[\d.]+%$", text, re.M), family
    assert "PEK" in text.split("Top 10 routes")[1]
    assert "special-meal share of flights" in text


def test_frequency_bands_from_counts() -> None:
    counts = pd.Series([0, 1, 3, 9, 12, 30])  # over 3 years: never, <1, 1/yr, 3/yr, 4/yr, 10/yr
    bands = frequency_bands(counts, None, None)
    assert bands == {
        "never": 1 / 6,
        "<1 / year": 1 / 6,
        "1-3 / year": 2 / 6,
        "4-7 / year": 1 / 6,
        "8+ / year": 1 / 6,
    }


def test_describe_imported_dataset_with_missing_and_empty_tables(tmp_path: Path) -> None:
    out = tmp_path / "imported"
    with DatasetWriter(out) as w:
        w.write_table(
            MEMBERS.name,
            pd.DataFrame(
                {
                    Col.MEMBER_ID: ["A1", "A2"],
                    Col.ENROL_DATE: pd.to_datetime(["2020-01-01", "2021-01-01"]).date,
                    Col.TIER: ["gold", "basic"],
                    Col.HOME_AIRPORT: ["PEK", "CTU"],
                    Col.TIME_ZONE: ["Asia/Shanghai"] * 2,
                    Col.MILES_BALANCE: [10, 20],
                    Col.BIRTH_YEAR: [1980, None],
                    Col.GENDER: ["F", None],
                    Col.CHANNEL: ["app", "web"],
                }
            ),
        )
        w.commit({"import_format": "canonical"})
    text = describe(out)
    for section in SECTIONS:
        assert section in text
    assert re.search(r"gold\s+1\s+50\.00 %", text)
    assert text.count("(no data)") >= 5  # flights, cabins, routes, meals, offers, acceptance


def test_describe_uses_member_aggregates_when_there_are_no_flights(tmp_path: Path) -> None:
    out = tmp_path / "agg"
    ids = ["A1", "A2", "A3", "A4"]
    with DatasetWriter(out) as w:
        w.write_table(MEMBERS.name, _members(ids))
        w.write_table(
            MEMBER_AGGREGATES.name,
            pd.DataFrame(
                {
                    Col.MEMBER_ID: ids,
                    Col.FFP_DATE: pd.to_datetime(
                        ["2005-01-01", "2005-01-01", "2005-01-01", "2013-03-31"]
                    ).date,
                    Col.LOAD_TIME: pd.to_datetime(["2014-03-31"] * 4).date,
                    # over two years: 1/yr, 5/yr, 10/yr; the last joined a year before: 3 flights = 3/yr
                    Col.FLIGHT_COUNT: [2, 10, 20, 3],
                    Col.SEG_KM_SUM: [1000] * 4,
                    Col.LAST_TO_END: [10] * 4,
                    Col.AVG_DISCOUNT: [0.8] * 4,
                }
            ),
        )
        w.commit({"import_format": "air-data"})
    text = describe(out)
    assert "from member aggregates" in text
    assert re.search(r"1-3 / year\s+50\.00 %", text) and re.search(r"8\+ / year\s+25\.00 %", text)


def test_cli_describe(small_world: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["data", "describe", str(small_world)])
    assert res.exit_code == 0 and "Tier distribution" in res.output
    res = runner.invoke(app, ["data", "describe", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "not a directory" in res.output
    res = runner.invoke(app, ["data", "describe", str(tmp_path)])
    assert res.exit_code == 1 and "not a dataset" in res.output
