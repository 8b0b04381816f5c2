"""The report page's charts as inline SVG, drawn on the server from the report JSON (nothing loaded by the
browser, so the pages work offline).

* :func:`lift_chart`: one row per metric and variant, the relative lift against control as a dot and its 95 %
  confidence interval as a bar, a line at zero; the offline estimate of the primary metric in its own rows.
* :func:`timeline_chart`: cumulative conversion per variant over time, one polyline per arm.

Each mark carries ``data-*`` attributes (metric, variant, value) so a test can read what was drawn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

PALETTE = ("#1f6feb", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c", "#5c940d")
HOLDOUT_COLOUR = "#868e96"


@dataclass(frozen=True)
class LiftRow:
    """One row of the lift chart: a relative lift (fraction) and its CI."""

    metric: str
    variant: str
    kind: str  # measured | offline
    lift: float
    ci: tuple[float, float] | None


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _ci(value: Any) -> tuple[float, float] | None:
    if isinstance(value, Sequence) and len(value) == 2 and all(_finite(v) for v in value):
        return float(value[0]), float(value[1])
    return None


def arm_colours(report: Mapping[str, Any]) -> dict[str, str]:
    """One colour per arm in the report's order (control first), the holdout grey: the same in both charts."""
    arms = [str(a.get("variant")) for a in report.get("arms", [])]
    for point in report.get("timeline", []):
        if str(point.get("variant")) not in arms:
            arms.append(str(point.get("variant")))
    colours: dict[str, str] = {}
    for arm in arms:
        colours[arm] = HOLDOUT_COLOUR if arm == "holdout" else PALETTE[len(colours) % len(PALETTE)]
    return colours


def lift_rows(report: Mapping[str, Any]) -> list[LiftRow]:
    """The rows the lift chart draws: every metric's comparisons with a relative lift, the primary metric
    first, then the offline estimates of the primary metric. The holdout (no offers at all, so -100 % on
    most metrics) stays in the tables: on the chart it would squeeze every other interval."""
    rows: list[LiftRow] = []
    primary = None
    for metric in report.get("metrics", []):
        if metric.get("primary"):
            primary = metric.get("metric")
        for comp in metric.get("comparisons", []):
            lift = comp.get("relative_lift")
            if _finite(lift) and comp.get("variant") != "holdout":
                rows.append(
                    LiftRow(
                        str(metric.get("metric")),
                        str(comp.get("variant")),
                        "measured",
                        float(lift),
                        _ci(comp.get("relative_ci")),
                    )
                )
    offline = report.get("offline_estimate") or {}
    if offline.get("available"):
        for est in offline.get("estimates", []):
            lift = est.get("relative_lift")
            if _finite(lift):
                rows.append(
                    LiftRow(
                        str(est.get("metric") or primary),
                        str(est.get("variant")),
                        "offline",
                        float(lift),
                        _ci(est.get("relative_ci")),
                    )
                )
    return rows


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks = []
    t = first
    while t <= hi + 1e-12:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def lift_chart(report: Mapping[str, Any], *, width: int = 720) -> Markup:
    """The lift chart as an ``<svg id="lift-chart">`` element (empty state when nothing can be drawn)."""
    rows = lift_rows(report)
    row_h, top, bottom, left, right = 30, 12, 34, 250, 24
    height = top + bottom + row_h * max(len(rows), 1)
    parts = [
        f'<svg id="lift-chart" class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Relative lift against control with 95% confidence intervals" '
        f'data-rows="{len(rows)}">'
    ]
    if not rows:
        parts.append(
            f'<text x="{width / 2}" y="{top + row_h / 2 + 4}" text-anchor="middle" class="empty">'
            "No lift to draw yet: no exposed members in a variant and its control.</text></svg>"
        )
        return Markup("".join(parts))
    values = [0.0]
    for r in rows:
        values.append(r.lift)
        if r.ci is not None:
            values.extend(r.ci)
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or 0.05
    lo, hi = lo - pad, hi + pad
    plot_w = width - left - right

    def x(v: float) -> float:
        return round(left + (v - lo) / (hi - lo) * plot_w, 2)

    axis_y = top + row_h * len(rows)
    for t in _nice_ticks(lo, hi):
        parts.append(
            f'<line class="grid" x1="{x(t)}" y1="{top}" x2="{x(t)}" y2="{axis_y}" stroke="#e9ecef"/>'
            f'<text x="{x(t)}" y="{axis_y + 16}" text-anchor="middle" font-size="11">{t * 100:g}%</text>'
        )
    parts.append(
        f'<line class="zero" x1="{x(0)}" y1="{top - 4}" x2="{x(0)}" y2="{axis_y}" stroke="#343a40" '
        'stroke-width="1.5"/>'
    )
    colour = arm_colours(report)
    for i, r in enumerate(rows):
        cy = top + row_h * i + row_h / 2
        c = colour.get(r.variant, PALETTE[0])
        label = f"{r.metric} · {r.variant}" + (" (offline estimate)" if r.kind == "offline" else "")
        ci_text = f" [{_pct(r.ci[0])}, {_pct(r.ci[1])}]" if r.ci else ""
        parts.append(
            f'<g class="lift-row" data-metric="{escape(r.metric)}" data-variant="{escape(r.variant)}" '
            f'data-kind="{r.kind}" data-lift="{r.lift:.6g}">'
            f'<text x="{left - 8}" y="{cy + 4}" text-anchor="end" font-size="12">{escape(label)}</text>'
        )
        if r.ci is not None:
            parts.append(
                f'<line class="ci" x1="{x(r.ci[0])}" y1="{cy}" x2="{x(r.ci[1])}" y2="{cy}" stroke="{c}" '
                'stroke-width="3" stroke-linecap="round"/>'
            )
        marker = (
            f'<circle class="point" cx="{x(r.lift)}" cy="{cy}" r="5" fill="{c}"/>'
            if r.kind == "measured"
            else f'<rect class="point" x="{x(r.lift) - 5}" y="{cy - 5}" width="10" height="10" '
            f'fill="white" stroke="{c}" stroke-width="2"/>'
        )
        parts.append(f"{marker}<title>{escape(label)}: {_pct(r.lift)}{ci_text}</title></g>")
    parts.append("</svg>")
    return Markup("".join(parts))


