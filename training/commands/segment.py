"""``recsys segment``: five named LRFMC customer-value segments of a dataset, with their sizes and centres."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer


def segment(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="Dataset directory (LRFMC from flights, else from member_aggregates) or an air-data CSV.",
        ),
    ],
    seed: Annotated[int, typer.Option("--seed", help="k-means random seed.")] = 0,
    clean: Annotated[
        str, typer.Option("--clean", help="textbook (the README's cleaning rule) or none.")
    ] = "textbook",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    save: Annotated[
        Path | None, typer.Option("--save", help="Also save the fitted segment model (JSON) to this file.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write member_id, L, R, F, M, C and segment of every segmented member to this CSV (or "
            ".parquet) file.",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Cluster members on standardised LRFMC (k-means, k = 5), name the five segments from their centres
    (keep / develop / win_back / general / low_value) and print their sizes and centres."""
    from recsys.data.layout import DatasetError
    from recsys.features.segmentation import segment_dataset

    try:
        result = segment_dataset(data, seed=seed, clean=clean)
    except (DatasetError, ValueError, KeyError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if save is not None:
        result.model.save(save)
    if out is not None:
        labels = result.member_segments()
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".parquet":
            labels.to_parquet(out, index=False)
        else:
            labels.to_csv(out, index=False)
        typer.echo(f"wrote {len(labels):,} members' LRFMC and segment to {out}", err=as_json)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(
        f"{data}: LRFMC from {result.source}; {result.members_in:,} members read, "
        f"{result.members_used:,} segmented (clean={result.clean}, seed={seed}, k=5)"
    )
    table = result.model.summary().reset_index()
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        typer.echo(
            table.to_string(
                index=False,
                formatters={
                    "share": "{:.1%}".format,
                    "L": "{:.2f}".format,
                    "R": "{:.2f}".format,
                    "F": "{:.2f}".format,
                    "M": "{:,.0f}".format,
                    "C": "{:.3f}".format,
                    **{f"z{c}": "{:+.3f}".format for c in "LRFMC"},
                },
            )
        )
    typer.echo("L, R in months; F flights; M km; C average discount (fare level); zX: centre in z-scores.")


def register(app: typer.Typer) -> None:
    """Add ``recsys segment`` to the top-level app."""
    app.command("segment")(segment)
