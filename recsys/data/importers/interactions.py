"""Importer of generic implicit feedback: (user, item, event type or weight, time), optional user/item tables.

``SRC`` is either the interactions file itself or a directory holding ``interactions.(csv|parquet)`` and,
optionally, ``users.(csv|parquet)`` and ``items.(csv|parquet)``.

* interactions: ``user_id``, ``item_id``; optional ``timestamp`` (ISO 8601, or Unix epoch
  seconds/milliseconds), ``event_type`` (impression/click/purchase/dismiss), ``weight`` (>= 0: a play count, a
  rating...), ``event_id``, ``request_id``, ``placement``. Lands in ``interactions`` (user_id -> member_id,
  item_id -> offer_id, timestamp -> event_time, weight kept in the optional ``weight`` column and multiplying
  the event's weight in training; without event_type a row is a ``click``; without event_id, the id is
  ``<file stem>-<data row, 9 digits>``; without placement, ``home``). Without a timestamp column event_time
  stays empty (data without times: evaluation uses a random split); with one, every row needs a time. Each
  assumption is printed as a note.
* users: ``user_id`` plus any member columns of the schema (tier, home_airport, ...), which land in
  ``members``; every other column is a user feature, written to ``features/user_features.parquet``
  (member_id + features).
  Users seen only in interactions become members with nothing but an id.
* items: ``item_id`` plus any offer columns (title, family, category, price_cash, ...), which land in
  ``offers``; other columns go to ``features/item_features.parquet`` (offer_id + features). Items without a
  family/category are ``generic``/``generic`` (not airline offers), titled by their id, eligible everywhere.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.importers._common import (
    ImportFailed,
    ImportResult,
    check_destination,
    missing_source,
    read_table_file,
    write_dataset,
)
from recsys.data.validate import (
    MISSING_COLUMN,
    Chunk,
    ProblemGroup,
    Rules,
    ValidationReport,
    check_tables,
    default_airports,
)
from recsys.schema import (
    GENERIC_CATEGORY,
    GENERIC_FAMILY,
    INTERACTIONS,
    MEMBERS,
    OFFERS,
    Col,
    EventType,
    Placement,
)

FORMAT = "interactions"
USER_FEATURES = "features/user_features.parquet"
ITEM_FEATURES = "features/item_features.parquet"
DEFAULT_EVENT = EventType.CLICK
DEFAULT_PLACEMENT = Placement.HOME
INTERACTION_SOURCE: dict[str, str] = {
    Col.MEMBER_ID: Col.USER_ID,
    Col.OFFER_ID: Col.ITEM_ID,
    Col.EVENT_TIME: Col.TIMESTAMP,
}


def _find(src: Path, name: str) -> Path | None:
    found = [p for p in (src / f"{name}.csv", src / f"{name}.parquet") if p.is_file()]
    if len(found) > 1:
        raise ImportFailed(f"{src}: '{name}' is given twice ({', '.join(p.name for p in found)}); keep one")
    return found[0] if found else None


def import_interactions(
    src: Path, dest: Path, *, skip_invalid: bool = False, overwrite: bool = False
) -> ImportResult:
    """Map generic implicit feedback into the canonical layout (see the module docstring)."""
    if not src.exists():
        raise missing_source(src)
    if src.is_dir():
        events_path = _find(src, "interactions")
        if events_path is None:
            raise ImportFailed(f"{src}: no interactions.csv or interactions.parquet")
        users_path, items_path = _find(src, "users"), _find(src, "items")
    else:
        events_path, users_path, items_path = src, None, None
    check_destination([src], dest, overwrite)
    report = ValidationReport()
    (events,), problems = read_table_file(events_path, INTERACTIONS.name)
    report.extend(problems)
    _require(events, (Col.USER_ID, Col.ITEM_ID), report)
    if not report.ok and report.has_table_level():
        raise ImportFailed(f"import refused: {report.summary()}; nothing was written", report)
    columns = set(events.frame.columns)
    label = events.label
    if Col.EVENT_TYPE not in columns:
        report.notes.append(f"{label}: no 'event_type' column: every row is imported as a '{DEFAULT_EVENT}'")
    if Col.WEIGHT not in columns:
        report.notes.append(
            f"{label}: no 'weight' column: every row counts once (its event type's weight in training)"
        )
    dated = Col.TIMESTAMP in columns
    if not dated:
        report.notes.append(
            f"{label}: no 'timestamp' column: event_time is left empty; training does not decay these rows "
            "and evaluation uses a seeded random split (--split random)"
        )
    interactions = _interactions(events, events_path)

    chunks: dict[str, list[Chunk]] = {INTERACTIONS.name: [interactions]}
    extras: dict[str, pd.DataFrame] = {}
    member_chunks, user_features = _entities(
        users_path, interactions, Col.USER_ID, Col.MEMBER_ID, MEMBERS.columns, MEMBERS.name, report
    )
    offer_chunks, item_features = _entities(
        items_path, interactions, Col.ITEM_ID, Col.OFFER_ID, OFFERS.columns, OFFERS.name, report
    )
    chunks[MEMBERS.name] = [_fill_missing(c, MEMBERS.columns) for c in member_chunks]
    chunks[OFFERS.name] = [_offer_defaults(c) for c in offer_chunks]
    if user_features is not None:
        extras[USER_FEATURES] = user_features
    if item_features is not None:
        extras[ITEM_FEATURES] = item_features
    rules = Rules.for_format(FORMAT, default_airports())
    if dated:  # a timestamp column, once given, is required in every row
        nullable = dict(rules.extra_nullable)
        nullable[INTERACTIONS.name] = nullable.get(INTERACTIONS.name, frozenset()) - {Col.EVENT_TIME}
        rules = replace(rules, extra_nullable=nullable)
    checked = check_tables(chunks, rules, cascade=skip_invalid)
    sources = [p for p in (events_path, users_path, items_path) if p is not None]
    return write_dataset(
        checked,
        dest=dest,
        overwrite=overwrite,
        skip_invalid=skip_invalid,
        import_format=FORMAT,
        sources=sources,
        extra_report=report,
        extras=extras,
    )


def _require(chunk: Chunk, columns: tuple[str, ...], report: ValidationReport) -> None:
    for col in columns:
        if col not in chunk.frame.columns:
            report.add(
                ProblemGroup(
                    chunk.table,
                    chunk.label,
                    col,
                    MISSING_COLUMN,
                    f"missing column '{col}' (the file needs: {', '.join(columns)})",
                )
            )


def _timestamps(s: pd.Series) -> pd.Series:
    """Epoch seconds/milliseconds become datetimes; anything else is left for the ISO 8601 check."""
    text = s.astype("str").str.strip()
    numeric = pd.to_numeric(
        text.where(text.str.fullmatch(r"\d{1,13}(\.\d+)?").fillna(False)), errors="coerce"
    )
    if numeric.notna().any():
        unit_ms = numeric > 1e11
        seconds = numeric.where(~unit_ms, numeric / 1000.0)
        converted = pd.to_datetime(seconds, unit="s", errors="coerce").dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
        return text.where(numeric.isna(), converted)
    return s


def _interactions(events: Chunk, path: Path) -> Chunk:
    f = events.frame
    n = len(f)
    stem = path.stem
    event_id = (
        f[Col.EVENT_ID]
        if Col.EVENT_ID in f.columns
        else pd.Series([f"{stem}-{r:09d}" for r in events.rows], index=f.index, dtype="str")
    )
    none = pd.Series([None] * n, index=f.index, dtype=object)
    frame = pd.DataFrame(
        {
            Col.EVENT_ID: event_id,
            Col.REQUEST_ID: f[Col.REQUEST_ID] if Col.REQUEST_ID in f.columns else none,
            Col.MEMBER_ID: f[Col.USER_ID],
            Col.OFFER_ID: f[Col.ITEM_ID],
            Col.FLIGHT_ID: none,
            Col.PLACEMENT: f[Col.PLACEMENT] if Col.PLACEMENT in f.columns else str(DEFAULT_PLACEMENT),
            Col.EVENT_TYPE: f[Col.EVENT_TYPE] if Col.EVENT_TYPE in f.columns else str(DEFAULT_EVENT),
            Col.EVENT_TIME: _timestamps(f[Col.TIMESTAMP]) if Col.TIMESTAMP in f.columns else none,
        },
        index=f.index,
    )
    if Col.WEIGHT in f.columns:
        frame[Col.WEIGHT] = f[Col.WEIGHT]
    return Chunk(
        INTERACTIONS.name, events.label, frame, events.rows, from_text=True, display=dict(INTERACTION_SOURCE)
    )


def _entities(
    path: Path | None,
    interactions: Chunk,
    source_key: str,
    key: str,
    columns: dict[str, str],
    table: str,
    report: ValidationReport,
) -> tuple[list[Chunk], pd.DataFrame | None]:
    """Members (or offers) from the optional users (items) table plus the ids seen only in interactions."""
    chunks: list[Chunk] = []
    features = None
    given: pd.Index = pd.Index([], dtype="str")
    if path is not None:
        (raw,), problems = read_table_file(path, table)
        report.extend(problems)
        _require(raw, (source_key,), report)
        if source_key in raw.frame.columns:
            f = raw.frame.rename(columns={source_key: key})
            canonical = [c for c in f.columns if c in columns]
            other = [c for c in f.columns if c not in columns]
            if other:
                features = _numeric_where_possible(f[[key, *other]]) if raw.from_text else f[[key, *other]]
            chunks.append(
                Chunk(
                    table,
                    raw.label,
                    f[canonical],
                    raw.rows,
                    from_text=raw.from_text,
                    display={key: source_key},
                )
            )
            given = pd.Index(f[key].astype("str"))
    seen = interactions.frame[key].astype("str")
    first = ~seen.duplicated(keep="first") & ~seen.isin(given) & (seen.str.strip() != "")
    ids = seen[first.to_numpy(dtype=bool)]
    chunks.append(
        Chunk(
            table,
            interactions.label,
            pd.DataFrame({key: ids.to_numpy()}),
            interactions.rows[first.to_numpy(dtype=bool)],
            from_text=True,
            display={key: source_key},
        )
    )
    return chunks, features


def _numeric_where_possible(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for col in out.columns[1:]:
        text = out[col].astype("str").str.strip()
        num = pd.to_numeric(text.where(text != ""), errors="coerce")
        if (num.notna() | (text == "")).all():
            out[col] = num
    return out


def _fill_missing(chunk: Chunk, columns: dict[str, str]) -> Chunk:
    """Members have only what the source gives: absent member columns are null (allowed for this format)."""
    f = chunk.frame.copy()
    for col in columns:
        if col not in f.columns:
            f[col] = pd.Series([None] * len(f), index=f.index, dtype=object)
    return Chunk(
        chunk.table,
        chunk.label,
        f[list(columns)],
        np.asarray(chunk.rows),
        from_text=chunk.from_text,
        display=chunk.display,
    )


def _offer_defaults(chunk: Chunk) -> Chunk:
    """Fill the offer columns an item does not give: generic family/category, no restrictions, everywhere."""
    f = chunk.frame.copy()
    n = len(f)
    defaults: dict[str, object] = {
        Col.FAMILY: GENERIC_FAMILY,
        Col.CATEGORY: GENERIC_CATEGORY,
        Col.REQUIRES_LOUNGE: "false",
        Col.EXEMPT: "false",
        Col.PLACEMENTS: "|".join(str(p) for p in Placement),
    }
    for col in OFFERS.columns:
        if col in f.columns:
            continue
        if col == Col.TITLE:
            f[col] = f[Col.OFFER_ID]
        elif col in defaults:
            f[col] = defaults[col]
        elif OFFERS.columns[col].startswith("list["):
            f[col] = ""
        else:
            f[col] = pd.Series([None] * n, index=f.index, dtype=object)
    return Chunk(chunk.table, chunk.label, f, np.asarray(chunk.rows), from_text=True, display=chunk.display)
