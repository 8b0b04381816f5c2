"""Importer of the airline customer-value (LRFMC) member format (``data/reference/air_data_lrfmc/``).

Two file shapes are recognised by their header:

* raw, 23 columns (``flight_head.csv``, ``flight_tail.csv``): one member per row with ``MEMBER_NO``, dates as
  ``m/d/yyyy``. Each row lands in ``members`` (what maps) and in ``member_aggregates`` (the LRFMC source
  fields).
* cleaned, 6 columns (``data_selected.csv``; UTF-8 BOM, CRLF, dates as ``yyyy/m/d``): no member id, so a
  stable id ``<file stem>-<data row, 6 digits>`` is synthesised (``data_selected-000001``); rows land in
  ``member_aggregates`` only (there is no member profile to land).

The mapping, and what cannot be mapped, is documented in ``docs/data_dictionary.md`` ("air-data format").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.importers._common import (
    CsvRead,
    ImportFailed,
    ImportResult,
    bad_row_groups,
    check_destination,
    missing_source,
    read_csv_text,
    write_dataset,
)
from recsys.data.validate import (
    DUPLICATE_ID,
    MALFORMED,
    MISSING_COLUMN,
    MISSING_VALUE,
    UNKNOWN_CODE,
    Chunk,
    ProblemGroup,
    Rules,
    ValidationReport,
    check_tables,
    default_airports,
)
from recsys.ids import row_ids
from recsys.schema import MEMBER_AGGREGATES, MEMBERS, Col, Tier

FORMAT = "air-data"

RAW_COLUMNS: tuple[str, ...] = (
    "MEMBER_NO", "FFP_DATE", "FIRST_FLIGHT_DATE", "GENDER", "FFP_TIER", "WORK_CITY", "WORK_PROVINCE",
    "WORK_COUNTRY", "AGE", "LOAD_TIME", "FLIGHT_COUNT", "BP_SUM", "SUM_YR_1", "SUM_YR_2", "SEG_KM_SUM",
    "LAST_FLIGHT_DATE", "LAST_TO_END", "AVG_INTERVAL", "MAX_INTERVAL", "EXCHANGE_COUNT", "avg_discount",
    "Points_Sum", "Point_NotFlight",
)  # fmt: skip
SELECTED_COLUMNS: tuple[str, ...] = (
    "FFP_DATE",
    "LOAD_TIME",
    "FLIGHT_COUNT",
    "SEG_KM_SUM",
    "LAST_TO_END",
    "avg_discount",
)
RAW_DATE_FORMAT = "%m/%d/%Y"
SELECTED_DATE_FORMAT = "%Y/%m/%d"

# The programme's card tiers 4 < 5 < 6 are the three lowest of the four schema tiers (Basic, Silver, Gold):
# the codes are consecutive, 4 is by far the most common (the bulk of members), and no code is left for
# Platinum, which the domain notes put at about 1 in 5,000 members. Documented in the data dictionary.
AIR_DATA_TIERS: dict[str, Tier] = {"4": Tier.BASIC, "5": Tier.SILVER, "6": Tier.GOLD}
GENDERS: dict[str, str] = {"male": "M", "female": "F"}

# Source column of each member_aggregates column (the LRFMC fields, unchanged apart from the name and type).
AGGREGATE_SOURCE: dict[str, str] = {
    Col.MEMBER_ID: "MEMBER_NO",
    Col.FFP_DATE: "FFP_DATE",
    Col.LOAD_TIME: "LOAD_TIME",
    Col.FLIGHT_COUNT: "FLIGHT_COUNT",
    Col.SEG_KM_SUM: "SEG_KM_SUM",
    Col.LAST_TO_END: "LAST_TO_END",
    Col.AVG_DISCOUNT: "avg_discount",
}
MEMBER_SOURCE: dict[str, str] = {
    Col.MEMBER_ID: "MEMBER_NO",
    Col.ENROL_DATE: "FFP_DATE",
    Col.TIER: "FFP_TIER",
    Col.GENDER: "GENDER",
    Col.BIRTH_YEAR: "AGE",
    Col.HOME_AIRPORT: "WORK_CITY",
    Col.TIME_ZONE: "WORK_COUNTRY",
}

# Countries with one time zone (ISO 3166 code -> IANA zone); China keeps one official zone (Beijing time).
COUNTRY_TIME_ZONES: dict[str, str] = {
    "CN": "Asia/Shanghai", "HK": "Asia/Hong_Kong", "MO": "Asia/Macau", "TW": "Asia/Taipei",
    "JP": "Asia/Tokyo", "KR": "Asia/Seoul", "KP": "Asia/Pyongyang", "SG": "Asia/Singapore",
    "TH": "Asia/Bangkok", "PH": "Asia/Manila", "VN": "Asia/Ho_Chi_Minh", "IN": "Asia/Kolkata",
    "PK": "Asia/Karachi", "BD": "Asia/Dhaka", "NP": "Asia/Kathmandu", "LK": "Asia/Colombo",
    "MM": "Asia/Yangon", "KH": "Asia/Phnom_Penh", "LA": "Asia/Vientiane", "AE": "Asia/Dubai",
    "QA": "Asia/Qatar", "SA": "Asia/Riyadh", "IL": "Asia/Jerusalem", "TR": "Europe/Istanbul",
    "GB": "Europe/London", "IE": "Europe/Dublin", "FR": "Europe/Paris", "DE": "Europe/Berlin",
    "IT": "Europe/Rome", "ES": "Europe/Madrid", "NL": "Europe/Amsterdam", "BE": "Europe/Brussels",
    "CH": "Europe/Zurich", "AT": "Europe/Vienna", "SE": "Europe/Stockholm", "NO": "Europe/Oslo",
    "DK": "Europe/Copenhagen", "FI": "Europe/Helsinki", "PL": "Europe/Warsaw", "CZ": "Europe/Prague",
    "HU": "Europe/Budapest", "GR": "Europe/Athens", "BY": "Europe/Minsk", "NZ": "Pacific/Auckland",
    "ZA": "Africa/Johannesburg", "EG": "Africa/Cairo", "ET": "Africa/Addis_Ababa", "KE": "Africa/Nairobi",
    "NG": "Africa/Lagos",
}  # fmt: skip

# Spellings of work cities that differ from the network's city names (pinyin forms, OpenFlights typos).
CITY_ALIASES: dict[str, str] = {
    "wulumuqi": "urumqi",
    "changsha": "changcha",
    "ningbo": "ninbo",
    "xian": "xian",
    "haerbin": "harbin",
    "huhehaote": "hohhot",
    "lasa": "lhasa",
    "kashen": "kashi",
    "xianggang": "hongkong",
    "hk": "hongkong",
    "aomen": "macau",
    "zhongqing": "chongqing",
    "shamen": "xiamen",
    "kuerle": "korla",
    "hetian": "hotan",
    "kelamayi": "karamay",
}


def _norm_city(text: pd.Series) -> pd.Series:
    return text.astype("str").str.lower().str.replace(r"[^a-z]", "", regex=True)


@dataclass(frozen=True)
class CityIndex:
    """Work city -> the busiest network airport of that city, and the airport's time zone."""

    airport_of: dict[str, str]
    tz_of: dict[str, str]

    @classmethod
    def from_network(cls) -> CityIndex | None:
        try:
            from recsys.data.network import load_network
        except ImportError:
            return None
        airports = load_network().airports
        ranked = airports.sort_values(["hub_size", "iata"], ascending=[False, True])
        cities = _norm_city(ranked["city"])
        airport_of: dict[str, str] = {}
        for city, iata in zip(cities, ranked["iata"], strict=True):
            airport_of.setdefault(city, str(iata))
        return cls(
            airport_of, dict(zip(airports["iata"].astype("str"), airports["tz"].astype("str"), strict=True))
        )

    def airports(self, city: pd.Series) -> pd.Series:
        """The airport of each work city, or NaN: exact (normalised) city names only, no nearest airport."""
        norm = _norm_city(city)
        found = norm.map(lambda c: CITY_ALIASES.get(c, c)).map(self.airport_of)
        # "changchunshi", "changshaxian": a trailing "shi" (city) or "xian" (county) is dropped when needed
        stripped = norm.str.replace(r"(shi|xian)$", "", regex=True).map(lambda c: CITY_ALIASES.get(c, c))
        return found.fillna(stripped.map(self.airport_of))


