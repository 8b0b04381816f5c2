"""The live simulation: seeded plans, the hidden acceptance model's answers, and a run against a real service
process whose event log must hold exactly what the simulator says it posted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.launcher import run_service
from recsys.events import EventLog
from recsys.simulation import SimMembers, SimulationError, load_members, plan_requests, run_simulation
from recsys.simulation.plan import MINUTES_PER_DAY
from recsys.simulation.runner import check_loopback, experiment_label
from tests.serving.conftest import Registry, service_env
from training.cli import app


@pytest.fixture(scope="module")
def sim_members(serving_world: Path) -> SimMembers:
    return load_members(serving_world, 400, seed=5)


def test_members_are_a_seeded_sample_with_their_flights(serving_world: Path, sim_members: SimMembers) -> None:
    again = load_members(serving_world, 400, seed=5)
    other = load_members(serving_world, 400, seed=6)
    assert sim_members.ids == again.ids != other.ids
    assert len(set(sim_members.ids)) == 400
    flights = pd.read_parquet(serving_world / "flights")
    i = next(i for i, legs in enumerate(sim_members.legs) if legs)
    mine = flights[flights["member_id"] == sim_members.ids[i]]
    assert len(sim_members.legs[i]) == len(mine)
    assert {leg.flight_number for leg in sim_members.legs[i]} == set(mine["flight_number"])


def test_plan_is_seeded_ordered_and_inside_the_simulated_days(sim_members: SimMembers) -> None:
    plan = plan_requests(sim_members, 60, seed=1)
    assert plan == plan_requests(sim_members, 60, seed=1)
    assert plan != plan_requests(sim_members, 60, seed=2)
    assert plan, "400 members over 60 days make requests"
    assert all(0 <= r.minute < 60 * MINUTES_PER_DAY for r in plan)
    assert [r.minute for r in plan] == sorted(r.minute for r in plan)
    placements = {r.placement for r in plan}
    assert {"home", "booking", "check_in"} <= placements
    for r in plan:
        if r.placement == "home":
            assert r.leg is None and r.minutes_to_departure is None and r.purpose == -1
        else:
            assert r.leg is not None and r.minutes_to_departure is not None and r.minutes_to_departure > 0
            assert r.leg.flight_number in {leg.flight_number for leg in sim_members.legs[r.member]}
    # each member's requests are numbered in time order
    by_member: dict[int, list[int]] = {}
    for r in plan:
        by_member.setdefault(r.member, []).append(r.seq)
    assert all(seqs == list(range(len(seqs))) for seqs in by_member.values())
    # twice the activity: about twice the requests
    assert 1.6 < len(plan_requests(sim_members, 60, seed=1, activity=2.0)) / len(plan) < 2.4


def test_trips_carry_a_booking_drawn_from_their_purpose(sim_members: SimMembers) -> None:
    """The app sends what the booking says: business trips are booked nearer departure, for fewer people."""
    plan = plan_requests(sim_members, 365, seed=3)
    trips = [r for r in plan if r.placement != "home"]
    assert trips and all(r.booking is not None for r in trips)
    assert all(r.booking is None for r in plan if r.placement == "home")
    for r in trips:
        b = r.booking
        assert b is not None
        assert b.party_size >= 1 and 0 <= b.children <= b.party_size
        assert b.stay_nights >= 1 and b.lead_days >= 0
        # a booking request is made at the booking: its lead time is the time left to the departure
        if r.placement == "booking":
            assert b.lead_days == r.minutes_to_departure // MINUTES_PER_DAY
        # every request of the trip comes after its booking
        assert r.minutes_to_departure is not None
        assert r.minutes_to_departure < (b.lead_days + 1) * MINUTES_PER_DAY
    booked = [r for r in trips if r.placement == "booking"]
    lead = {p: np.median([r.booking.lead_days for r in booked if r.purpose == p]) for p in (0, 2)}  # type: ignore[union-attr]
    party = {p: np.mean([r.booking.party_size for r in trips if r.purpose == p]) for p in (0, 2)}  # type: ignore[union-attr]
    assert lead[0] < 20 < 40 < lead[2], lead
    assert party[0] < 1.5 < 2.5 < party[2], party


def test_answers_are_seeded_and_fatigue_lowers_purchases(sim_members: SimMembers) -> None:
    offer = "UP-CAB-Y2W-01"
    assert offer in sim_members.offer_index

    def buys(prior: int, seed: int) -> int:
        sim_members.prior[0] = {offer: prior}
        rng = np.random.default_rng(seed)
        total = 0
        for _ in range(3000):
            sim_members.prior[0][offer] = prior  # hold the exposure count fixed
            (answer,) = sim_members.respond(
                0, [offer], placement="check_in", purpose=0, long_haul=True, premium=False, rng=rng
            )
            total += answer.purchase
        return total

    fresh, tired = buys(0, 1), buys(40, 1)
    assert fresh == buys(0, 1), "same seed, same answers"
    assert fresh > 0
    assert tired < fresh / 5, (fresh, tired)
    # exposures are counted: one more per impression
    sim_members.prior[0] = {}
    sim_members.respond(
        0,
        [offer, offer],
        placement="home",
        purpose=-1,
        long_haul=False,
        premium=False,
        rng=np.random.default_rng(0),
    )
    assert sim_members.prior[0] == {offer: 2}


def test_only_loopback_services_are_played() -> None:
    assert check_loopback("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert check_loopback("http://localhost:1") == "http://localhost:1"
    assert check_loopback("http://[::1]:8000") == "http://[::1]:8000"
    for url in ("http://10.1.2.3:8000", "http://example.com", "ftp://127.0.0.1", "127.0.0.1:8000"):
        with pytest.raises(SimulationError):
            check_loopback(url)
    result = CliRunner().invoke(
        app, ["experiments", "simulate", "--data", ".", "--url", "http://192.168.1.1:8000"]
    )
    assert result.exit_code == 2
    assert "loopback" in result.output


def test_a_dataset_without_truth_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["experiments", "simulate", "--data", str(tmp_path)])
    assert result.exit_code == 1
    assert "truth" in result.output


def test_experiment_label_reads_what_the_response_names() -> None:
    assert experiment_label({"offers": []}) == "-"
    assert experiment_label({"experiment": None}) == "-"
    assert experiment_label({"experiment": {"key": "e1", "variant": "control"}}) == "e1/control"
    assert experiment_label({"experiment": "e1", "variant": "b"}) == "e1/b"


@pytest.mark.slow
def test_simulation_against_a_running_service(
    registry: Registry, serving_world: Path, tmp_path: Path, redis_prefix: str, sim_members: SimMembers
) -> None:
    plan = plan_requests(sim_members, 45, seed=3)
    days_seen: list[int] = []
    env = service_env(registry, serving_world, tmp_path, redis_prefix)
    with run_service(env) as svc:
        report = asyncio.run(
            run_simulation(
                svc.url,
                sim_members,
                plan,
                days=45,
                seed=3,
                concurrency=8,
                max_seconds=120,
                on_day=lambda day, _: days_seen.append(day),
            )
        )
        log = EventLog(f"sqlite:///{tmp_path}/events.db", create=False)
        try:
            logged = {kind: log.count(event_type=kind) for kind in ("impression", "purchase", "dismiss")}
        finally:
            log.close()
        budget = asyncio.run(run_simulation(svc.url, sim_members, plan, days=45, seed=4, max_requests=10))
    summary = report.as_dict()
    assert summary["errors"] == {}, summary
    assert summary["truncated"] is None and summary["days_played"] == 45
    assert days_seen == list(range(45))
    assert summary["requests_sent"] == len(plan)
    (counts,) = summary["variants"].values()  # no experiment: one group
    assert counts["requests"] == len(plan)
    assert counts["impressions"] > 0 and counts["purchases"] > 0 and counts["clicks"] >= counts["purchases"]
    assert summary["events_accepted"] == summary["events_posted"]
    assert summary["events_posted"] == (
        counts["impressions"] + counts["clicks"] + counts["purchases"] + counts["dismissals"]
    )
    # the service's own event log holds what the simulator says it posted
    assert logged == {
        "impression": counts["impressions"],
        "purchase": counts["purchases"],
        "dismiss": counts["dismissals"],
    }
    assert budget.sent == 10 and budget.truncated == "request budget of 10 reached"
