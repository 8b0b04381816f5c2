"""Placeholder: registers this module's `recsys` commands (filled in by the offline-training work)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
