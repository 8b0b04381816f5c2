"""Per-user, leave-last-out and random splits on a hand-made generic dataset: every set checked by hand."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recsys.data.layout import DatasetWriter
from recsys.evaluation import EvaluationError, make_split

T = pd.Timestamp("2025-06-01")


def _t(day: int) -> pd.Timestamp:
    return T + pd.Timedelta(days=day)


@pytest.fixture(scope="module")
def generic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [
        ("m1", "o1", 1), ("m1", "o2", 2), ("m1", "o3", 3), ("m1", "o4", 4), ("m1", "o1", 5),  # o1 again
        ("m2", "o1", 1), ("m2", "o2", 1),  # two interactions at one time: no time split possible
        ("m3", "o3", 5),  # a single interaction
    ]  # fmt: skip
    events = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(rows))],
            "request_id": None,
            "member_id": [r[0] for r in rows],
            "offer_id": [r[1] for r in rows],
            "flight_id": None,
            "placement": "home",
            "event_type": "click",
            "event_time": [_t(r[2]) for r in rows],
        }
    )
    dest = tmp_path_factory.mktemp("generic") / "ds"
    with DatasetWriter(dest) as w:
        w.write_table("members", pd.DataFrame({"member_id": ["m1", "m2", "m3"]}))
        w.write_table(
            "offers",
            pd.DataFrame({"offer_id": ["o1", "o2", "o3", "o4"], "family": "generic", "category": "generic"}),
        )
        w.write_table("interactions", events)
        w.commit({"import_format": "interactions"})
    return dest


def _pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["member_id"], frame["offer_id"], strict=True))


def test_per_user_split_holds_out_each_members_last_share_by_time(generic: Path) -> None:
    # m1: 5 interactions, 0.5 -> rint(2.5) = 2 test rows from day 4; m2 (one time) and m3 (one row) only train
    split = make_split(generic, "per-user", test_fraction=0.5, exclude_seen=False)
    assert split.relevance == "any"  # generic data's default
    assert _pairs(split.relevant) == {("m1", "o4"), ("m1", "o1")}
    assert split.holdout is not None and split.holdout.member_cutoffs is not None
    assert split.holdout.member_cutoffs.to_dict() == {"m1": _t(4)}
    assert split.before is None and list(split.test_members) == ["m1"]
    # the default for generic data filters seen items: o1 was seen on day 1, so only o4 stays relevant
    seen = make_split(generic, "per-user", test_fraction=0.5)
    assert _pairs(seen.relevant) == {("m1", "o4")}
    assert seen.seen is not None and _pairs(seen.seen) >= {("m1", "o1"), ("m1", "o2"), ("m1", "o3")}


def test_leave_last_out_and_random(generic: Path) -> None:
    last = make_split(generic, "leave-last-out", exclude_seen=False)
    assert _pairs(last.relevant) == {("m1", "o1")}
    assert last.holdout is not None and last.holdout.member_cutoffs is not None
    assert last.holdout.member_cutoffs.to_dict() == {"m1": _t(5)}

    rnd = make_split(generic, "random", test_fraction=0.5, seed=1)
    assert rnd.holdout is not None and rnd.holdout.pairs is not None
    held = _pairs(rnd.holdout.pairs)
    # m1 has 4 distinct items: 2 held out; m2 has 2: 1 (one must stay to learn from); m3 has 1: none
    assert sum(m == "m1" for m, _ in held) == 2 and sum(m == "m2" for m, _ in held) == 1
    assert _pairs(rnd.relevant) == held
    assert rnd.seen is not None and not (_pairs(rnd.seen) & held)
    assert make_split(generic, "random", test_fraction=0.5, seed=1).relevant.equals(rnd.relevant)


def test_bad_split_settings_are_named(generic: Path) -> None:
    with pytest.raises(EvaluationError, match=r"unknown split 'weekly' \(--split\)"):
        make_split(generic, "weekly")  # type: ignore[arg-type]
    with pytest.raises(EvaluationError, match=r"test_fraction \(--test-fraction\) must be in \(0, 1\)"):
        make_split(generic, "per-user", test_fraction=1.0)
    with pytest.raises(EvaluationError, match=r"relevance=purchase .* selects no test item"):
        make_split(generic, "per-user", relevance="purchase")
    with pytest.raises(EvaluationError, match="has no 'weight' column"):
        make_split(generic, "per-user", min_weight=2.0)
