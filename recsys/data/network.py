"""The Air China route network the loyalty world flies on.

The project ships a compact table derived from OpenFlights (``recsys/resources/network_airports.csv`` and
``network_routes.csv``, ODbL — see ``recsys/resources/README.md``). The generator reads only that copy; the
OpenFlights files are needed only to rebuild it::

    python -m recsys.data.network --rebuild /path/to/openflights

Distances are great-circle (haversine) kilometres between the airports' coordinates, which is what a mileage
programme credits. An airport's hub size is the number of Air China routes touching it.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

AIRLINE = "CA"
AIRPORTS_FILE = "network_airports.csv"
ROUTES_FILE = "network_routes.csv"
EARTH_RADIUS_KM = 6371.0088

# Airport table columns
IATA = "iata"
NAME = "name"
CITY = "city"
COUNTRY = "country"
LAT = "lat"
LON = "lon"
TZ = "tz"
HUB_SIZE = "hub_size"
REGION = "region"
HAS_LOUNGE = "has_lounge"
# Route table columns
ORIGIN = "origin"
DESTINATION = "destination"
DISTANCE_KM = "distance_km"
CODESHARE = "codeshare"

# An airport with at least this many Air China routes has an Air China (or partner) lounge in the world.
LOUNGE_MIN_ROUTES = 12

# Coarse regions used for destination affinities and award pricing.
REGIONS: tuple[str, ...] = ("domestic", "greater_china", "asia", "europe", "americas", "oceania_africa_me")
_GREATER_CHINA = {"Hong Kong", "Macau", "Taiwan"}
_EUROPE_TZ = "Europe/"
_AMERICAS_TZ = ("America/", "Pacific/Honolulu")
_ASIA_TZ = "Asia/"


def haversine_km(
    lat1: np.ndarray | float, lon1: np.ndarray | float, lat2: np.ndarray | float, lon2: np.ndarray | float
) -> np.ndarray:
    """Great-circle distance in km between points given in degrees (vectorised)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp = p2 - p1
    dl = np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))


def region_of(country: str, tz: str) -> str:
    """Coarse region of an airport from its country and time-zone name."""
    if country == "China":
        return "domestic"
    if country in _GREATER_CHINA:
        return "greater_china"
    if tz.startswith(_EUROPE_TZ):
        return "europe"
    if tz.startswith(_AMERICAS_TZ):
        return "americas"
    if tz.startswith(_ASIA_TZ) and not tz.startswith(
        ("Asia/Dubai", "Asia/Tehran", "Asia/Riyadh", "Asia/Qatar")
    ):
        return "asia"
    return "oceania_africa_me"


@dataclass(frozen=True)
class Network:
    """Airports (indexed 0..n-1, in IATA order) and directed routes with distances."""

    airports: pd.DataFrame  # iata, name, city, country, lat, lon, tz, hub_size, region, has_lounge
    routes: pd.DataFrame  # origin, destination, distance_km, codeshare (sorted by origin, destination)

    @property
    def iata(self) -> np.ndarray:
        return self.airports[IATA].to_numpy(dtype=object)

    def index_of(self, codes: np.ndarray | list[str]) -> np.ndarray:
        """Airport indices of IATA codes (raises KeyError on an unknown code)."""
        idx = pd.Index(self.airports[IATA]).get_indexer(pd.Index(np.asarray(codes, dtype=object)))
        if (idx < 0).any():
            raise KeyError(f"unknown airports: {list(np.asarray(codes, dtype=object)[idx < 0][:5])}")
        return idx.astype(np.int64)

    def hubs(self, n: int = 8) -> list[str]:
        """The ``n`` busiest airports by number of Air China routes."""
        top = self.airports.sort_values([HUB_SIZE, IATA], ascending=[False, True]).head(n)
        return top[IATA].tolist()

    def distance_km(self, origin: str, destination: str) -> float:
        a = self.airports.set_index(IATA)
        return float(
            haversine_km(a.at[origin, LAT], a.at[origin, LON], a.at[destination, LAT], a.at[destination, LON])
        )


def _resource_dir() -> Path:
    return Path(str(resources.files("recsys") / "resources"))


@cache
def load_network(directory: Path | None = None) -> Network:
    """Load the shipped network table (or one in ``directory``)."""
    base = Path(directory) if directory is not None else _resource_dir()
    airports = pd.read_csv(
        base / AIRPORTS_FILE,
        keep_default_na=False,
        na_values=[],
        dtype={IATA: str, NAME: str, CITY: str, COUNTRY: str, TZ: str, REGION: str},
    )
    routes = pd.read_csv(base / ROUTES_FILE, keep_default_na=False, dtype={ORIGIN: str, DESTINATION: str})
    airports = airports.sort_values(IATA, kind="stable").reset_index(drop=True)
    airports[HAS_LOUNGE] = airports[HAS_LOUNGE].astype(bool)
    routes = routes.sort_values([ORIGIN, DESTINATION], kind="stable").reset_index(drop=True)
    routes[CODESHARE] = routes[CODESHARE].astype(bool)
    return Network(airports=airports, routes=routes)


