"""Every recommend request is logged through the API, on SQLite and on PostgreSQL: context, the candidate
set after eligibility and caps, the shown slate with propensities; events join to it by tracking token."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from scipy import stats

from recsys.requestlog import BatchingRequestWriter, SqlRequestLog
from recsys.requestlog.process_writer import ProcessRequestWriter
from serving.app import create_app
from tests.requestlog.conftest import PG_URL, drop_schema, pg_schema_or_fail
from tests.serving.conftest import DEBUG_TOKEN, Registry, make_settings, serve_counting_policy
from tests.serving.test_api import rec_body, trip
from tests.serving.test_observability import samples, total

SHOWN_OR_RANKED_BELOW = {"value", "diversity", "top_k"}  # stages that drop candidates, not non-candidates


@contextlib.contextmanager
def logged_app(
    backend: str, registry: Registry, world: Path, tmp: Path, redis_prefix: str, **over: Any
) -> Iterator[tuple[TestClient, SqlRequestLog]]:
    """The app over real Redis with its request log in SQLite or in a PostgreSQL schema of its own."""
    if backend == "sqlite":
        url, schema, engine = f"sqlite:///{tmp}/requests.db", None, None
    else:
        engine, schema = pg_schema_or_fail("test_svc_reqlog")
        url = PG_URL
    values: dict[str, Any] = {
        "exploration_share": 0.0,
        # counted on serve, each offer once a week: a repeated screen's candidates show the caps at work
        "capping_policy_path": serve_counting_policy(tmp),
    } | over
    settings = make_settings(
        registry, world, tmp, redis_prefix, request_log_url=url, request_log_schema=schema, **values
    )
    reader = SqlRequestLog(url, schema=schema)
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield client, reader
    finally:
        reader.close()
        if engine is not None and schema is not None:
            drop_schema(engine, schema)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture()
def logged(
    backend: str, registry: Registry, serving_world: Path, tmp_path: Path, redis_prefix: str
) -> Iterator[tuple[TestClient, SqlRequestLog]]:
    with logged_app(backend, registry, serving_world, tmp_path, redis_prefix) as app:
        yield app


def flush(client: TestClient) -> None:
    writer = client.app.state.services.request_writer  # type: ignore[attr-defined]
    assert writer is not None and writer.flush(timeout_s=10)


def test_every_request_is_logged_with_candidates_and_propensities(
    logged: tuple[TestClient, SqlRequestLog], world_members: list[str]
) -> None:
    client, log = logged
    answers: list[dict[str, Any]] = []
    bodies = [rec_body(m, debug=True) for m in world_members[:8]]
    bodies += [{"member_id": m, "placement": "home", "limit": 3, "debug": True} for m in world_members[8:12]]
    bodies.append(rec_body("M-NOT-A-MEMBER", debug=True, limit=4))
    for body in bodies:
        resp = client.post("/v1/recommendations", json=body, headers={"x-debug-token": DEBUG_TOKEN})
        assert resp.status_code == 200, resp.text
        answers.append(resp.json())
    flush(client)
    assert log.count() == len(bodies)
    records = log.get_many([a["request_id"] for a in answers])
    shown_any = 0
    for body, answer in zip(bodies, answers, strict=True):
        r = records[answer["request_id"]]
        assert r.member_id == body["member_id"] and r.placement == body["placement"]
        assert r.policy.name == answer["model"]["name"] and r.policy.version == answer["model"]["version"]
        assert r.exploration is False and r.experiment is None and r.variant is None
        assert r.request_time.tzinfo is not None
        assert abs((datetime.now(UTC) - r.request_time).total_seconds()) < 120
        if "trip" in body:
            t = body["trip"]
            assert (r.trip.origin, r.trip.destination, r.trip.cabin, r.trip.fare_class) == (
                "PEK",
                "CTU",
                "Y",
                "B",
            )
            assert r.trip.flight_number == t["flight_number"]
            assert r.trip.departure_time == datetime.fromisoformat(t["departure_time"])
        else:
            assert r.trip.origin is None and r.trip.departure_time is None
        # The shown slate is the answer, in rank order; with exploration off each propensity is 1.
        assert [s.offer_id for s in r.shown] == [o["offer_id"] for o in answer["offers"]]
        assert [s.slot for s in r.shown] == list(range(len(answer["offers"])))
        assert all(s.propensity == 1.0 for s in r.shown)
        shown_any += len(r.shown)
        # Candidates: every offer that passed eligibility and the caps on its own = shown, dropped by value,
        # diversity or the top k, or crowded out by this request's own picks (a cap suppression); never
        # an ineligible one.
        stage = {s["offer_id"]: s["stage"] for s in answer["suppressed"]}
        below = {o for o, st in stage.items() if st in SHOWN_OR_RANKED_BELOW}
        shown = {o["offer_id"] for o in answer["offers"]}
        assert set(r.candidates) >= shown | below
        assert all(stage[o] == "caps" for o in set(r.candidates) - shown - below)
        assert not {o for o in r.candidates if stage.get(o) == "eligibility"}
        assert len(r.candidates) == len(set(r.candidates))
    assert shown_any > 20  # the test looked at real slates


def test_the_booking_fields_reach_the_request_log(
    logged: tuple[TestClient, SqlRequestLog], world_members: list[str]
) -> None:
    client, log = logged
    booked = trip(booking_lead_days=45, party_size=4, children=2, stay_nights=6)
    with_booking = client.post("/v1/recommendations", json=rec_body(world_members[0], trip=booked))
    without = client.post("/v1/recommendations", json=rec_body(world_members[1]))
    one_way = client.post(
        "/v1/recommendations",
        json=rec_body(world_members[2], trip=trip(booking_lead_days=0, party_size=1, children=0)),
    )
    for resp in (with_booking, without, one_way):
        assert resp.status_code == 200, resp.text
    flush(client)
    ids = [r.json()["request_id"] for r in (with_booking, without, one_way)]
    records = log.get_many(ids)
    booking = [
        (t.booking_lead_days, t.party_size, t.children, t.stay_nights) for t in (records[i].trip for i in ids)
    ]
    assert booking == [(45, 4, 2, 6), (None, None, None, None), (0, 1, 0, None)]


def test_caps_shrink_the_logged_candidate_set(
    logged: tuple[TestClient, SqlRequestLog], world_members: list[str], world_offers: pd.DataFrame
) -> None:
    client, log = logged
    member = world_members[20]
    first = client.post("/v1/recommendations", json=rec_body(member)).json()
    # The same screen again at once: the weekly per-offer cap blocks every offer just shown.
    second = client.post("/v1/recommendations", json=rec_body(member)).json()
    flush(client)
    a, b = log.get(first["request_id"]), log.get(second["request_id"])
    assert a is not None and b is not None and a.shown
    exempt = set(world_offers.loc[world_offers["exempt"], "offer_id"])  # service offers are never capped
    capped = {s.offer_id for s in a.shown} - exempt
    assert capped and not capped & set(b.candidates)


def test_events_join_the_request_through_the_tracking_token(
    logged: tuple[TestClient, SqlRequestLog], world_members: list[str]
) -> None:
    client, log = logged
    answer = client.post("/v1/recommendations", json=rec_body(world_members[30], trip=trip())).json()
    offer = answer["offers"][0]
    event = {
        "event_id": f"e-{uuid.uuid4().hex}",
        "member_id": world_members[30],
        "offer_id": offer["offer_id"],
        "event_type": "click",
        "placement": "booking",
        "event_time": datetime.now(UTC).isoformat(),
        "tracking_token": offer["tracking_token"],
    }
    assert client.post("/v1/events", json={"events": [event]}).status_code == 200
    flush(client)
    stored = client.app.state.services.event_log.get([event["event_id"]])  # type: ignore[attr-defined]
    record = log.get(stored[0]["request_id"])
    assert record is not None and record.request_id == answer["request_id"]
    assert record.shown[0].offer_id == offer["offer_id"]


def test_write_metrics_are_exported(
    logged: tuple[TestClient, SqlRequestLog], world_members: list[str]
) -> None:
    client, _ = logged
    for m in world_members[40:45]:
        client.post("/v1/recommendations", json=rec_body(m))
    flush(client)
    text = client.get("/metrics").text
    assert "recsys_request_log_written_total 5.0" in text
    assert "recsys_request_log_write_lag_seconds_count" in text
    assert "recsys_request_log_pending 0.0" in text


def test_request_log_can_be_switched_off(
    registry: Registry, serving_world: Path, tmp_path: Path, world_members: list[str]
) -> None:
    settings = make_settings(registry, serving_world, tmp_path, None, request_log_enabled=False)
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/recommendations", json=rec_body(world_members[0])).status_code == 200
        assert client.app.state.services.request_writer is None  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------- exploration


def test_explored_propensities_match_show_frequencies(
    backend: str,
    registry: Registry,
    serving_world: Path,
    tmp_path: Path,
    redis_prefix: str,
    world_members: list[str],
) -> None:
    """Over many seeded requests in one state (caps off), each offer is shown as often as the propensities
    the log recorded for it say (chi-square), and exploration happens on its share of requests."""
    share, k, n_req = 0.3, 3, 1200
    body = rec_body(world_members[50], limit=k)
    with logged_app(
        backend,
        registry,
        serving_world,
        tmp_path,
        redis_prefix,
        exploration_share=share,
        exploration_seed=20261205,
        capping_enabled=False,
    ) as (client, log):
        ids = []
        for _ in range(n_req):
            resp = client.post("/v1/recommendations", json=body)
            assert resp.status_code == 200, resp.text
            ids.append(resp.json()["request_id"])
        flush(client)
        records = list(log.get_many(ids).values())
    assert len(records) == n_req
    candidates = records[0].candidates
    n = len(candidates)
    assert n > k and all(r.candidates == candidates for r in records)
    exploit = {s.offer_id for s in next(r for r in records if not r.exploration).shown}
    explored = sum(r.exploration for r in records)
    assert stats.binomtest(explored, n_req, share).pvalue > 0.01
    shows: Counter[str] = Counter()
    recorded: dict[str, float] = {}
    for r in records:
        for s in r.shown:
            shows[s.offer_id] += 1
            assert recorded.setdefault(s.offer_id, s.propensity) == s.propensity
            # The marginal over the mixture: (1 - share) * [in the value slate] + share * k / n.
            assert s.propensity == pytest.approx((1 - share) * (s.offer_id in exploit) + share * k / n)
        if not r.exploration:
            assert {s.offer_id for s in r.shown} == exploit
    expected = [n_req * ((1 - share) * (c in exploit) + share * k / n) for c in candidates]
    observed = [shows[c] for c in candidates]
    assert stats.chisquare(observed, expected).pvalue > 0.01
    assert stats.chisquare(observed, [n_req * k / n] * n).pvalue < 1e-6  # the test can tell a wrong p


def test_explored_slates_obey_the_caps(
    backend: str,
    registry: Registry,
    serving_world: Path,
    tmp_path: Path,
    redis_prefix: str,
    world_members: list[str],
    world_offers: pd.DataFrame,
) -> None:
    policy = tmp_path / "caps-explore.yaml"
    policy.write_text(
        'version: "explore-test"\ncount_on: serve\ncaps:\n'
        "  - {name: member_daily, scope: member, limit: 6, window: day}\n"
        "  - {name: upsell_daily, scope: member_family, families: [upsell], limit: 2, window: day}\n"
        "  - {name: offer_weekly, scope: member_offer, limit: 1, window: 7d}\n"
    )
    with logged_app(
        backend,
        registry,
        serving_world,
        tmp_path,
        redis_prefix,
        exploration_share=1.0,
        exploration_seed=5,
        capping_policy_path=policy,
    ) as (client, log):
        member = world_members[60]
        ids = [
            client.post("/v1/recommendations", json=rec_body(member, limit=5)).json()["request_id"]
            for _ in range(6)
        ]
        flush(client)
        records = [log.get(i) for i in ids]
    exempt = set(world_offers.loc[world_offers["exempt"], "offer_id"])
    family = dict(zip(world_offers["offer_id"], world_offers["family"], strict=True))
    shown = [s.offer_id for r in records if r is not None for s in r.shown if s.offer_id not in exempt]
    assert all(r is not None and r.exploration for r in records)
    assert shown and len(shown) == len(set(shown))  # offer_weekly: the same offer at most once a week
    assert len(shown) <= 6  # member_daily: six a day
    assert sum(family[o] == "upsell" for o in shown) <= 2  # upsell_daily
    for r in records:
        assert r is not None
        n = len(r.candidates)
        assert all(s.propensity == pytest.approx(min(5, n) / n) for s in r.shown)


# ------------------------------------------------------------------------------------------ the writers


def test_the_writer_is_a_child_process_by_default_and_a_thread_on_request(
    backend: str,
    registry: Registry,
    serving_world: Path,
    tmp_path: Path,
    redis_prefix: str,
    world_members: list[str],
) -> None:
    for kind, cls in (("process", ProcessRequestWriter), ("thread", BatchingRequestWriter)):
        (tmp_path / kind).mkdir()
        over = {} if kind == "process" else {"request_log_writer": kind}
        with logged_app(backend, registry, serving_world, tmp_path / kind, redis_prefix, **over) as (
            client,
            log,
        ):
            assert isinstance(client.app.state.services.request_writer, cls)  # type: ignore[attr-defined]
            ids = [
                client.post("/v1/recommendations", json=rec_body(m)).json()["request_id"]
                for m in world_members[70:76]
            ]
            flush(client)
            records = log.get_many(ids)
            assert len(records) == 6 and all(records[i].shown for i in ids)


def test_a_killed_writer_child_fails_no_request_and_is_replaced(
    logged: tuple[TestClient, SqlRequestLog], world_members: list[str]
) -> None:
    client, log = logged
    writer = client.app.state.services.request_writer  # type: ignore[attr-defined]
    assert isinstance(writer, ProcessRequestWriter)
    flush(client)
    first = writer.child_pid
    assert first is not None
    ids = []
    for i, member in enumerate(world_members[80:120]):
        resp = client.post("/v1/recommendations", json=rec_body(member))
        assert resp.status_code == 200, resp.text
        ids.append(resp.json()["request_id"])
        if i == 15:
            os.kill(first, signal.SIGKILL)
    flush(client)
    assert writer.restarts == 1 and writer.child_pid not in (None, first)
    page = samples(client.get("/metrics").text)
    lost = total(page, "recsys_request_log_dropped_total", reason="writer_died")
    logged_ids = set(log.get_many(ids))
    written = total(page, "recsys_request_log_written_total")
    assert written + lost == len(ids)  # every record reported written or counted lost
    # a child killed between its commit and its report wrote records counted lost: the count is a bound
    assert written <= len(logged_ids) <= written + lost
    assert ids[-1] in logged_ids  # the new child writes what comes after


def test_a_clean_shutdown_writes_every_answer(
    backend: str,
    registry: Registry,
    serving_world: Path,
    tmp_path: Path,
    redis_prefix: str,
    world_members: list[str],
) -> None:
    if backend == "sqlite":
        url, schema, engine = f"sqlite:///{tmp_path}/requests.db", None, None
    else:
        engine, schema = pg_schema_or_fail("test_svc_reqlog")
        url = PG_URL
    # A 30 s interval: only the shutdown's drain writes these records.
    settings = make_settings(
        registry,
        serving_world,
        tmp_path,
        redis_prefix,
        request_log_url=url,
        request_log_schema=schema,
        request_log_flush_interval_s=30,
    )
    try:
        with TestClient(create_app(settings)) as client:
            ids = [
                client.post("/v1/recommendations", json=rec_body(m)).json()["request_id"]
                for m in world_members[120:150]
            ]
        log = SqlRequestLog(url, schema=schema)
        try:
            assert len(log.get_many(ids)) == len(ids) == 30
        finally:
            log.close()
    finally:
        if engine is not None and schema is not None:
            drop_schema(engine, schema)
