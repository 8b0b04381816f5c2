"""The create-experiment form: HTML form fields -> the admin API's JSON body (``ExperimentIn``), so the page
and the API validate through the same schema and the same store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

VARIANT_ROWS = 4  # variant rows on the form; empty rows are ignored
PLACEMENTS = ("booking", "post_booking", "check_in", "in_trip", "home")
OBJECTIVES = ("expected_value", "acceptance")
PRIMARY_METRICS = (
    "conversion",
    "ctr",
    "revenue_per_member",
    "miles_per_member",
    "purchases_per_member",
)
HOLDOUT_SERVING = ("none", "popularity")


class FormError(ValueError):
    """A form field that cannot be read; ``field`` names it as the API would."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _number(form: Mapping[str, str], name: str, field: str, default: float | None = None) -> float | None:
    text = (form.get(name) or "").strip()
    if not text:
        return default
    try:
        return float(text)
    except ValueError as exc:
        raise FormError(field, f"{text!r} is not a number") from exc


def _time(form: Mapping[str, str], name: str) -> str | None:
    """A ``datetime-local`` value (no zone) is taken as UTC; an ISO time with an offset is kept."""
    text = (form.get(name) or "").strip()
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise FormError(name, f"{text!r} is not a date and time") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.isoformat()


def model_ref(text: str, field: str) -> dict[str, str]:
    """``champion`` or ``alias:champion`` -> an alias; ``3`` or ``version:3`` -> a version."""
    text = text.strip()
    if not text:
        raise FormError(field, "name a registry alias (e.g. champion) or version (e.g. 3)")
    kind, _, value = text.partition(":")
    if value:
        if kind not in ("alias", "version"):
            raise FormError(field, f"{text!r}: write alias:NAME or version:N")
        return {kind: value.strip()}
    return {"version": text} if text.isdigit() else {"alias": text}


def experiment_payload(form: Mapping[str, str], placements: Sequence[str]) -> dict[str, Any]:
    """The ``POST /v1/experiments`` body the form describes (raises :class:`FormError`)."""
    variants: list[dict[str, Any]] = []
    for i in range(VARIANT_ROWS):
        key = (form.get(f"variant_key_{i}") or "").strip()
        model = (form.get(f"variant_model_{i}") or "").strip()
        if not key and not model:
            continue
        field = f"variants[{len(variants)}]"
        variant: dict[str, Any] = {
            "key": key,
            "weight": _number(form, f"variant_weight_{i}", f"{field}.weight"),
            "model": model_ref(model, f"{field}.model"),
            "objective": (form.get(f"variant_objective_{i}") or "expected_value").strip(),
        }
        if form.get(f"variant_baseline_{i}"):
            variant["baseline"] = "popularity"
        cap = (form.get(f"variant_cap_policy_{i}") or "").strip()
        if cap:
            variant["cap_policy"] = cap
        variants.append(variant)
    traffic = _number(form, "traffic_pct", "traffic", 100.0)
    holdout = _number(form, "holdout_pct", "holdout", 0.0)
    payload: dict[str, Any] = {
        "key": (form.get("key") or "").strip(),
        "description": (form.get("description") or "").strip(),
        "placements": list(placements),
        "namespace": (form.get("namespace") or "default").strip() or "default",
        "variants": variants,
        "traffic": (traffic if traffic is not None else 100.0) / 100.0,
        "holdout": (holdout if holdout is not None else 0.0) / 100.0,
        "holdout_serving": (form.get("holdout_serving") or "none").strip(),
        "primary_metric": (form.get("primary_metric") or "conversion").strip(),
    }
    start, end = _time(form, "start"), _time(form, "end")
    if start:
        payload["start"] = start
    if end:
        payload["end"] = end
    return payload
