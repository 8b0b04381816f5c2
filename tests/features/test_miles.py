"""Miles balances from the ledger, and profiles that carry the balance as of their time (not the end's)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.layout import read_manifest
from recsys.data.times import as_of_end
from recsys.features.miles import balances_as_of, balances_at, has_miles_ledger
from recsys.features.profiles import ProfileCol, build_member_profiles
from recsys.schema import Col


def _ledger(world: Path) -> pd.DataFrame:
    """The ledger as plain rows: member, time, signed miles."""
    flights = pd.read_parquet(
        world / "flights", columns=[Col.MEMBER_ID, Col.DEPARTURE_TIME, Col.MILES_EARNED]
    )
    partner = pd.read_parquet(
        world / "partner_activities", columns=[Col.MEMBER_ID, Col.ACTIVITY_TIME, Col.MILES_EARNED]
    )
    spent = pd.read_parquet(world / "redemptions", columns=[Col.MEMBER_ID, Col.REDEEM_TIME, Col.MILES_SPENT])
    rows = [
        pd.DataFrame({"m": flights[Col.MEMBER_ID].astype(str), "t": flights[Col.DEPARTURE_TIME],
                      "miles": flights[Col.MILES_EARNED].astype(np.int64)}),
        pd.DataFrame({"m": partner[Col.MEMBER_ID].astype(str), "t": partner[Col.ACTIVITY_TIME],
                      "miles": partner[Col.MILES_EARNED].astype(np.int64)}),
        pd.DataFrame({"m": spent[Col.MEMBER_ID].astype(str), "t": spent[Col.REDEEM_TIME],
                      "miles": -spent[Col.MILES_SPENT].astype(np.int64)}),
    ]  # fmt: skip
    out = pd.concat(rows, ignore_index=True)
    out["t"] = pd.to_datetime(out["t"])
    return out


def test_the_ledger_at_the_world_s_end_is_the_members_table_s_balance(small_world: Path) -> None:
    members = pd.read_parquet(small_world / "members.parquet", columns=[Col.MEMBER_ID, Col.MILES_BALANCE])
    end = as_of_end(read_manifest(small_world)["as_of"])
    got = balances_as_of(small_world, members[Col.MEMBER_ID], end)
    assert got is not None
    np.testing.assert_array_equal(got, members[Col.MILES_BALANCE].to_numpy(np.int64))


def test_balances_at_request_times_match_a_plain_sum_over_the_ledger(small_world: Path) -> None:
    ledger = _ledger(small_world)
    rng = np.random.default_rng(7)
    spenders = ledger.loc[ledger["miles"] < 0, "m"].unique()
    ids = rng.choice(spenders, 60)
    lo, hi = ledger["t"].min(), ledger["t"].max()
    times = pd.Series(lo + (hi - lo) * rng.random(60))
    got = balances_at(small_world, ids, times)
    assert got is not None
    by_member = dict(tuple(ledger.groupby("m")))
    want = [
        int(by_member[m].loc[by_member[m]["t"] < t, "miles"].sum()) for m, t in zip(ids, times, strict=True)
    ]
    np.testing.assert_array_equal(got, want)
    assert len(set(want)) > 10  # the times fall between the members' entries


def test_profiles_carry_the_balance_as_of_their_time(small_world: Path) -> None:
    """Profiles built as of a past time hold that time's balance, not the world's end balance (a leak into
    training features and the replay's eligibility)."""
    as_of = pd.Timestamp("2026-04-02")
    profiles = build_member_profiles(small_world, as_of=as_of.to_pydatetime())
    ledger = _ledger(small_world)
    want = ledger[ledger["t"] < as_of].groupby("m")["miles"].sum()
    got = profiles.set_index(ProfileCol.MEMBER_ID)[ProfileCol.MILES_BALANCE]
    np.testing.assert_array_equal(got.to_numpy(), want.reindex(got.index).fillna(0).to_numpy(np.int64))
    end = pd.read_parquet(small_world / "members.parquet").set_index(Col.MEMBER_ID)[Col.MILES_BALANCE]
    assert (got != end.reindex(got.index)).mean() > 0.2


def test_without_a_ledger_profiles_keep_the_members_table_s_balance(
    small_world: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "world"
    shutil.copytree(small_world, copy)
    shutil.rmtree(copy / "redemptions")
    assert not has_miles_ledger(copy)
    assert balances_as_of(copy, ["x"], pd.Timestamp("2026-01-01")) is None
    profiles = build_member_profiles(copy, as_of=pd.Timestamp("2026-04-02").to_pydatetime())
    end = pd.read_parquet(copy / "members.parquet").set_index(Col.MEMBER_ID)[Col.MILES_BALANCE]
    got = profiles.set_index(ProfileCol.MEMBER_ID)[ProfileCol.MILES_BALANCE]
    np.testing.assert_array_equal(got.to_numpy(), end.reindex(got.index).to_numpy(np.int64))


def test_no_pairs_no_balances(small_world: Path) -> None:
    got = balances_at(small_world, np.array([], dtype=object), pd.Series([], dtype="datetime64[ns]"))
    assert got is not None and len(got) == 0
