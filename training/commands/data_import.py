"""``recsys data import`` and ``recsys data validate``: bring data in, and check a dataset.

Both print every problem (capped per file, column and kind, with a count of the rest) and exit non-zero when
there is one; neither ever prints a traceback for bad input.
"""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import typer

from recsys.data.importers import FORMATS, ImportFailed, import_dataset
from recsys.data.layout import DatasetError
from recsys.data.validate import DEFAULT_LIMIT, ValidationReport, validate_dataset

ImportFormat = StrEnum("ImportFormat", {f.replace("-", "_").upper(): f for f in FORMATS})  # type: ignore[misc]


def _print_report(report: ValidationReport, limit: int) -> None:
    for line in report.format(limit):
        typer.echo(line, err=True)
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)


def _airports(path: Path | None) -> frozenset[str] | None:
    if path is None:
        return None
    if not path.is_file():
        typer.echo(f"error: airports file {path} does not exist", err=True)
        raise typer.Exit(2)
    codes = [line.strip().split(",")[0] for line in path.read_text(encoding="utf-8-sig").splitlines()]
    return frozenset(c for c in codes if c and c.lower() != "iata")


def import_command(
    src: Annotated[list[Path], typer.Argument(help="Source directory or file(s).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory of the new dataset.")],
    fmt: Annotated[
        ImportFormat, typer.Option("--format", "-f", help="Source format.", case_sensitive=False)
    ] = ImportFormat("canonical"),
    skip_invalid: Annotated[
        bool,
        typer.Option("--skip-invalid", help="Import the valid rows; list the others in OUT/rejects.csv."),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing dataset at OUT.")
    ] = False,
    airports: Annotated[
        Path | None, typer.Option(help="File of known IATA codes (one a line); default: the shipped network.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Problems printed per file, column and kind.")] = DEFAULT_LIMIT,
) -> None:
    """Import SRC into a new dataset at OUT (canonical, interactions, air-data: docs/data_dictionary.md)."""
    started = time.perf_counter()
    try:
        result = import_dataset(
            list(src),
            out,
            fmt=str(fmt.value),
            skip_invalid=skip_invalid,
            overwrite=overwrite,
            airports=_airports(airports),
        )
    except ImportFailed as exc:
        _print_report(exc.report, limit)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except DatasetError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except (OSError, ValueError, TypeError, pa.ArrowException) as exc:  # input the checks did not name
        typer.echo(f"error: cannot import {', '.join(map(str, src))}: {type(exc).__name__}: {exc}", err=True)
        typer.echo("error: nothing was written", err=True)
        raise typer.Exit(1) from None
    for table, n in sorted(result.row_counts.items()):
        typer.echo(f"{table}: {n:,} rows")
    if result.rejects_path is not None:
        rows = len(result.rejects[["file", "row"]].drop_duplicates()) if len(result.rejects) else 0
        typer.echo(f"rejected: {rows:,} rows ({len(result.rejects):,} problems) -> {result.rejects_path}")
    for note in result.notes:
        typer.echo(f"note: {note}")
    typer.echo(
        f"imported {result.import_format} data into {result.dest} in {time.perf_counter() - started:.1f}s"
    )


def validate_command(
    directory: Annotated[Path, typer.Argument(help="Dataset directory.", show_default=False)],
    airports: Annotated[
        Path | None,
        typer.Option(help="File of known IATA codes (one a line); default: the dataset's network."),
    ] = None,
    limit: Annotated[int, typer.Option(help="Problems printed per file, column and kind.")] = DEFAULT_LIMIT,
) -> None:
    """Check every table of a dataset: types, ranges, codes, airports, references, duplicate ids."""
    started = time.perf_counter()
    if not directory.is_dir():
        typer.echo(f"error: {directory} is not a dataset directory", err=True)
        raise typer.Exit(1)
    try:
        report = validate_dataset(directory, airports=_airports(airports))
    except (OSError, ValueError, TypeError, pa.ArrowException) as exc:
        typer.echo(f"error: cannot validate {directory}: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    _print_report(report, limit)
    took = time.perf_counter() - started
    if not report.ok:
        typer.echo(f"error: {directory}: {report.summary()} ({took:.1f}s)", err=True)
        raise typer.Exit(1)
    typer.echo(f"{directory}: valid ({took:.1f}s)")


def register(app: typer.Typer) -> None:
    """Add ``import`` and ``validate`` to the ``data`` group."""
    app.command("import")(import_command)
    app.command("validate")(validate_command)
