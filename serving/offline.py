"""The offline estimate beside an experiment's measured lift: what the policy evaluation predicted for the
same two policies.

Each registered version's training run replays the test period's logged requests with every policy it
trained (``recsys.evaluation.policy_eval``) and logs ``<policy>.snips_purchases_per_request`` (and, when
known, its standard error ``..._se``) to the run, with the number of requests replayed
(``policy_table.requests``). :class:`RegistryOfflineEstimator` reads those figures for
the control's and the treatment's model kinds from the treatment's run (the control's run when the
treatment's lacks the control's row) and reports their difference: SNIPS purchases per request, the unit the
experiment's purchases per exposed member compare with through the relative lift.
"""

from __future__ import annotations

import math
from typing import Any

from recsys.experiments import Experiment, ModelRef, Objective, Variant
from recsys.experiments.report import OfflineEstimate
from recsys.experiments.stats import Z95, relative_delta

ESTIMATOR = "snips"
METRIC = "purchases_per_request"


class RegistryOfflineEstimator:
    """:class:`recsys.experiments.report.OfflineEstimator` over the MLflow registry's training runs."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._cache: dict[tuple[str, str], OfflineEstimate | None] = {}

    def _version(self, ref: ModelRef) -> Any:
        from recsys.registry import get_version, version_info

        served = ref.served()
        if served.version is not None:
            return version_info(self.tracking_uri, served.name, served.version)
        return get_version(self.tracking_uri, served.name, served.alias or "")

    def _run_metrics(self, run_id: str | None) -> dict[str, float]:
        if not run_id:
            return {}
        from recsys.registry import get_client

        return dict(get_client(self.tracking_uri).get_run(run_id).data.metrics)

    def estimate(
        self, experiment: Experiment, control: Variant, treatment: Variant
    ) -> OfflineEstimate | None:
        key = (
            f"{control.model.served()}:{control.objective.value}",
            f"{treatment.model.served()}:{treatment.objective.value}",
        )
        if key in self._cache:
            return self._cache[key]
        found = self._estimate(control, treatment)
        self._cache[key] = found
        return found

    def _estimate(self, control: Variant, treatment: Variant) -> OfflineEstimate | None:
        c_info, t_info = self._version(control.model), self._version(treatment.model)
        if c_info is None or t_info is None or not c_info.kind or not t_info.kind:
            return None
        pc, pt = policy_name(c_info.kind, control.objective), policy_name(t_info.kind, treatment.objective)
        if pc == pt:
            return None  # one policy row for both: the replay cannot tell them apart
        from recsys.evaluation.policy_eval import REPLAYED_REQUESTS_METRIC

        name = f"{ESTIMATOR}_{METRIC}"
        for run_id in (t_info.run_id, c_info.run_id):
            metrics = self._run_metrics(run_id)
            vc, vt = metrics.get(f"{pc}.{name}"), metrics.get(f"{pt}.{name}")
            if vc is None or vt is None:
                continue
            se_c, se_t = metrics.get(f"{pc}.{name}_se"), metrics.get(f"{pt}.{name}_se")
            ci = rel = rel_ci = None
            if se_c is not None and se_t is not None:
                half = Z95 * math.sqrt(se_c**2 + se_t**2)  # the rows' errors as if independent: conservative
                ci = (vt - vc - half, vt - vc + half)
                rel, rel_ci = relative_delta(vc, se_c**2, vt, se_t**2)
            elif vc:
                rel = vt / vc - 1
            return OfflineEstimate(
                estimator=ESTIMATOR,
                metric=METRIC,
                control=vc,
                treatment=vt,
                absolute_lift=vt - vc,
                absolute_ci=ci,
                relative_lift=rel,
                relative_ci=rel_ci,
                # the replayed period's requests (0: a run logged before the count was; shown as "-")
                n_requests=int(metrics.get(REPLAYED_REQUESTS_METRIC, 0)),
                note=(
                    f"replay of the test period logged by training run {run_id}: policy {pt!r} "
                    f"against {pc!r}, each trained before the test period"
                ),
            )
        return None


def policy_name(kind: str, objective: Objective) -> str:
    """The policy table's row for a model kind ranked by an objective (``recsys.evaluation.policies``)."""
    return kind if objective is Objective.EXPECTED_VALUE else f"{kind}_acceptance"
