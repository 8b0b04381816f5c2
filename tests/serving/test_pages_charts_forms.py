"""The report page's SVG charts, the create form's mapping to the API body, and the session cookies, on known
inputs (no service needed)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from serving.pages import charts
from serving.pages.auth import SessionSigner, csrf_ok
from serving.pages.forms import FormError, experiment_payload, model_ref

SVG = "{http://www.w3.org/2000/svg}"


def comparison(variant: str, rel: float | None, ci: list[float] | None) -> dict:
    return {"variant": variant, "relative_lift": rel, "relative_ci": ci, "absolute_lift": 0.01}


REPORT = {
    "metrics": [
        {
            "metric": "conversion",
            "primary": True,
            "comparisons": [comparison("champion", 0.10, [0.02, 0.18])],
        },
        {"metric": "ctr", "primary": False, "comparisons": [comparison("champion", -0.05, [-0.20, 0.10])]},
        {
            "metric": "revenue_per_member",
            "primary": False,
            "comparisons": [comparison("champion", None, None)],
        },
    ],
    "offline_estimate": {
        "available": True,
        "estimates": [
            {
                "variant": "champion",
                "metric": "conversion",
                "relative_lift": 0.04,
                "relative_ci": [-0.01, 0.09],
            }
        ],
    },
    "timeline": [
        {"date": "2026-12-01", "variant": "control", "conversion": 0.10},
        {"date": "2026-12-02", "variant": "control", "conversion": 0.12},
        {"date": "2026-12-01", "variant": "champion", "conversion": 0.20},
        {"date": "2026-12-02", "variant": "champion", "conversion": 0.24},
        {"date": "2026-12-01", "variant": "holdout", "conversion": None},
    ],
}


def test_lift_chart_places_each_lift_and_interval_against_zero() -> None:
    svg = ET.fromstring(str(charts.lift_chart(REPORT)))
    assert svg.get("id") == "lift-chart" and svg.get("data-rows") == "3"
    zero = float(svg.find(f"{SVG}line[@class='zero']").get("x1"))  # type: ignore[union-attr]
    rows = svg.findall(f"{SVG}g[@class='lift-row']")
    # revenue has no relative lift (control zero): not drawn; the offline estimate is its own row
    assert [(r.get("data-metric"), r.get("data-kind")) for r in rows] == [
        ("conversion", "measured"),
        ("ctr", "measured"),
        ("conversion", "offline"),
    ]
    conv, ctr, offline = rows
    point = float(conv.find(f"{SVG}circle").get("cx"))  # type: ignore[union-attr]
    ci = conv.find(f"{SVG}line[@class='ci']")
    lo, hi = float(ci.get("x1")), float(ci.get("x2"))  # type: ignore[union-attr]
    assert zero < lo < point < hi  # +2 % .. +10 % .. +18 %: all right of zero
    # one scale for all rows: 10 % is as far from 2 % as from 18 %
    assert point - lo == pytest.approx(hi - point, abs=0.02)
    ctr_point = float(ctr.find(f"{SVG}circle").get("cx"))  # type: ignore[union-attr]
    ctr_ci = ctr.find(f"{SVG}line[@class='ci']")
    assert float(ctr_ci.get("x1")) < ctr_point < zero < float(ctr_ci.get("x2"))  # type: ignore[union-attr]
    assert (point - zero) / (zero - ctr_point) == pytest.approx(0.10 / 0.05, rel=1e-3)
    assert offline.find(f"{SVG}rect") is not None  # offline estimates drawn as open squares


def test_lift_chart_without_data_says_so() -> None:
    svg = ET.fromstring(str(charts.lift_chart({"metrics": []})))
    assert svg.get("data-rows") == "0"
    assert "No lift" in "".join(svg.itertext())


def test_timeline_chart_draws_one_series_per_arm_in_time_order() -> None:
    svg = ET.fromstring(str(charts.timeline_chart(REPORT)))
    series = {g.get("data-variant"): g for g in svg.findall(f"{SVG}g[@class='series']")}
    assert set(series) == {"control", "champion", "holdout"}
    assert series["holdout"].get("data-points") == "0"

    def points(arm: str) -> list[tuple[float, float]]:
        text = series[arm].find(f"{SVG}polyline").get("points")  # type: ignore[union-attr]
        return [(float(a), float(b)) for a, b in (p.split(",") for p in text.split())]

    control, champion = points("control"), points("champion")
    assert len(control) == len(champion) == 2
    assert control[0][0] < control[1][0]  # dates left to right
    assert control[0][1] > control[1][1]  # 10 % -> 12 %: higher is up (smaller y)
    assert all(c[1] > h[1] for c, h in zip(control, champion, strict=True))  # champion above control
    assert series["champion"].get("data-last") == "0.24"
    # y is linear from a zero baseline: 0.24 is twice as high above it as 0.12
    base = float(re.findall(r'y1="([\d.]+)"', str(charts.timeline_chart(REPORT)))[0])
    assert (base - champion[1][1]) / (base - control[1][1]) == pytest.approx(2.0, rel=1e-3)


def test_form_fields_become_the_api_body() -> None:
    form = {
        "key": " champ-vs-pop ",
        "description": "d",
        "variant_key_0": "control",
        "variant_weight_0": "0.5",
        "variant_model_0": "1",
        "variant_baseline_0": "popularity",
        "variant_key_1": "champion",
        "variant_weight_1": "0.5",
        "variant_model_1": "champion",
        "variant_objective_1": "acceptance",
        "variant_cap_policy_1": "config/caps.yaml",
        "variant_key_2": "",
        "variant_model_2": "",
        "traffic_pct": "80",
        "holdout_pct": "5",
        "holdout_serving": "none",
        "primary_metric": "conversion",
        "end": "2026-12-31T00:00",
    }
    body = experiment_payload(form, ["booking", "home"])
    assert body["key"] == "champ-vs-pop"
    assert body["placements"] == ["booking", "home"]
    assert body["traffic"] == pytest.approx(0.8) and body["holdout"] == pytest.approx(0.05)
    assert body["end"] == "2026-12-31T00:00:00+00:00"
    assert body["variants"] == [
        {
            "key": "control",
            "weight": 0.5,
            "model": {"version": "1"},
            "objective": "expected_value",
            "baseline": "popularity",
        },
        {
            "key": "champion",
            "weight": 0.5,
            "model": {"alias": "champion"},
            "objective": "acceptance",
            "cap_policy": "config/caps.yaml",
        },
    ]
    assert model_ref("alias:challenger", "m") == {"alias": "challenger"}
    assert model_ref("version:4", "m") == {"version": "4"}
    with pytest.raises(FormError) as err:
        experiment_payload({**form, "variant_weight_1": "half"}, ["home"])
    assert err.value.field == "variants[1].weight"
    with pytest.raises(FormError) as err:
        experiment_payload({**form, "variant_model_1": "tag:x"}, ["home"])
    assert err.value.field == "variants[1].model"
    with pytest.raises(FormError) as err:
        experiment_payload({**form, "end": "next tuesday"}, ["home"])
    assert err.value.field == "end"


def test_session_cookies_are_signed_and_bound_to_the_key() -> None:
    signer = SessionSigner("an-admin-key-0123456789")
    cookie, session = signer.new_session()
    assert signer.read_session(cookie) == session
    assert signer.read_session(cookie[:-2] + "xx") is None  # tampered
    assert SessionSigner("another-admin-key-987654").read_session(cookie) is None  # key changed
    assert csrf_ok(session, session.csrf) and not csrf_ok(session, "guess") and not csrf_ok(session, None)
    assert signer.key_matches("an-admin-key-0123456789") and not signer.key_matches("an-admin-key")
    login_cookie, token = signer.new_login_token()
    assert signer.login_token_ok(login_cookie, token)
    assert not signer.login_token_ok(login_cookie, token + "x")
    assert not signer.login_token_ok(None, token)


def test_the_holdout_stays_off_the_lift_chart_and_arms_keep_their_colour() -> None:
    report = {
        **REPORT,
        "arms": [{"variant": "control"}, {"variant": "champion"}, {"variant": "holdout"}],
        "metrics": [
            {
                "metric": "conversion",
                "primary": True,
                "comparisons": [
                    comparison("champion", 0.1, [0.0, 0.2]),
                    comparison("holdout", -1.0, [-1, -1]),
                ],
            }
        ],
    }
    lift = ET.fromstring(str(charts.lift_chart(report)))
    rows = lift.findall(f"{SVG}g[@class='lift-row']")
    assert [r.get("data-variant") for r in rows] == ["champion", "champion"]  # measured and offline
    champion_fill = rows[0].find(f"{SVG}circle").get("fill")  # type: ignore[union-attr]
    timeline = ET.fromstring(str(charts.timeline_chart(report)))
    series = {g.get("data-variant"): g for g in timeline.findall(f"{SVG}g[@class='series']")}
    assert series["champion"].find(f"{SVG}polyline").get("stroke") == champion_fill  # type: ignore[union-attr]
    assert series["holdout"].find(f"{SVG}polyline").get("stroke") == charts.HOLDOUT_COLOUR  # type: ignore[union-attr]
    assert series["control"].find(f"{SVG}polyline").get("stroke") == charts.PALETTE[0]  # type: ignore[union-attr]
