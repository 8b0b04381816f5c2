"""Event intake that cannot be knocked over: size limits before validation, NUL strings, named bad events,
tokens bound to member and placement, repeated ids, malformed JSON — the same on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.serving.conftest import PG_URL, Registry, make_settings, pg_schema_or_fail
from tests.serving.test_api import error_fields, event, served_offer, trip

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def intake(
    request: pytest.FixtureRequest,
    registry: Registry,
    serving_world: Path,
    tmp_path_factory: pytest.TempPathFactory,
    module_prefix: str,
) -> Iterator[TestClient]:
    """The app on each event-log backend (the PostgreSQL one in a schema of its own)."""
    over: dict[str, Any] = {}
    engine = schema = None
    if request.param == "postgresql":
        engine, schema = pg_schema_or_fail()
        over = {"database_url": PG_URL, "database_schema": schema}
    settings = make_settings(
        registry, serving_world, tmp_path_factory.mktemp("intake"), f"{module_prefix}-{request.param}", **over
    )
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            yield c
    finally:
        if engine is not None:
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            engine.dispose()


def stored(client: TestClient, member: str) -> int:
    return int(client.app.state.services.event_log.count(member_id=member))  # type: ignore[attr-defined]


def trip_key() -> str:
    return "CA1405|" + datetime.fromisoformat(trip()["departure_time"]).date().isoformat()


@pytest.mark.parametrize("field", ["event_id", "trip_key"])
def test_nul_is_a_422_and_nothing_is_stored(intake: TestClient, world_members: list[str], field: str) -> None:
    member = world_members[30 if field == "event_id" else 29]
    offer = served_offer(intake, member)
    ok = event(member, offer, "click")
    bad = event(member, offer, "click", **{field: "abc\x00def"})
    resp = intake.post("/v1/events", json={"events": [ok, bad]})
    assert resp.status_code == 422, resp.text
    assert error_fields(resp) == [f"events[1].{field}"]
    assert stored(intake, member) == 0
    # the connection still serves the next request
    assert intake.post("/v1/events", json={"events": [ok]}).json()["accepted"] == 1


def test_every_bad_event_is_named_by_index_and_field(intake: TestClient, world_members: list[str]) -> None:
    member = world_members[31]
    offer = served_offer(intake, member)
    batch = [
        event(member, offer, "click"),
        event(member, {"offer_id": "NOPE-1", "tracking_token": None}, "click"),
        event(member, offer, "click"),
        event(member, offer, "click", event_time="2001-01-01T00:00:00+00:00"),
    ]
    resp = intake.post("/v1/events", json={"events": batch})
    assert resp.status_code == 422
    assert error_fields(resp) == ["events[1].offer_id", "events[3].event_time"]
    assert stored(intake, member) == 0, "a batch is all-or-nothing"


def test_token_is_bound_to_member_and_placement(intake: TestClient, world_members: list[str]) -> None:
    member, other = world_members[32], world_members[33]
    offer = served_offer(intake, member)
    for change in ({"member_id": other}, {"placement": "home"}):
        resp = intake.post("/v1/events", json={"events": [event(member, offer, "click") | change]})
        assert resp.status_code == 422, change
        assert error_fields(resp) == ["events[0].tracking_token"]
        assert resp.json()["error"]["code"] == "tracking_token_mismatch"
    assert stored(intake, member) + stored(intake, other) == 0


def test_repeated_event_id(intake: TestClient, world_members: list[str]) -> None:
    member = world_members[34]
    offer = served_offer(intake, member)
    click = event(member, offer, "click")
    buy = event(member, offer, "purchase", event_id=click["event_id"], trip_key=trip_key())
    conflict = intake.post("/v1/events", json={"events": [click, buy]})
    assert conflict.status_code == 422
    assert error_fields(conflict) == ["events[1].event_id"]
    assert conflict.json()["error"]["code"] == "conflicting_duplicate"
    same = intake.post("/v1/events", json={"events": [click, dict(click)]})
    assert same.status_code == 200
    assert same.json()["accepted"] == 1 and same.json()["duplicates"] == 1
    assert stored(intake, member) == 1


@pytest.mark.parametrize("key", ["garbage", "CA1405|2026-13-45", "CA1405|", "PEK-CTU|2026-1-1"])
def test_garbage_trip_key(intake: TestClient, world_members: list[str], key: str) -> None:
    member = world_members[35]
    offer = served_offer(intake, member)
    resp = intake.post("/v1/events", json={"events": [event(member, offer, "purchase", trip_key=key)]})
    assert resp.status_code == 422 and error_fields(resp) == ["events[0].trip_key"]


def test_purchase_of_a_flight_offer_needs_its_trip(intake: TestClient, world_members: list[str]) -> None:
    member = world_members[36]
    offer = served_offer(intake, member)  # post_booking offers for a booked trip: flight-bound
    resp = intake.post("/v1/events", json={"events": [event(member, offer, "purchase")]})
    assert resp.status_code == 422 and error_fields(resp) == ["events[0].trip_key"]


def test_malformed_json_names_line_and_column(intake: TestClient) -> None:
    body = b'{"events": [\n  {"event_id": "a",\n   "member_id" "M1"}\n]}'
    resp = intake.post("/v1/events", content=body, headers=JSON)
    assert resp.status_code == 422
    assert "line 3, column 16" in resp.json()["error"]["message"], resp.text


def test_too_many_items_refused_before_validation(intake: TestClient) -> None:
    body = json.dumps({"events": [{}] * 50_000}).encode()  # 350 kB, under the byte limit
    t0 = time.perf_counter()
    resp = intake.post("/v1/events", content=body, headers=JSON)
    elapsed = time.perf_counter() - t0
    assert resp.status_code == 413 and error_fields(resp) == ["events"]
    assert len(resp.content) < 500, "one short error, not one per item"
    assert elapsed < 2.0, elapsed  # generous on a shared machine; test_body_flood measures it properly


def test_body_over_the_byte_limit(intake: TestClient) -> None:
    limit = intake.app.state.services.settings.max_body_bytes  # type: ignore[attr-defined]
    resp = intake.post("/v1/events", content=b"[" + b" " * limit + b"]", headers=JSON)
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"
    assert str(limit) in resp.json()["error"]["message"]


def test_new_event_id_after_rejection_is_accepted(intake: TestClient, world_members: list[str]) -> None:
    member = world_members[37]
    offer = served_offer(intake, member)
    ev = event(member, offer, "click", event_id=f"evt-{uuid.uuid4().hex}")
    assert intake.post("/v1/events", json={"events": [ev]}).json()["accepted"] == 1
