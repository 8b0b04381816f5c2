"""Serving latency per experiment arm, mergeable across workers: HDR histograms (``hdrhistogram``).

Each worker keeps one histogram per arm of the latencies it served and stores its encoded form in the
experiment store (one row per experiment, arm and worker); the report adds every worker's histogram, so its
p99 covers all workers and outlives restarts. Values are recorded in microseconds with two significant
digits: a percentile is exact to 1 %.
"""

from __future__ import annotations

from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # an hour: anything longer is clamped, not dropped
SIGNIFICANT_DIGITS = 2


class LatencyHistogram:
    """Latencies of one arm (not thread-safe: the caller serialises recording and encoding)."""

    def __init__(self, histogram: HdrHistogram | None = None) -> None:
        self._h = histogram or HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    def record_seconds(self, seconds: float) -> None:
        us = min(max(round(seconds * 1e6), LOWEST_US), HIGHEST_US)
        self._h.record_value(us)

    def add(self, other: LatencyHistogram) -> None:
        self._h.add(other._h)

    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    def percentile_ms(self, percentile: float) -> float | None:
        """The latency (ms) at ``percentile`` (0-100); None before any request."""
        if self.count == 0:
            return None
        return float(self._h.get_value_at_percentile(percentile)) / 1e3

    def encode(self) -> str:
        """The histogram as compact text (HdrHistogram's compressed V2 encoding, base64)."""
        encoded = self._h.encode()
        return encoded.decode("ascii") if isinstance(encoded, bytes) else str(encoded)

    @classmethod
    def decode(cls, text: str) -> LatencyHistogram:
        return cls(HdrHistogram.decode(text.encode("ascii")))


def merged(encoded: Iterable[str]) -> LatencyHistogram:
    """One histogram of every worker's (encoded) histogram."""
    total = LatencyHistogram()
    for text in encoded:
        total.add(LatencyHistogram.decode(text))
    return total
