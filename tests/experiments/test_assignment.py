"""Assignment equals GrowthBook's: its published SDK cases, its Python SDK on real ids, and the split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from growthbook import Experiment as GbExperiment
from growthbook import GrowthBook
from growthbook.core import chooseVariation, gbhash, getBucketRanges, inNamespace

from recsys.experiments import HOLDOUT, Experiment, ModelRef, Variant, assign_member, route
from recsys.experiments.assignment import assign, bucket_ranges, choose_variation, gb_hash, in_namespace

CASES = json.loads((Path(__file__).parent / "growthbook_cases.json").read_text())
M = ModelRef("m", alias="champion")


def members(n: int, prefix: str = "M") -> list[str]:
    return [f"{prefix}{i:07d}" for i in range(n)]


@pytest.mark.parametrize("case", CASES["hash"], ids=lambda c: f"{c[0]!r}+{c[1]!r}v{c[2]}")
def test_hash_matches_growthbook_cases(case: list[Any]) -> None:
    seed, value, version, expected = case
    got = gb_hash(seed, value, version)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("case", CASES["getBucketRange"], ids=lambda c: c[0])
def test_bucket_ranges_match_growthbook_cases(case: list[Any]) -> None:
    _, (n, coverage, weights), expected = case
    got = bucket_ranges(n, coverage, weights)
    assert len(got) == len(expected)
    for (a, b), (c, d) in zip(got, expected, strict=True):
        assert a == pytest.approx(c, abs=1e-9) and b == pytest.approx(d, abs=1e-9)


@pytest.mark.parametrize("case", CASES["chooseVariation"], ids=lambda c: c[0])
def test_choose_variation_matches_growthbook_cases(case: list[Any]) -> None:
    _, n, ranges, expected = case
    assert choose_variation(n, [tuple(r) for r in ranges]) == expected


@pytest.mark.parametrize("case", CASES["inNamespace"], ids=lambda c: c[0])
def test_in_namespace_matches_growthbook_cases(case: list[Any]) -> None:
    _, user, (ns, start, end), expected = case
    assert in_namespace(user, ns, start, end) is expected


def test_equal_to_the_growthbook_sdk_run() -> None:
    """The full SDK (``GrowthBook.run``) on the same key, seed, weights, coverage and namespace."""
    weights = [0.45, 0.45, 0.1]
    for ns in (None, ("offers", 0.2, 0.7)):
        for member in members(3000, "G"):
            gb = GrowthBook(attributes={"id": member})
            result = gb.run(
                GbExperiment(
                    key="champion-vs-pop",
                    variations=[0, 1, 2],
                    weights=weights,
                    coverage=0.8,
                    hashVersion=2,
                    namespace=ns,
                )
            )
            ours = assign("champion-vs-pop", member, weights, coverage=0.8, namespace=ns)
            assert ours == (result.variationId if result.inExperiment else -1), member
            gb.destroy()


def test_equal_to_growthbook_functions_over_100k_members() -> None:
    exp = Experiment(
        key="big-split",
        placements=("booking",),
        variants=(Variant("control", 0.5, M), Variant("a", 0.3, M), Variant("b", 0.2, M)),
        holdout=0.05,
        traffic=0.9,
    )
    ranges = getBucketRanges(4, 0.9, exp.arm_weights())
    arms = exp.arms()
    for member in members(100_000):
        i = chooseVariation(gbhash("big-split", member, 2), ranges)
        got = assign_member(exp, member)
        assert (got.variant if got else None) == (arms[i] if i >= 0 else None)
        assert inNamespace(member, ("x", 0.0, 0.5)) == in_namespace(member, "x", 0.0, 0.5)


def test_split_within_one_percent_of_weights_over_100k_members() -> None:
    exp = Experiment(
        key="split-check",
        placements=("booking",),
        variants=(Variant("control", 0.5, M), Variant("a", 0.3, M), Variant("b", 0.2, M)),
        holdout=0.1,
    )
    ids = members(100_000)
    counts = Counter(a.variant for a in (assign_member(exp, m) for m in ids) if a is not None)
    assert sum(counts.values()) == len(ids)  # traffic 1: everybody is in
    shares = exp.expected_shares()
    for arm, share in shares.items():
        assert abs(counts[arm] / len(ids) - share) < 0.01, (arm, counts[arm], share)
    # and within 1 % of the configured weights among the non-holdout members
    kept = len(ids) - counts[HOLDOUT]
    for v in exp.variants:
        assert abs(counts[v.key] / kept - v.weight) < 0.01


def test_traffic_share() -> None:
    exp = Experiment(
        key="quarter",
        placements=("home",),
        variants=(Variant("c", 0.5, M), Variant("t", 0.5, M)),
        traffic=0.25,
    )
    inside = sum(assign_member(exp, m) is not None for m in members(100_000))
    assert abs(inside / 100_000 - 0.25) < 0.01


def test_sticky_and_seeded() -> None:
    exp = Experiment(
        key="sticky", placements=("home",), variants=(Variant("c", 0.5, M), Variant("t", 0.5, M))
    )
    ids = members(2000)
    first = [assign_member(exp, m) for m in ids]
    assert first == [assign_member(exp, m) for m in ids]
    reseeded = Experiment(key="sticky", placements=("home",), variants=exp.variants, seed="another-salt")
    moved = sum(a != b for a, b in zip(first, (assign_member(reseeded, m) for m in ids), strict=True))
    assert 800 < moved < 1200  # a new salt re-draws about half of a 50/50 split


def test_namespaces_make_experiments_exclusive() -> None:
    v = (Variant("c", 0.5, M), Variant("t", 0.5, M))
    left = Experiment(
        key="left", placements=("booking",), variants=v, namespace="ns", namespace_range=(0.0, 0.5)
    )
    right = Experiment(
        key="right", placements=("booking",), variants=v, namespace="ns", namespace_range=(0.5, 1.0)
    )
    seen = Counter()
    for m in members(20_000):
        a, b = assign_member(left, m), assign_member(right, m)
        assert a is None or b is None
        routed = route([left, right], "booking", m)
        assert routed == (a or b)
        seen[routed.experiment if routed else None] += 1
    assert abs(seen["left"] / 20_000 - 0.5) < 0.02 and seen[None] == 0
