"""Importer of the canonical format: a directory of table files in the documented schema.

``SRC/`` holds, per table, one of ``<table>.csv``, ``<table>.parquet`` or a directory ``<table>/`` of
``*.parquet`` (or ``*.csv``) part files — so a dataset written by the generator or by an earlier import
re-imports as it is. ``members`` is required; a missing table is imported empty.
``network/airports.(parquet|csv)`` and ``network/routes.(parquet|csv)``, when present, are copied and their
airports become the known airport set. List columns in CSV are ``|``-separated (``gold|platinum``) or a JSON
array (``["gold", "platinum"]``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.data.importers._common import (
    ImportFailed,
    ImportResult,
    check_destination,
    missing_source,
    read_table_file,
    table_missing,
    write_dataset,
)
from recsys.data.layout import MANIFEST, NETWORK_DIR, REJECTS_FILE, TRUTH_DIR
from recsys.data.validate import Chunk, Rules, ValidationReport, check_tables, default_airports
from recsys.schema import ALL_TABLES, IMPORT_FORMATS, MEMBERS

FORMAT = "canonical"
REQUIRED_TABLES: tuple[str, ...] = (MEMBERS.name,)
NETWORK_FILES: tuple[str, ...] = ("airports", "routes")


def import_canonical(
    src: Path,
    dest: Path,
    *,
    skip_invalid: bool = False,
    overwrite: bool = False,
    airports: frozenset[str] | None = None,
) -> ImportResult:
    """Validate every table file of ``src`` and write them as a dataset at ``dest`` (see the module doc)."""
    if not src.exists():
        raise missing_source(src)
    if not src.is_dir():
        raise ImportFailed(f"{src}: the canonical format is a directory of table files (members.csv, ...)")
    check_destination([src], dest, overwrite)
    report = ValidationReport()
    chunks: dict[str, list[Chunk]] = {}
    known: set[str] = {MANIFEST, NETWORK_DIR, TRUTH_DIR, REJECTS_FILE}
    for table in ALL_TABLES:
        candidates = [src / f"{table}.csv", src / f"{table}.parquet", src / table]
        found = [c for c in candidates if c.exists()]
        known.update(c.name for c in candidates)
        if len(found) > 1:
            raise ImportFailed(
                f"{src}: table '{table}' is given twice ({', '.join(f.name for f in found)}); keep one"
            )
        if not found:
            if table in REQUIRED_TABLES:
                report.add(table_missing(table, f"{table}.csv or {table}.parquet"))
            continue
        path = found[0]
        if path.is_dir():
            files = sorted(path.glob("*.parquet")) + sorted(path.glob("*.csv"))
            labels = [f"{table}/{f.name}" for f in files]
        else:
            files, labels = [path], [path.name]
        chunks[table] = []
        for file, label in zip(files, labels, strict=True):
            got, problems = read_table_file(file, table, label)
            chunks[table].extend(got)
            report.extend(problems)
    ignored = sorted(p.name for p in src.iterdir() if p.name not in known and not p.name.startswith("."))
    extras, network_airports = _network(src)
    if airports is None:
        airports = network_airports if network_airports is not None else default_airports()
    extra: dict[str, Any] = {}
    shape = FORMAT  # which columns may be null: a re-imported air-data dataset keeps its own rules
    if (src / MANIFEST).is_file():  # a dataset re-imported: keep what made it (generator, seed, ...)
        try:
            source_manifest = json.loads((src / MANIFEST).read_text())
        except (OSError, ValueError):
            source_manifest = None
        extra["source_manifest"] = source_manifest
        if isinstance(source_manifest, dict):
            if source_manifest.get("as_of"):
                extra["as_of"] = source_manifest["as_of"]  # the same data ends on the same day
            if source_manifest.get("import_format") in IMPORT_FORMATS:
                shape = str(source_manifest["import_format"])
    try:  # rows past the history's end would make a dataset that fails `recsys data validate`
        rules = Rules.for_format(shape, airports, as_of=str(extra["as_of"]) if "as_of" in extra else None)
    except ValueError:  # an unreadable as_of: validation of the result names it; check the rows without it
        rules = Rules.for_format(shape, airports)
    checked = check_tables(chunks, rules, cascade=skip_invalid)
    result = write_dataset(
        checked,
        dest=dest,
        overwrite=overwrite,
        skip_invalid=skip_invalid,
        import_format=shape,
        sources=[src],
        extra_report=report,
        extras=extras,
        manifest_extra=extra,
    )
    if ignored:
        result.notes.append(f"ignored files that name no table: {', '.join(ignored)}")
    return result


def _network(src: Path) -> tuple[dict[str, pd.DataFrame], frozenset[str] | None]:
    """The source's route network files (copied into the dataset) and its airport codes."""
    extras: dict[str, pd.DataFrame] = {}
    for name in NETWORK_FILES:
        for suffix in (".parquet", ".csv"):
            path = src / NETWORK_DIR / f"{name}{suffix}"
            if path.is_file():
                try:
                    frame = (
                        pd.read_parquet(path)
                        if suffix == ".parquet"
                        else pd.read_csv(path, keep_default_na=False)
                    )
                except Exception as exc:
                    raise ImportFailed(f"{NETWORK_DIR}/{path.name}: cannot read ({exc})") from None
                extras[f"{NETWORK_DIR}/{name}.parquet"] = frame
                break
    airports = extras.get(f"{NETWORK_DIR}/airports.parquet")
    if airports is None:
        return extras, None
    col = "iata" if "iata" in airports.columns else airports.columns[0]
    return extras, frozenset(airports[col].astype("str"))
