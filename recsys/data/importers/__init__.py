"""Importers: bring outside data into the canonical dataset layout, validating everything before writing.

Three formats (``recsys data import --format``):

* ``canonical`` — a directory of table files in the documented schema (:mod:`.canonical`);
* ``interactions`` — generic implicit feedback with optional user and item tables (:mod:`.interactions`);
* ``air-data`` — the airline customer-value (LRFMC) member files (:mod:`.air_data`).

Every importer reads and checks the whole source first. By default any problem fails the import and nothing is
written; with ``skip_invalid`` the valid rows are written and the rejected ones listed, with their reasons, in
``rejects.csv`` inside the new dataset. The dataset is written through
:class:`recsys.data.layout.DatasetWriter` (temporary directory, then rename), so a failed import never leaves
a partial dataset nor touches an existing one.
"""

from __future__ import annotations

from pathlib import Path

from recsys.data.importers._common import ImportFailed, ImportResult, read_csv_text
from recsys.data.importers.air_data import import_air_data
from recsys.data.importers.canonical import import_canonical
from recsys.data.importers.interactions import import_interactions

FORMATS: tuple[str, ...] = ("canonical", "interactions", "air-data")

__all__ = [
    "FORMATS",
    "ImportFailed",
    "ImportResult",
    "import_air_data",
    "import_canonical",
    "import_dataset",
    "import_interactions",
    "read_csv_text",
]


def import_dataset(
    sources: list[Path] | Path,
    dest: Path,
    *,
    fmt: str = "canonical",
    skip_invalid: bool = False,
    overwrite: bool = False,
    airports: frozenset[str] | None = None,
) -> ImportResult:
    """Import ``sources`` in format ``fmt`` into a new dataset at ``dest``; raises :class:`ImportFailed`."""
    srcs = [Path(s) for s in (sources if isinstance(sources, list) else [sources])]
    dest = Path(dest)
    if fmt not in FORMATS:
        raise ImportFailed(f"unknown import format '{fmt}' (known: {', '.join(FORMATS)})")
    if not srcs:
        raise ImportFailed("no source given")
    if fmt == "air-data":
        return import_air_data(srcs, dest, skip_invalid=skip_invalid, overwrite=overwrite, airports=airports)
    if len(srcs) != 1:
        raise ImportFailed(f"the {fmt} format takes one source (a directory or a file), got {len(srcs)}")
    if fmt == "canonical":
        return import_canonical(
            srcs[0], dest, skip_invalid=skip_invalid, overwrite=overwrite, airports=airports
        )
    return import_interactions(srcs[0], dest, skip_invalid=skip_invalid, overwrite=overwrite)
