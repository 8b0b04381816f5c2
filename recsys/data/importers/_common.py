"""What every importer shares: strict CSV reading, the import result, the atomic write of a dataset."""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from recsys.data.layout import REJECTS_FILE, DatasetWriter
from recsys.data.validate import (
    BAD_ROW,
    MISSING_TABLE,
    UNREADABLE,
    CheckedTables,
    Chunk,
    ProblemGroup,
    ValidationReport,
)
from recsys.schema import ALL_TABLES, OPTIONAL_COLUMNS, TABLES

DATE_DTYPE = pd.ArrowDtype(pa.date32())
PART_ROWS = 1_000_000  # rows per part file of a partitioned table
REJECT_COLUMNS = ["file", "row", "column", "kind", "message"]


class ImportFailed(Exception):
    """The source cannot be imported; ``report`` lists every problem (nothing was written)."""

    def __init__(self, message: str, report: ValidationReport | None = None) -> None:
        super().__init__(message)
        self.report = report if report is not None else ValidationReport()


@dataclass
class ImportResult:
    """What an import wrote: the dataset, rows per table, and the rejected rows (with ``--skip-invalid``)."""

    dest: Path
    import_format: str
    row_counts: dict[str, int]
    rejects: pd.DataFrame
    rejects_path: Path | None
    notes: list[str] = field(default_factory=list)


@dataclass
class CsvRead:
    """A CSV file read as text: the frame (valid rows), their data row numbers, and malformed rows."""

    frame: pd.DataFrame
    rows: np.ndarray
    header: list[str]
    bad_rows: list[tuple[int, int, int, str]]  # (data row, expected fields, actual fields, text)


def read_csv_text(path: Path) -> CsvRead:
    """Read a CSV file with every value as text, keeping exact data row numbers.

    Handles a UTF-8 BOM and CRLF line ends. Rows with too few or too many fields (a truncated last line, a
    stray delimiter) are not silently padded: they are returned in ``bad_rows`` with their data row number.
    Empty fields stay empty strings (validation decides whether a column may be empty). Fields may be quoted
    but must not contain line breaks.
    """
    with path.open("r", encoding="utf-8-sig", newline="") as fh:
        try:
            header = next(csv.reader(fh))
        except StopIteration:
            raise ImportFailed(f"{path.name}: empty file (no header line)") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ImportFailed(f"{path.name}: cannot read the header line ({exc})") from None
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        dups = sorted({h for h in header if header.count(h) > 1})
        raise ImportFailed(f"{path.name}: duplicated column names in the header: {', '.join(dups)}")
    bad: list[tuple[int, int, int, str]] = []

    def on_invalid(row: Any) -> str:
        line = row.number if row.number is not None else -1
        bad.append((line - 1, row.expected_columns, row.actual_columns, row.text))
        return "skip"

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(
                column_names=header, skip_rows=1, use_threads=False, encoding="utf8"
            ),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.string() for h in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise ImportFailed(f"{path.name}: not a readable UTF-8 CSV file ({exc})") from None
    frame = table.to_pandas()
    total = len(frame) + len(bad)
    bad_numbers = {b[0] for b in bad}
    rows = (
        np.array([r for r in range(1, total + 1) if r not in bad_numbers], dtype=np.int64)
        if bad
        else (np.arange(1, total + 1, dtype=np.int64))
    )
    if len(rows) != len(frame):  # row numbers unknown (should not happen with single-threaded reads)
        rows = np.arange(1, len(frame) + 1, dtype=np.int64)
    return CsvRead(frame, rows, header, bad)


def bad_row_groups(table: str, label: str, read: CsvRead) -> list[ProblemGroup]:
    """The malformed rows of a CSV file as problems, each naming its first missing field."""
    by_column: dict[str | None, tuple[list[int], list[str]]] = {}
    for number, expected, actual, text in read.bad_rows:
        if actual < expected:
            column: str | None = read.header[actual]
            what = (
                f"truncated row: {actual} of {expected} fields, '{column}' and the later fields are missing"
            )
        else:
            column = None
            what = f"{actual} fields where the header has {expected} (a stray delimiter or unquoted comma?)"
        shown = text if len(text) <= 80 else text[:77] + "..."
        rows, values = by_column.setdefault(column, ([], []))
        rows.append(number)
        values.append(f"{what}; the row reads {shown!r}")
    return [
        ProblemGroup(
            table,
            label,
            column,
            BAD_ROW,
            "{value}",
            np.asarray(rows, dtype=np.int64),
            np.full(len(rows), -1, dtype=np.int64),
            np.array([_Plain(v) for v in values], dtype=object),
        )
        for column, (rows, values) in by_column.items()
    ]


class _Plain(str):
    def __repr__(self) -> str:
        return str(self)


def read_table_file(path: Path, table: str, label: str | None = None) -> tuple[list[Chunk], ValidationReport]:
    """Read one source file (CSV or Parquet) of a canonical table into chunks, with its malformed rows."""
    report = ValidationReport()
    label = label or path.name
    if path.suffix.lower() == ".csv":
        read = read_csv_text(path)
        for group in bad_row_groups(table, label, read):
            report.add(group)
        return [Chunk(table, label, read.frame, read.rows, from_text=True)], report
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:
        raise ImportFailed(f"{label}: cannot read Parquet file ({exc})") from None
    return [Chunk.of(table, label, frame)], report


