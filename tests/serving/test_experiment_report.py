"""The report through the real service: requests logged under their variant, events attributed through the
tracking token and the request log, only after each member's first exposure; figures per arm."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.api.experiment_schemas import ExperimentReportOut
from serving.app import create_app
from tests.serving.conftest import Registry, make_settings
from tests.serving.test_api import rec_body

API_KEY = "test-admin-api-key-0123456789"
H = {"X-Api-Key": API_KEY}


@pytest.fixture()
def client(
    registry: Registry, serving_world: Path, tmp_path: Path, redis_prefix: str
) -> Iterator[TestClient]:
    settings = make_settings(
        registry,
        serving_world,
        tmp_path,
        redis_prefix,
        admin_api_key=API_KEY,
        experiments_poll_s=0,
        exploration_share=0.0,
        capping_enabled=False,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def event(
    member: str, offer: dict[str, Any], kind: str, when: datetime, token: bool = True, trip_key: str = ""
) -> dict[str, Any]:
    return {
        **({"trip_key": trip_key} if kind == "purchase" else {}),
        "event_id": f"e-{uuid.uuid4().hex}",
        "member_id": member,
        "offer_id": offer["offer_id"],
        "event_type": kind,
        "placement": "booking",
        "event_time": when.isoformat(),
        "tracking_token": offer["tracking_token"] if token else None,
    }


def test_report_counts_what_members_did_in_their_arm(
    client: TestClient, registry: Registry, world_members: list[str]
) -> None:
    body = {
        "key": "report-e2e",
        "placements": ["booking"],
        "variants": [
            {"key": "control", "weight": 0.5, "model": {"version": registry.first_version}},
            {"key": "acc", "weight": 0.5, "model": {"alias": "champion"}, "objective": "acceptance"},
        ],
        "holdout": 0.2,
    }
    assert client.post("/v1/experiments", json=body, headers=H).status_code == 201
    started = client.post("/v1/experiments/report-e2e/start", headers=H)
    assert started.status_code == 200
    start = datetime.fromisoformat(started.json()["start"])

    want: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    members_of: dict[str, set[str]] = defaultdict(set)
    events: list[dict[str, Any]] = []
    first_seen: dict[str, datetime] = {}
    for i, member in enumerate(world_members[:80]):
        req = rec_body(member)
        trip_key = f"{req['trip']['flight_number']}|{req['trip']['departure_time'][:10]}"
        before = datetime.now(UTC)  # the server's request time (the first exposure) is later
        answer = client.post("/v1/recommendations", json=req).json()
        arm = answer["experiment"]["variant"]
        members_of[arm].add(member)
        want[arm]["requests"] += 1
        now = datetime.now(UTC)
        first_seen.setdefault(member, before)
        time.sleep(0.03)  # members' first exposures well apart, so an event can fall between start and one
        offers = answer["offers"]
        if not offers:
            want[arm]["empty"] += 1
            continue
        for o in offers:
            events.append(event(member, o, "impression", now))
            want[arm]["impressions"] += 1
        if i % 3 == 0:
            events.append(event(member, offers[0], "click", now))
            want[arm]["clicks"] += 1
        if i % 4 == 0:
            events.append(event(member, offers[0], "purchase", now + timedelta(seconds=1), trip_key=trip_key))
            want[arm]["purchases"] += 1
            want[arm]["purchasers"] += 1
            want[arm]["revenue"] += offers[0]["price_cash"] or 0.0
            want[arm]["miles"] += offers[0]["price_miles"] or 0.0
        if i % 5 == 0 and len(offers) > 1:
            events.append(event(member, offers[1], "dismiss", now))
            want[arm]["dismissals"] += 1
        if i % 7 == 0:
            # not attributable: no token
            events.append(event(member, offers[0], "click", now, token=False))
        if i % 11 == 0 and first_seen[member] - start > timedelta(milliseconds=20):
            # before the member's first exposure: does not count
            events.append(
                event(
                    member,
                    offers[0],
                    "purchase",
                    start + (first_seen[member] - start) / 2,
                    trip_key=trip_key,
                )
            )
    for i in range(0, len(events), 200):
        resp = client.post("/v1/events", json={"events": events[i : i + 200]})
        assert resp.status_code == 200, resp.text
    writer = client.app.state.services.request_writer  # type: ignore[attr-defined]
    assert writer is not None and writer.flush(timeout_s=10)

    resp = client.get("/v1/experiments/report-e2e/report", headers=H)
    assert resp.status_code == 200, resp.text
    report = resp.json()
    # The declared schema holds for a report with traffic (CUPED, timeline, guardrails filled in).
    ExperimentReportOut.model_validate(report)
    assert report["control"] == "control"
    arms = {a["variant"]: a for a in report["arms"]}
    assert set(arms) == {"control", "acc", "holdout"}
    assert set(members_of) == set(arms)
    for name, arm in arms.items():
        w = want[name]
        n = len(members_of[name])
        assert arm["exposed_members"] == n, name
        assert arm["requests"] == w["requests"]
        assert arm["empty_requests"] == w["empty"]
        assert arm["impressions"] == w["impressions"]
        assert arm["clicks"] == w["clicks"]
        assert arm["purchases"] == w["purchases"]
        assert arm["purchasers"] == w["purchasers"]
        assert arm["dismissals"] == w["dismissals"]
        assert arm["revenue"] == pytest.approx(w["revenue"])
        assert arm["miles"] == pytest.approx(w["miles"])
        assert arm["rates"]["conversion"] == pytest.approx(w["purchasers"] / n)
        if w["impressions"]:
            assert arm["rates"]["ctr"] == pytest.approx(w["clicks"] / w["impressions"])
        assert arm["rates"]["empty_response_rate"] == pytest.approx(w["empty"] / w["requests"])
        assert arm["p99_latency_ms"] is not None and arm["p99_latency_ms"] > 0
    # The holdout got nothing to see.
    assert arms["holdout"]["impressions"] == 0 and want["holdout"]["empty"] == want["holdout"]["requests"]
    att = report["attribution"]
    assert att["events_before_exposure"] == sum(1 for e in events if e["event_type"] == "purchase") - sum(
        w["purchases"] for w in want.values()
    )
    assert att["events_unattributed"] == sum(1 for e in events if e["tracking_token"] is None) > 0
    assert att["crossover_members"] == 0
    # The primary metric is compared for each arm against control, with its CI and p-value.
    primary = report["metrics"][0]
    assert primary["metric"] == "conversion" and primary["primary"]
    acc = next(c for c in primary["comparisons"] if c["variant"] == "acc")
    n_c, n_t = len(members_of["control"]), len(members_of["acc"])
    assert acc["n_control"] == n_c and acc["n_treatment"] == n_t
    assert acc["absolute_lift"] == pytest.approx(
        want["acc"]["purchasers"] / n_t - want["control"]["purchasers"] / n_c
    )
    assert acc["p_value"] is not None and 0 <= acc["p_value"] <= 1
    assert acc["cuped"] is not None and "variance_reduction" in acc["cuped"]
    assert report["srm"]["observed"] == {k: len(v) for k, v in members_of.items()}
    assert report["srm"]["verdict"] in {"ok", "warn", "alert"}
    days = {row["date"] for row in report["timeline"]}
    assert datetime.now(UTC).date().isoformat() in days
    last = [r for r in report["timeline"] if r["date"] == max(days)]
    assert {r["variant"]: r["purchasers"] for r in last} == {k: w["purchasers"] for k, w in want.items()}