def timeline_series(report: Mapping[str, Any]) -> dict[str, list[tuple[str, float]]]:
    """arm -> [(time, cumulative conversion)] in time order (buckets without exposed members left out)."""
    series: dict[str, list[tuple[str, float]]] = {}
    for point in report.get("timeline", []):
        conv = point.get("conversion")
        series.setdefault(str(point.get("variant")), [])
        if _finite(conv):
            # sub-day buckets carry a "time"; daily ones only a "date"
            daily = int(point.get("bucket_s") or 86_400) >= 86_400
            when = str(point.get("date") if daily or not point.get("time") else point["time"])
            series[str(point["variant"])].append((when, float(conv)))
    for points in series.values():
        points.sort()
    return series


def timeline_chart(report: Mapping[str, Any], *, width: int = 720, height: int = 280) -> Markup:
    """Cumulative conversion per arm over time as an ``<svg id="timeline-chart">`` element."""
    series = timeline_series(report)
    dates = sorted({d for pts in series.values() for d, _ in pts})
    left, right, top, bottom = 56, 130, 12, 40
    parts = [
        f'<svg id="timeline-chart" class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Cumulative conversion per variant over time" data-series="{len(series)}">'
    ]
    if not dates:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="empty">'
            "No exposed members yet.</text></svg>"
        )
        return Markup("".join(parts))
    y_max = max(v for pts in series.values() for _, v in pts)
    y_max = y_max * 1.1 if y_max > 0 else 0.01
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(d: str) -> float:
        i = dates.index(d)
        return round(left + (plot_w / 2 if len(dates) == 1 else i / (len(dates) - 1) * plot_w), 2)

    def y(v: float) -> float:
        return round(top + plot_h - v / y_max * plot_h, 2)

    for t in _nice_ticks(0.0, y_max, 4):
        parts.append(
            f'<line class="grid" x1="{left}" y1="{y(t)}" x2="{left + plot_w}" y2="{y(t)}" stroke="#e9ecef"/>'
            f'<text x="{left - 6}" y="{y(t) + 4}" text-anchor="end" font-size="11">{t * 100:g}%</text>'
        )
    step = max(1, math.ceil(len(dates) / 6))
    one_day = len({d[:10] for d in dates}) == 1 and len(dates[0]) > 10
    for i, d in enumerate(dates):
        if i % step == 0 or i == len(dates) - 1:
            label = d[11:16] if one_day else d[:16].replace("T", " ")
            parts.append(
                f'<text x="{x(d)}" y="{top + plot_h + 16}" text-anchor="middle" font-size="11">'
                f"{escape(label)}</text>"
            )
    parts.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#343a40"/>'
    )
    colour = arm_colours(report)
    for i, (arm, pts) in enumerate(series.items()):
        c = colour.get(arm, PALETTE[i % len(PALETTE)])
        coords = " ".join(f"{x(d)},{y(v)}" for d, v in pts)
        last = pts[-1][1] if pts else None
        parts.append(
            f'<g class="series" data-variant="{escape(arm)}" data-points="{len(pts)}" '
            f'data-last="{"" if last is None else f"{last:.6g}"}">'
            f'<polyline points="{coords}" fill="none" stroke="{c}" stroke-width="2.5"/>'
        )
        for d, v in pts:
            parts.append(
                f'<circle cx="{x(d)}" cy="{y(v)}" r="3" fill="{c}"><title>{escape(arm)} {escape(d)}: '
                f"{v * 100:.2f}%</title></circle>"
            )
        ly = top + 14 + 18 * i
        parts.append(
            f'<rect x="{left + plot_w + 12}" y="{ly - 9}" width="12" height="12" fill="{c}"/>'
            f'<text x="{left + plot_w + 30}" y="{ly + 1}" font-size="12">{escape(arm)}</text></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
