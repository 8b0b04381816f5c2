"""Sticky assignment: GrowthBook's hash v2, bucket ranges and namespaces, as pure functions.

Written to match the ``growthbook`` SDKs (``hash``, ``getBucketRanges``, ``chooseVariation``, ``inNamespace``)
so an app that already runs GrowthBook computes the same variant for the same key and member id; the tests
pin it to GrowthBook's published cases and to the ``growthbook`` package. No state: a member's variant is a
function of (seed, member id, weights, coverage, namespace), so it holds across requests, processes and
restarts.
"""

from __future__ import annotations

from collections.abc import Sequence

from recsys.experiments.model import HOLDOUT, Assignment, Experiment

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1a32(text: str) -> int:
    """32-bit FNV-1a over the UTF-8 bytes of ``text``."""
    h = _FNV_OFFSET
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def gb_hash(seed: str, value: str, version: int = 2) -> float | None:
    """GrowthBook's hash in [0, 1): v2 ``fnv(str(fnv(seed + value))) % 10000 / 10000``; v1
    ``fnv(value + seed) % 1000 / 1000``; None for an unknown version."""
    if version == 2:
        return (fnv1a32(str(fnv1a32(seed + value))) % 10000) / 10000
    if version == 1:
        return (fnv1a32(value + seed) % 1000) / 1000
    return None


def equal_weights(n: int) -> list[float]:
    return [1.0 / n] * n if n > 0 else []


def bucket_ranges(
    n_variations: int, coverage: float = 1.0, weights: Sequence[float] | None = None
) -> list[tuple[float, float]]:
    """GrowthBook's ``getBucketRanges``: each variation's slice ``[start, start + coverage × weight)``.

    Coverage is clamped to [0, 1]; weights of the wrong length or not summing to 1 (±0.01) become equal
    weights, as in the SDKs (this module's callers validate weights before they get here).
    """
    coverage = min(max(coverage, 0.0), 1.0)
    w: list[float]
    if weights is None or len(weights) != n_variations or not 0.99 <= sum(weights) <= 1.01:
        w = equal_weights(n_variations)
    else:
        w = list(weights)
    ranges: list[tuple[float, float]] = []
    cumulative = 0.0
    for weight in w:
        start = cumulative
        cumulative += weight
        ranges.append((start, start + coverage * weight))
    return ranges


def in_range(n: float, bucket: tuple[float, float]) -> bool:
    return bucket[0] <= n < bucket[1]


def choose_variation(n: float, ranges: Sequence[tuple[float, float]]) -> int:
    """Index of the range holding ``n``, or -1 (outside the coverage)."""
    for i, bucket in enumerate(ranges):
        if in_range(n, bucket):
            return i
    return -1


def in_namespace(member_id: str, namespace: str, start: float, end: float) -> bool:
    """GrowthBook's ``inNamespace``: the member's hash (v1, seed ``__<namespace>``) is in [start, end)."""
    n = gb_hash("__" + namespace, member_id, 1)
    return n is not None and start <= n < end


def assign(
    seed: str,
    member_id: str,
    weights: Sequence[float],
    *,
    coverage: float = 1.0,
    namespace: tuple[str, float, float] | None = None,
) -> int:
    """The variation GrowthBook's ``run`` gives this member (hash v2), or -1 outside the experiment."""
    if namespace is not None and not in_namespace(member_id, *namespace):
        return -1
    n = gb_hash(seed, member_id, 2)
    if n is None:
        return -1
    return choose_variation(n, bucket_ranges(len(weights), coverage, weights))


def assign_member(exp: Experiment, member_id: str) -> Assignment | None:
    """The member's arm of ``exp`` (variant or holdout), or None when they are outside its traffic or
    namespace range. Pure: the same (experiment, member) always gives the same answer."""
    lo, hi = exp.namespace_range
    ns = None if (lo, hi) == (0.0, 1.0) else (exp.namespace, lo, hi)
    i = assign(exp.hash_seed, member_id, exp.arm_weights(), coverage=exp.traffic, namespace=ns)
    if i < 0:
        return None
    arm = exp.arms()[i]
    return Assignment(exp.key, arm, holdout=arm == HOLDOUT)


def route(running: Sequence[Experiment], placement: str, member_id: str) -> Assignment | None:
    """The member's arm among the running experiments on ``placement`` (at most one: starting refuses
    experiments that could share a member on a placement; the first in key order wins if any still do)."""
    for exp in sorted(running, key=lambda e: e.key):
        if placement in exp.placements:
            found = assign_member(exp, member_id)
            if found is not None:
                return found
    return None
