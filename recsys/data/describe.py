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

from recsys.data.layout import NETWORK_DIR, has_table, iter_table, read_manifest, read_table
from recsys.data.network import COUNTRY, IATA, load_network
from recsys.data.trips import connecting_legs
from recsys.schema import (
    FLIGHTS,
    INTERACTIONS,
    MEMBER_AGGREGATES,
    MEMBERS,
    OFFERS,
    REDEMPTIONS,
    SPECIAL_MEALS,
    TIER_ORDER,
    Col,
    EventType,
    PartnerKind,
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
# Published share of passengers on cross-border routes (international + Hong Kong, Macau, Taiwan): CAAC 2019
# statistical bulletin, all Chinese airlines 12.9 %; Air China, April 2017 operating data, 17.8 %; Air China,
# September 2024, 10.8 % international alone. Sources in docs/data_dictionary.md.
PUBLISHED_CROSS_BORDER = (0.11, 0.18)
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

    lines += _describe_travel(root, members)
    lines += _describe_offers_and_acceptance(root)
    return "\n".join(lines) + "\n"


def _airport_countries(root: Path) -> dict[str, str]:
    """IATA -> country: the dataset's own network table when it has one, else the shipped network."""
    path = root / NETWORK_DIR / "airports.parquet"
    airports = pd.read_parquet(path) if path.is_file() else load_network().airports
    return dict(zip(airports[IATA].astype(str), airports[COUNTRY].astype(str), strict=True))


def _describe_travel(root: Path, members: pd.DataFrame) -> list[str]:
    """Cross-border share of flight legs, journey destinations and (generated worlds) the taste structure."""
    lines = _section("International share")
    if not has_table(root, FLIGHTS.name):
        return [*lines, NO_DATA]
    countries = _airport_countries(root)
    home = (
        dict(zip(members[Col.MEMBER_ID].astype(str), members[Col.HOME_AIRPORT].astype(str), strict=True))
        if len(members) and Col.HOME_AIRPORT in members
        else {}
    )
    n_legs = n_cross = n_known = 0
    journey_parts: list[pd.DataFrame] = []
    cols = [Col.MEMBER_ID, Col.ORIGIN, Col.DESTINATION, Col.DEPARTURE_TIME]
    for part in iter_table(root, FLIGHTS.name, columns=cols):
        if not len(part):
            continue
        o = part[Col.ORIGIN].astype(str).map(countries)
        d = part[Col.DESTINATION].astype(str).map(countries)
        known = (o.notna() & d.notna()).to_numpy()
        n_legs += len(part)
        n_known += int(known.sum())
        n_cross += int((known & (o != d).to_numpy()).sum())
        connecting = connecting_legs(
            part[Col.MEMBER_ID], part[Col.ORIGIN], part[Col.DESTINATION], part[Col.DEPARTURE_TIME]
        )
        ends = part.loc[~connecting, [Col.MEMBER_ID, Col.DESTINATION]].astype(str)
        away = ends[Col.DESTINATION].to_numpy() != ends[Col.MEMBER_ID].map(home).to_numpy()
        journey_parts.append(
            ends[away].groupby([Col.MEMBER_ID, Col.DESTINATION]).size().rename("n").reset_index()
        )
    if not n_known:
        return [*lines, NO_DATA]
    share = n_cross / n_known
    lo, hi = PUBLISHED_CROSS_BORDER
    verdict = "within" if lo <= share <= hi else "OUTSIDE"
    lines.append(
        f"  legs crossing a border: {_pct(share).strip()} of {n_known:,} legs "
        f"({verdict} the published {100 * lo:.0f}-{100 * hi:.0f} %; see docs/data_dictionary.md)"
    )
    if n_known < n_legs:
        lines.append(f"  ({n_legs - n_known:,} legs touch airports of unknown country)")
    journeys = (
        pd.concat(journey_parts).groupby([Col.MEMBER_ID, Col.DESTINATION])["n"].sum().reset_index()
        if journey_parts
        else pd.DataFrame(columns=[Col.MEMBER_ID, Col.DESTINATION, "n"])
    )
    total = journeys["n"].sum()
    top = journeys.groupby(Col.DESTINATION)["n"].sum().sort_values(ascending=False).head(8)
    if total:
        lines.append(
            "  top journey destinations (connections excluded): "
            + ", ".join(f"{d} {_pct(c / total).strip()}" for d, c in top.items())
        )
    lines += _describe_tastes(root, journeys)
    return lines


def _describe_tastes(root: Path, journeys: pd.DataFrame) -> list[str]:
    """Per hidden taste: the share of members leaning to it, the destinations its members fly to more than
    everyone else, and the rank correlation between the hidden taste and the flown destinations' taste."""
    from scipy.stats import spearmanr

    from recsys.data.truth import acceptance_parameters, has_truth, member_traits

    if not has_truth(root):
        return []
    taste = acceptance_parameters(root).get("taste", {})
    names = list(taste.get("names", []))
    traits = member_traits(root)
    cols = [f"taste_{t}" for t in names]
    if not names or any(c not in traits for c in cols):
        return []
    lines = _section("Travel tastes (hidden truth)")
    mix = traits[cols].to_numpy(float)
    leaning = np.argmax(mix, axis=1)
    ids = pd.Index(traits[Col.MEMBER_ID].astype(str))
    loadings = taste.get("loadings", {})
    dest_load = np.array(
        [loadings.get(d, [0.0] * len(names)) for d in journeys[Col.DESTINATION]], dtype=float
    )
    dest_load = dest_load.reshape(len(journeys), len(names))
    row = ids.get_indexer(journeys[Col.MEMBER_ID].astype(str))
    ok = row >= 0
    n = journeys["n"].to_numpy(float)
    flown = np.zeros((len(ids), len(names)))
    trips = np.bincount(row[ok], weights=n[ok], minlength=len(ids))
    for k in range(len(names)):
        flown[:, k] = np.bincount(row[ok], weights=(n * dest_load[:, k])[ok], minlength=len(ids))
    has = trips > 0
    observed = flown[has] / trips[has, None]
    # everything observable with a place: journeys, partner stays and rentals, redemptions' destinations
    seen, seen_has = _observed_taste(root, ids, journeys, loadings, len(names))
    all_share = journeys.groupby(Col.DESTINATION)["n"].sum()
    all_share = all_share / max(all_share.sum(), 1)
    lines.append(
        f"  {'taste':<20}{'leaning':>9}{'rho':>7}{'rho_all':>9}  destinations flown more than average"
    )
    rhos: list[float] = []
    rhos_all: list[float] = []
    for k, name in enumerate(names):
        lean = float((leaning == k).mean())
        rho = float(spearmanr(mix[has, k], observed[:, k]).statistic) if has.sum() > 2 else float("nan")
        rhos.append(rho)
        rho_all = (
            float(spearmanr(mix[seen_has, k], seen[seen_has, k]).statistic)
            if seen_has.sum() > 2
            else float("nan")
        )
        rhos_all.append(rho_all)
        mine = journeys[(leaning[np.maximum(row, 0)] == k) & ok]
        counts = mine.groupby(Col.DESTINATION)["n"].sum()
        excess = (counts / max(counts.sum(), 1) - all_share.reindex(counts.index)).sort_values(
            ascending=False
        )
        tops = ", ".join(f"{d} +{100 * v:.1f}" for d, v in excess.head(5).items() if v > 0)
        lines.append(f"  {name:<20}{_pct(lean):>9}{rho:>7.2f}{rho_all:>9.2f}  {tops}")
    lines.append(
        f"  rho: rank correlation, over {int(has.sum()):,} members with journeys, between a member's hidden "
        "taste and the mean taste loading of the destinations they flew to (min "
        f"{np.nanmin(rhos):.2f}, max {np.nanmax(rhos):.2f}); rho_all: the same over {int(seen_has.sum()):,} "
        "members with any observed place (journeys, partner hotel stays and car rentals, redemptions' "
        "destinations); excess in points of journey share"
    )
    return lines


def _observed_taste(
    root: Path, ids: pd.Index, journeys: pd.DataFrame, loadings: dict[str, list[float]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per member (rows of ``ids``): the mean taste loading of every place they were observed at away from
    home (journeys, partner activities other than card statements, redemptions), and whether they have any."""
    frames = [journeys.rename(columns={Col.DESTINATION: "place"})[[Col.MEMBER_ID, "place", "n"]]]
    home = read_table(root, MEMBERS.name, columns=[Col.MEMBER_ID, Col.HOME_AIRPORT])
    home_of = dict(zip(home[Col.MEMBER_ID].astype(str), home[Col.HOME_AIRPORT].astype(str), strict=True))
    for table, place_col in (("partner_activities", Col.PLACE), (REDEMPTIONS.name, Col.DESTINATION)):
        if not has_table(root, table):
            continue
        df = read_table(root, table, columns=[Col.MEMBER_ID, Col.KIND, place_col])
        # card statements are placed at home, not where the member travelled
        df = df[df[place_col].notna() & (df[Col.KIND] != PartnerKind.CREDIT_CARD.value)]
        m = df[Col.MEMBER_ID].astype(str)
        df = df[df[place_col].astype(str).to_numpy() != m.map(home_of).to_numpy()]
        frames.append(
            df.groupby([Col.MEMBER_ID, place_col])
            .size()
            .rename("n")
            .reset_index()
            .rename(columns={place_col: "place"})
        )
    seen = pd.concat(frames, ignore_index=True)
    row = ids.get_indexer(seen[Col.MEMBER_ID].astype(str))
    ok = row >= 0
    n = seen["n"].to_numpy(float)
    load = np.array([loadings.get(str(p), [0.0] * k) for p in seen["place"]], dtype=float).reshape(
        len(seen), k
    )
    total = np.bincount(row[ok], weights=n[ok], minlength=len(ids))
    out = np.zeros((len(ids), k))
    for j in range(k):
        out[:, j] = np.bincount(row[ok], weights=(n * load[:, j])[ok], minlength=len(ids))
    has = total > 0
    return out / np.where(has, total, 1.0)[:, None], has


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
