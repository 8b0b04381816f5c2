"""The canonical on-disk layout of a dataset, and atomic reading/writing of it.

A dataset is a directory::

    DIR/
      manifest.json          what made it (generator + seed, or importer + sources), row counts, fingerprint
      members.parquet
      offers.parquet
      flights/part-00000.parquet ...        partitioned tables are directories of part files
      ancillaries/part-*.parquet
      redemptions/part-*.parquet
      interactions/part-*.parquet
      network/airports.parquet, network/routes.parquet   the route network the world was built on
      truth/                 hidden generator truth (members' traits, acceptance parameters). No training
                             code reads it; evaluation reads it only to compute the oracle.
      rejects.csv            written by ``import --skip-invalid`` beside the dataset: rejected rows, reasons

Writers build the whole dataset in a temporary sibling directory and rename it into place at the end,
so a failed write leaves nothing behind and never touches an existing dataset.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.schema import ALL_TABLES, TABLES, TableSpec

MANIFEST = "manifest.json"
TRUTH_DIR = "truth"
NETWORK_DIR = "network"
REJECTS_FILE = "rejects.csv"


class DatasetError(Exception):
    """A dataset directory is missing, incomplete or unreadable."""


def table_path(root: Path, spec: TableSpec) -> Path:
    return root / spec.name if spec.partitioned else root / f"{spec.name}.parquet"


def has_table(root: Path, name: str) -> bool:
    spec = ALL_TABLES[name]
    path = table_path(Path(root), spec)
    return path.is_dir() and any(path.glob("*.parquet")) if spec.partitioned else path.is_file()


def read_table(root: Path | str, name: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Read one canonical table as a DataFrame (all parts of a partitioned table, in part order)."""
    root = Path(root)
    spec = ALL_TABLES[name]
    path = table_path(root, spec)
    if not path.exists():
        raise DatasetError(f"{root}: table '{name}' is missing (expected {path})")
    if spec.partitioned:
        parts = sorted(path.glob("part-*.parquet"))
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype="object") for c in (columns or spec.columns)})
        return pd.concat([pd.read_parquet(p, columns=columns) for p in parts], ignore_index=True)
    return pd.read_parquet(path, columns=columns)


def iter_table(
    root: Path | str, name: str, columns: list[str] | None = None, *, categorical: bool = False
) -> Iterator[pd.DataFrame]:
    """Yield a partitioned table part by part, so large tables can be processed in bounded memory.

    ``categorical=True`` reads the string columns as pandas categoricals straight from parquet's dictionary
    encoding: no Python string per row, and factorising them costs nothing (the categories are each part's
    distinct values, in no particular order)."""
    spec = ALL_TABLES[name]
    path = table_path(Path(root), spec)
    files = sorted(path.glob("part-*.parquet")) if spec.partitioned else [path]
    if not spec.partitioned and not categorical:
        yield read_table(root, name, columns)
        return
    if not spec.partitioned and not path.exists():
        raise DatasetError(f"{root}: table '{name}' is missing (expected {path})")
    for part in files:
        yield pd.read_parquet(part, columns=columns, **_dictionary_kwargs(part, columns, categorical))


def _dictionary_kwargs(path: Path, columns: list[str] | None, categorical: bool) -> dict[str, list[str]]:
    """``read_dictionary`` for pyarrow: the (requested) string columns of a parquet file."""
    if not categorical:
        return {}
    schema = pq.read_schema(path)
    wanted = set(columns) if columns is not None else set(schema.names)
    names = [
        f.name
        for f in schema
        if f.name in wanted and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
    ]
    return {"read_dictionary": names} if names else {}


def table_columns(root: Path | str, name: str) -> list[str]:
    """The column names a stored table has (its first part's schema); [] when the table is absent."""
    import pyarrow.parquet as pq

    spec = ALL_TABLES[name]
    path = table_path(Path(root), spec)
    if spec.partitioned:
        parts = sorted(path.glob("part-*.parquet")) if path.is_dir() else []
        if not parts:
            return []
        path = parts[0]
    elif not path.is_file():
        return []
    return list(pq.read_schema(path).names)


def latest_time(root: Path | str, name: str, column: str) -> pd.Timestamp | None:
    """The latest non-null value of timestamp ``column`` in table ``name`` (naive UTC); None if it has none.

    Read from the parquet footers' row-group statistics when the column is a timestamp and every row group
    has them, so no data page is read (a 1,000,000-member world's history: milliseconds instead of seconds);
    otherwise from the column itself.
    """
    from recsys.data.times import to_utc_naive

    spec = ALL_TABLES[name]
    path = table_path(Path(root), spec)
    files = sorted(path.glob("part-*.parquet")) if spec.partitioned else [path]
    latest: pd.Timestamp | None = None
    for f in files:
        value = _footer_max(f, column)
        if value is None:
            df = pd.read_parquet(f, columns=[column])
            value = to_utc_naive(df[column]).max() if len(df) else None
        else:
            value = to_utc_naive(value)
        if value is not None and pd.notna(value) and (latest is None or value > latest):
            latest = pd.Timestamp(value)
    return latest


def latest_event_time(root: Path | str, columns: Sequence[tuple[str, str]]) -> pd.Timestamp | None:
    """The latest of :func:`latest_time` over ``(table, timestamp column)`` pairs; tables the dataset does not
    have are skipped. None when none of them holds a value."""
    latest: pd.Timestamp | None = None
    for name, column in columns:
        if not has_table(Path(root), name):
            continue
        t = latest_time(root, name, column)
        if t is not None and (latest is None or t > latest):
            latest = t
    return latest


