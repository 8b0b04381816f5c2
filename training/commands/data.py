"""``recsys data``: generate a loyalty world, import and validate data, describe a dataset."""

from __future__ import annotations

import typer

from training.commands import data_generate, data_import

app = typer.Typer(help="Generate, import, validate and describe datasets.", no_args_is_help=True)
data_generate.register(app)  # generate, describe
data_import.register(app)  # import, validate