def import_air_data(
    sources: list[Path],
    dest: Path,
    *,
    skip_invalid: bool = False,
    overwrite: bool = False,
    airports: frozenset[str] | None = None,
) -> ImportResult:
    """Import raw (23-column) and/or cleaned (6-column) air-data files; see the module docstring."""
    files = _source_files(sources)
    check_destination(sources, dest, overwrite)
    city_index = CityIndex.from_network()
    members: list[Chunk] = []
    aggregates: list[Chunk] = []
    report = ValidationReport()
    notes: list[str] = []
    for path in files:
        read = read_csv_text(path)
        for group in bad_row_groups(MEMBERS.name, path.name, read):
            report.add(group)
        kind = _kind(read)
        if kind == "raw":
            m, a = _raw_chunks(path, read, city_index, report)
            members.append(m)
            aggregates.append(a)
        else:
            aggregates.append(_selected_chunk(path, read, report))
    if city_index is None:
        notes.append("no route network available: home_airport left empty")
    rules = Rules.for_format(FORMAT, airports if airports is not None else default_airports())
    tables: dict[str, list[Chunk]] = {MEMBER_AGGREGATES.name: aggregates}
    if members:
        tables[MEMBERS.name] = members
    checked = check_tables(tables, rules, cascade=skip_invalid)
    _merge_row_verdicts(checked.typed.get(MEMBERS.name, []), checked.typed[MEMBER_AGGREGATES.name])
    _drop_repeated(checked.report)
    loads = [tc.checked[Col.LOAD_TIME][~tc.bad] for tc in checked.typed[MEMBER_AGGREGATES.name]]
    last_load = max((s.max() for s in loads if len(s) and s.notna().any()), default=None)
    manifest_extra: dict[str, object] = {"air_data_tiers": {k: str(v) for k, v in AIR_DATA_TIERS.items()}}
    if last_load is not None:
        manifest_extra["as_of"] = pd.Timestamp(last_load).date().isoformat()  # last day observed
    result = write_dataset(
        checked,
        dest=dest,
        overwrite=overwrite,
        skip_invalid=skip_invalid,
        import_format=FORMAT,
        sources=files,
        extra_report=report,
        manifest_extra=manifest_extra,
    )
    result.notes.extend(notes)
    return result


