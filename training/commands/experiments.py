"""``recsys experiments``: A/B experiments (the live simulation that drives them)."""

from __future__ import annotations

import typer

from training.commands import experiments_simulate

app = typer.Typer(help="A/B experiments: simulate members against a running service.", no_args_is_help=True)
experiments_simulate.register(app)  # simulate
