"""The HTTP contract of the service over real Redis and a real champion: answers, errors, events, members."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.tracking import TrackingSigner
from tests.serving.conftest import ADMIN_HEADERS, DEBUG_TOKEN, TRACKING_SECRET, Registry


def departure(days: float = 3) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).astimezone().isoformat(timespec="seconds")


def trip(**over: Any) -> dict[str, Any]:
    t: dict[str, Any] = {
        "origin": "PEK",
        "destination": "CTU",
        "departure_time": departure(),
        "cabin": "Y",
        "fare_class": "B",
        "flight_number": "CA1405",
        "seats_left": {"F": 2, "C": 4, "W": 6, "Y": 30},
    }
    t.update(over)
    return t


def rec_body(member: str, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"member_id": member, "placement": "booking", "trip": trip(), "limit": 5}
    body.update(over)
    return body


def error_fields(resp: Any) -> list[str]:
    body = resp.json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "fields"} <= set(body["error"]), body
    return [f["field"] for f in body["error"]["fields"]]


# --------------------------------------------------------------------------------------------- answers


def test_recommendation_answer(client: TestClient, registry: Registry, world_members: list[str]) -> None:
    resp = client.post("/v1/recommendations", json=rec_body(world_members[0]))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model"] == {
        "name": registry.model_name,
        "version": registry.first_version,
        "alias": "champion",
    }
    assert len(body["request_id"]) == 32 and body["member_id"] == world_members[0]
    assert body["suppressed"] is None  # no debug token
    offers = body["offers"]
    assert 1 <= len(offers) <= 5
    assert [o["rank"] for o in offers] == list(range(1, len(offers) + 1))
    signer = TrackingSigner(TRACKING_SECRET.encode())
    for o in offers:
        assert o["reasons"] and all(isinstance(r, str) and r for r in o["reasons"])
        assert o["price_cash"] is not None or o["price_miles"] is not None or o["family"] != "upsell"
        claims = signer.verify(o["tracking_token"])
        assert (claims.request_id, claims.offer_id, claims.model_version, claims.placement) == (
            body["request_id"],
            o["offer_id"],
            registry.first_version,
            "booking",
        )


def test_debug_needs_the_internal_token(client: TestClient, world_members: list[str]) -> None:
    body = rec_body(world_members[1], debug=True)
    public = client.post("/v1/recommendations", json=body)
    assert public.status_code == 200 and public.json()["suppressed"] is None
    internal = client.post("/v1/recommendations", json=body, headers={"X-Debug-Token": DEBUG_TOKEN})
    assert internal.status_code == 200
    suppressed = internal.json()["suppressed"]
    assert isinstance(suppressed, list) and suppressed, "a booking request drops some candidates"
    assert all(s["reason"] and s["stage"] and s["offer_id"] for s in suppressed)
    wrong = client.post("/v1/recommendations", json=body, headers={"X-Debug-Token": "nope"})
    assert wrong.json()["suppressed"] is None


def test_unknown_member_gets_offers(client: TestClient) -> None:
    member = f"NEW{uuid.uuid4().hex[:8]}"
    resp = client.post("/v1/recommendations", json=rec_body(member, limit=10))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["cold_start"] is True
    assert len(body["offers"]) >= 1


def test_families_filter_and_limit(client: TestClient, world_members: list[str]) -> None:
    resp = client.post(
        "/v1/recommendations", json=rec_body(world_members[2], families=["ancillary"], limit=3)
    )
    assert resp.status_code == 200
    offers = resp.json()["offers"]
    assert 1 <= len(offers) <= 3
    assert {o["family"] for o in offers} == {"ancillary"}


# ------------------------------------------------------------------------------------------- bad input

BAD_REQUESTS = [
    ("unknown placement", {"placement": "lounge"}, 422, "placement"),
    ("limit 0", {"limit": 0}, 422, "limit"),
    ("limit 51", {"limit": 51}, 422, "limit"),
    ("limit not a number", {"limit": "ten"}, 422, "limit"),
    ("malformed time", {"trip": trip(departure_time="tomorrow at ten")}, 422, "trip.departure_time"),
    ("time without offset", {"trip": trip(departure_time="2026-12-01T10:00:00")}, 422, "trip.departure_time"),
    ("impossible date", {"trip": trip(departure_time="2026-02-30T10:00:00Z")}, 422, "trip.departure_time"),
    ("unknown origin airport", {"trip": trip(origin="QQQ")}, 422, "trip.origin"),
    ("unknown destination airport", {"trip": trip(destination="ZZZ")}, 422, "trip.destination"),
    ("malformed airport", {"trip": trip(origin="pek1")}, 422, "trip.origin"),
    ("unknown cabin", {"trip": trip(cabin="Z")}, 422, "trip.cabin"),
    ("unknown seat cabin", {"trip": trip(seats_left={"Q": 3})}, 422, "trip.seats_left.Q.[key]"),
    ("negative seats", {"trip": trip(seats_left={"C": -1})}, 422, "trip.seats_left.C"),
    ("fare class of another cabin", {"trip": trip(cabin="Y", fare_class="J")}, 422, "trip.fare_class"),
    ("same origin and destination", {"trip": trip(destination="PEK")}, 422, "trip.destination"),
    ("unknown family", {"families": ["food"]}, 422, "families[0]"),
    ("empty families", {"families": []}, 422, "families"),
    ("negative booking lead", {"trip": trip(booking_lead_days=-1)}, 422, "trip.booking_lead_days"),
    ("booking lead beyond a year", {"trip": trip(booking_lead_days=400)}, 422, "trip.booking_lead_days"),
    ("party of none", {"trip": trip(party_size=0)}, 422, "trip.party_size"),
    ("party of ten", {"trip": trip(party_size=10)}, 422, "trip.party_size"),
    ("party size as text", {"trip": trip(party_size="2")}, 422, "trip.party_size"),
    ("party size as bool", {"trip": trip(party_size=True)}, 422, "trip.party_size"),
    ("fractional stay", {"trip": trip(stay_nights=2.5)}, 422, "trip.stay_nights"),
    ("negative children", {"trip": trip(children=-1)}, 422, "trip.children"),
    ("more children than passengers", {"trip": trip(party_size=2, children=3)}, 422, "trip.children"),
    ("unknown field", {"limt": 3}, 422, "limt"),
    ("member id with spaces", {"member_id": "a b"}, 422, "member_id"),
]


@pytest.mark.parametrize(
    ("case", "change", "status", "field"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_recommendation_requests(
    client: TestClient, world_members: list[str], case: str, change: dict[str, Any], status: int, field: str
) -> None:
    resp = client.post("/v1/recommendations", json=rec_body(world_members[3], **change))
    assert resp.status_code == status, resp.text
    fields = error_fields(resp)
    assert any(f == field or f.startswith(field) for f in fields), (case, fields)


def test_missing_member_id_is_named(client: TestClient) -> None:
    resp = client.post("/v1/recommendations", json={"placement": "home"})
    assert resp.status_code == 422 and "member_id" in error_fields(resp)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type(client: TestClient, world_members: list[str], content_type: str | None) -> None:
    import json

    headers = {"Content-Type": content_type} if content_type else {}
    resp = client.post("/v1/recommendations", content=json.dumps(rec_body(world_members[0])), headers=headers)
    assert resp.status_code == 415, resp.text
    assert error_fields(resp) == ["content-type"]


def test_malformed_json(client: TestClient) -> None:
    resp = client.post(
        "/v1/recommendations", content=b'{"member_id": "M1", ', headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 422
    assert error_fields(resp)


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/nothing").json()["error"]["code"] == "not_found"
    resp = client.get("/v1/recommendations")
    assert resp.status_code == 405 and resp.json()["error"]["code"] == "method_not_allowed"


# ---------------------------------------------------------------------------------------------- events


def served_offer(client: TestClient, member: str) -> dict[str, Any]:
    resp = client.post("/v1/recommendations", json=rec_body(member, placement="post_booking"))
    assert resp.status_code == 200 and resp.json()["offers"], resp.text
    return dict(resp.json()["offers"][0])


def event(member: str, offer: dict[str, Any], event_type: str, **over: Any) -> dict[str, Any]:
    ev = {
        "event_id": uuid.uuid4().hex,
        "event_type": event_type,
        "member_id": member,
        "offer_id": offer["offer_id"],
        "placement": "post_booking",
        "event_time": datetime.now(UTC).isoformat(),
        "tracking_token": offer["tracking_token"],
    }
    ev.update(over)
    return ev


def test_retried_batch_is_counted_once(client: TestClient, world_members: list[str]) -> None:
    member = world_members[5]
    offer = served_offer(client, member)
    batch = {"events": [event(member, offer, t) for t in ("impression", "click", "dismiss")]}
    first = client.post("/v1/events", json=batch)
    assert first.status_code == 200, first.text
    assert first.json() | {"duplicate_ids": []} == {
        "received": 3,
        "accepted": 3,
        "duplicates": 0,
        "duplicate_ids": [],
        "apply_errors": 0,
    }
    retry = client.post("/v1/events", json=batch)
    assert retry.status_code == 200
    assert retry.json()["accepted"] == 0 and retry.json()["duplicates"] == 3
    log = client.app.state.services.event_log  # type: ignore[attr-defined]
    assert log.count(member_id=member) == 3
    stored = log.get([batch["events"][0]["event_id"]])[0]
    assert stored["request_id"] is not None and stored["model_version"] is not None  # attributed by the token


def test_dismiss_starts_a_cooldown_once(
    client: TestClient, world_members: list[str], world_offers: pd.DataFrame
) -> None:
    member = world_members[6]
    exempt = set(world_offers.loc[world_offers["exempt"].astype(bool), "offer_id"])
    resp = client.post("/v1/recommendations", json=rec_body(member, placement="post_booking", limit=10))
    offer = next(o for o in resp.json()["offers"] if o["offer_id"] not in exempt)  # exempt: no cool-down
    batch = {"events": [event(member, offer, "dismiss")]}
    assert client.post("/v1/events", json=batch).json()["accepted"] == 1
    caps = client.get(f"/v1/members/{member}/caps")
    assert caps.status_code == 200
    assert offer["offer_id"] in str(caps.json()["state"]), "the dismissed offer is in a cool-down"
    again = client.post("/v1/recommendations", json=rec_body(member, placement="post_booking", limit=50))
    assert offer["offer_id"] not in [o["offer_id"] for o in again.json()["offers"]]


def test_purchase_is_remembered_for_the_trip(client: TestClient, world_members: list[str]) -> None:
    member = world_members[7]
    offer = served_offer(client, member)
    trip_key = "CA1405|" + datetime.fromisoformat(trip()["departure_time"]).date().isoformat()
    batch = {"events": [event(member, offer, "purchase", trip_key=trip_key)]}
    assert client.post("/v1/events", json=batch).json()["accepted"] == 1
    store = client.app.state.services.member_store  # type: ignore[attr-defined]
    assert offer["offer_id"] in store.purchases(member, trip_key)


def test_unknown_offer_is_named(client: TestClient, world_members: list[str]) -> None:
    member = world_members[8]
    offer = served_offer(client, member)
    batch = {
        "events": [
            event(member, offer, "click"),
            event(member, {"offer_id": "NOPE-1", "tracking_token": None}, "click"),
        ]
    }
    resp = client.post("/v1/events", json=batch)
    assert resp.status_code == 422
    assert error_fields(resp) == ["events[1].offer_id"]
    log = client.app.state.services.event_log  # type: ignore[attr-defined]
    assert log.count(member_id=member) == 0, "a rejected batch stores nothing"


def test_oversized_batch(client: TestClient, world_members: list[str]) -> None:
    member = world_members[9]
    offer = served_offer(client, member)
    limit = client.app.state.services.settings.events_max_batch  # type: ignore[attr-defined]
    batch = {"events": [event(member, offer, "impression") for _ in range(limit + 1)]}
    resp = client.post("/v1/events", json=batch)
    assert resp.status_code == 413
    assert error_fields(resp) == ["events"]


BAD_EVENTS = [
    ("unknown event type", {"event_type": "like"}, "events[0].event_type"),
    ("naive time", {"event_time": "2026-11-22T10:00:00"}, "events[0].event_time"),
    ("bad placement", {"placement": "inbox"}, "events[0].placement"),
    ("forged token", {"tracking_token": "djF8eA.AAAA"}, "events[0].tracking_token"),
    ("empty event id", {"event_id": ""}, "events[0].event_id"),
]


@pytest.mark.parametrize(("case", "change", "field"), BAD_EVENTS, ids=[c[0] for c in BAD_EVENTS])
def test_bad_events(
    client: TestClient, world_members: list[str], case: str, change: dict[str, Any], field: str
) -> None:
    member = world_members[10]
    offer = served_offer(client, member)
    resp = client.post("/v1/events", json={"events": [event(member, offer, "click") | change]})
    assert resp.status_code == 422, resp.text
    assert field in error_fields(resp), case


def test_token_of_another_offer_is_rejected(client: TestClient, world_members: list[str]) -> None:
    member = world_members[11]
    resp = client.post("/v1/recommendations", json=rec_body(member, placement="post_booking", limit=10))
    offers = resp.json()["offers"]
    assert len(offers) >= 2
    ev = event(member, offers[0], "click", tracking_token=offers[1]["tracking_token"])
    bad = client.post("/v1/events", json={"events": [ev]})
    assert bad.status_code == 422 and error_fields(bad) == ["events[0].tracking_token"]


def test_empty_batch_and_wrong_content_type(client: TestClient) -> None:
    assert error_fields(client.post("/v1/events", json={"events": []})) == ["events"]
    resp = client.post("/v1/events", content=b"events=1", headers={"Content-Type": "text/plain"})
    assert resp.status_code == 415


# --------------------------------------------------------------------------------------------- members


def test_member_profile(client: TestClient, world_members: list[str]) -> None:
    resp = client.get(f"/v1/members/{world_members[0]}/profile")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["tier"] in {"basic", "silver", "gold", "platinum"}
    assert body["segment"] in {"keep", "develop", "win_back", "general", "low_value"}
    assert 0 <= body["value_score"] <= 100
    if body["tier"] != "platinum":
        assert body["next_tier"] is not None and body["km_to_next_tier"] >= 0


def test_unknown_member_profile_is_404(client: TestClient) -> None:
    resp = client.get("/v1/members/NOBODY123/profile")
    assert resp.status_code == 404 and error_fields(resp) == ["member_id"]
    assert client.get("/v1/members/bad%20id/profile").status_code == 422


def test_member_profile_with_the_store_down_is_503_and_recommendations_still_answer(
    registry: Registry, serving_world: Path, tmp_path: Path, world_members: list[str]
) -> None:
    from recsys.stores.member_store import RedisMemberStore
    from recsys.stores.redis import RedisCallPolicy, RedisClients, RedisConfig
    from serving.app import create_app
    from tests.serving.conftest import make_settings

    dead = RedisMemberStore(
        RedisClients(RedisConfig("redis://127.0.0.1:1/0", policy=RedisCallPolicy(timeout_ms=200)))
    )  # nothing listens on port 1
    settings = make_settings(registry, serving_world, tmp_path, None, capping_enabled=False)
    with TestClient(create_app(settings, member_store=dead), raise_server_exceptions=False) as c:
        resp = c.get(f"/v1/members/{world_members[0]}/profile")
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"]["code"] == "member_store_unavailable"
        assert resp.headers["retry-after"] == "2"
        rec = c.post("/v1/recommendations", json=rec_body(world_members[0]))
        assert rec.status_code == 200 and rec.json()["offers"], "served as an unknown member"


# ------------------------------------------------------------------------------------------ operations


def test_health_ready_metrics(client: TestClient, world_members: list[str]) -> None:
    assert client.post("/v1/recommendations", json=rec_body(world_members[12])).status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "ok"
    assert ready.json()["checks"]["caps"].startswith("redis")
    text = client.get("/metrics").text
    assert 'recsys_http_requests_total{method="POST",route="/v1/recommendations",status="200"}' in text
    assert "recsys_suppressed_candidates_total" in text
    assert "recsys_cap_store_breaker_open" in text


def test_admin_reload_needs_the_admin_key_not_the_debug_token(client: TestClient, registry: Registry) -> None:
    assert client.post("/v1/admin/reload").status_code == 401
    refused = client.post("/v1/admin/reload", headers={"X-Debug-Token": DEBUG_TOKEN})
    assert refused.status_code == 401 and refused.json()["error"]["fields"][0]["field"] == "x-api-key"
    resp = client.post("/v1/admin/reload", headers=ADMIN_HEADERS)
    assert resp.status_code == 200
    assert resp.json()["status"] == "unchanged" and resp.json()["version"] == registry.first_version


def test_every_operation_is_documented_with_an_example(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]

    def has_example(obj: dict[str, Any]) -> bool:
        if "example" in obj or "examples" in obj:
            return True
        ref = obj.get("schema", {}).get("$ref") or obj.get("$ref")
        if ref:
            target = schemas[ref.rsplit("/", 1)[1]]
            return "example" in target or "examples" in target
        return False

    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            ok = op["responses"].get("200", {}).get("content", {})
            documented = any(has_example(c) for c in ok.values())
            body = op.get("requestBody", {}).get("content", {})
            documented = documented or any(has_example(c) for c in body.values())
            params = [p for p in op.get("parameters", []) if p["in"] == "path"]
            documented = documented or any("example" in p or "examples" in p for p in params)
            assert documented, f"{method.upper()} {path} has no example"


def test_threadpool_setting_serves_the_blocking_pipeline(
    registry: Registry,
    serving_world: Path,
    tmp_path: Path,
    world_members: list[str],
    world_offers: pd.DataFrame,
    redis_prefix: str,
) -> None:
    """``RECSYS_PIPELINE_IN_THREADPOOL=true``: the pipeline's blocking path answers like the awaited one, caps
    included (the second request for the same screen cannot repeat the first one's offers)."""
    from serving.app import create_app
    from tests.serving.conftest import make_settings

    policy = tmp_path / "caps.yaml"  # counted on serve, each offer once a week: a repeat would be a bug
    policy.write_text(
        'version: "serve-1"\ncount_on: serve\ntimeout_ms: 500\ncaps:\n'
        "  - {name: offer_weekly, scope: member_offer, limit: 1, window: 7d}\n"
    )
    settings = make_settings(
        registry,
        serving_world,
        tmp_path,
        redis_prefix,
        pipeline_in_threadpool=True,
        capping_policy_path=policy,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        member = world_members[20]
        first = c.post("/v1/recommendations", json=rec_body(member, limit=2))
        assert first.status_code == 200 and first.json()["offers"], first.text
        again = c.post("/v1/recommendations", json=rec_body(member, limit=2)).json()["offers"]
        shown = {o["offer_id"] for o in first.json()["offers"]}
        exempt = set(world_offers.loc[world_offers["exempt"].astype(bool), "offer_id"])
        assert shown - exempt, "a capped offer was shown"
        assert not ({o["offer_id"] for o in again} & shown) - exempt