def _source_files(sources: list[Path]) -> list[Path]:
    files: list[Path] = []
    for src in sources:
        if not src.exists():
            raise missing_source(src)
        if src.is_dir():
            found = [p for p in sorted(src.glob("*.csv")) if _kind_of_path(p) is not None]
            if not found:
                raise ImportFailed(f"{src}: no air-data CSV files (23-column raw or 6-column cleaned) found")
            files.extend(found)
        else:
            if _kind_of_path(src) is None:
                raise ImportFailed(
                    f"{src.name}: not an air-data file — the header must be the 23 raw columns (MEMBER_NO, "
                    f"FFP_DATE, ...) or the 6 cleaned columns ({', '.join(SELECTED_COLUMNS)})"
                )
            files.append(src)
    kinds = {f.name: _kind_of_path(f) for f in files}
    raw = [n for n, k in kinds.items() if k == "raw"]
    cleaned = [n for n, k in kinds.items() if k == "selected"]
    if raw and cleaned:
        raise ImportFailed(
            f"{', '.join(raw)} (raw, with member ids) and {', '.join(cleaned)} (cleaned, without ids) "
            "describe the same members and cannot be linked; import them into separate datasets "
            "(pass the files)"
        )
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise ImportFailed(
            f"two sources have the same file name ({', '.join(names)}); rows could not be told apart"
        )
    return files


def _header(path: Path) -> list[str]:
    with path.open("r", encoding="utf-8-sig", newline="") as fh:
        first = fh.readline()
    return [h.strip() for h in first.strip("\r\n").split(",")]


def _kind_of_path(path: Path) -> str | None:
    try:
        header = _header(path)
    except (OSError, UnicodeDecodeError):
        return None
    if "MEMBER_NO" in header:
        return "raw"
    if set(header) == set(SELECTED_COLUMNS):
        return "selected"
    return None


