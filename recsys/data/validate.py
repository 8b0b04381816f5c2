"""Validation of datasets and of tables on their way in: types, ranges, codes, references and duplicate ids.

Every check is vectorised over whole columns (pandas), so millions of rows validate in seconds. A check never
stops at the first problem: it records *every* offending row, grouped by (file, column, kind), and a
:class:`ValidationReport` prints them with a cap per group plus a count of the rest.

Row numbers are 1-based *data* row numbers: for a CSV file, row 1 is the first line after the header (so row N
is line N + 1 when no field holds a line break); for a Parquet file, row N is the N-th row of that file (of
that part file, for partitioned tables).

The same building blocks serve ``recsys data validate DIR`` (:func:`validate_dataset`, which streams
partitioned tables part by part so memory stays bounded) and the importers (:func:`check_tables`, which also
returns the typed tables and which rows to reject).
"""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pa_types

from recsys.data.layout import MANIFEST, NETWORK_DIR, read_manifest, table_path
from recsys.data.times import as_of_end
from recsys.schema import (
    ALL_TABLES,
    CATEGORY_FAMILY,
    FARE_CLASS_CABIN,
    GENERIC_CATEGORY,
    GENERIC_FAMILY,
    MAX_BOOKING_LEAD_DAYS,
    MAX_PARTY_SIZE,
    MAX_STAY_NIGHTS,
    NULLABLE,
    OPTIONAL_COLUMNS,
    OPTIONAL_TABLES,
    SOURCE_NULLABLE,
    TABLES,
    Cabin,
    Channel,
    Col,
    EventType,
    Gender,
    MealCode,
    OfferCategory,
    OfferFamily,
    PartnerKind,
    Placement,
    RedemptionKind,
    SeatType,
    Tier,
)

# Dates before this or more than FAR_FUTURE_YEARS after "now" are out of range.
EARLIEST_DATE = pd.Timestamp("1900-01-01")
FAR_FUTURE_YEARS = 10
DEFAULT_LIMIT = 10  # problems printed per (file, column, kind)

# Kinds of problems.
MISSING_TABLE = "missing table"
UNREADABLE = "unreadable file"
MISSING_COLUMN = "missing column"
BAD_ROW = "malformed row"
MISSING_VALUE = "missing value"
MALFORMED = "malformed value"
UNKNOWN_CODE = "unknown code"
OUT_OF_RANGE = "out of range"
INCONSISTENT = "inconsistent"
UNKNOWN_REFERENCE = "unknown reference"
DUPLICATE_ID = "duplicate id"

# Tables in dependency order: a table is checked after the tables it refers to.
TABLE_ORDER: tuple[str, ...] = (
    "members",
    "offers",
    "flights",
    "ancillaries",
    "redemptions",
    # before interactions: an interaction's request_id must name a logged request
    "requests",
    "interactions",
    "member_aggregates",
    "partner_activities",
)

# (table, column) -> (referenced table, what to call one of its rows)
REFERENCES: dict[tuple[str, str], tuple[str, str]] = {
    ("flights", Col.MEMBER_ID): ("members", "member"),
    ("ancillaries", Col.MEMBER_ID): ("members", "member"),
    ("ancillaries", Col.OFFER_ID): ("offers", "offer"),
    ("ancillaries", Col.FLIGHT_ID): ("flights", "flight"),
    ("redemptions", Col.MEMBER_ID): ("members", "member"),
    ("redemptions", Col.OFFER_ID): ("offers", "offer"),
    ("interactions", Col.MEMBER_ID): ("members", "member"),
    ("interactions", Col.OFFER_ID): ("offers", "offer"),
    ("interactions", Col.FLIGHT_ID): ("flights", "flight"),
    ("interactions", Col.REQUEST_ID): ("requests", "request"),
    ("member_aggregates", Col.MEMBER_ID): ("members", "member"),
    ("requests", Col.MEMBER_ID): ("members", "member"),
    ("requests", Col.FLIGHT_ID): ("flights", "flight"),
    ("partner_activities", Col.MEMBER_ID): ("members", "member"),
}
# member_aggregates may stand alone: an aggregates-only dataset (the cleaned air-data file has no member
# profile).
REFERENCES_IF_TARGET_NONEMPTY: frozenset[tuple[str, str]] = frozenset({("member_aggregates", Col.MEMBER_ID)})

# The time of each history table's rows: none may be at or after the end of the dataset's history (its
# manifest's ``as_of``).
HISTORY_TIMES: dict[str, str] = {
    "flights": Col.DEPARTURE_TIME,
    "ancillaries": Col.PURCHASE_TIME,
    "redemptions": Col.REDEEM_TIME,
    "interactions": Col.EVENT_TIME,
    "requests": Col.REQUEST_TIME,
    "partner_activities": Col.ACTIVITY_TIME,
}

# ``flights.flight_date`` may be the local date of departure at the origin (an airline's own files) while
# ``departure_time`` is naive UTC: local time is UTC-12h ... UTC+14h, so the date must lie between the dates
# of departure_time - 12 h and departure_time + 14 h. (The generator writes the UTC date, which always does.)
LOCAL_OFFSET_MIN = pd.Timedelta(hours=-12)
LOCAL_OFFSET_MAX = pd.Timedelta(hours=14)

# Columns that must be >= 0.
NON_NEGATIVE: dict[str, tuple[str, ...]] = {
    "members": (Col.MILES_BALANCE,),
    "flights": (Col.DISTANCE_KM, Col.FARE_PAID, Col.MILES_EARNED, Col.BAGS),
    "ancillaries": (Col.PRICE_CASH,),
    "redemptions": (Col.MILES_SPENT,),
    "offers": (Col.PRICE_CASH, Col.PRICE_MILES, Col.MIN_MILES),
    "interactions": (Col.WEIGHT,),
    "member_aggregates": (Col.FLIGHT_COUNT, Col.SEG_KM_SUM, Col.LAST_TO_END, Col.AVG_DISCOUNT),
    "partner_activities": (Col.MILES_EARNED,),
}

_TRUE = frozenset({"true", "t", "yes", "y", "1", "1.0"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "0.0"})


def _values(enum: Iterable[Any]) -> frozenset[str]:
    return frozenset(str(e) for e in enum)


