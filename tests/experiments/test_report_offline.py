"""The offline estimate beside the measured lift: the report says whether the measured relative lift in
purchases per exposed member lies inside the estimate's interval (figures worked out by hand)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from recsys.experiments import Experiment, Variant
from recsys.experiments.attribution import Attribution, MemberOutcome
from recsys.experiments.report import OfflineEstimate, build_report
from tests.experiments.test_store import exp

T = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class FixedEstimate:
    """An offline estimator answering one estimate (the registry's reads its training runs)."""

    def __init__(self, relative_ci: tuple[float, float] | None) -> None:
        self.relative_ci = relative_ci

    def estimate(self, experiment: Experiment, control: Variant, treatment: Variant) -> OfflineEstimate:
        return OfflineEstimate(
            "snips", "purchases_per_request", 0.10, 0.12, 0.02, None, 0.2, self.relative_ci
        )


def attribution() -> Attribution:
    # control buys 0, 1, 0, 1 (mean 0.5); treatment 1, 1, 0, 1 (mean 0.75): +50 % purchases per member
    members = {}
    for arm, bought in (("control", [0, 1, 0, 1]), ("treatment", [1, 1, 0, 1])):
        for i, n in enumerate(bought):
            mid = f"{arm}-{i}"
            members[mid] = MemberOutcome(mid, arm, T, requests=1, impressions=2, purchases=n)
    return Attribution(members=members, requests=8)


@pytest.mark.parametrize(("ci", "inside"), [((0.1, 0.6), True), ((0.6, 0.9), False), (None, None)])
def test_measured_lift_against_the_offline_interval(
    ci: tuple[float, float] | None, inside: bool | None
) -> None:
    report = build_report(exp("offline"), attribution(), offline=FixedEstimate(ci), now=T)
    (estimate,) = report["offline_estimate"]["estimates"]
    measured = estimate["measured"]
    assert measured["metric"] == "purchases_per_member"
    assert measured["relative_lift"] == pytest.approx(0.5)
    assert measured["inside_offline_ci"] is inside
    purchases = next(m for m in report["metrics"] if m["metric"] == "purchases_per_member")
    assert measured["relative_ci"] == purchases["comparisons"][0]["relative_ci"]