def _kind(read: CsvRead) -> str:
    return "raw" if "MEMBER_NO" in read.header else "selected"


def _dates(
    frame: pd.DataFrame,
    column: str,
    fmt: str,
    label: str,
    rows: np.ndarray,
    report: ValidationReport,
    excluded: np.ndarray,
) -> pd.Series:
    text = frame[column].astype("str").str.strip()
    parsed = pd.to_datetime(text, format=fmt, errors="coerce")
    malformed = (text != "").to_numpy() & parsed.isna().to_numpy()
    shown = fmt.replace("%m", "m").replace("%d", "d").replace("%Y", "yyyy")
    _flag_rows(
        report,
        excluded,
        malformed,
        label,
        column,
        MALFORMED,
        f"malformed date {{value}} (expected {shown})",
        text,
        rows,
    )
    return parsed


def _flag_rows(
    report: ValidationReport,
    excluded: np.ndarray,
    mask: np.ndarray,
    label: str,
    column: str,
    kind: str,
    template: str,
    text: pd.Series,
    rows: np.ndarray,
) -> None:
    """Report the member rows ``mask`` marks as one problem group (their source text as the values) and
    exclude them from the import."""
    if not mask.any():
        return
    pos = np.flatnonzero(mask)
    report.add(
        ProblemGroup(
            MEMBERS.name,
            label,
            column,
            kind,
            template,
            rows[pos],
            np.full(len(pos), -1),
            text.to_numpy(dtype=object)[pos],
        )
    )
    excluded |= mask


def _aggregates(frame: pd.DataFrame, member_id: pd.Series, ffp: pd.Series, load: pd.Series) -> pd.DataFrame:
    """The member_aggregates rows of a chunk: parsed ids and dates, the other LRFMC fields as read."""
    return pd.DataFrame(
        {
            Col.MEMBER_ID: member_id,
            Col.FFP_DATE: ffp,
            Col.LOAD_TIME: load,
            **{
                c: frame[src]
                for c, src in AGGREGATE_SOURCE.items()
                if c not in (Col.MEMBER_ID, Col.FFP_DATE, Col.LOAD_TIME)
            },
        }
    )


def _missing_columns(read: CsvRead, expected: tuple[str, ...], label: str, report: ValidationReport) -> bool:
    missing = [c for c in expected if c not in read.header]
    for c in missing:
        report.add(
            ProblemGroup(
                MEMBERS.name,
                label,
                c,
                MISSING_COLUMN,
                f"missing column '{c}' (an air-data file needs: {', '.join(expected)})",
            )
        )
    return bool(missing)