@dataclass(frozen=True)
class Rules:
    """What the checks accept beyond the schema: airport set, extra nullable columns, generic offers, now,
    and where the dataset's history ends."""

    airports: frozenset[str] | None = None  # None: airport codes are not checked (a note says so)
    extra_nullable: dict[str, frozenset[str]] = field(default_factory=dict)
    allow_generic_offers: bool = False
    now: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now().normalize())
    # Exclusive end of the history (naive UTC), from the manifest's ``as_of``; None: not checked.
    history_end: pd.Timestamp | None = None
    as_of: str | None = None  # the manifest's value, for messages

    @classmethod
    def for_format(
        cls,
        import_format: str | None,
        airports: Collection[str] | None,
        now: pd.Timestamp | None = None,
        as_of: str | None = None,
    ) -> Rules:
        """Rules for a dataset made by ``import_format`` (None or "canonical": a full loyalty dataset).

        ``as_of``: the manifest's last day of history (or last instant, when it has a time); raises
        ``ValueError`` when it is not a date.
        """
        return cls(
            airports=frozenset(airports) if airports is not None else None,
            extra_nullable=SOURCE_NULLABLE.get(import_format or "", {}),
            allow_generic_offers=import_format == "interactions",
            now=now if now is not None else pd.Timestamp.now().normalize(),
            history_end=_history_end(as_of) if as_of is not None else None,
            as_of=as_of,
        )

    def nullable(self, table: str) -> frozenset[str]:
        return NULLABLE.get(table, frozenset()) | self.extra_nullable.get(table, frozenset())

    @property
    def latest_date(self) -> pd.Timestamp:
        return self.now + pd.DateOffset(years=FAR_FUTURE_YEARS)

    def codes(self, table: str) -> dict[str, tuple[frozenset[str] | None, str]]:
        """column -> (allowed values, what a value is called); scalar and list columns alike."""
        airports = (self.airports, "airport")
        families = _values(OfferFamily) | ({GENERIC_FAMILY} if self.allow_generic_offers else set())
        categories = _values(OfferCategory) | ({GENERIC_CATEGORY} if self.allow_generic_offers else set())
        per_table: dict[str, dict[str, tuple[frozenset[str] | None, str]]] = {
            "members": {
                Col.TIER: (_values(Tier), "tier"),
                Col.CHANNEL: (_values(Channel), "channel"),
                Col.GENDER: (_values(Gender), "gender"),
                Col.HOME_AIRPORT: airports,
                Col.TIME_ZONE: (_time_zones(), "time zone"),
            },
            "flights": {
                Col.ORIGIN: airports,
                Col.DESTINATION: airports,
                Col.CABIN: (_values(Cabin), "cabin"),
                Col.FARE_CLASS: (frozenset(FARE_CLASS_CABIN), "fare class"),
                Col.MEAL_CODE: (_values(MealCode), "meal code"),
                Col.SEAT_TYPE: (_values(SeatType), "seat type"),
            },
            "ancillaries": {Col.CATEGORY: (categories, "offer category")},
            "redemptions": {
                Col.KIND: (_values(RedemptionKind), "redemption kind"),
                Col.DESTINATION: airports,
            },
            "offers": {
                Col.FAMILY: (families, "offer family"),
                Col.CATEGORY: (categories, "offer category"),
                Col.TARGET_CABIN: (_values(Cabin), "cabin"),
                Col.DESTINATION: airports,
                Col.MEAL: (_values(MealCode), "meal code"),
                Col.ELIGIBLE_TIERS: (_values(Tier), "tier"),
                Col.ELIGIBLE_CABINS: (_values(Cabin), "cabin"),
                Col.ELIGIBLE_FARE_CLASSES: (frozenset(FARE_CLASS_CABIN), "fare class"),
                Col.ELIGIBLE_ORIGINS: airports,
                Col.PLACEMENTS: (_values(Placement), "placement"),
                Col.BLACKOUT_MONTHS: (frozenset(str(m) for m in range(1, 13)), "month"),
            },
            "interactions": {
                Col.PLACEMENT: (_values(Placement), "placement"),
                Col.EVENT_TYPE: (_values(EventType), "event type"),
            },
            "requests": {
                Col.PLACEMENT: (_values(Placement), "placement"),
                Col.ORIGIN: airports,
                Col.DESTINATION: airports,
                Col.CABIN: (_values(Cabin), "cabin"),
                Col.FARE_CLASS: (frozenset(FARE_CLASS_CABIN), "fare class"),
            },
            "partner_activities": {
                Col.KIND: (_values(PartnerKind), "partner kind"),
                Col.PLACE: airports,
            },
        }
        return per_table.get(table, {})


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


