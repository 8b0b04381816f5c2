"""``recsys data describe``: a plain-text summary showing at a glance whether a dataset is plausible.

Sections: size, tier distribution, flights per member per year (never / <1 / 1-3 / 4-7 / 8+), cabin mix, top
routes, special-meal share, offers by family and acceptance rates (click / purchase / dismiss per impression)
per offer family. Works on generated and imported datasets; a missing or empty table prints "(no data)" for
its sections. Partitioned tables are read part by part, so a million-member world is described in bounded
memory.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data.layout import has_table, iter_table, read_manifest, read_table
from recsys.schema import (
    FLIGHTS,
    INTERACTIONS,
    MEMBER_AGGREGATES,
    MEMBERS,
    OFFERS,
    SPECIAL_MEALS,
    TIER_ORDER,
    Col,
    EventType,
)

NO_DATA = "  (no data)"
FREQUENCY_BANDS: tuple[tuple[str, float, float], ...] = (
    ("never", 0.0, 0.0),
    ("<1 / year", 0.0, 1.0),
    ("1-3 / year", 1.0, 4.0),
    ("4-7 / year", 4.0, 8.0),
    ("8+ / year", 8.0, np.inf),
)
HISTORY_YEARS = 3.0
AGGREGATE_WINDOW_YEARS = 2.0  # the airline customer-value data counts flights over two years before LOAD_TIME


def _pct(x: float) -> str:
    return f"{100.0 * x:6.2f} %"


def _section(title: str) -> list[str]:
    return ["", title, "-" * len(title)]


def _datetimes(values: pd.Series) -> pd.Series:
    """A date/datetime column (Arrow date32, datetime64, date objects or ISO strings) as datetime64."""
    try:
        arr = pa.Array.from_pandas(values)
        if pa.types.is_date(arr.type) or pa.types.is_timestamp(arr.type):
            out = pc.cast(arr, pa.timestamp("s"), safe=False).to_pandas()
            return pd.Series(pd.to_datetime(out), index=values.index)
    except (pa.ArrowException, TypeError, ValueError):
        pass
    return pd.Series(pd.to_datetime(values.astype("string"), errors="coerce"), index=values.index)


def _value_counts(values: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in values.fillna("?").value_counts().items()}


def _as_of(manifest: dict[str, object], last_flight: pd.Timestamp | None) -> pd.Timestamp | None:
    value = manifest.get("as_of")
    if isinstance(value, str):
        try:
            return pd.Timestamp(value)
        except ValueError:
            pass
    return last_flight


def frequency_bands(
    flights_per_member: pd.Series,
    enrol: pd.Series | None,
    as_of: pd.Timestamp | None,
    years: float = HISTORY_YEARS,
) -> dict[str, float]:
    """Share of members per flying-frequency band.

    ``flights_per_member`` holds every member's flight count over the last ``years`` years before ``as_of``
    (0 for members who never flew); the annual rate divides by the years of membership within that window
    (at least 0.25) when enrolment dates are known.
    """
    counts = flights_per_member.to_numpy(dtype=float)
    span = np.full(len(counts), years)
    if enrol is not None and as_of is not None:
        start = as_of + pd.Timedelta(days=1) - pd.Timedelta(days=round(365.25 * years))
        e = _datetimes(enrol).to_numpy("datetime64[ns]")
        e = np.where(np.isnat(e), np.datetime64(start.to_datetime64(), "ns"), e)
        from_ = np.maximum(e, np.datetime64(start.to_datetime64(), "ns"))
        end = np.datetime64((as_of + pd.Timedelta(days=1)).to_datetime64(), "ns")
        span = np.clip((end - from_) / np.timedelta64(1, "D") / 365.25, 0.25, years)
    rate = counts / span
    out = {}
    for name, lo, hi in FREQUENCY_BANDS:
        sel = counts == 0 if name == "never" else (counts > 0) & (rate >= lo) & (rate < hi)
        out[name] = float(sel.mean()) if len(counts) else 0.0
    return out


def describe(dataset_dir: Path | str, top_routes: int = 10) -> str:
    """A multi-section text description of the dataset in ``dataset_dir``."""
    root = Path(dataset_dir)
    manifest = read_manifest(root)
    lines = [f"Dataset {root}"]
    source = manifest.get("generator") or manifest.get("import_format") or manifest.get("source") or "unknown"
    lines.append(f"  source: {source}" + (f", seed {manifest['seed']}" if "seed" in manifest else ""))
    if "as_of" in manifest:
        lines.append(f"  as of: {manifest['as_of']}")
    if "fingerprint" in manifest:
        lines.append(f"  fingerprint: {manifest['fingerprint']}")
    counts = manifest.get("row_counts") or {}
    if isinstance(counts, dict) and counts:
        lines.append("  rows: " + ", ".join(f"{k} {int(v):,}" for k, v in sorted(counts.items())))

    # members and tiers
    members = read_table(root, MEMBERS.name) if has_table(root, MEMBERS.name) else pd.DataFrame()
    lines += _section("Tier distribution")
    if len(members) and Col.TIER in members:
        tiers = members[Col.TIER].astype("string").fillna("(unknown)")
        dist = tiers.value_counts()
        order = [t.value for t in TIER_ORDER] + sorted(set(dist.index) - {t.value for t in TIER_ORDER})
        for t in order:
            c = int(dist.get(t, 0))
            lines.append(f"  {t:<10} {c:>10,}  {_pct(c / len(tiers))}")
        elite = float(tiers.isin([t.value for t in TIER_ORDER[1:]]).mean())
        lines.append(f"  silver and above: {_pct(elite).strip()}")
    else:
        lines.append(NO_DATA)

    # flights: one pass over the parts, aggregating each part with vectorised group-bys
    member_counts: list[pd.Series] = []
    route_counts: list[pd.Series] = []
    cabins: Counter[str] = Counter()
    meals: Counter[str] = Counter()
    n_flights = 0
    km_total = 0.0
    last_flight: pd.Timestamp | None = None
    if has_table(root, FLIGHTS.name):
        cols = [Col.MEMBER_ID, Col.FLIGHT_DATE, Col.CABIN, Col.ORIGIN, Col.DESTINATION, Col.MEAL_CODE]
        cols.append(Col.DISTANCE_KM)
        manifest_as_of = manifest.get("as_of")
        start = None
        if isinstance(manifest_as_of, str):
            with contextlib.suppress(ValueError):
                start = (
                    pd.Timestamp(manifest_as_of) + pd.Timedelta(days=1) - pd.Timedelta(days=round(365.25 * 3))
                )
        for part in iter_table(root, FLIGHTS.name):
            part = part[[c for c in cols if c in part.columns]]
            if not len(part):
                continue
            if Col.FLIGHT_DATE in part:
                d = _datetimes(part[Col.FLIGHT_DATE])
                if start is not None:
                    keep = (d >= start).to_numpy()
                    part, d = part[keep], d[keep]
                mx = d.max()
                if pd.notna(mx) and (last_flight is None or mx > last_flight):
                    last_flight = mx
            n_flights += len(part)
            member_counts.append(part[Col.MEMBER_ID].value_counts())
            if Col.CABIN in part:
                cabins.update(_value_counts(part[Col.CABIN]))
            if Col.ORIGIN in part and Col.DESTINATION in part:
                od = part[[Col.ORIGIN, Col.DESTINATION]].fillna("?")
                route_counts.append(od.groupby([Col.ORIGIN, Col.DESTINATION]).size())
            if Col.MEAL_CODE in part:
                meals.update(_value_counts(part[Col.MEAL_CODE]))
            if Col.DISTANCE_KM in part:
                km_total += float(pd.to_numeric(part[Col.DISTANCE_KM], errors="coerce").sum())
    per_member = (
        pd.concat(member_counts).groupby(level=0).sum() if member_counts else pd.Series(dtype="int64")
    )
    routes: dict[str, int] = {}
    if route_counts:
        rc = pd.concat(route_counts).groupby(level=[0, 1]).sum()
        routes = {f"{o}-{d}": int(c) for (o, d), c in rc.items()}

    lines += _section("Flights per member per year")
    if len(members) and n_flights:
        as_of = _as_of(manifest, last_flight)
        ids = members[Col.MEMBER_ID].astype(object)
        fpm = pd.Series(per_member.reindex(ids).fillna(0).to_numpy(dtype=float))
        enrol = members.get(Col.ENROL_DATE)
        bands = frequency_bands(fpm, enrol, as_of)
        flyers = 1.0 - bands["never"]
        for name, share in bands.items():
            of_flyers = (
                f"   ({_pct(share / flyers).strip()} of flyers)" if name != "never" and flyers > 0 else ""
            )
            lines.append(f"  {name:<12} {_pct(share)}{of_flyers}")
        lines.append(
            f"  flights: {n_flights:,}; per flyer: {n_flights / max(1, int((fpm > 0).sum())):.1f}; "
            f"mean distance {km_total / n_flights:,.0f} km"
        )
    elif n_flights:
        lines.append(f"  flights: {n_flights:,} (no members table to relate them to)")
    elif has_table(root, MEMBER_AGGREGATES.name):
        lines += _bands_from_aggregates(root)
    else:
        lines.append(NO_DATA)

    lines += _section("Cabin mix")
    if cabins:
        total = sum(cabins.values())
        for cab in ["F", "C", "W", "Y", *sorted(set(cabins) - {"F", "C", "W", "Y"})]:
            if cab in cabins:
                lines.append(f"  {cab:<3} {cabins[cab]:>12,}  {_pct(cabins[cab] / total)}")
    else:
        lines.append(NO_DATA)

    lines += _section(f"Top {top_routes} routes")
    if routes:
        for pair, c in sorted(routes.items(), key=lambda kv: (-kv[1], kv[0]))[:top_routes]:
            lines.append(f"  {pair!s:<10} {c:>10,}")
    else:
        lines.append(NO_DATA)

    lines += _section("Meals")
    if meals:
        total = sum(meals.values())
        special = {m.value for m in SPECIAL_MEALS}
        sp = sum(c for k, c in meals.items() if k in special)
        lines.append(f"  special-meal share of flights: {_pct(sp / total).strip()}")
        top = sorted(((k, c) for k, c in meals.items() if k in special), key=lambda kv: -kv[1])[:5]
        if top:
            lines.append("  top special meals: " + ", ".join(f"{k} {c:,}" for k, c in top))
    else:
        lines.append(NO_DATA)

    lines += _describe_offers_and_acceptance(root)
    return "\n".join(lines) + "\n"


def _bands_from_aggregates(root: Path, window_years: float = AGGREGATE_WINDOW_YEARS) -> list[str]:
    """Frequency bands from per-member flight counts over the aggregates' observation window."""
    agg = read_table(root, MEMBER_AGGREGATES.name, columns=[Col.FFP_DATE, Col.LOAD_TIME, Col.FLIGHT_COUNT])
    if not len(agg):
        return [NO_DATA]
    ffp = pd.to_datetime(agg[Col.FFP_DATE].astype("string"), errors="coerce")
    load = pd.to_datetime(agg[Col.LOAD_TIME].astype("string"), errors="coerce")
    years = ((load - ffp).dt.days / 365.25).clip(lower=0.25, upper=window_years).fillna(window_years)
    counts = pd.to_numeric(agg[Col.FLIGHT_COUNT], errors="coerce").fillna(0).to_numpy(dtype=float)
    rate = counts / years.to_numpy(dtype=float)
    lines = [f"  (from member aggregates: flight counts over a {window_years:g}-year observation window)"]
    for name, lo, hi in FREQUENCY_BANDS:
        sel = counts == 0 if name == "never" else (counts > 0) & (rate >= lo) & (rate < hi)
        lines.append(f"  {name:<12} {_pct(float(sel.mean()))}")
    lines.append(f"  flights: {int(counts.sum()):,}; per member: {counts.mean():.1f}")
    return lines


