"""Every recommend request is logged through the API, on SQLite and on PostgreSQL: context, the candidate
set after eligibility and caps, the shown slate with propensities; events join to it by tracking token."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from recsys.requestlog import SqlRequestLog
from serving.app import create_app
from tests.requestlog.conftest import PG_URL, drop_schema, pg_schema_or_fail
from tests.serving.conftest import DEBUG_TOKEN, Registry, make_settings, serve_counting_policy
from tests.serving.test_api import rec_body, trip

SHOWN_OR_RANKED_BELOW = {"value", "diversity", "top_k"}  # stages that drop candidates, not non-candidates


@pytest.fixture(params=["sqlite", "postgresql"])
def logged(
    request: pytest.FixtureRequest, registry: Registry, serving_world: Path, tmp_path: Path, redis_prefix: str
) -> Iterator[tuple[TestClient, SqlRequestLog]]:
    """The app over real Redis with its request log in SQLite or in a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        url, schema, engine = f"sqlite:///{tmp_path}/requests.db", None, None
    else:
        engine, schema = pg_schema_or_fail("test_svc_reqlog")
        url = PG_URL
    settings = make_settings(
        registry,
        serving_world,
        tmp_path,
        redis_prefix,
        request_log_url=url,
        request_log_schema=schema,
        exploration_share=0.0,
        # counted on serve, each offer once a week: a repeated screen's candidates show the caps at work
        capping_policy_path=serve_counting_policy(tmp_path),
    )
    reader = SqlRequestLog(url, schema=schema)
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield client, reader
    finally:
        reader.close()
        if engine is not None and schema is not None:
            drop_schema(engine, schema)


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
        # Candidates: every offer that passed eligibility and caps = shown, or dropped only by value,
        # diversity or the top k; none suppressed by eligibility or caps.
        below = {s["offer_id"] for s in answer["suppressed"] if s["stage"] in SHOWN_OR_RANKED_BELOW}
        blocked = {s["offer_id"] for s in answer["suppressed"] if s["stage"] in {"eligibility", "caps"}}
        assert set(r.candidates) == {o["offer_id"] for o in answer["offers"]} | below
        assert not set(r.candidates) & blocked
        assert len(r.candidates) == len(set(r.candidates))
    assert shown_any > 20  # the test looked at real slates


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