def build_from_openflights(
    openflights_dir: Path, airline: str = AIRLINE
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Derive (airports, routes) of one airline from OpenFlights ``airports.dat`` and ``routes.dat``.

    Routes are joined to airports by OpenFlights airport id (some airports lack an IATA code in airports.dat;
    the route's code is used then), falling back to the IATA code; routes touching an airport that has no
    coordinates in the snapshot are skipped (and listed on stderr). A route flown both as own-metal and
    codeshare is kept once, as own-metal.
    """
    openflights_dir = Path(openflights_dir)
    by_id: dict[str, list[str]] = {}
    by_iata: dict[str, list[str]] = {}
    with (openflights_dir / "airports.dat").open(encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh):
            by_id[row[0]] = row
            if row[4] != "\\N":
                by_iata.setdefault(row[4], row)
    pairs: dict[tuple[str, str], bool] = {}
    airport_rows: dict[str, list[str]] = {}  # iata -> airports.dat row
    skipped: list[str] = []
    with (openflights_dir / "routes.dat").open(encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh):
            if row[0] != airline:
                continue
            src, src_id, dst, dst_id, codeshare = row[2], row[3], row[4], row[5], row[6] == "Y"
            src_row, dst_row = by_id.get(src_id, by_iata.get(src)), by_id.get(dst_id, by_iata.get(dst))
            if src_row is None or dst_row is None:
                skipped.append(f"{src}-{dst}")  # airport without coordinates in this snapshot
                continue
            airport_rows[src], airport_rows[dst] = src_row, dst_row
            key = (src, dst)
            pairs[key] = pairs.get(key, True) and codeshare
    if skipped:
        print(
            f"skipped {len(skipped)} routes touching airports missing from airports.dat: "
            f"{', '.join(sorted(skipped))}",
            file=sys.stderr,
        )
    hub_size: dict[str, int] = {c: 0 for c in airport_rows}
    for src, dst in pairs:
        hub_size[src] += 1
        hub_size[dst] += 1
    rows = []
    for code in sorted(airport_rows):
        a = airport_rows[code]
        tz = a[11] if a[11] != "\\N" else "Asia/Shanghai"
        rows.append(
            {
                IATA: code,
                NAME: a[1],
                CITY: a[2],
                COUNTRY: a[3],
                LAT: round(float(a[6]), 6),
                LON: round(float(a[7]), 6),
                TZ: tz,
                HUB_SIZE: hub_size[code],
                REGION: region_of(a[3], tz),
                HAS_LOUNGE: hub_size[code] >= LOUNGE_MIN_ROUTES,
            }
        )
    airports = pd.DataFrame(rows)
    pos = airports.set_index(IATA)
    route_rows = []
    for (src, dst), codeshare in sorted(pairs.items()):
        d = haversine_km(pos.at[src, LAT], pos.at[src, LON], pos.at[dst, LAT], pos.at[dst, LON])
        route_rows.append({ORIGIN: src, DESTINATION: dst, DISTANCE_KM: round(float(d)), CODESHARE: codeshare})
    return airports, pd.DataFrame(route_rows)


def rebuild(openflights_dir: Path, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Regenerate the shipped network tables from an OpenFlights checkout."""
    out = Path(out_dir) if out_dir is not None else _resource_dir()
    airports, routes = build_from_openflights(openflights_dir)
    out.mkdir(parents=True, exist_ok=True)
    a_path, r_path = out / AIRPORTS_FILE, out / ROUTES_FILE
    airports.to_csv(a_path, index=False, lineterminator="\n")
    routes.to_csv(r_path, index=False, lineterminator="\n")
    load_network.cache_clear()
    return a_path, r_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Rebuild the shipped Air China network table from OpenFlights."
    )
    parser.add_argument(
        "--rebuild",
        type=Path,
        required=True,
        metavar="OPENFLIGHTS_DIR",
        help="directory holding OpenFlights airports.dat and routes.dat",
    )
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: recsys/resources)")
    args = parser.parse_args(argv)
    for name in ("airports.dat", "routes.dat"):
        if not (args.rebuild / name).is_file():
            print(f"error: {args.rebuild / name} not found", file=sys.stderr)
            return 2
    a_path, r_path = rebuild(args.rebuild, args.out)
    print(f"wrote {a_path} and {r_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
