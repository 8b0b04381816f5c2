"""Five-segment LRFMC segmentation: naming rule, determinism, persistence, the real members and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from recsys.data.layout import DatasetWriter
from recsys.features.lrfmc import LRFMC_COLUMNS, clean_textbook, lrfmc_from_aggregates, read_air_data_csv
from recsys.features.segmentation import (
    SEGMENT_ORDER,
    SegmentationError,
    SegmentModel,
    fit_segments,
    name_clusters,
)
from recsys.schema import Segment
from training.cli import app


@pytest.fixture(scope="module")
def real_lrfmc(data_selected: Path) -> pd.DataFrame:
    return lrfmc_from_aggregates(clean_textbook(read_air_data_csv(data_selected)))


@pytest.fixture(scope="module")
def real_model(real_lrfmc: pd.DataFrame) -> SegmentModel:
    return fit_segments(real_lrfmc, seed=0)


def _blobs(seed: int = 0, n: int = 60) -> pd.DataFrame:
    """Five well-separated groups in LRFMC units, one per textbook segment."""
    rng = np.random.default_rng(seed)
    centres = {  # L months, R months, F, M km, C
        "keep": (60, 1, 45, 65_000, 0.8),
        "develop": (50, 5, 9, 12_000, 1.3),
        "win_back": (85, 4, 10, 15_000, 0.7),
        "general": (25, 3, 9, 13_000, 0.6),
        "low_value": (40, 18, 3, 5_000, 0.65),
    }
    rows = []
    for name, c in centres.items():
        noise = rng.normal(0, 0.02, (n, 5)) * np.array(c)
        for r in np.array(c) + noise:
            rows.append((name, *r))
    return pd.DataFrame(rows, columns=["truth", *LRFMC_COLUMNS])


# -- naming --


def test_naming_rule_recognises_textbook_centres_in_any_order() -> None:
    # the textbook's published z-centres (L, R, F, M, C), shuffled
    textbook = {
        Segment.KEEP: (0.483, -0.799, 2.483, 2.424, 0.309),
        Segment.DEVELOP: (0.052, -0.003, -0.227, -0.231, 2.191),
        Segment.WIN_BACK: (1.160, -0.377, -0.087, -0.095, -0.158),
        Segment.GENERAL: (-0.700, -0.415, -0.161, -0.161, -0.255),
        Segment.LOW_VALUE: (-0.314, 1.686, -0.574, -0.537, -0.173),
    }
    order = [Segment.LOW_VALUE, Segment.KEEP, Segment.GENERAL, Segment.DEVELOP, Segment.WIN_BACK]
    names = name_clusters(np.array([textbook[s] for s in order]))
    assert names == order


def test_naming_uses_every_name_once_even_for_odd_centres() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        names = name_clusters(rng.normal(size=(5, 5)))
        assert sorted(names) == sorted(SEGMENT_ORDER)


def test_fit_recovers_planted_groups() -> None:
    data = _blobs()
    model = fit_segments(data, seed=0)
    assert (model.predict(data) == data["truth"].to_numpy()).all()
    assert model.sizes.to_dict() == {str(s): 60 for s in SEGMENT_ORDER}


# -- determinism and persistence --


def test_real_members_segmentation_is_deterministic_for_a_seed(
    real_lrfmc: pd.DataFrame, real_model: SegmentModel
) -> None:
    again = fit_segments(real_lrfmc, seed=0)
    np.testing.assert_array_equal(again.centres_z, real_model.centres_z)
    assert again.train_sizes == real_model.train_sizes
    assert (again.predict(real_lrfmc) == real_model.predict(real_lrfmc)).all()


def test_real_members_five_named_segments(real_lrfmc: pd.DataFrame, real_model: SegmentModel) -> None:
    assert len(real_lrfmc) == 62_044
    assert list(real_model.sizes.index) == [str(s) for s in SEGMENT_ORDER]
    assert int(real_model.sizes.sum()) == 62_044
    labels = pd.Series(real_model.predict(real_lrfmc))
    assert labels.value_counts().to_dict() == real_model.sizes.to_dict()
    c = real_model.centres
    # the textbook reading of the five groups
    assert c["F"].idxmax() == c["M"].idxmax() == "keep" and c["R"].idxmin() == "keep"
    assert c["C"].idxmax() == "develop"
    assert c["L"].idxmax() == "win_back"
    assert c["L"].idxmin() == "general"
    assert c["R"].idxmax() == "low_value" and c["F"].idxmin() == "low_value"
    # centres in original units are the z-centres mapped back through the scaler
    z = real_model.centres_zscore.to_numpy()
    assert np.allclose(c.to_numpy(), z * real_model.scale + real_model.mean)


def test_save_load_round_trip(tmp_path: Path, real_lrfmc: pd.DataFrame, real_model: SegmentModel) -> None:
    path = real_model.save(tmp_path / "segments.json")
    loaded = SegmentModel.load(path)
    assert (loaded.predict(real_lrfmc) == real_model.predict(real_lrfmc)).all()
    assert loaded.sizes.equals(real_model.sizes)
    path.write_text("{not json")
    with pytest.raises(SegmentationError, match="cannot read segment model"):
        SegmentModel.load(path)


# -- bad input --


def test_bad_input_is_a_clear_error() -> None:
    data = _blobs()
    with pytest.raises(SegmentationError, match="k must be 5"):
        fit_segments(data, k=4)
    with pytest.raises(SegmentationError, match="at least 5 distinct members"):
        fit_segments(data.head(3))
    with pytest.raises(SegmentationError, match="missing column"):
        fit_segments(data.drop(columns=["C"]))
    broken = data.copy()
    broken.loc[7, "M"] = np.nan
    with pytest.raises(SegmentationError, match="LRFMC column M has 1 non-finite"):
        fit_segments(broken)


# -- the CLI --


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["segment", *args])
    return result.exit_code, result.output


def test_cli_on_the_real_csv_prints_five_named_segments(data_selected: Path) -> None:
    code, out = _run("--data", str(data_selected), "--seed", "0")
    assert code == 0, out
    assert "62,051 members read, 62,044 segmented" in out
    for name in SEGMENT_ORDER:
        assert f"\n{name:>9} " in out


def test_cli_json_and_clean_none(data_selected: Path) -> None:
    code, out = _run("--data", str(data_selected), "--clean", "none", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["members_used"] == 62_051 and doc["clean"] == "none"
    assert [s["segment"] for s in doc["segments"]] == [str(s) for s in SEGMENT_ORDER]
    assert sum(s["size"] for s in doc["segments"]) == 62_051


def test_cli_on_an_imported_member_aggregates_dataset(tmp_path: Path, data_selected: Path) -> None:
    aggregates = read_air_data_csv(data_selected).iloc[::50].reset_index(drop=True)
    with DatasetWriter(tmp_path / "air") as writer:
        writer.write_table("member_aggregates", aggregates)
        writer.commit({"import_format": "air-data"})
    code, out = _run("--data", str(tmp_path / "air"), "--json", "--save", str(tmp_path / "m.json"))
    assert code == 0, out
    doc = json.loads(out)
    assert doc["source"] == "member_aggregates"
    assert doc["members_in"] == len(aggregates)
    assert sum(s["size"] for s in doc["segments"]) == doc["members_used"]
    assert SegmentModel.load(tmp_path / "m.json").names == SEGMENT_ORDER


def test_cli_bad_input(tmp_path: Path, data_selected: Path) -> None:
    code, out = _run("--data", str(tmp_path / "missing"))
    assert code == 1 and "not a dataset directory" in out
    code, out = _run("--data", str(data_selected), "--clean", "magic")
    assert code == 1 and "unknown --clean mode 'magic'" in out
    empty = tmp_path / "empty"
    with DatasetWriter(empty) as writer:
        writer.commit({})
    code, out = _run("--data", str(empty))
    assert code == 1 and "nothing to segment" in out


def test_cli_on_a_generated_world_is_deterministic(small_world: Path) -> None:
    code, out = _run("--data", str(small_world), "--seed", "5", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["source"] == "flights"
    assert doc["members_in"] == 2_000
    assert 0 < doc["members_used"] < 2_000  # members with no flight in the window are not clustered
    assert [s["segment"] for s in doc["segments"]] == [str(s) for s in SEGMENT_ORDER]
    assert _run("--data", str(small_world), "--seed", "5", "--json") == (code, out)


def test_cli_out_writes_member_lrfmc_and_segment_with_the_same_ids_read_or_imported(
    tmp_path: Path, data_selected: Path
) -> None:
    # The first 3,000 members of the real file; no MEMBER_NO, so ids follow the row rule: stem-row.
    lines = data_selected.read_text(encoding="utf-8-sig").splitlines()
    src = tmp_path / "air data (2).csv"
    src.write_text("\n".join(lines[:3001]) + "\n", encoding="utf-8")
    code, out = _run("--data", str(src), "--out", str(tmp_path / "direct.csv"))
    assert code == 0, out
    result = CliRunner().invoke(
        app, ["data", "import", str(src), "--format", "air-data", "--out", str(tmp_path / "ds")]
    )
    assert result.exit_code == 0, result.output
    code, out = _run("--data", str(tmp_path / "ds"), "--out", str(tmp_path / "imported.parquet"))
    assert code == 0, out
    direct = pd.read_csv(tmp_path / "direct.csv", dtype={"member_id": str})
    imported = pd.read_parquet(tmp_path / "imported.parquet")
    assert list(direct.columns) == ["member_id", "L", "R", "F", "M", "C", "segment"]
    assert direct["member_id"].iloc[0] == "air_data_2_-000001"
    assert direct["member_id"].is_unique and len(direct) > 2_900
    pd.testing.assert_frame_equal(direct, imported, check_dtype=False)
    assert set(direct["segment"]) == {str(s) for s in SEGMENT_ORDER}
    # The label is the nearest centre of the model the same command fits.
    model = fit_segments(lrfmc_from_aggregates(clean_textbook(read_air_data_csv(src))), seed=0)
    assert (model.predict(direct) == direct["segment"].to_numpy()).all()
