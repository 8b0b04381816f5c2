"""What operators alert on: every metric of ``/metrics`` after real traffic (an experiment running, events
sent back, the request log written, Redis and the database failing), the JSON logs with their request id and
no personal data beyond the member id, and the Grafana dashboard's queries against the exported names."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from recsys.events import EventLog
from serving.app import create_app
from serving.logs import RequestIdFilter, configure_logging
from tests.conftest import RedisProcess
from tests.serving.conftest import Registry, make_settings
from tests.serving.test_api import rec_body

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "loyalty-offers.json"
API_KEY = "test-admin-api-key-0123456789"
DEAD_PG = "postgresql+psycopg://postgres@127.0.0.1:1/test"

Page = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Page:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(page: Page, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in page.items() if n == name and want <= ls)


def label_values(page: Page, name: str, label: str) -> set[str]:
    return {dict(ls)[label] for (n, ls), v in page.items() if n == name and label in dict(ls) and v > 0}


def event(member: str, offer: dict[str, Any], event_type: str) -> dict[str, Any]:
    ev = {
        "event_id": uuid.uuid4().hex,
        "event_type": event_type,
        "member_id": member,
        "offer_id": offer["offer_id"],
        "placement": "booking",
        "event_time": datetime.now(UTC).isoformat(),
        "tracking_token": offer["tracking_token"],
    }
    if event_type == "purchase":
        ev["trip_key"] = f"CA1405|{(datetime.now(UTC) + timedelta(days=3)).date().isoformat()}"
    return ev


@pytest.fixture()
def traffic(
    registry: Registry, serving_world: Path, tmp_path: Path, redis_prefix: str, world_members: list[str]
) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    """An app with a running experiment after recommendations and events; yields it and what was sent."""
    settings = make_settings(
        registry,
        serving_world,
        tmp_path,
        redis_prefix,
        admin_api_key=API_KEY,
        experiments_poll_s=0,
        request_log_flush_interval_s=0.05,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        exp = {
            "key": "obs-test",
            "description": "value against acceptance",
            "placements": ["booking"],
            "variants": [
                {"key": "control", "weight": 0.5, "model": {"version": registry.first_version}},
                {
                    "key": "acceptance",
                    "weight": 0.5,
                    "model": {"version": registry.first_version},
                    "objective": "acceptance",
                },
            ],
            "holdout": 0.0,
            "end": "2099-01-01T00:00:00Z",
        }
        h = {"X-Api-Key": API_KEY}
        assert c.post("/v1/experiments", json=exp, headers=h).status_code == 201
        assert c.post("/v1/experiments/obs-test/start", headers=h).status_code == 200
        sent: dict[str, Any] = {"requests": 0, "arms": {}, "events": {}, "served": {}}

        def recommend(member: str) -> tuple[str, list[dict[str, Any]]]:
            body = c.post("/v1/recommendations", json=rec_body(member)).json()
            sent["requests"] += 1
            arm = body["experiment"]["variant"]
            sent["arms"][arm] = sent["arms"].get(arm, 0) + 1
            for o in body["offers"]:
                key = (o["family"], "booking")
                sent["served"][key] = sent["served"].get(key, 0) + 1
            return arm, body["offers"]

        def send(batch: list[tuple[str, str, dict[str, Any], str]]) -> None:
            events = [event(member, offer, kind) for member, _, offer, kind in batch]
            resp = c.post("/v1/events", json={"events": events})
            assert resp.status_code == 200 and resp.json()["accepted"] == len(events), resp.text
            for _, arm, _, kind in batch:
                sent["events"][(arm, kind)] = sent["events"].get((arm, kind), 0) + 1

        batch = []
        for i, member in enumerate(world_members[200:260]):
            arm, offers = recommend(member)
            if offers:
                for kind in ["impression", "click"] + (["purchase"] if i % 3 == 0 else []):
                    batch.append((member, arm, offers[0], kind))
        send(batch)
        # One member sees its offers until the frequency caps hold some back (impressions count).
        member = world_members[300]
        for _ in range(4):
            arm, offers = recommend(member)
            send([(member, arm, o, "impression") for o in offers])
        assert c.app.state.services.request_writer.flush(10)  # type: ignore[attr-defined]
        yield c, sent


def test_metrics_show_every_series_with_real_values(
    traffic: tuple[TestClient, dict[str, Any]], registry: Registry
) -> None:
    client, sent = traffic
    page = samples(client.get("/metrics").text)
    rec = {"method": "POST", "route": "/v1/recommendations"}
    # latency histogram per endpoint
    assert total(page, "recsys_http_request_seconds_count", **rec) == sent["requests"]
    assert total(page, "recsys_http_request_seconds_count", method="POST", route="/v1/events") == 5
    # offers served per family and placement: exactly what the answers held
    for (family, placement), n in sent["served"].items():
        assert total(page, "recsys_offers_served_total", family=family, placement=placement) == n
    assert sum(sent["served"].values()) == total(page, "recsys_offers_served_total") > 0
    # suppressions per reason, the frequency caps' among them
    assert label_values(page, "recsys_suppressed_candidates_total", "reason")
    assert label_values(page, "recsys_cap_suppressions_total", "reason")
    # requests and events per experiment arm: what the answers said each member's arm was
    assert set(sent["arms"]) == {"control", "acceptance"}
    for arm, n in sent["arms"].items():
        assert total(page, "recsys_experiment_requests_total", experiment="obs-test", variant=arm) == n
    for (arm, kind), n in sent["events"].items():
        arm_labels = {"experiment": "obs-test", "variant": arm, "event_type": kind}
        assert total(page, "recsys_experiment_events_total", **arm_labels) == n, (arm, kind)
    assert {k for _, k in sent["events"]} == {"impression", "click", "purchase"}
    # the model version each arm serves, and the default one
    for arm in ("control", "acceptance"):
        assert total(page, "recsys_experiment_model_version", experiment="obs-test", variant=arm) == float(
            registry.first_version
        )
    assert total(page, "recsys_model_version") == float(registry.first_version)
    # request log: every answer written, its write lag observed
    assert total(page, "recsys_request_log_written_total") == sent["requests"]
    assert total(page, "recsys_request_log_write_lag_seconds_count") >= 1
    assert total(page, "recsys_request_log_pending") == 0
    # dependencies healthy: the breaker closed, no errors counted
    assert ("recsys_cap_store_breaker_open", frozenset()) in page
    assert total(page, "recsys_cap_store_breaker_open") == 0
    assert total(page, "recsys_dependency_errors_total") == 0


def test_stopped_arm_reports_version_zero(traffic: tuple[TestClient, dict[str, Any]]) -> None:
    client, _ = traffic
    assert client.post("/v1/experiments/obs-test/stop", headers={"X-Api-Key": API_KEY}).status_code == 200
    page = samples(client.get("/metrics").text)
    assert total(page, "recsys_experiment_model_version", experiment="obs-test") == 0
    assert ("recsys_experiment_model_version", frozenset()) not in page


def test_redis_and_database_errors_and_the_breaker(
    registry: Registry,
    serving_world: Path,
    tmp_path: Path,
    world_members: list[str],
    fresh_redis: RedisProcess,
) -> None:
    """Redis goes away after start-up and the event log's database is unreachable: the answers still come
    (degraded), events are refused with a 503 to retry, and the metrics say so."""
    settings = make_settings(
        registry, serving_world, tmp_path, None, redis_url=fresh_redis.url, members_key_prefix="members"
    )
    dead_log = EventLog(DEAD_PG, create=False)
    with TestClient(create_app(settings, event_log=dead_log), raise_server_exceptions=False) as c:
        fresh_redis.stop()
        for member in world_members[:3]:
            body = c.post("/v1/recommendations", json=rec_body(member)).json()
            assert body["cap_degraded"], body
        offer = c.post("/v1/recommendations", json=rec_body(world_members[0])).json()
        ev = event(world_members[0], {"offer_id": "x", "tracking_token": None}, "click")
        ev.pop("tracking_token")
        ev["offer_id"] = next(iter(c.app.state.services.holder.current.offers))  # type: ignore[attr-defined]
        resp = c.post("/v1/events", json={"events": [ev]})
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"]["code"] == "event_log_unavailable"
        assert resp.headers["retry-after"] == "2"
        assert c.get("/readyz").status_code == 503
        page = samples(c.get("/metrics").text)
    assert offer["cap_degraded"]
    assert total(page, "recsys_cap_store_breaker_open") == 1
    # Each degraded answer is one cap-store failure (a call refused, or skipped by the open breaker).
    assert total(page, "recsys_dependency_errors_total", dependency="redis", component="caps") == 4
    assert total(page, "recsys_dependency_errors_total", dependency="redis", component="member_store") >= 1
    assert total(page, "recsys_dependency_errors_total", dependency="redis", component="readiness") == 1
    assert total(page, "recsys_dependency_errors_total", dependency="database", component="event_log") == 2
    assert total(page, "recsys_http_requests_total", route="/v1/events", status="503") == 1
    assert total(page, "recsys_http_requests_total", status="500") == 0


# ------------------------------------------------------------------------------------------------- logs


class Capture(logging.Handler):
    """Formats every record with the service's JSON formatter, as ``python -m serving`` does."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.addFilter(RequestIdFilter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture()