# ------------------------------------------------------------------------------------------------------------
# Problems and the report
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One problem: where (file, 1-based data row, column) and what."""

    file: str
    row: int | None
    column: str | None
    kind: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file} row {self.row}"
        if self.column is not None:
            where += f", column {self.column}"
        return f"{where}: {self.message}"


def _history_end(as_of: str) -> pd.Timestamp:
    """The exclusive end of the history a manifest's ``as_of`` names (:func:`~recsys.data.times.as_of_end`);
    ``ValueError`` when it is not a date."""
    end = as_of_end(str(as_of).strip())
    if pd.isna(end):
        raise ValueError(f"not a date: {as_of!r}")
    return end


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return repr(int(value)) if abs(value) < 1e15 else repr(value)
    if isinstance(value, pd.Timestamp):
        return f"'{value.isoformat()}'"
    return (
        repr(value)
        if isinstance(value, str)
        else repr(value)
        if not hasattr(value, "item")
        else repr(value.item())
    )


@dataclass
class ProblemGroup:
    """Every occurrence of one kind of problem in one column of one file.

    ``template`` holds ``{value}`` where each row's offending value goes. A group with no rows is a problem of
    the file as a whole (a missing column or table).
    """

    table: str
    file: str
    column: str | None
    kind: str
    template: str
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    positions: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    values: np.ndarray | None = None
    chunk: int = 0  # which chunk of the table the positions refer to

    @property
    def table_level(self) -> bool:
        return len(self.rows) == 0

    def __len__(self) -> int:
        return 1 if self.table_level else len(self.rows)

    def problems(self, limit: int | None = None) -> Iterator[Problem]:
        if self.table_level:
            yield Problem(self.file, None, self.column, self.kind, self.template)
            return
        n = len(self.rows) if limit is None else min(limit, len(self.rows))
        for i in range(n):
            msg = self.template
            if self.values is not None:
                msg = msg.replace("{value}", _show(self.values[i]))
            yield Problem(self.file, int(self.rows[i]), self.column, self.kind, msg)


@dataclass
class ValidationReport:
    """All problems found, grouped; plus notes (checks that could not run, and why)."""

    groups: list[ProblemGroup] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.groups

    @property
    def n_problems(self) -> int:
        return sum(len(g) for g in self.groups)

    def add(self, group: ProblemGroup) -> None:
        if group.table_level or len(group.rows):
            self.groups.append(group)

    def extend(self, other: ValidationReport) -> None:
        self.groups.extend(other.groups)
        self.notes.extend(n for n in other.notes if n not in self.notes)

    def problems(self) -> Iterator[Problem]:
        for g in self.groups:
            yield from g.problems()

    def has_table_level(self) -> bool:
        return any(g.table_level for g in self.groups)

    def format(self, limit: int = DEFAULT_LIMIT) -> list[str]:
        """Lines to print: at most ``limit`` problems per (file, column, kind), then a count of the rest."""
        lines: list[str] = []
        merged: dict[tuple[str, str | None, str], list[ProblemGroup]] = {}
        for g in self.groups:
            merged.setdefault((g.file, g.column, g.kind), []).append(g)

        def first_row(item: tuple[tuple[str, str | None, str], list[ProblemGroup]]) -> tuple[str, int]:
            rows = [int(g.rows.min()) for g in item[1] if len(g.rows)]
            return item[0][0], min(rows) if rows else 0

        for (file, column, kind), groups in sorted(merged.items(), key=first_row):
            shown = 0
            total = sum(len(g) for g in groups)
            for g in groups:
                for p in g.problems(limit - shown):
                    lines.append(str(p))
                    shown += 1
            if total > shown:
                col = f", column {column}" if column else ""
                lines.append(f"{file}{col}: ... and {total - shown} more '{kind}' problems")
        return lines

    def summary(self) -> str:
        files = len({g.file for g in self.groups})
        return f"{self.n_problems} problem(s) in {files} file(s)"

    def rejects_frame(self) -> pd.DataFrame:
        """Every row-level problem as a rejects table: file, row, column, kind, message."""
        records = [
            (p.file, p.row, p.column, p.kind, p.message)
            for g in self.groups
            if not g.table_level
            for p in g.problems()
        ]
        return pd.DataFrame.from_records(records, columns=["file", "row", "column", "kind", "message"])


# ------------------------------------------------------------------------------------------------------------
# Chunks: a piece of one table (a whole CSV file, a Parquet file, one part of a partitioned table)
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Chunk:
    """Rows of one table from one file. ``rows`` are the 1-based data row numbers of the frame's rows."""

    table: str
    label: str
    frame: pd.DataFrame
    rows: np.ndarray
    from_text: bool = False  # values are strings to parse (CSV), not typed values (Parquet)
    display: dict[str, str] = field(
        default_factory=dict
    )  # canonical column -> the source's name, for messages

    @classmethod
    def of(cls, table: str, label: str, frame: pd.DataFrame, from_text: bool = False) -> Chunk:
        frame = frame.reset_index(drop=True)
        return cls(table, label, frame, np.arange(1, len(frame) + 1, dtype=np.int64), from_text)

    def name(self, column: str) -> str:
        return self.display.get(column, column)


def _columns_of(table: str, present: Iterable[str]) -> dict[str, str]:
    """Logical types of the table's columns: its spec, plus its optional columns that are present."""
    cols = dict(ALL_TABLES[table].columns)
    present = set(present)
    for name, ltype in OPTIONAL_COLUMNS.get(table, {}).items():
        if name in present:
            cols[name] = ltype
    return cols


def _is_null(s: pd.Series) -> np.ndarray:
    null = s.isna().to_numpy()
    if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
        text = _arrow_str(s)
        # empty or whitespace only (utf8_is_space is false for ''), decided in Arrow without copying strings
        blank = pc.or_(pc.equal(pc.utf8_length(text), 0), pc.utf8_is_space(text))
        null = null | pc.fill_null(blank, False).to_numpy(zero_copy_only=False)
    return np.asarray(null, dtype=bool)


def _arrow_str(values: Any) -> pa.Array:
    """Text values as one contiguous Arrow ``large_string`` array (Series, Index, sets, Arrow arrays)."""
    if isinstance(values, pa.ChunkedArray | pa.Array):
        arr = values
    else:
        if isinstance(values, set | frozenset):
            values = list(values)
        series = values if isinstance(values, pd.Series) else pd.Series(values, dtype="str")
        arr = pa.array(series.astype("str"))
    if isinstance(arr, pa.ChunkedArray):  # never hand a ChunkedArray to pa.chunked_array: it would iterate it
        arr = arr.combine_chunks()
    return arr if arr.type == pa.large_string() else arr.cast(pa.large_string())


def isin(s: pd.Series, values: Collection[str] | pd.Index | pa.Array) -> np.ndarray:
    """``s.astype(str).isin(values)`` as a boolean array, hashed in Arrow (fast with millions of ids)."""
    hit = pc.is_in(_arrow_str(s), value_set=_arrow_str(values))
    return np.asarray(pc.fill_null(hit, False).to_numpy(zero_copy_only=False), dtype=bool)


def _distinct(parts: list[pd.Series]) -> pa.Array:
    """The distinct values of several text columns."""
    if not parts:
        return pa.array([], type=pa.large_string())
    return pc.unique(pa.chunked_array([_arrow_str(p) for p in parts], type=pa.large_string()))


def _first_valid(s: pd.Series) -> Any:
    idx = s.first_valid_index()
    return None if idx is None else s.loc[idx]


def _parse_datetime(s: pd.Series) -> pd.Series:
    """ISO 8601 strings (or typed values) -> naive datetime64; tz-aware values are converted to UTC."""
    if isinstance(s.dtype, pd.ArrowDtype) and (
        pa_types.is_date(s.dtype.pyarrow_dtype) or pa_types.is_timestamp(s.dtype.pyarrow_dtype)
    ):
        # cast in Arrow: pandas' astype would walk the values one by one
        as_ts = pc.cast(pa.array(s), pa.timestamp("us", tz=getattr(s.dtype.pyarrow_dtype, "tz", None)))
        s = pd.Series(as_ts.to_pandas(), index=s.index)
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        out = s
    else:
        text = s.astype("str").str.strip() if not _holds_dates(s) else s
        try:
            out = pd.to_datetime(text, format="ISO8601", errors="coerce")
        except ValueError:  # mixed offsets
            out = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    if getattr(out.dtype, "tz", None) is not None:
        out = out.dt.tz_convert("UTC").dt.tz_localize(None)
    return out


