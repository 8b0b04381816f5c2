"""POST /v1/events refuses event times no working device clock produces: further ahead of the server
clock than the allowed skew, or older than the maximum age. The app runs on a fixed clock
(``create_app(clock=)``) over real Redis and a SQLite event log; a refused batch stores nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from serving.app import create_app
from serving.config import Settings
from tests.serving.conftest import Registry, make_settings
from tests.serving.test_api import error_fields

# Near the real time (cap counters in Redis expire relative to it), but fixed so the answers are exact.
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def offer_id(world_offers: pd.DataFrame) -> str:
    return str(world_offers["offer_id"].iloc[0])


@pytest.fixture(scope="module")
def fixed_client(
    registry: Registry, serving_world: Path, tmp_path_factory: pytest.TempPathFactory, module_prefix: str
) -> Iterator[TestClient]:
    """The app with the default skew (300 s) and maximum age (30 days), on a clock stopped at ``NOW``."""
    settings = make_settings(registry, serving_world, tmp_path_factory.mktemp("svc-times"), module_prefix)
    assert settings.events_max_future_skew_s == 300 and settings.events_max_age_days == 30
    with TestClient(create_app(settings, clock=lambda: NOW), raise_server_exceptions=False) as c:
        yield c


def event(member: str, offer_id: str, event_time: datetime) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "event_type": "click",
        "member_id": member,
        "offer_id": offer_id,
        "placement": "post_booking",
        "event_time": event_time.isoformat(),
    }


def logged(client: TestClient, member: str) -> int:
    return int(client.app.state.services.event_log.count(member_id=member))  # type: ignore[attr-defined]


def test_an_hour_ahead_rejects_the_batch_naming_the_field(
    fixed_client: TestClient, world_members: list[str], offer_id: str
) -> None:
    member = world_members[30]
    batch = {"events": [event(member, offer_id, NOW), event(member, offer_id, NOW + timedelta(hours=1))]}
    resp = fixed_client.post("/v1/events", json=batch)
    assert resp.status_code == 422, resp.text
    assert error_fields(resp) == ["events[1].event_time"]
    error = resp.json()["error"]
    assert error["code"] == "event_time_in_future"
    assert "1h 0m 0s ahead of the server clock" in error["message"], error["message"]
    assert "at most 5m 0s" in error["message"], error["message"]
    assert logged(fixed_client, member) == 0, "a rejected batch stores nothing, not even its valid event"


def test_a_minute_ahead_is_within_the_skew(
    fixed_client: TestClient, world_members: list[str], offer_id: str
) -> None:
    member = world_members[31]
    ev = event(member, offer_id, NOW + timedelta(minutes=1))
    resp = fixed_client.post("/v1/events", json={"events": [ev]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["accepted"] == 1
    stored = fixed_client.app.state.services.event_log.get([ev["event_id"]])[0]  # type: ignore[attr-defined]
    at = pd.Timestamp(stored["event_time"])  # SQLite gives back naive UTC
    assert (at if at.tzinfo else at.tz_localize(UTC)) == NOW + timedelta(minutes=1)


@pytest.mark.parametrize(
    ("ahead", "ok"),
    [(timedelta(seconds=300), True), (timedelta(seconds=301), False)],
    ids=["exactly-the-skew", "one-second-more"],
)
def test_skew_boundary_compares_instants_not_wall_clocks(
    fixed_client: TestClient, world_members: list[str], offer_id: str, ahead: timedelta, ok: bool
) -> None:
    member = world_members[32 if ok else 33]
    # Beijing wall-clock time: 8 hours "ahead" on the wall, but the instant is what counts.
    when = (NOW + ahead).astimezone(ZoneInfo("Asia/Shanghai"))
    resp = fixed_client.post("/v1/events", json={"events": [event(member, offer_id, when)]})
    assert resp.status_code == (200 if ok else 422), resp.text
    assert logged(fixed_client, member) == (1 if ok else 0)


def test_older_than_the_maximum_age_is_rejected(
    fixed_client: TestClient, world_members: list[str], offer_id: str
) -> None:
    member = world_members[34]
    recent = event(member, offer_id, NOW - timedelta(days=29))
    old = event(member, offer_id, NOW - timedelta(days=31))
    resp = fixed_client.post("/v1/events", json={"events": [recent, old]})
    assert resp.status_code == 422, resp.text
    assert error_fields(resp) == ["events[1].event_time"]
    assert resp.json()["error"]["code"] == "event_time_too_old"
    assert "31d 0h 0m 0s before the server clock" in resp.json()["error"]["message"]
    assert logged(fixed_client, member) == 0
    assert fixed_client.post("/v1/events", json={"events": [recent]}).json()["accepted"] == 1


def test_absurd_times_are_a_422_not_a_500(
    fixed_client: TestClient, world_members: list[str], offer_id: str
) -> None:
    member = world_members[35]
    for when, code in (("9999-12-31T23:59:59-12:00", "event_time_in_future"),
                       ("0001-01-01T00:00:00+14:00", "event_time_too_old")):  # fmt: skip
        ev = event(member, offer_id, NOW) | {"event_time": when}
        resp = fixed_client.post("/v1/events", json={"events": [ev]})
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["code"] == code
    assert logged(fixed_client, member) == 0


def test_the_allowances_are_settings(
    registry: Registry,
    serving_world: Path,
    tmp_path: Path,
    redis_prefix: str,
    world_members: list[str],
    offer_id: str,
) -> None:
    settings = make_settings(
        registry, serving_world, tmp_path, redis_prefix, events_max_future_skew_s=0, events_max_age_days=1
    )
    member = world_members[36]

    def post(when: datetime) -> Any:
        return client.post("/v1/events", json={"events": [event(member, offer_id, when)]})

    with TestClient(create_app(settings, clock=lambda: NOW)) as client:
        ahead = post(NOW + timedelta(seconds=1))
        assert ahead.status_code == 422 and ahead.json()["error"]["code"] == "event_time_in_future"
        old = post(NOW - timedelta(days=2))
        assert old.status_code == 422 and old.json()["error"]["code"] == "event_time_too_old"
        assert post(NOW).json()["accepted"] == 1
    with pytest.raises(ValidationError, match="events_max_future_skew_s"):
        Settings(events_max_future_skew_s=-1)
    with pytest.raises(ValidationError, match="events_max_age_days"):
        Settings(events_max_age_days=0)