def finalize(table: str, frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate a table's kept rows and settle dtypes (ints without nulls as int64, dates as date32)."""
    spec = ALL_TABLES[table]
    if frames:
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    else:
        df = empty_table(table)
    cols = dict(spec.columns) | {c: t for c, t in OPTIONAL_COLUMNS.get(table, {}).items() if c in df.columns}
    for col, ltype in cols.items():
        s = df[col]
        if (ltype == "int" and not pd.api.types.is_integer_dtype(s.dtype)) or (
            ltype == "int" and s.dtype == "Int64"
        ):
            num = pd.to_numeric(s, errors="coerce")
            df[col] = num.astype("int64") if num.notna().all() else num.astype("Int64")
        elif ltype == "bool" and s.dtype != bool:
            df[col] = s.astype(bool) if s.notna().all() else s.astype("boolean")
        elif ltype == "float" and not pd.api.types.is_float_dtype(s.dtype):
            df[col] = pd.to_numeric(s, errors="coerce").astype("float64")
        elif ltype == "str" and s.dtype == object:
            # nulls stay null: pandas < 3 (spotify-confidence pins it) turns None into the text 'None'
            df[col] = s.astype("str").where(s.notna(), None)
        elif ltype == "date" and pd.api.types.is_datetime64_any_dtype(s.dtype):
            df[col] = s.astype(DATE_DTYPE)  # dates as the generator writes them: Arrow date32
    return df[list(cols)]


def empty_table(table: str) -> pd.DataFrame:
    """A zero-row frame of a table with the right dtypes."""
    dtypes: dict[str, Any] = {
        "str": "str",
        "int": "int64",
        "float": "float64",
        "bool": "bool",
        "date": DATE_DTYPE,
        "datetime": "datetime64[us]",
    }
    return pd.DataFrame(
        {c: pd.Series(dtype=dtypes.get(t, "object")) for c, t in ALL_TABLES[table].columns.items()}
    )


def write_dataset(
    checked: CheckedTables,
    *,
    dest: Path,
    overwrite: bool,
    skip_invalid: bool,
    import_format: str,
    sources: list[Path],
    extra_report: ValidationReport | None = None,
    extras: dict[str, pd.DataFrame] | None = None,
    manifest_extra: dict[str, Any] | None = None,
) -> ImportResult:
    """Refuse or write: every problem fails the import unless ``skip_invalid`` (rows only, never whole files).

    The dataset is written through :class:`DatasetWriter` (temporary directory, then rename); ``rejects.csv``
    goes inside it, so the dataset and its rejects appear together or not at all.
    """
    report = checked.report
    if extra_report is not None:
        report.extend(extra_report)
    if not report.ok and (not skip_invalid or report.has_table_level()):
        why = "" if not skip_invalid else " (whole-file problems cannot be skipped)"
        raise ImportFailed(f"import refused{why}: {report.summary()}; nothing was written", report)
    tables: dict[str, pd.DataFrame] = {}
    for table, typed in checked.typed.items():
        tables[table] = finalize(table, [tc.output[~tc.bad] for tc in typed])
    rejects = report.rejects_frame() if skip_invalid else pd.DataFrame(columns=REJECT_COLUMNS)
    if len(rejects):
        rejects = rejects.sort_values(["file", "row"], kind="stable").reset_index(drop=True)
    with DatasetWriter(dest, overwrite=overwrite) as writer:
        for table in list(TABLES) + [t for t in tables if t not in TABLES]:
            df = tables.get(table)
            if df is None:
                if ALL_TABLES[table].partitioned or table not in TABLES:
                    continue  # commit() creates the empty directory; optional tables stay absent
                df = empty_table(table)
            if ALL_TABLES[table].partitioned:
                for start in range(0, len(df), PART_ROWS):
                    writer.append_part(table, df.iloc[start : start + PART_ROWS])
            else:
                writer.write_table(table, df)
        for relpath, frame in (extras or {}).items():
            writer.write_extra(relpath, frame)
        rejects_path = None
        if skip_invalid:
            rejects.to_csv(writer.tmp / REJECTS_FILE, index=False, lineterminator="\n")
            rejects_path = dest.resolve() / REJECTS_FILE
        manifest = {
            "import_format": import_format,
            "sources": [str(s) for s in sources],
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "rejected_rows": int(rejects[["file", "row"]].drop_duplicates().shape[0]) if len(rejects) else 0,
            **(manifest_extra or {}),
        }
        path = writer.commit(manifest)
        counts = writer.row_counts
    return ImportResult(path, import_format, counts, rejects, rejects_path, list(report.notes))


def check_destination(src_paths: list[Path], dest: Path, overwrite: bool) -> None:
    """Fail before reading anything if the destination exists (without ``overwrite``) or overlaps a source."""
    dest = dest.resolve()
    if dest.exists() and not overwrite:
        raise ImportFailed(f"{dest} already exists; refusing to overwrite it (use --overwrite)")
    for src in src_paths:
        s = src.resolve()
        if s == dest or dest in s.parents or s in dest.parents:
            raise ImportFailed(f"the destination {dest} overlaps the source {s}; choose another --out")


def missing_source(path: Path) -> ImportFailed:
    return ImportFailed(f"source {path} does not exist")


def table_missing(table: str, label: str) -> ProblemGroup:
    return ProblemGroup(table, label, None, MISSING_TABLE, f"missing table '{table}' (expected {label})")


def unreadable(table: str, label: str, why: str) -> ProblemGroup:
    return ProblemGroup(table, label, None, UNREADABLE, why)
