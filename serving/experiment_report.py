"""Gathering what an experiment's report needs from the service's stores (request log, event log, catalogue,
pre-experiment history, latencies) and handing it to :func:`recsys.experiments.report.build_report`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from recsys.experiments import Experiment, Status
from recsys.experiments.attribution import Attribution, Price, attribute
from recsys.experiments.history import dataset_history, history_from_events, merge_history
from recsys.experiments.report import build_report
from recsys.schema import EventType
from serving.services import Services

HISTORY_LOOKBACK = timedelta(days=365)  # pre-experiment window of the CUPED covariates


def catalogue_prices(services: Services) -> dict[str, Price]:
    """offer id -> cash and miles price, from the served model's catalogue."""
    model = services.holder.current
    if model is None:
        return {}
    out: dict[str, Price] = {}
    for offer_id, o in model.offers.items():
        out[offer_id] = Price(
            float(getattr(o, "price_cash", None) or 0.0), float(getattr(o, "price_miles", None) or 0.0)
        )
    return out


def experiment_report(services: Services, exp: Experiment) -> dict[str, Any]:
    now = services.clock()
    start = exp.start or exp.started_at or now
    until = now + timedelta(seconds=1)
    warnings: list[str] = []
    prices = catalogue_prices(services)
    if services.request_log is None:
        attribution = Attribution()
        warnings.append("the service has no request log configured: nothing can be attributed")
    else:
        records = services.request_log.exposures(exp.key, start, until)
        events = services.event_log.attribution_rows(start, until)
        attribution = attribute(records, events, prices)
    members = set(attribution.members)
    # Pre-experiment behaviour: the world's history (a generated or imported dataset) and what the service
    # itself logged before the start.
    history = history_from_events(
        services.event_log.between(start - HISTORY_LOOKBACK, start, event_types=[EventType.PURCHASE.value]),
        prices,
        members,
    )
    data_dir = services.settings.data_dir
    if data_dir is not None and data_dir.exists():
        from_data = dataset_history(data_dir, start, prices, members, since=start - HISTORY_LOOKBACK)
        history = merge_history(history, from_data)
    runtime = services.experiments
    latency = runtime.latency_p99(exp.key) if runtime is not None else {}
    if (
        runtime is not None
        and exp.status is Status.RUNNING
        and all(e.key != exp.key for e in runtime.snapshot.experiments)
    ):
        warnings.append(
            "this worker does not serve the experiment (its members get the default model): "
            f"{runtime.last_error or 'not loaded yet'}"
        )
    report = build_report(
        exp,
        attribution,
        history=history,
        latency_p99=latency,
        offline=services.offline_estimator,
        now=now,
    )
    report["warnings"] = warnings + report["warnings"]
    return report