def _raw_chunks(
    path: Path, read: CsvRead, city_index: CityIndex | None, report: ValidationReport
) -> tuple[Chunk, Chunk]:
    label = path.name
    frame, rows = read.frame, read.rows
    if _missing_columns(read, RAW_COLUMNS, label, report):
        frame = frame.reindex(columns=list(RAW_COLUMNS), fill_value="")
    excluded = np.zeros(len(frame), dtype=bool)
    ffp = _dates(frame, "FFP_DATE", RAW_DATE_FORMAT, label, rows, report, excluded)
    load = _dates(frame, "LOAD_TIME", RAW_DATE_FORMAT, label, rows, report, excluded)

    tier_code = frame["FFP_TIER"].astype("str").str.strip().str.replace(r"\.0$", "", regex=True)
    unknown_tier = (tier_code != "").to_numpy() & ~tier_code.isin(AIR_DATA_TIERS).to_numpy()
    _flag_rows(
        report,
        excluded,
        unknown_tier,
        label,
        "FFP_TIER",
        UNKNOWN_CODE,
        "unknown card tier {value} (known: 4, 5, 6)",
        tier_code,
        rows,
    )
    tier = tier_code.map({k: str(v) for k, v in AIR_DATA_TIERS.items()})

    age_text = frame["AGE"].astype("str").str.strip()
    age = pd.to_numeric(age_text, errors="coerce")
    bad_age = (age_text != "").to_numpy() & (age.isna() | (age < 0) | (age > 130)).to_numpy()
    _flag_rows(
        report, excluded, bad_age, label, "AGE", MALFORMED, "not an age in years: {value}", age_text, rows
    )
    birth_year = (load.dt.year - age.round()).astype("Int64").where(~bad_age)

    gender = frame["GENDER"].astype("str").str.strip().str.lower().map(GENDERS)
    city = frame["WORK_CITY"].astype("str").str.strip()
    country = frame["WORK_COUNTRY"].astype("str").str.strip().str.upper()
    if city_index is not None:
        home = city_index.airports(city.where(~city.isin(["", "."]), ""))
        tz = home.map(city_index.tz_of)
    else:
        home = pd.Series([None] * len(frame), index=frame.index, dtype=object)
        tz = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    tz = tz.fillna(country.map(COUNTRY_TIME_ZONES))
    member_id = frame["MEMBER_NO"].astype("str").str.strip()
    keep = ~excluded
    members = pd.DataFrame(
        {
            Col.MEMBER_ID: member_id,
            Col.ENROL_DATE: ffp,
            Col.TIER: tier,
            Col.HOME_AIRPORT: home,
            Col.TIME_ZONE: tz,
            Col.MILES_BALANCE: pd.Series([None] * len(frame), index=frame.index, dtype=object),
            Col.BIRTH_YEAR: birth_year,
            Col.GENDER: gender,
            Col.CHANNEL: pd.Series([None] * len(frame), index=frame.index, dtype=object),
        }
    )[keep]
    aggregates = _aggregates(frame, member_id, ffp, load)[keep]
    kept_rows = rows[keep]
    m = Chunk(
        MEMBERS.name,
        label,
        members.reset_index(drop=True),
        kept_rows,
        from_text=True,
        display=dict(MEMBER_SOURCE),
    )
    a = Chunk(
        MEMBER_AGGREGATES.name,
        label,
        aggregates.reset_index(drop=True),
        kept_rows,
        from_text=True,
        display=dict(AGGREGATE_SOURCE),
    )
    return m, a


def _selected_chunk(path: Path, read: CsvRead, report: ValidationReport) -> Chunk:
    label = path.name
    frame, rows = read.frame, read.rows
    if _missing_columns(read, SELECTED_COLUMNS, label, report):
        frame = frame.reindex(columns=list(SELECTED_COLUMNS), fill_value="")
    excluded = np.zeros(len(frame), dtype=bool)
    ffp = _dates(frame, "FFP_DATE", SELECTED_DATE_FORMAT, label, rows, report, excluded)
    load = _dates(frame, "LOAD_TIME", SELECTED_DATE_FORMAT, label, rows, report, excluded)
    ids = pd.Series(row_ids(path, rows), index=frame.index, dtype="str")
    aggregates = _aggregates(frame, ids, ffp, load)[~excluded]
    display = {c: s for c, s in AGGREGATE_SOURCE.items() if c != Col.MEMBER_ID}
    return Chunk(
        MEMBER_AGGREGATES.name,
        label,
        aggregates.reset_index(drop=True),
        rows[~excluded],
        from_text=True,
        display=display,
    )


def _merge_row_verdicts(members: list, aggregates: list) -> None:
    """A source row lands whole or not at all: a row rejected in one table is rejected in the other."""
    by_label = {tc.chunk.label: tc for tc in members}
    for agg in aggregates:
        mem = by_label.get(agg.chunk.label)
        if mem is not None and len(mem.bad) == len(agg.bad):
            both = mem.bad | agg.bad
            mem.bad[:] = both
            agg.bad[:] = both


def _drop_repeated(report: ValidationReport) -> None:
    """Both tables come from the same source cells: report each (file, row, column, kind) once."""
    seen: set[tuple[str, str | None, str, tuple[int, ...]]] = set()
    kept = []
    for g in report.groups:
        if g.kind in (DUPLICATE_ID, MISSING_VALUE, MALFORMED) or g.table_level:
            key = (g.file, g.column, g.kind, tuple(int(r) for r in g.rows))
            if key in seen:
                continue
            seen.add(key)
        kept.append(g)
    report.groups[:] = kept