def _holds_dates(s: pd.Series) -> bool:
    return isinstance(_first_valid(s), dt.date | pd.Timestamp)


def _parse_list(value: Any) -> list[Any] | None:
    """A list cell: a list/array (Parquet), a JSON array or ``a|b|c`` text (CSV); '' is an empty list."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, list | tuple | np.ndarray):
        return list(value)
    text = str(value).strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, list) else None
    return [part.strip() for part in text.split("|")]


def _coerce(s: pd.Series, ltype: str, null: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    """Parse a column into its logical type; returns (typed values, mask of malformed non-null cells).

    ``null`` marks the empty cells (None, NaN or blank text).
    """
    if ltype == "str":
        typed = s.astype("str")
        typed = typed.where(~null, None) if null.any() else typed
        return typed, np.zeros(len(s), dtype=bool)
    if ltype in ("int", "float"):
        if pd.api.types.is_bool_dtype(s.dtype):
            num = pd.Series(np.full(len(s), np.nan), index=s.index)
        else:
            src = s.astype("str").str.strip() if not pd.api.types.is_numeric_dtype(s.dtype) else s
            num = pd.to_numeric(src, errors="coerce").astype("float64")
        bad = ~null & num.isna().to_numpy()
        finite = np.isfinite(num.to_numpy(dtype="float64", na_value=np.nan))
        bad |= ~null & ~finite & ~num.isna().to_numpy()
        if ltype == "int":
            with np.errstate(invalid="ignore"):
                frac = num.to_numpy(dtype="float64", na_value=np.nan) % 1 != 0
            bad |= ~null & frac & ~num.isna().to_numpy()
        return num.where(~bad), bad
    if ltype == "bool":
        if pd.api.types.is_bool_dtype(s.dtype):
            return s.astype("boolean"), np.zeros(len(s), dtype=bool)
        low = s.astype("str").str.strip().str.lower()
        is_true = low.isin(_TRUE).to_numpy(dtype=bool)
        is_false = low.isin(_FALSE).to_numpy(dtype=bool)
        bad = ~null & ~is_true & ~is_false
        typed = pd.Series(pd.array(np.where(is_true, True, False), dtype="boolean"), index=s.index)
        typed[~(is_true | is_false)] = pd.NA
        return typed, bad
    if ltype in ("date", "datetime"):
        typed = _parse_datetime(s)
        bad = ~null & typed.isna().to_numpy()
        if ltype == "date" and not bad.all():
            has_time = (typed.notna() & (typed != typed.dt.normalize())).to_numpy(dtype=bool)
            bad |= has_time
            typed = typed.where(~has_time)
        return typed, bad
    if ltype.startswith("list["):
        parsed = s.map(_parse_list) if len(s) else s
        bad = parsed.isna().to_numpy() & ~null
        if ltype == "list[int]" and len(s):

            def to_ints(items: list[Any] | None) -> list[int] | None:
                if items is None:
                    return None
                try:
                    out = [int(str(i).strip()) for i in items]
                except ValueError:
                    return None
                return out

            ints = parsed.map(to_ints)
            bad |= ints.isna().to_numpy() & ~parsed.isna().to_numpy()
            parsed = ints
        if ltype == "list[float]" and len(s):
            floats = parsed.map(_to_floats)
            bad |= floats.isna().to_numpy() & ~parsed.isna().to_numpy()
            parsed = floats
        return parsed, bad
    raise ValueError(f"unknown logical type {ltype!r}")


def _to_floats(items: list[Any] | None) -> list[float] | None:
    """Numbers of a list cell; a missing item becomes NaN (the table's rules check it); text is malformed."""
    if items is None:
        return None
    out: list[float] = []
    for i in items:
        if i is None or (isinstance(i, str) and not i.strip()):
            out.append(float("nan"))
            continue
        try:
            out.append(float(str(i).strip()) if isinstance(i, str) else float(i))
        except (TypeError, ValueError):
            return None
    return out


_TYPE_WORDS = {
    "int": "not an integer",
    "float": "not a number",
    "bool": "not a boolean (true/false)",
    "date": "malformed date (expected YYYY-MM-DD)",
    "datetime": "malformed datetime (expected ISO 8601, e.g. 2024-03-01T08:30:00)",
    "list[str]": "malformed list (expected a|b|c or a JSON array)",
    "list[int]": "malformed list of integers (expected 1|2|3 or a JSON array)",
    "list[float]": "malformed list of numbers (expected 0.5|0.25 or a JSON array)",
}


def _native(s: pd.Series, ltype: str) -> bool:
    """Whether a typed (Parquet) column already holds its logical type, so it is kept exactly as it is."""
    if ltype == "str":
        return s.dtype == object or pd.api.types.is_string_dtype(s.dtype)
    if ltype == "int":
        return pd.api.types.is_integer_dtype(s.dtype)
    if ltype == "float":
        return pd.api.types.is_float_dtype(s.dtype)
    if ltype == "bool":
        return pd.api.types.is_bool_dtype(s.dtype)
    if ltype in ("date", "datetime"):
        if isinstance(s.dtype, pd.ArrowDtype):
            return pa_types.is_date(s.dtype.pyarrow_dtype) or pa_types.is_timestamp(s.dtype.pyarrow_dtype)
        return pd.api.types.is_datetime64_any_dtype(s.dtype) or (s.dtype == object and _holds_dates(s))
    return s.dtype == object and (len(s) == 0 or isinstance(_first_valid(s), list | tuple | np.ndarray))


@dataclass
class Typed:
    """A chunk after type checks: ``checked`` holds parsed values for the checks, ``output`` what to write."""

    chunk: Chunk
    checked: pd.DataFrame
    output: pd.DataFrame
    missing_columns: set[str]
    bad: np.ndarray  # rows with any row-level problem so far


def coerce_chunk(chunk: Chunk, rules: Rules, report: ValidationReport, index: int = 0) -> Typed:
    """Check presence, nulls and types of every column of a chunk; record problems in ``report``."""
    cols = _columns_of(chunk.table, chunk.frame.columns)
    nullable = rules.nullable(chunk.table)
    frame = chunk.frame
    n = len(frame)
    checked: dict[str, pd.Series] = {}
    output: dict[str, pd.Series] = {}
    missing: set[str] = set()
    bad = np.zeros(n, dtype=bool)
    for col, ltype in cols.items():
        if col not in frame.columns:
            missing.add(col)
            report.add(
                ProblemGroup(
                    chunk.table,
                    chunk.label,
                    chunk.name(col),
                    MISSING_COLUMN,
                    f"missing column '{chunk.name(col)}' (the file needs: "
                    f"{', '.join(chunk.name(c) for c in cols)})",
                )
            )
            empty = pd.Series([None] * n, index=frame.index, dtype=object)
            checked[col] = output[col] = empty
            continue
        s = frame[col]
        null = _is_null(s)
        if ltype.startswith("list[") and chunk.from_text:
            null = np.zeros(n, dtype=bool)  # an empty cell is an empty list
        if col not in nullable and null.any():
            report.add(
                _group(chunk, col, MISSING_VALUE, "missing value (the column is required)", null, index)
            )
            bad |= null
        typed, malformed = _coerce(s, ltype, _is_null(s) if ltype.startswith("list[") else null)
        if malformed.any():
            report.add(_group(chunk, col, MALFORMED, f"{_TYPE_WORDS[ltype]}: {{value}}", malformed, index, s))
            bad |= malformed
        checked[col] = typed
        output[col] = s if (not chunk.from_text and _native(s, ltype)) else typed
    return Typed(
        chunk, pd.DataFrame(checked, index=frame.index), pd.DataFrame(output, index=frame.index), missing, bad
    )


def _group(
    chunk: Chunk,
    column: str | None,
    kind: str,
    template: str,
    mask: np.ndarray,
    index: int,
    values: pd.Series | np.ndarray | None = None,
) -> ProblemGroup:
    pos = np.flatnonzero(mask)
    vals = None
    if values is not None:
        arr = (
            values.to_numpy(dtype=object)
            if isinstance(values, pd.Series)
            else np.asarray(values, dtype=object)
        )
        vals = arr[pos]
    shown = chunk.name(column) if column is not None else None
    return ProblemGroup(chunk.table, chunk.label, shown, kind, template, chunk.rows[pos], pos, vals, index)


# ------------------------------------------------------------------------------------------------------------
# Value checks: codes, ranges, consistency
# ------------------------------------------------------------------------------------------------------------


def check_values(typed: Typed, rules: Rules, report: ValidationReport, index: int = 0) -> None:
    """Known codes, ranges and within-row consistency of one typed chunk."""
    chunk, df, table = typed.chunk, typed.checked, typed.chunk.table
    ltypes = _columns_of(table, df.columns)
    usable = [c for c in df.columns if c not in typed.missing_columns]

    def add(column: str, kind: str, template: str, mask: np.ndarray, values: Any = None) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            report.add(_group(chunk, column, kind, template, mask, index, values))
            typed.bad |= mask

    for col, (allowed, what) in rules.codes(table).items():
        if col not in usable:
            continue
        if allowed is None:
            note = f"{what} codes not checked: no route network given"
            if note not in report.notes:
                report.notes.append(note)
            continue
        if ltypes[col].startswith("list["):
            cells = df[col]
            lengths = cells.map(lambda v: len(v) if isinstance(v, list) else 0).to_numpy()
            if lengths.sum() == 0:
                continue
            flat = cells.map(lambda v: v if isinstance(v, list) else []).explode()
            flat = flat[np.repeat(lengths > 0, np.maximum(lengths, 1))]
            flat_str = flat.astype("str")
            unknown = ~flat_str.isin(allowed)
            if unknown.any():
                first_bad = flat_str[unknown].groupby(level=0).first()
                mask = np.zeros(len(df), dtype=bool)
                pos = df.index.get_indexer(first_bad.index)
                mask[pos] = True
                vals = np.empty(len(df), dtype=object)
                vals[pos] = first_bad.to_numpy(dtype=object)
                add(
                    col,
                    UNKNOWN_CODE,
                    f"unknown {what} {{value}} in list{_allowed_hint(allowed, what)}",
                    mask,
                    vals,
                )
            continue
        s = df[col]
        present = s.notna().to_numpy(dtype=bool)
        unknown = present & ~s.isin(allowed).to_numpy(dtype=bool)
        add(col, UNKNOWN_CODE, f"unknown {what} {{value}}{_allowed_hint(allowed, what)}", unknown, s)

    for col in NON_NEGATIVE.get(table, ()):
        if col in usable:
            v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            with np.errstate(invalid="ignore"):
                add(col, OUT_OF_RANGE, "negative value {value} (must be >= 0)", v < 0, df[col])

    for col, ltype in ltypes.items():
        if ltype in ("date", "datetime") and col in usable:
            ts = df[col]
            too_old = (ts < EARLIEST_DATE).to_numpy(dtype=bool, na_value=False)
            too_new = (ts > rules.latest_date).to_numpy(dtype=bool, na_value=False)
            add(col, OUT_OF_RANGE, f"{ltype} {{value}} is before {EARLIEST_DATE.date()}", too_old, ts)
            add(
                col,
                OUT_OF_RANGE,
                f"{ltype} {{value}} is in the far future (after {rules.latest_date.date()})",
                too_new,
                ts,
            )

    _check_consistency(table, df, usable, rules, add)


def _allowed_hint(allowed: frozenset[str], what: str) -> str:
    if what == "airport":
        return " (not an airport of the route network)"
    if len(allowed) <= 25:
        return f" (allowed: {', '.join(sorted(allowed))})"
    return ""


def _check_consistency(
    table: str, df: pd.DataFrame, usable: list[str], rules: Rules, add: Callable[..., None]
) -> None:
    def both(*cols: str) -> bool:
        return all(c in usable for c in cols)

    if table == "members" and Col.BIRTH_YEAR in usable:
        y = pd.to_numeric(df[Col.BIRTH_YEAR], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(invalid="ignore"):
            add(
                Col.BIRTH_YEAR,
                OUT_OF_RANGE,
                f"birth year {{value}} outside 1900..{rules.now.year}",
                (y < 1900) | (y > rules.now.year),
                df[Col.BIRTH_YEAR],
            )
    if table in HISTORY_TIMES and rules.history_end is not None and HISTORY_TIMES[table] in usable:
        col = HISTORY_TIMES[table]
        late = (df[col] >= rules.history_end).to_numpy(dtype=bool, na_value=False)
        add(
            col,
            OUT_OF_RANGE,
            f"{col} {{value}} is past the end of the dataset's history (manifest as_of {rules.as_of}: "
            f"the history ends at {rules.history_end.isoformat()})",
            late,
            df[col],
        )
    if table == "flights":
        if both(Col.FLIGHT_DATE, Col.DEPARTURE_TIME):
            fdate, dep = df[Col.FLIGHT_DATE], df[Col.DEPARTURE_TIME]
            earliest = (dep + LOCAL_OFFSET_MIN).dt.normalize()
            latest = (dep + LOCAL_OFFSET_MAX).dt.normalize()
            wrong = ((fdate < earliest) | (fdate > latest)).to_numpy(dtype=bool, na_value=False)
            add(
                Col.FLIGHT_DATE,
                INCONSISTENT,
                "{value}",
                wrong,
                _explain(
                    wrong,
                    "flight_date {:%Y-%m-%d} is not the date of departure_time {:%Y-%m-%dT%H:%M:%S} "
                    "(UTC; the local date of departure is between {:%Y-%m-%d} and {:%Y-%m-%d} in any time "
                    "zone)",
                    fdate,
                    dep,
                    earliest,
                    latest,
                ),
            )
        if both(Col.ORIGIN, Col.DESTINATION):
            same = (df[Col.ORIGIN].astype("str") == df[Col.DESTINATION].astype("str")).to_numpy(dtype=bool)
            add(
                Col.DESTINATION,
                INCONSISTENT,
                "destination {value} is the same as the origin",
                same,
                df[Col.DESTINATION],
            )
        if both(Col.FARE_CLASS, Col.CABIN):
            fare_class = df[Col.FARE_CLASS].astype("str")
            expected = fare_class.map({k: str(v) for k, v in FARE_CLASS_CABIN.items()})
            cabin = df[Col.CABIN].astype("str")
            wrong = (expected.notna() & (expected != cabin) & cabin.isin(_values(Cabin))).to_numpy(dtype=bool)
            add(
                Col.FARE_CLASS,
                INCONSISTENT,
                "{value}",
                wrong,
                _explain(wrong, "fare class {} belongs to cabin {}, not {}", fare_class, expected, cabin),
            )
    if table == "offers" and both(Col.CATEGORY, Col.FAMILY):
        fam_of = {str(k): str(v) for k, v in CATEGORY_FAMILY.items()}
        if rules.allow_generic_offers:
            fam_of[GENERIC_CATEGORY] = GENERIC_FAMILY
        category = df[Col.CATEGORY].astype("str")
        expected = category.map(fam_of)
        family = df[Col.FAMILY].astype("str")
        known_family = family.isin(_values(OfferFamily) | {GENERIC_FAMILY})
        wrong = (expected.notna() & (expected != family) & known_family).to_numpy(dtype=bool)
        add(
            Col.FAMILY,
            INCONSISTENT,
            "{value}",
            wrong,
            _explain(wrong, "category {} belongs to family {}, not {}", category, expected, family),
        )
    if table == "offers" and both(Col.VALID_FROM, Col.VALID_TO):
        wrong = (df[Col.VALID_TO] < df[Col.VALID_FROM]).to_numpy(dtype=bool, na_value=False)
        add(Col.VALID_TO, INCONSISTENT, "valid_to {value} is before valid_from", wrong, df[Col.VALID_TO])
    if table in ("flights", "requests"):
        _check_booking(df, usable, add)
    if table == "requests":
        _check_slates(df, usable, add)
    if table == "member_aggregates" and both(Col.FFP_DATE, Col.LOAD_TIME):
        wrong = (df[Col.FFP_DATE] > df[Col.LOAD_TIME]).to_numpy(dtype=bool, na_value=False)
        add(Col.FFP_DATE, INCONSISTENT, "enrolment date {value} is after load_time", wrong, df[Col.FFP_DATE])


# The booking columns' ranges (inclusive).
_BOOKING_RANGES: dict[str, tuple[int, int]] = {
    Col.BOOKING_LEAD_DAYS: (0, MAX_BOOKING_LEAD_DAYS),
    Col.PARTY_SIZE: (1, MAX_PARTY_SIZE),
    Col.CHILDREN: (0, MAX_PARTY_SIZE),
    Col.STAY_NIGHTS: (0, MAX_STAY_NIGHTS),
}


def _check_booking(df: pd.DataFrame, usable: list[str], add: Callable[..., None]) -> None:
    """The booking columns (optional, nullable): in range, and no more children than passengers."""

    def num(col: str) -> np.ndarray:
        return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)

    for col, (lo, hi) in _BOOKING_RANGES.items():
        if col in usable:
            v = num(col)
            with np.errstate(invalid="ignore"):
                add(col, OUT_OF_RANGE, f"{col} {{value}} outside {lo}..{hi}", (v < lo) | (v > hi), df[col])
    if Col.CHILDREN in usable and Col.PARTY_SIZE in usable:
        with np.errstate(invalid="ignore"):
            wrong = num(Col.CHILDREN) > num(Col.PARTY_SIZE)
        add(
            Col.CHILDREN,
            INCONSISTENT,
            "{value}",
            wrong,
            _explain(
                wrong, "children {:.0f} is more than party_size {:.0f}", df[Col.CHILDREN], df[Col.PARTY_SIZE]
            ),
        )


def _check_slates(df: pd.DataFrame, usable: list[str], add: Callable[..., None]) -> None:
    """The request log's invariants (``recsys.requestlog.check_slate``), vectorised: one propensity per shown
    offer, each in (0, 1]; every shown offer is in the candidate set; no offer repeated."""

    def cells(col: str) -> tuple[np.ndarray, np.ndarray]:
        """(row of each item, items) of a parsed list column; malformed cells count as empty."""
        lists = df[col].map(lambda v: v if isinstance(v, list) else []).to_numpy(dtype=object)
        lengths = np.fromiter((len(v) for v in lists), dtype=np.int64, count=len(lists))
        flat = [x for v in lists for x in v]
        return np.repeat(np.arange(len(lists)), lengths), np.asarray(flat, dtype=object)

    def first_per_row(rows: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mask = np.zeros(len(df), dtype=bool)
        vals = np.empty(len(df), dtype=object)
        uniq, first = np.unique(rows, return_index=True)
        mask[uniq] = True
        vals[uniq] = values[first]
        return mask, vals

    shown_rows = shown = None
    if Col.SHOWN in usable:
        shown_rows, shown = cells(Col.SHOWN)
        keys = pd.Series(shown_rows.astype(str)) + "\x1f" + pd.Series(shown.astype(str))
        dup = keys.duplicated().to_numpy()
        if dup.any():
            mask, vals = first_per_row(shown_rows[dup], shown[dup])
            add(Col.SHOWN, INCONSISTENT, "offer {value} is shown twice in the same request", mask, vals)
        if Col.CANDIDATES in usable:
            cand_rows, cand = cells(Col.CANDIDATES)
            cand_keys = pd.Series(cand_rows.astype(str)) + "\x1f" + pd.Series(cand.astype(str))
            outside = ~isin(keys, pa.array(cand_keys.to_numpy(dtype=str)))
            if outside.any():
                mask, vals = first_per_row(shown_rows[outside], shown[outside])
                add(
                    Col.SHOWN,
                    INCONSISTENT,
                    "shown offer {value} is not in the request's candidate set",
                    mask,
                    vals,
                )
    if Col.PROPENSITIES in usable:
        p_rows, p_items = cells(Col.PROPENSITIES)
        p = p_items.astype(np.float64) if len(p_items) else np.zeros(0)
        missing = np.isnan(p)
        if missing.any():
            mask, _ = first_per_row(p_rows[missing], p[missing])
            add(Col.PROPENSITIES, MISSING_VALUE, "a shown offer has no propensity", mask)
        with np.errstate(invalid="ignore"):
            out = ~missing & ((p <= 0) | (p > 1))
        if out.any():
            mask, vals = first_per_row(p_rows[out], p[out])
            add(
                Col.PROPENSITIES,
                OUT_OF_RANGE,
                "propensity {value} is not a probability in (0, 1] (a shown offer had some chance)",
                mask,
                vals,
            )
        if shown_rows is not None:
            n_shown = np.bincount(shown_rows, minlength=len(df))
            n_p = np.bincount(p_rows, minlength=len(df))
            wrong = n_shown != n_p
            explain = np.empty(len(df), dtype=object)
            explain[wrong] = [
                _Raw(f"{a} propensities for {b} shown offers (one per shown offer, in slot order)")
                for a, b in zip(n_p[wrong], n_shown[wrong], strict=True)
            ]
            add(Col.PROPENSITIES, INCONSISTENT, "{value}", wrong, explain)


def _explain(mask: np.ndarray, text: str, *columns: pd.Series) -> np.ndarray:
    """Per-row explanations, built only for the rows in ``mask`` (the others stay None)."""
    out = np.full(len(mask), None, dtype=object)
    pos = np.flatnonzero(mask)
    if len(pos):
        parts = [c.to_numpy(dtype=object)[pos] for c in columns]
        out[pos] = [_Raw(text.format(*vals)) for vals in zip(*parts, strict=True)]
    return out


class _Raw(str):
    """A value shown as it is (not quoted) in a message."""

    def __repr__(self) -> str:
        return str(self)


# ------------------------------------------------------------------------------------------------------------
# Keys and references across chunks
# ------------------------------------------------------------------------------------------------------------


@dataclass
class KeyIndex:
    """The key values of one table across its chunks, to find duplicates and to resolve references."""

    table: str
    values: list[pd.Series] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    chunk_ids: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # the key column's name in each chunk's source

    def add(self, chunk: Chunk, values: pd.Series, chunk_id: int) -> None:
        key = ALL_TABLES[self.table].key
        self.names.append(chunk.name(key) if key is not None else "")
        self.values.append(values.astype("str").reset_index(drop=True))
        self.labels.append(chunk.label)
        self.rows.append(chunk.rows)
        self.chunk_ids.append(chunk_id)

    def ids(self) -> pa.Array:
        """The distinct key values (an Arrow array, for :func:`isin`)."""
        return _distinct(self.values)

    def check_duplicates(
        self, report: ValidationReport, exclude: dict[int, np.ndarray] | None = None
    ) -> None:
        """Every occurrence of a key after its first is a problem naming where the first one is."""
        key = ALL_TABLES[self.table].key
        if not self.values or key is None:
            return
        if not exclude:
            arrow = pa.chunked_array([_arrow_str(v) for v in self.values], type=pa.large_string())
            valid = len(arrow) - arrow.null_count
            if pc.count_distinct(arrow, mode="only_valid").as_py() == valid:
                return  # the usual case, decided in Arrow without building a pandas index of every key
        allv = pd.concat(self.values, ignore_index=True)
        sizes = [len(v) for v in self.values]
        which = np.repeat(np.arange(len(sizes)), sizes)
        local = np.concatenate([np.arange(s) for s in sizes]) if sizes else np.empty(0, dtype=np.int64)
        keep = np.ones(len(allv), dtype=bool)
        if exclude:
            for j, cid in enumerate(self.chunk_ids):
                if cid in exclude and len(exclude[cid]):
                    keep[np.flatnonzero(which == j)[exclude[cid]]] = False
        null = _is_null(allv)
        considered = keep & ~null
        dup = np.zeros(len(allv), dtype=bool)
        dup[considered] = allv[considered].duplicated(keep="first").to_numpy()
        if not dup.any():
            return
        involved = considered & isin(allv, allv[dup])
        first_pos = pd.Series(np.flatnonzero(involved), index=allv[involved].to_numpy(dtype=object))
        first_pos = first_pos[~first_pos.index.duplicated(keep="first")]
        for j in np.unique(which[dup]):
            sel = dup & (which == j)
            pos_local = local[sel]
            vals = allv[sel].to_numpy(dtype=object)
            firsts = first_pos.loc[vals].to_numpy()
            where = [f"{self.labels[which[f]]} row {self.rows[which[f]][local[f]]}" for f in firsts]
            shown = np.array(
                [_Raw(f"{v!r} (first at {w})") for v, w in zip(vals, where, strict=True)], dtype=object
            )
            name = self.names[j]
            report.add(
                ProblemGroup(
                    self.table,
                    self.labels[j],
                    name,
                    DUPLICATE_ID,
                    f"duplicated {name} {{value}}",
                    self.rows[j][pos_local],
                    pos_local,
                    shown,
                    self.chunk_ids[j],
                )
            )


def check_references(
    typed: Typed,
    targets: dict[str, pa.Array],
    report: ValidationReport,
    index: int = 0,
    rows_mask: np.ndarray | None = None,
) -> None:
    """Rows whose member/offer/flight id is not in the referenced table."""
    chunk, df = typed.chunk, typed.checked
    for (table, col), (target, what) in REFERENCES.items():
        if table != chunk.table or col in typed.missing_columns or col not in df.columns:
            continue
        ids = targets.get(target)
        if ids is None:
            continue
        if (table, col) in REFERENCES_IF_TARGET_NONEMPTY and len(ids) == 0:
            continue
        s = df[col]
        present = ~_is_null(s)
        unknown = present & ~isin(s, ids)
        if rows_mask is not None:
            unknown &= rows_mask
        if unknown.any():
            key = ALL_TABLES[target].key
            report.add(
                _group(
                    chunk,
                    col,
                    UNKNOWN_REFERENCE,
                    f"unknown {what} {{value}} (no such {key} in {target})",
                    unknown,
                    index,
                    s,
                )
            )
            typed.bad |= unknown


# ------------------------------------------------------------------------------------------------------------
# Whole sets of tables (import) and whole datasets (validate)
# ------------------------------------------------------------------------------------------------------------


@dataclass
class CheckedTables:
    """The result of :func:`check_tables`: typed chunks per table and the report."""

    typed: dict[str, list[Typed]]
    report: ValidationReport

    def rejected_positions(self) -> dict[tuple[str, int], np.ndarray]:
        return {(t, i): np.flatnonzero(tc.bad) for t, tcs in self.typed.items() for i, tc in enumerate(tcs)}


def check_tables(chunks: dict[str, list[Chunk]], rules: Rules, cascade: bool = False) -> CheckedTables:
    """Check in-memory tables (an import): types, values, duplicate ids and references between them.

    With ``cascade`` (``--skip-invalid``), rows rejected for their own problems are treated as absent when
    references are resolved, so a flight of a rejected member is rejected too (naming the unknown member).
    """
    report = ValidationReport()
    typed: dict[str, list[Typed]] = {}
    for table in _ordered(chunks):
        typed[table] = []
        for i, chunk in enumerate(chunks[table]):
            tc = coerce_chunk(chunk, rules, report, i)
            check_values(tc, rules, report, i)
            typed[table].append(tc)
    for table in _ordered(typed):
        key = ALL_TABLES[table].key
        index = KeyIndex(table)
        for i, tc in enumerate(typed[table]):
            if key is not None and key not in tc.missing_columns:
                index.add(tc.chunk, tc.checked[key], i)
        dup_report = ValidationReport()
        index.check_duplicates(dup_report)
        for g in dup_report.groups:
            typed[table][g.chunk].bad[g.positions] = True
        report.extend(dup_report)
    # References, in dependency order so that rejections cascade.
    targets: dict[str, pa.Array] = {}
    for table in _ordered(typed):
        for i, tc in enumerate(typed[table]):
            check_references(tc, targets, report, i)
        key = ALL_TABLES[table].key
        if key is not None:
            kept = [
                tc.checked[key][~tc.bad] if cascade else tc.checked[key]
                for tc in typed[table]
                if key not in tc.missing_columns
            ]
            targets[table] = _distinct(kept)
    return CheckedTables(typed, report)


def _ordered(tables: Iterable[str]) -> list[str]:
    present = set(tables)
    return [t for t in TABLE_ORDER if t in present] + sorted(present - set(TABLE_ORDER))


def dataset_airports(root: Path | str) -> frozenset[str] | None:
    """The airports a dataset was built on: its ``network/airports.parquet``, else the shipped network."""
    path = Path(root) / NETWORK_DIR / "airports.parquet"
    if path.is_file():
        try:
            frame = pd.read_parquet(path)
            col = "iata" if "iata" in frame.columns else frame.columns[0]
            return frozenset(frame[col].astype("str"))
        except Exception:  # unreadable: fall back to the shipped network
            pass
    return default_airports()


def default_airports() -> frozenset[str] | None:
    """IATA codes of the route network shipped with the project (``recsys.data.network``), or None."""
    try:
        from recsys.data.network import load_network
    except ImportError:
        return None
    try:
        return frozenset(load_network().airports["iata"].astype("str"))
    except (OSError, KeyError):
        return None


def validate_dataset(
    root: Path | str, airports: Collection[str] | None = None, now: pd.Timestamp | None = None
) -> ValidationReport:
    """Validate every table of a dataset directory, streaming partitioned tables part by part.

    ``airports``: the known airport codes; by default the dataset's own network table, else the shipped one.
    The manifest's ``import_format`` decides which columns an imported dataset may leave null.
    """
    root = Path(root)
    report = ValidationReport()
    if not root.is_dir():
        report.add(ProblemGroup("", str(root), None, MISSING_TABLE, "not a directory"))
        return report
    manifest: dict[str, Any] = {}
    try:
        manifest = read_manifest(root)
    except Exception as exc:  # missing or malformed manifest: still check the tables
        report.add(ProblemGroup("", MANIFEST, None, UNREADABLE, f"not a readable dataset manifest ({exc})"))
    airport_set = frozenset(airports) if airports is not None else dataset_airports(root)
    as_of = manifest.get("as_of")
    try:
        rules = Rules.for_format(
            manifest.get("import_format"), airport_set, now, str(as_of) if as_of is not None else None
        )
    except ValueError as exc:
        report.add(ProblemGroup("", MANIFEST, "as_of", MALFORMED, f"as_of {as_of!r} is not a date ({exc})"))
        rules = Rules.for_format(manifest.get("import_format"), airport_set, now)
    targets: dict[str, pa.Array] = {}
    for table in TABLE_ORDER:
        spec = ALL_TABLES[table]
        path = table_path(root, spec)
        if not path.exists():
            if table in TABLES:
                report.add(
                    ProblemGroup(
                        table,
                        path.name,
                        None,
                        MISSING_TABLE,
                        f"missing table '{table}' (expected {path.relative_to(root)})",
                    )
                )
            elif table in OPTIONAL_TABLES:
                continue
            continue
        files = sorted(path.glob("part-*.parquet")) if spec.partitioned else [path]
        keys = KeyIndex(table)
        for i, file in enumerate(files):
            label = file.relative_to(root).as_posix()
            try:
                frame = pd.read_parquet(file)
            except Exception as exc:
                report.add(ProblemGroup(table, label, None, UNREADABLE, f"cannot read Parquet file: {exc}"))
                continue
            chunk = Chunk.of(table, label, frame)
            tc = coerce_chunk(chunk, rules, report, i)
            check_values(tc, rules, report, i)
            check_references(tc, targets, report, i)
            if spec.key is not None and spec.key not in tc.missing_columns:
                keys.add(chunk, tc.checked[spec.key], i)
            del tc, chunk, frame
        keys.check_duplicates(report)
        if spec.key is not None:
            targets[table] = keys.ids()
    return report
