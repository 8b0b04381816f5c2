"""The shipped Air China network table and its rebuild from OpenFlights files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from recsys.data import network as nw


def test_haversine_known_distances() -> None:
    # a quarter of a great circle along the equator, and one degree of latitude
    assert nw.haversine_km(0.0, 0.0, 0.0, 90.0) == pytest.approx(math.pi / 2 * nw.EARTH_RADIUS_KM, rel=1e-9)
    assert nw.haversine_km(10.0, 20.0, 11.0, 20.0) == pytest.approx(111.19, abs=0.05)
    assert nw.haversine_km(np.array([1.0]), np.array([2.0]), np.array([1.0]), np.array([2.0]))[0] == 0.0


def test_shipped_network_is_air_china_with_hubs() -> None:
    net = nw.load_network()
    airports, routes = net.airports, net.routes
    assert 150 <= len(airports) <= 200
    assert len(routes) > 1000
    assert airports[nw.IATA].is_unique
    assert not routes.duplicated([nw.ORIGIN, nw.DESTINATION]).any()
    known = set(airports[nw.IATA])
    assert set(routes[nw.ORIGIN]) <= known and set(routes[nw.DESTINATION]) <= known
    assert {"PEK", "CTU", "PVG", "CAN", "SZX"} <= set(net.hubs(8))
    assert net.hubs(1) == ["PEK"]
    # hub size is the number of routes touching the airport
    touching = routes[nw.ORIGIN].value_counts().add(routes[nw.DESTINATION].value_counts(), fill_value=0)
    assert (airports.set_index(nw.IATA)[nw.HUB_SIZE] == touching.reindex(airports[nw.IATA])).all()
    assert set(airports[nw.REGION]) <= set(nw.REGIONS)
    assert airports[nw.TZ].str.contains("/").all()


def test_route_distances_are_great_circle() -> None:
    net = nw.load_network()
    a = net.airports.set_index(nw.IATA)
    r = net.routes
    o, d = a.loc[r[nw.ORIGIN]], a.loc[r[nw.DESTINATION]]
    expected = nw.haversine_km(
        o[nw.LAT].to_numpy(), o[nw.LON].to_numpy(), d[nw.LAT].to_numpy(), d[nw.LON].to_numpy()
    )
    assert np.abs(r[nw.DISTANCE_KM].to_numpy() - expected).max() <= 0.5
    # Beijing Capital - Shanghai Pudong is about 1,090 km
    assert 1050 <= net.distance_km("PEK", "PVG") <= 1130


def test_attribution_and_licence_ship_with_the_table() -> None:
    res = Path(nw.__file__).resolve().parents[1] / "resources"
    assert (res / "LICENSE-OpenFlights").read_text().startswith("## ODC Open Database License")
    readme = (res / "README.md").read_text()
    assert "OpenFlights" in readme and "Open Database License" in readme


def _write_openflights(d: Path) -> None:
    (d / "airports.dat").write_text(
        '1,"Capital","Beijing","China","PEK","ZBAA",40.08,116.58,116,8,"U","Asia/Shanghai","airport","OurAirports"\n'
        '2,"Shuangliu","Chengdu","China","CTU","ZUUU",30.57,103.95,1625,8,"N","Asia/Shanghai","airport","OurAirports"\n'
        '3,"Frankfurt","Frankfurt","Germany","FRA","EDDF",50.03,8.57,364,1,"E","Europe/Berlin","airport","OurAirports"\n'
        '4,"Other","X","China",\\N,"ZXXX",30.0,110.0,0,8,"U","Asia/Shanghai","airport","OurAirports"\n',
        encoding="utf-8",
    )
    (d / "routes.dat").write_text(
        "CA,751,PEK,1,CTU,2,,0,320\r\n"
        "CA,751,CTU,2,PEK,1,,0,320\r\n"
        "CA,751,PEK,1,FRA,3,Y,0,773\r\n"
        "CA,751,PEK,1,NOP,999,,0,320\r\n"  # airport without coordinates: skipped
        "MU,1,PEK,1,FRA,3,,0,773\r\n",  # another airline: ignored
        encoding="utf-8",
    )


def test_rebuild_from_openflights(tmp_path: Path) -> None:
    src, out = tmp_path / "of", tmp_path / "out"
    src.mkdir()
    _write_openflights(src)
    assert nw.main(["--rebuild", str(src), "--out", str(out)]) == 0
    net = nw.load_network(out)
    assert list(net.airports[nw.IATA]) == ["CTU", "FRA", "PEK"]
    assert dict(zip(net.airports[nw.IATA], net.airports[nw.HUB_SIZE], strict=True)) == {
        "CTU": 2,
        "FRA": 1,
        "PEK": 3,
    }
    routes = net.routes.set_index([nw.ORIGIN, nw.DESTINATION])
    assert bool(routes.at[("PEK", "FRA"), nw.CODESHARE]) is True
    assert bool(routes.at[("PEK", "CTU"), nw.CODESHARE]) is False
    assert net.airports.set_index(nw.IATA).at["FRA", nw.REGION] == "europe"


def test_rebuild_cli_rejects_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert nw.main(["--rebuild", str(tmp_path)]) == 2
    assert "airports.dat not found" in capsys.readouterr().err
