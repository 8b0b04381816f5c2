"""``recsys experiments simulate``: play a generated world's members against a running service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command to the ``experiments`` group."""

    @app.command("simulate")
    def simulate(
        data: Annotated[Path, typer.Option("--data", help="A generated world (with truth/).")],
        url: Annotated[
            str, typer.Option("--url", help="The running service (loopback only).")
        ] = "http://127.0.0.1:8000",
        members: Annotated[
            int | None, typer.Option("--members", min=1, help="Members to sample (default: all).")
        ] = None,
        days: Annotated[int, typer.Option("--days", min=1, max=3650, help="Simulated days.")] = 30,
        activity: Annotated[
            float,
            typer.Option(
                "--activity", help="Trips and home-screen visits per member, times the world's rates."
            ),
        ] = 1.0,
        seed: Annotated[
            int, typer.Option("--seed", min=0, help="Random seed of members, trips, answers.")
        ] = 7,
        concurrency: Annotated[
            int, typer.Option("--concurrency", min=1, max=256, help="Requests in flight.")
        ] = 8,
        max_requests: Annotated[
            int | None, typer.Option("--max-requests", min=1, help="Stop after this many requests.")
        ] = None,
        max_seconds: Annotated[
            float | None, typer.Option("--max-seconds", min=1, help="Stop after this many seconds.")
        ] = None,
        day_seconds: Annotated[
            float,
            typer.Option(
                "--day-seconds", min=0, help="Real seconds a simulated day lasts at least (pacing)."
            ),
        ] = 0.0,
        out: Annotated[
            Path | None, typer.Option("--out", help="Also write the summary as JSON to this file.")
        ] = None,
    ) -> None:
        """Members of a generated world make real recommend calls in their trip contexts over simulated
        days; the world's hidden acceptance model (with fatigue) answers, and impressions, clicks,
        purchases and dismissals are posted back as events. Prints what each variant received."""
        import asyncio

        from recsys.data.layout import DatasetError
        from recsys.simulation import (
            SimulationError,
            SimulationReport,
            load_members,
            plan_requests,
            run_simulation,
        )
        from recsys.simulation.runner import check_loopback

        if activity <= 0:
            typer.echo(f"error: --activity must be positive, got {activity}", err=True)
            raise typer.Exit(2)
        try:
            check_loopback(url)
        except SimulationError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        if not data.is_dir():
            typer.echo(f"error: --data {data} is not a directory", err=True)
            raise typer.Exit(1)
        try:
            sim = load_members(data, members, seed)
            plan = plan_requests(sim, days, seed, activity)
            typer.echo(f"{len(sim):,} members, {len(plan):,} planned requests over {days} days", err=True)

            def progress(day: int, report: SimulationReport) -> None:
                if (day + 1) % 5 == 0 or day + 1 == days:
                    typer.echo(
                        f"day {day + 1}/{days}: {report.sent:,} requests, {report.seconds_so_far():.0f} s",
                        err=True,
                    )

            report = asyncio.run(
                run_simulation(
                    url,
                    sim,
                    plan,
                    days=days,
                    seed=seed,
                    concurrency=concurrency,
                    max_seconds=max_seconds,
                    max_requests=max_requests,
                    day_seconds=day_seconds,
                    on_day=progress,
                )
            )
        except (DatasetError, SimulationError, KeyError, OSError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(1) from exc
        summary = report.as_dict()
        text = json.dumps(summary, indent=2)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text + "\n")
        typer.echo(text)
        if report.sent and not any(v["requests"] for v in summary["variants"].values()):
            typer.echo("error: every recommend call failed (see errors)", err=True)
            raise typer.Exit(1)
