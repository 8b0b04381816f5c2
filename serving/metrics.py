"""In-process counters exposed at ``/metrics`` in Prometheus text format (per worker process).

Kept deliberately small and lock-free (the event loop is single-threaded; the threadpool only increments
integers, which the GIL makes safe enough for monitoring counters).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    """Request counts/latency by route and status, suppressions by stage and reason, events by type."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.latency_sum: dict[tuple[str, str], float] = defaultdict(float)
        self.suppressions: Counter[tuple[str, str]] = Counter()
        self.events: Counter[tuple[str, str]] = Counter()  # (event_type, outcome)
        self.offers_served: Counter[str] = Counter()  # by family
        self.cap_degraded: Counter[str] = Counter()
        self.cold_start = 0
        self.started = time.time()

    def record_suppressed(self, suppressed: Iterable[Any]) -> None:
        for s in suppressed:
            self.suppressions[(s.stage, s.reason)] += 1

    def render(self, extra: dict[str, float] | None = None) -> str:
        lines = [
            "# TYPE recsys_http_requests_total counter",
            *(
                f'recsys_http_requests_total{{method="{m}",route="{r}",status="{s}"}} {n}'
                for (m, r, s), n in sorted(self.requests.items())
            ),
            "# TYPE recsys_http_request_seconds_sum counter",
            *(
                f'recsys_http_request_seconds_sum{{method="{m}",route="{r}"}} {v:.6f}'
                for (m, r), v in sorted(self.latency_sum.items())
            ),
            "# TYPE recsys_suppressed_candidates_total counter",
            *(
                f'recsys_suppressed_candidates_total{{stage="{st}",reason="{rs}"}} {n}'
                for (st, rs), n in sorted(self.suppressions.items())
            ),
            "# TYPE recsys_offers_served_total counter",
            *(
                f'recsys_offers_served_total{{family="{f}"}} {n}'
                for f, n in sorted(self.offers_served.items())
            ),
            "# TYPE recsys_events_total counter",
            *(
                f'recsys_events_total{{event_type="{t}",outcome="{o}"}} {n}'
                for (t, o), n in sorted(self.events.items())
            ),
            "# TYPE recsys_cap_degraded_total counter",
            *(f'recsys_cap_degraded_total{{mode="{m}"}} {n}' for m, n in sorted(self.cap_degraded.items())),
            "# TYPE recsys_cold_start_total counter",
            f"recsys_cold_start_total {self.cold_start}",
            "# TYPE recsys_uptime_seconds gauge",
            f"recsys_uptime_seconds {time.time() - self.started:.1f}",
        ]
        for name, value in (extra or {}).items():
            lines += [f"# TYPE {name} gauge", f"{name} {value}"]
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task/stream overhead) counting requests by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests[(method, path, status)] += 1
            self.metrics.latency_sum[(method, path)] += time.perf_counter() - started
