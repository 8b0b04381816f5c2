"""The ``recsys`` command line: data, segmentation, training, evaluation, the model registry, member store.

Each group's commands live in ``training/commands/<group>.py``; this module only assembles them.
"""

from __future__ import annotations

import os

# implicit runs its own threads; BLAS threads on top of them only oversubscribe the cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import typer

from training.commands import data as data_commands
from training.commands import experiments as experiments_commands
from training.commands import members as members_commands
from training.commands import models as models_commands
from training.commands import segment as segment_commands
from training.commands import train as train_commands

app = typer.Typer(
    name="recsys",
    help="Offer recommendation for an airline loyalty programme: data, models, evaluation, registry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_commands.app, name="data")
app.add_typer(experiments_commands.app, name="experiments")

train_commands.register(app)  # train, evaluate
models_commands.register(app)  # models list|promote
members_commands.register(app)  # members publish
segment_commands.register(app)  # segment


def main() -> None:
    app()


if __name__ == "__main__":
    main()
