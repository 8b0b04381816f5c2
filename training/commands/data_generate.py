"""``recsys data generate`` and ``recsys data describe``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``generate`` and ``describe`` commands to the ``data`` group."""

    @app.command("generate")
    def generate(
        out: Annotated[Path, typer.Option("--out", help="Directory to write the dataset to.")],
        members: Annotated[
            int, typer.Option("--members", help="Number of members (1 to 9,999,999).")
        ] = 50_000,
        seed: Annotated[
            int, typer.Option("--seed", help="Random seed; the same seed gives identical files.")
        ] = 42,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Replace an existing dataset at --out.")
        ] = False,
        progress: Annotated[
            bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")
        ] = True,
        settings: Annotated[
            list[str] | None,
            typer.Option(
                "--set",
                metavar="NAME=VALUE",
                help="A generator setting (repeatable), e.g. --set tastes=4 "
                "--set taste_shares=0.4,0.3,0.2,0.1 --set international_leisure_share=0.15. Settings: "
                "tastes, taste_shares, taste_concentration, taste_weight, international_leisure_share, "
                "international_business_share, card_holder_share, unflown_stays_per_year.",
            ),
        ] = None,
    ) -> None:
        """Generate a synthetic loyalty world (members, flights, offers, interactions, hidden truth)."""
        from recsys.data.generator import GeneratorError, generate_world
        from recsys.data.layout import DatasetError
        from recsys.data.world.tastes import SettingsError, parse_settings

        if members <= 0:
            typer.echo(f"error: --members must be a positive integer, got {members}", err=True)
            raise typer.Exit(2)
        if seed < 0:
            typer.echo(f"error: --seed must be a non-negative integer, got {seed}", err=True)
            raise typer.Exit(2)
        overrides: dict[str, object] = {}
        for item in settings or []:
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                typer.echo(f"error: --set expects NAME=VALUE, got {item!r}", err=True)
                raise typer.Exit(2)
            overrides[name.strip()] = _setting_value(value.strip())
        try:
            world_settings = parse_settings(overrides)
        except SettingsError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        if out.exists() and not out.is_dir():
            typer.echo(f"error: --out {out} exists and is not a directory", err=True)
            raise typer.Exit(2)
        if out.exists() and not overwrite:
            typer.echo(f"error: {out} already exists; pass --overwrite to replace it", err=True)
            raise typer.Exit(1)
        try:
            path = generate_world(
                out, members, seed, overwrite=overwrite, progress=progress, settings=world_settings
            )
        except (GeneratorError, DatasetError, OSError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        typer.echo(f"generated {members:,} members (seed {seed}) into {path}")

    @app.command("describe")
    def describe_cmd(
        directory: Annotated[Path, typer.Argument(help="Dataset directory.")],
        top_routes: Annotated[int, typer.Option("--top-routes", min=1, help="How many routes to list.")] = 10,
    ) -> None:
        """Print a dataset's tier mix, flying frequency, cabins, routes, meals and acceptance rates."""
        from recsys.data.describe import describe
        from recsys.data.layout import DatasetError

        if not directory.is_dir():
            typer.echo(f"error: {directory} is not a directory", err=True)
            raise typer.Exit(1)
        try:
            text = describe(directory, top_routes=top_routes)
        except (DatasetError, OSError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        typer.echo(text, nl=False)


def _setting_value(text: str) -> object:
    """A ``--set`` value: a number, a comma-separated list of numbers, or the text itself."""
    parts = [p.strip() for p in text.split(",")]
    try:
        numbers = [float(p) if any(c in p for c in ".eE") else int(p) for p in parts]
    except ValueError:
        return text
    return numbers if len(parts) > 1 or text.endswith(",") else numbers[0]
