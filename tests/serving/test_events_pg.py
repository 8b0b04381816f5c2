"""POST /v1/events on the machine's PostgreSQL (the production event log): a retry counts once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.serving.conftest import PG_URL, Registry, make_settings, pg_schema_or_fail
from tests.serving.test_api import rec_body


def test_retried_batch_counts_once_in_postgresql(
    registry: Registry, serving_world: Path, tmp_path: Path, redis_prefix: str, world_members: list[str]
) -> None:
    engine, schema = pg_schema_or_fail()
    try:
        settings = make_settings(
            registry, serving_world, tmp_path, redis_prefix, database_url=PG_URL, database_schema=schema
        )
        with TestClient(create_app(settings)) as client:
            member = world_members[20]
            rec = client.post("/v1/recommendations", json=rec_body(member, placement="post_booking"))
            offer = rec.json()["offers"][0]
            events = [
                {
                    "event_id": str(uuid.uuid4()),
                    "event_type": t,
                    "member_id": member,
                    "offer_id": offer["offer_id"],
                    "placement": "post_booking",
                    "event_time": datetime.now(UTC).isoformat(),
                    "tracking_token": offer["tracking_token"],
                    "trip_key": "CA1405|" + rec_body(member)["trip"]["departure_time"][:10],
                }
                for t in ("impression", "click", "purchase")
            ]
            first = client.post("/v1/events", json={"events": events})
            assert first.status_code == 200 and first.json()["accepted"] == 3
            for _ in range(2):  # the app retries after a timeout, twice
                retry = client.post("/v1/events", json={"events": events})
                assert retry.json()["accepted"] == 0 and retry.json()["duplicates"] == 3
            partly = client.post(
                "/v1/events", json={"events": [*events[:1], {**events[0], "event_id": "fresh-1"}]}
            )
            assert partly.json()["accepted"] == 1 and partly.json()["duplicate_ids"] == [
                events[0]["event_id"]
            ]
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    f'SELECT event_type, request_id FROM "{schema}".offer_events '
                    "WHERE member_id = :m ORDER BY event_type"
                ),
                {"m": member},
            ).all()
        assert sorted(r[0] for r in rows) == ["click", "impression", "impression", "purchase"]
        assert all(r[1] == rec.json()["request_id"] for r in rows)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