def _describe_offers_and_acceptance(root: Path) -> list[str]:
    lines = _section("Offers")
    offers = read_table(root, OFFERS.name) if has_table(root, OFFERS.name) else pd.DataFrame()
    family_of: dict[str, str] = {}
    if len(offers) and Col.FAMILY in offers:
        family_of = dict(
            zip(offers[Col.OFFER_ID].astype("string"), offers[Col.FAMILY].astype("string"), strict=True)
        )
        by_family = offers.groupby(offers[Col.FAMILY].astype("string"))
        for fam, grp in by_family:
            cats = grp[Col.CATEGORY].nunique() if Col.CATEGORY in grp else 0
            lines.append(f"  {fam!s:<11} {len(grp):>4} offers, {cats} categories")
        lines.append(f"  total       {len(offers):>4} offers")
    else:
        lines.append(NO_DATA)

    lines += _section("Acceptance per offer family (per impression)")
    counts: Counter[tuple[str, str]] = Counter()
    if has_table(root, INTERACTIONS.name):
        for part in iter_table(root, INTERACTIONS.name, columns=[Col.OFFER_ID, Col.EVENT_TYPE]):
            if not len(part):
                continue
            grouped = part.fillna("?").groupby([Col.OFFER_ID, Col.EVENT_TYPE]).size()
            for (offer, event), c in grouped.items():
                counts[(family_of.get(str(offer), "(unknown offer)"), str(event))] += int(c)
    families = sorted({f for f, _ in counts})
    if families:
        head = f"  {'family':<16}{'impressions':>12}{'click':>9}{'purchase':>10}{'dismiss':>9}"
        lines.append(head)
        for fam in [*families, "all"]:

            def n(ev: EventType, fam: str = fam) -> int:
                return sum(c for (f, e), c in counts.items() if e == ev.value and (fam == "all" or f == fam))

            imp = n(EventType.IMPRESSION)
            rates = [
                n(ev) / imp if imp else float("nan")
                for ev in (EventType.CLICK, EventType.PURCHASE, EventType.DISMISS)
            ]
            lines.append(
                f"  {fam:<16}{imp:>12,}"
                + "".join(f"{100 * r:>8.2f}%" for r in rates[:1])
                + f"{100 * rates[1]:>9.2f}%{100 * rates[2]:>8.2f}%"
            )
    else:
        lines.append(NO_DATA)
    return lines