def json_logs() -> Iterator[Capture]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    configure_logging("debug", "json")
    capture = Capture(root.handlers[0].formatter)  # type: ignore[arg-type]
    root.handlers[:] = [capture]
    try:
        yield capture
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_logs_are_json_with_the_request_id_and_no_personal_data(
    json_logs: Capture,
    registry: Registry,
    serving_world: Path,
    tmp_path: Path,
    world_members: list[str],
    fresh_redis: RedisProcess,
) -> None:
    # Redis gone after start-up: the member-store and cap-store warnings are logged during the request.
    settings = make_settings(
        registry,
        serving_world,
        tmp_path,
        None,
        redis_url=fresh_redis.url,
        members_key_prefix="members",
        access_log=True,
    )
    member = world_members[7]
    private = {
        "flight_number": "ZZ9876",
        "origin": "PEK",
        "destination": "CTU",
        "fare_class": "Q",
        "email": "jane.doe@example.com",
        "passport": "E12345678",
    }
    body = rec_body(member)
    body["trip"].update(flight_number=private["flight_number"], fare_class=private["fare_class"])
    # Fields the schema does not know: refused (422), and their values not logged either.
    bad_body = {**body, "email": private["email"], "passport": private["passport"]}
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        fresh_redis.stop()
        json_logs.lines.clear()
        resp = c.post("/v1/recommendations", json=body, headers={"X-Request-ID": "req-abc.123"})
        minted = c.post("/v1/recommendations", json=rec_body(member))
        bad = c.post("/v1/recommendations", json=bad_body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-request-id"] == "req-abc.123"
    # The service mints the recommendation's id; with no X-Request-ID it is the request's id too.
    assert resp.json()["request_id"] != "req-abc.123"
    assert minted.headers["x-request-id"] == minted.json()["request_id"]
    assert bad.status_code == 422 and len(bad.headers["x-request-id"]) == 32
    records = [json.loads(line) for line in json_logs.lines]  # one JSON object per line
    assert all("\n" not in line for line in json_logs.lines)
    ours = [r for r in records if r.get("request_id") == "req-abc.123"]
    # the access line and the member store's warning (Redis is down) of the first request
    assert any(r["logger"] == "serving.access" and r["status"] == 200 for r in ours), records
    assert any(r["level"] == "WARNING" and member in r["message"] for r in ours), records
    assert {"time", "level", "logger", "message", "request_id"} <= set(ours[0])
    assert any(r.get("request_id") == minted.headers["x-request-id"] for r in records)
    text = "\n".join(json_logs.lines)
    for name, value in private.items():
        if name in ("origin", "destination"):
            value = f'"{value}'  # airport codes also appear inside other words; never as a logged value
        assert value not in text, f"{name} logged"
    assert "testclient" not in text  # no client address


def test_an_invalid_request_id_is_replaced(registry: Registry, serving_world: Path, tmp_path: Path) -> None:
    settings = make_settings(registry, serving_world, tmp_path, None, capping_enabled=False)
    with TestClient(create_app(settings)) as c:
        for given in ("x" * 129, "a b", "<script>"):
            got = c.get("/healthz", headers={"X-Request-ID": given}).headers["x-request-id"]
            assert got != given and len(got) == 32


# -------------------------------------------------------------------------------------------- dashboard


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana's ``$__rate_interval`` read as 5m)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr.replace("$__rate_interval", "5m")), pre_visit=visit)
    return names


def test_metric_names_parses_promql() -> None:
    assert metric_names(
        'sum by (le) (rate(a_bucket{x="y"}[5m])) / clamp_min(sum(rate(b_total[$__rate_interval])), 1) > 0'
    ) == {"a_bucket", "b_total"}


def test_dashboard_queries_use_only_exported_metrics(traffic: tuple[TestClient, dict[str, Any]]) -> None:
    client, _ = traffic
    exported = {name for name, _ in samples(client.get("/metrics").text)}
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert names <= exported, (panel["title"], names - exported)
            used |= names
    # Every family the service exports has a panel (histograms through their buckets).
    families = {n.removesuffix("_bucket") for n in used}
    for name in exported:
        base = name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        if base.endswith("_created"):
            continue
        assert base in families or name in used, f"{name} has no panel"