def _footer_max(path: Path, column: str) -> pd.Timestamp | None:
    """``column``'s maximum from the footer's statistics, or None when they cannot tell (not a timestamp
    column, a row group with values but no statistics, no value at all): the caller then reads the column."""
    f = pq.ParquetFile(path)
    try:
        schema = f.schema_arrow
        i = schema.get_field_index(column)  # flat tables: the arrow field index is the parquet column index
        if i < 0 or not pa.types.is_timestamp(schema.field(i).type):
            return None
        tz = schema.field(i).type.tz
        best: pd.Timestamp | None = None
        for g in range(f.metadata.num_row_groups):
            group = f.metadata.row_group(g)
            stats = group.column(i).statistics
            if stats is None or not stats.has_min_max:
                if stats is not None and stats.null_count == group.num_rows:
                    continue  # only nulls: nothing to add
                return None
            v = pd.Timestamp(stats.max)
            if tz is not None and v.tzinfo is None:
                v = v.tz_localize(tz)
            best = v if best is None or v > best else best
        return best
    finally:
        f.close()


def read_manifest(root: Path | str) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{root}: not a dataset (no {MANIFEST})")
    return json.loads(path.read_text())


class DatasetWriter:
    """Writes a dataset into a temporary directory; :meth:`commit` renames it into place atomically.

    Use as a context manager: leaving the block with an exception removes the temporary directory and leaves
    the destination untouched; leaving it normally commits. ``overwrite=True`` replaces an existing dataset
    (the old one is moved aside and removed only after the new one is in place).
    """

    def __init__(self, dest: Path | str, overwrite: bool = False) -> None:
        self.dest = Path(dest).resolve()
        self.overwrite = overwrite
        if self.dest.exists() and not overwrite:
            raise DatasetError(f"{self.dest} already exists; refusing to overwrite it (use --overwrite)")
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.tmp-", dir=self.dest.parent))
        self._parts: dict[str, int] = {}
        self._rows: dict[str, int] = {}
        self._committed = False

    # -- writing -------------------------------------------------------------------------------------------
    def write_table(self, name: str, df: pd.DataFrame) -> None:
        """Write a whole table (or, for a partitioned table, one more part)."""
        spec = ALL_TABLES[name]
        if spec.partitioned:
            self.append_part(name, df)
            return
        _write_parquet(df, self.tmp / f"{name}.parquet")
        self._rows[name] = self._rows.get(name, 0) + len(df)

    def append_part(self, name: str, df: pd.DataFrame) -> None:
        spec = ALL_TABLES[name]
        if not spec.partitioned:
            raise ValueError(f"table '{name}' is not partitioned")
        n = self._parts.get(name, 0)
        directory = self.tmp / name
        directory.mkdir(exist_ok=True)
        _write_parquet(df, directory / f"part-{n:05d}.parquet")
        self._parts[name] = n + 1
        self._rows[name] = self._rows.get(name, 0) + len(df)

    def write_extra(self, relpath: str, df: pd.DataFrame) -> Path:
        """Write a Parquet file outside the canonical tables (``truth/...``, ``network/...``)."""
        path = self.tmp / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_parquet(df, path)
        return path

    def write_json(self, relpath: str, obj: Any) -> Path:
        path = self.tmp / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
        return path

    @property
    def row_counts(self) -> dict[str, int]:
        return dict(self._rows)

    # -- committing ----------------------------------------------------------------------------------------
    def commit(self, manifest: dict[str, Any]) -> Path:
        for name, spec in TABLES.items():  # every canonical table exists, even if empty
            if spec.partitioned:
                (self.tmp / name).mkdir(exist_ok=True)
        manifest = {**manifest, "row_counts": self.row_counts, "fingerprint": fingerprint(self.tmp)}
        self.write_json(MANIFEST, manifest)
        aside = None
        if self.dest.exists():
            if not self.overwrite:
                raise DatasetError(f"{self.dest} appeared while writing; refusing to overwrite it")
            aside = self.dest.with_name(f".{self.dest.name}.old-{os.getpid()}")
            os.replace(self.dest, aside)
        os.replace(self.tmp, self.dest)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
        self._committed = True
        return self.dest

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None or not self._committed:
            self.abort()


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = table.schema.pandas_metadata
    if meta and any(str(c.get("numpy_type", "")).startswith("list<") for c in meta["columns"]):
        # Arrow-backed list columns (the generator writes them without a Python object per cell) read back
        # as pandas' default object lists: pandas cannot parse its own name for the Arrow list dtype
        for c in meta["columns"]:
            if str(c.get("numpy_type", "")).startswith("list<"):
                c["numpy_type"] = "object"
        table = table.replace_schema_metadata({**table.schema.metadata, b"pandas": json.dumps(meta).encode()})
    pq.write_table(table, path, compression="zstd")


def fingerprint(root: Path | str) -> str:
    """A content hash of a dataset's canonical tables (not of the manifest or the hidden truth).

    Training logs it to MLflow so a model can always be traced to the exact data it learned from.
    """
    root = Path(root)
    digest = hashlib.sha256()
    for name in sorted(ALL_TABLES):
        path = table_path(root, ALL_TABLES[name])
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path] if path.exists() else []
        for f in files:
            digest.update(f.relative_to(root).as_posix().encode())
            with f.open("rb") as fh:
                for block in iter(functools.partial(fh.read, 1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def atomic_file(path: Path | str, mode: str = "w") -> Iterator[Any]:
    """Write a single file atomically (temp file in the same directory, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
