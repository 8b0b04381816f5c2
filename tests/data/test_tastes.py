"""Travel tastes, trips through hubs, destination hotels and partner earning in the generated world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from recsys.data.describe import PUBLISHED_CROSS_BORDER, describe
from recsys.data.generator import GeneratorError, generate_world
from recsys.data.layout import has_table, read_table
from recsys.data.network import load_network
from recsys.data.trips import connecting_legs
from recsys.data.truth import acceptance_parameters, member_traits, true_acceptance
from recsys.data.validate import validate_dataset
from recsys.data.world.tastes import TASTE_NAMES, TASTES
from recsys.interactions import build_interactions
from recsys.schema import Col, EventType, OfferCategory, PartnerKind, RedemptionKind
from training.cli import app

MEMBERS = 10_000


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_world(tmp_path_factory.mktemp("tastes") / "w", MEMBERS, 5, progress=False)


@pytest.fixture(scope="module")
def flights(world: Path) -> pd.DataFrame:
    return read_table(world, "flights")


def _journey_ends(flights: pd.DataFrame, home: pd.Series) -> pd.DataFrame:
    """Legs after which the member did not fly on within 24 h (other than straight back), away from home."""
    f = flights.sort_values([Col.MEMBER_ID, Col.DEPARTURE_TIME]).reset_index(drop=True)
    nxt = f.shift(-1)
    gap = (nxt[Col.DEPARTURE_TIME] - f[Col.DEPARTURE_TIME]).dt.total_seconds() / 3600
    onward = (
        (nxt[Col.MEMBER_ID] == f[Col.MEMBER_ID])
        & (nxt[Col.ORIGIN] == f[Col.DESTINATION])
        & (nxt[Col.DESTINATION] != f[Col.ORIGIN])
        & (gap <= 24)
    )
    ends = f[~onward.to_numpy()]
    return ends[ends[Col.DESTINATION].to_numpy() != ends[Col.MEMBER_ID].map(home).to_numpy()]


def test_bad_settings_are_errors_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(GeneratorError, match="tastes"):
        generate_world(tmp_path / "w", 10, 1, settings={"tastes": -1}, progress=False)
    with pytest.raises(GeneratorError, match=r"taste_shares must sum to 1, got 0\.9"):
        generate_world(
            tmp_path / "w", 10, 1, settings={"tastes": 2, "taste_shares": [0.5, 0.4]}, progress=False
        )
    with pytest.raises(GeneratorError, match="international_leisure_share"):
        generate_world(tmp_path / "w", 10, 1, settings={"international_leisure_share": 1.5}, progress=False)
    with pytest.raises(GeneratorError, match="unflown_stays_per_year"):
        generate_world(tmp_path / "w", 10, 1, settings={"unflown_stays_per_year": -0.5}, progress=False)
    with pytest.raises(GeneratorError, match="no_such_setting"):
        generate_world(tmp_path / "w", 10, 1, settings={"no_such_setting": 1}, progress=False)
    assert not (tmp_path / "w").exists()


def test_cli_rejects_a_bad_setting_and_accepts_good_ones(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "w"
    bad = runner.invoke(app, ["data", "generate", "--out", str(out), "--members", "20", "--set", "tastes=-2"])
    assert bad.exit_code == 2 and "tastes" in bad.output and not out.exists()
    bad = runner.invoke(
        app, ["data", "generate", "--out", str(out), "--members", "20", "--set", "taste_shares=0.5,0.2"]
    )
    assert bad.exit_code == 2 and "taste_shares" in bad.output
    ok = runner.invoke(
        app,
        [
            *("data", "generate", "--out", str(out), "--members", "300", "--no-progress"),
            *("--set", "tastes=3", "--set", "taste_shares=0.5,0.3,0.2"),
        ],
    )
    assert ok.exit_code == 0, ok.output
    traits = member_traits(out)
    assert [c for c in traits.columns if c.startswith("taste_")] == [f"taste_{t}" for t in TASTE_NAMES[:3]]
    assert acceptance_parameters(out)["taste"]["names"] == list(TASTE_NAMES[:3])


def test_taste_mixes_are_recorded_in_truth_and_lean_as_configured(world: Path) -> None:
    traits = member_traits(world)
    mix = traits[[f"taste_{t}" for t in TASTE_NAMES]].to_numpy()
    assert np.allclose(mix.sum(axis=1), 1.0)
    leaning = np.bincount(mix.argmax(axis=1), minlength=len(TASTES)) / len(mix)
    shares = np.array([t.share for t in TASTES])
    assert np.abs(leaning - shares / shares.sum()).max() < 0.04


def test_cross_border_share_of_legs_is_within_the_published_range(world: Path, flights: pd.DataFrame) -> None:
    country = load_network().airports.set_index("iata")["country"]
    cross = flights[Col.ORIGIN].map(country) != flights[Col.DESTINATION].map(country)
    lo, hi = PUBLISHED_CROSS_BORDER
    assert lo <= cross.mean() <= hi


def test_destinations_without_a_nonstop_route_are_flown_through_a_hub(flights: pd.DataFrame) -> None:
    routes = load_network().routes
    nonstop = set(zip(routes["origin"], routes["destination"], strict=True))
    # every leg is a route of the network (or, rarely, a route's missing reverse)
    assert set(zip(flights[Col.ORIGIN], flights[Col.DESTINATION], strict=True)) <= nonstop | {
        (d, o) for o, d in nonstop
    }
    onward = connecting_legs(
        flights[Col.MEMBER_ID], flights[Col.ORIGIN], flights[Col.DESTINATION], flights[Col.DEPARTURE_TIME]
    )
    assert 0.02 < onward.mean() < 0.3
    # connections are made at the hubs (the rest: overlapping trips that happen to chain within a day)
    assert flights.loc[onward, Col.DESTINATION].isin(["PEK", "PVG", "CTU"]).mean() > 0.95


def test_hidden_taste_shows_in_the_destinations_flown(world: Path, flights: pd.DataFrame) -> None:
    traits = member_traits(world)
    home = traits.set_index(Col.MEMBER_ID)["home_airport"]
    ends = _journey_ends(flights, home)
    loadings = acceptance_parameters(world)["taste"]["loadings"]
    load = np.array([loadings.get(d, [0.0] * len(TASTE_NAMES)) for d in ends[Col.DESTINATION]])
    per_member = pd.DataFrame(load, columns=list(TASTE_NAMES)).groupby(ends[Col.MEMBER_ID].to_numpy()).mean()
    mix = traits.set_index(Col.MEMBER_ID).loc[per_member.index]
    rho = [spearmanr(mix[f"taste_{t}"], per_member[t]).statistic for t in TASTE_NAMES]
    assert min(rho) > 0.12 and np.mean(rho) > 0.25, rho  # the region affinity of the old world: 0.03-0.17


def test_hotels_are_offered_for_a_trip_to_their_city(world: Path, flights: pd.DataFrame) -> None:
    offers = read_table(world, "offers")
    hotels = offers[offers[Col.CATEGORY] == OfferCategory.HOTEL.value]
    assert len(hotels) >= 20 and hotels[Col.DESTINATION].notna().all()
    ev = read_table(world, "interactions")
    imp = ev[(ev[Col.EVENT_TYPE] == EventType.IMPRESSION.value) & ev[Col.OFFER_ID].isin(hotels[Col.OFFER_ID])]
    assert len(imp) > 50 and imp[Col.FLIGHT_ID].notna().all()
    leg = flights.set_index(Col.FLIGHT_ID).loc[imp[Col.FLIGHT_ID]].reset_index()
    leg["city"] = imp[Col.OFFER_ID].map(hotels.set_index(Col.OFFER_ID)[Col.DESTINATION]).to_numpy()
    # the trip's destination: this leg's, or that of the member's connection onward from this leg's end within
    # a day (not necessarily their next leg in time: very heavy flyers' trips can overlap)
    onward = leg.merge(
        flights[[Col.MEMBER_ID, Col.ORIGIN, Col.DESTINATION, Col.DEPARTURE_TIME]],
        left_on=[Col.MEMBER_ID, Col.DESTINATION, "city"],
        right_on=[Col.MEMBER_ID, Col.ORIGIN, Col.DESTINATION],
        suffixes=("", "_next"),
    )
    gap = onward[f"{Col.DEPARTURE_TIME}_next"] - onward[Col.DEPARTURE_TIME]
    connected = set(onward.loc[(gap > pd.Timedelta(0)) & (gap <= pd.Timedelta(hours=24)), Col.FLIGHT_ID])
    assert ((leg[Col.DESTINATION] == leg["city"]) | leg[Col.FLIGHT_ID].isin(connected)).all()


def test_award_flights_are_eligible_from_airports_reaching_them_through_a_hub(world: Path) -> None:
    offers = read_table(world, "offers").set_index(Col.OFFER_ID)
    routes = load_network().routes
    into_nrt = set(routes.loc[routes["destination"] == "NRT", "origin"])
    origins = set(offers.at["RD-AWD-NRT-Y", Col.ELIGIBLE_ORIGINS])
    assert into_nrt < origins  # more than the nonstop ones
    for o in origins - into_nrt:
        assert any((o, h) in set(zip(routes["origin"], routes["destination"], strict=True)) for h in into_nrt)


def test_partner_earning_is_history_with_a_place_and_a_time(world: Path, flights: pd.DataFrame) -> None:
    assert has_table(world, "partner_activities")
    pa = read_table(world, "partner_activities")
    assert set(pa[Col.KIND]) == {k.value for k in PartnerKind}
    assert pa[Col.PLACE].notna().all() and (pa[Col.MILES_EARNED] > 0).all()
    home = member_traits(world).set_index(Col.MEMBER_ID)["home_airport"]
    card = pa[pa[Col.KIND] == PartnerKind.CREDIT_CARD.value]
    assert (card[Col.PLACE].to_numpy() == card[Col.MEMBER_ID].map(home).to_numpy()).all()
    stays = pa[pa[Col.KIND] == PartnerKind.HOTEL.value]
    flown_to = set(zip(flights[Col.MEMBER_ID], flights[Col.DESTINATION], strict=True))
    flown = np.array([pair in flown_to for pair in zip(stays[Col.MEMBER_ID], stays[Col.PLACE], strict=True)])
    assert (stays[Col.PLACE].to_numpy() != stays[Col.MEMBER_ID].map(home).to_numpy()).all()
    # stays on trips not flown with the airline (unflown_stays_per_year) go where the member's tastes lead
    assert 0.3 < (~flown).mean() < 0.95
    unflown = stays[~flown]
    traits = member_traits(world).set_index(Col.MEMBER_ID)
    mix = traits.loc[unflown[Col.MEMBER_ID], [f"taste_{t}" for t in TASTE_NAMES]].to_numpy()
    loadings = acceptance_parameters(world)["taste"]["loadings"]
    load = np.array([loadings.get(p, [0.0] * len(TASTE_NAMES)) for p in unflown[Col.PLACE]])
    own = np.einsum("ij,ij->i", mix, load).mean()
    others = np.einsum("ij,ij->i", np.random.default_rng(0).permutation(mix), load).mean()
    assert own > 1.5 * others, (own, others)
    share = pa[Col.MILES_EARNED].sum() / (pa[Col.MILES_EARNED].sum() + flights[Col.MILES_EARNED].sum())
    assert 0.15 < share < 0.65  # about half; AAdvantage sold two thirds of its miles to partners
    assert validate_dataset(world).ok


def test_award_redemptions_follow_the_published_award_share(world: Path, flights: pd.DataFrame) -> None:
    red = read_table(world, "redemptions")
    awards = int((red[Col.KIND] == RedemptionKind.AWARD_FLIGHT.value).sum())
    assert 0.05 <= 2 * awards / len(flights) <= 0.09  # award round trips per leg flown
    assert (read_table(world, "members")[Col.MILES_BALANCE] >= 0).all()


def test_taste_raises_acceptance_of_awards_and_hotels_there(world: Path) -> None:
    traits = member_traits(world).head(3000)
    params = acceptance_parameters(world)
    offers = read_table(world, "offers")
    dest = offers[offers[Col.CATEGORY].isin([OfferCategory.HOTEL.value, OfferCategory.AWARD_FLIGHT.value])]
    p = true_acceptance(world, traits[Col.MEMBER_ID].tolist(), dest[Col.OFFER_ID].tolist())
    mix = traits[[f"taste_{t}" for t in TASTE_NAMES]].to_numpy()
    load = np.array(
        [params["taste"]["loadings"].get(d, [0.0] * len(TASTE_NAMES)) for d in dest[Col.DESTINATION]]
    )
    s = mix @ load.T
    for j in range(len(dest)):
        if load[j].sum() > 0:
            assert spearmanr(s[:, j], p[:, j]).statistic > 0.3, dest[Col.OFFER_ID].iloc[j]


def test_describe_reports_international_share_and_tastes(world: Path) -> None:
    text = describe(world)
    assert "legs crossing a border" in text and "within the published" in text
    section = text.split("Travel tastes (hidden truth)")[1]
    rho, rho_all = [], []
    for name in TASTE_NAMES:
        line = next(ln for ln in section.splitlines() if ln.strip().startswith(name))
        _, _, _, r, r_all = line.split()[:5]
        rho.append(float(r))
        rho_all.append(float(r_all))
    assert "rank correlation" in section and "rho_all" in section
    # partner stays and redemptions add to what flights show of a member's taste
    assert np.mean(rho_all) > np.mean(rho) > 0.25, (rho, rho_all)


def test_interactions_hold_hotel_tokens_and_journey_destinations(world: Path, flights: pd.DataFrame) -> None:
    inter = build_interactions(world)
    kinds = pd.Series(inter.item_kinds).value_counts()
    assert kinds.get("hotel", 0) >= 20
    items = inter.item_ids
    onward = connecting_legs(
        flights[Col.MEMBER_ID], flights[Col.ORIGIN], flights[Col.DESTINATION], flights[Col.DEPARTURE_TIME]
    )
    # a member whose only legs into PEK connect onward (and who neither redeemed for nor rented a car in
    # Beijing) has no dest:PEK cell
    elsewhere = set(read_table(world, "redemptions").query("destination == 'PEK'")[Col.MEMBER_ID])
    elsewhere |= set(read_table(world, "partner_activities").query("place == 'PEK'")[Col.MEMBER_ID])
    into_pek = flights[(flights[Col.DESTINATION] == "PEK") & ~flights[Col.MEMBER_ID].isin(elsewhere)]
    only_connecting = into_pek.groupby(Col.MEMBER_ID).apply(
        lambda g: onward[g.index].all(), include_groups=False
    )
    members = only_connecting[only_connecting].index[:50]
    assert len(members) > 5
    rows = inter.member_ids.to_index(members)
    col = items.to_index(np.array(["dest:PEK"]))[0]
    assert (inter.matrix[rows, col].toarray() == 0).all()
