"""Member and item feature matrices for the content models (LightFM, hybrid), offline and online alike.

A feature is a ``"key=value"`` name. Member features come from the member profile
(:func:`recsys.features.profiles.build_member_profiles`, the same code offline and online), keys
:data:`MEMBER_FEATURE_KEYS`::

    tier=gold  segment=keep  home_airport=PEK  dominant_cabin=C  special_meal=VGML  value_band=v60_80
    recency_band=d000_030

(when profiles cannot be built — a dataset without the columns they need — tier and home airport come from the
members table and the cabin and special meal habits from the interaction matrix). Items (offers and tokens
share names, which is what links an award flight to CTU with the members who fly to CTU)::

    kind=offer|dest|route|cabin|meal|category   family=upsell  category=meal  cabin=C  region=asia
    dest=CTU  origin=PEK  meal=VGML  price=low|mid|high  miles=none|low|mid|high

The service passes a member's online profile dict to the bundle, which builds the same names with
:func:`member_feature_names`: a member the model never saw is scored from the same features as in training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.ids import IdMap
from recsys.interactions import CABIN_PREFIX, MEAL_PREFIX, InteractionMatrix, item_kind
from recsys.models.base import FeatureMatrix
from recsys.schema import Col

# Keys of a member's features, in the order of the profile dict the service passes (``member_features``).
MEMBER_FEATURE_KEYS: tuple[str, ...] = (
    "tier",
    "segment",
    "home_airport",
    "dominant_cabin",
    "special_meal",
    "value_band",
    "recency_band",
    "miles_band",
)
# Miles balance bands (derived from ``miles_balance``): redemptions need the miles, so the band says which
# award offers a member can be shown at all. Upper bounds, in miles.
MILES_BANDS: tuple[tuple[str, float], ...] = (
    ("m0", 1.0),
    ("m10k", 10_000.0),
    ("m30k", 30_000.0),
    ("m60k", 60_000.0),
    ("m100k", 100_000.0),
    ("m100k_plus", float("inf")),
)


def miles_band(balance: Any) -> str | None:
    """The :data:`MILES_BANDS` label of a miles balance (None when unknown)."""
    try:
        value = float(balance)
    except (TypeError, ValueError):
        return None
    if np.isnan(value):
        return None
    return next(label for label, upper in MILES_BANDS if value < upper)


def miles_bands(balances: pd.Series) -> pd.Series:
    """:func:`miles_band` of a column, vectorised."""
    values = pd.to_numeric(balances, errors="coerce").to_numpy(dtype=float)
    uppers = np.asarray([u for _, u in MILES_BANDS])
    labels = np.asarray([label for label, _ in MILES_BANDS], dtype=object)
    out = labels[np.searchsorted(uppers, values, side="right").clip(0, len(labels) - 1)]
    return pd.Series(np.where(np.isnan(values), None, out), index=balances.index, dtype=object)


def member_feature_names(profile: Mapping[str, Any] | None) -> list[str]:
    """Feature names of one member from a profile dict (keys :data:`MEMBER_FEATURE_KEYS`; others ignored)."""
    if not profile:
        return []
    names = []
    for key in MEMBER_FEATURE_KEYS:
        value = miles_band(profile.get(Col.MILES_BALANCE)) if key == "miles_band" else profile.get(key)
        if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
            continue
        names.append(f"{key}={value}")
    return names


def group_label(profile: Mapping[str, Any] | None, keys: Sequence[str]) -> str:
    """A member's group label: the values of ``keys`` joined by ``|`` (the same string :func:`group_labels`
    gives offline; ``miles_band`` is derived from ``miles_balance``)."""
    profile = profile or {}
    parts = []
    for key in keys:
        value = miles_band(profile.get(Col.MILES_BALANCE)) if key == "miles_band" else profile.get(key)
        parts.append(_label_part(value))
    return "|".join(parts)


def _label_part(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return "?"
    return str(value)


def group_labels(table: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """Group label per row of a :func:`member_feature_table` (vectorised :func:`group_label`)."""
    if not keys:
        return pd.Series(["" for _ in range(len(table))], index=table.index, dtype=object)
    cols = [table[k].astype(object).where(table[k].notna() & (table[k].astype(str) != ""), "?").astype(str)
            for k in keys]  # fmt: skip
    return cols[0].str.cat(cols[1:], sep="|") if len(cols) > 1 else cols[0]


def member_habits(inter: InteractionMatrix) -> pd.DataFrame:
    """Each member's most-weighted cabin and meal token from the interaction matrix (None without any)."""
    ids = inter.item_ids.external_ids
    out = pd.DataFrame({Col.MEMBER_ID: inter.member_ids.external_ids})
    for key, prefix in (("dominant_cabin", CABIN_PREFIX), ("special_meal", MEAL_PREFIX)):
        cols = np.flatnonzero(pd.Series(ids, dtype=object).str.startswith(prefix).to_numpy())
        values = np.asarray([str(i)[len(prefix) :] for i in ids[cols]], dtype=object)
        if len(cols) == 0:
            out[key] = None
            continue
        sub = inter.matrix[:, cols].toarray()
        best = sub.argmax(axis=1)
        has = sub.max(axis=1) > 0
        out[key] = np.where(has, values[best], None)
    return out


def member_feature_table(
    members: pd.DataFrame, inter: InteractionMatrix, profiles: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per member of ``inter`` (same order) with the :data:`MEMBER_FEATURE_KEYS` columns.

    From ``profiles`` (member profiles, one row per member id) when given; otherwise tier and home airport
    from
    ``members`` and habits from the interaction matrix, the other keys missing.
    """
    base = pd.DataFrame({Col.MEMBER_ID: inter.member_ids.external_ids})
    if profiles is not None:
        prof = profiles.drop_duplicates(Col.MEMBER_ID).set_index(Col.MEMBER_ID)
        # one lookup of the members for all the keys (a missing member: NaN, as Series.map gives)
        keys = [k for k in (*MEMBER_FEATURE_KEYS, Col.MILES_BALANCE) if k in prof]
        aligned = prof[list(dict.fromkeys(keys))].reindex(pd.Index(base[Col.MEMBER_ID], dtype=object))
        for key in MEMBER_FEATURE_KEYS:
            base[key] = aligned[key].set_axis(base.index) if key in prof else None
        if Col.MILES_BALANCE in prof:
            base["miles_band"] = miles_bands(aligned[Col.MILES_BALANCE].set_axis(base.index))
        return base[[Col.MEMBER_ID, *MEMBER_FEATURE_KEYS]]
    info = members.drop_duplicates(Col.MEMBER_ID).set_index(Col.MEMBER_ID)
    for key in MEMBER_FEATURE_KEYS:
        base[key] = base[Col.MEMBER_ID].map(info[key]) if key in info else None
    if Col.MILES_BALANCE in info:
        base["miles_band"] = miles_bands(base[Col.MEMBER_ID].map(info[Col.MILES_BALANCE]))
    habits = member_habits(inter)
    base["dominant_cabin"] = habits["dominant_cabin"].to_numpy()
    base["special_meal"] = habits["special_meal"].to_numpy()
    return base[[Col.MEMBER_ID, *MEMBER_FEATURE_KEYS]]


def _one_hot(columns: dict[str, pd.Series], n_rows: int) -> FeatureMatrix:
    """Rows × ``key=value`` indicators of several categorical columns (missing values give no feature)."""
    rows_list: list[np.ndarray] = []
    cols_list: list[np.ndarray] = []
    names: list[str] = []
    for key, series in columns.items():
        values = pd.Series(series).reset_index(drop=True)
        valid = values.notna() & (values.astype(str) != "")
        codes, uniques = pd.factorize(values[valid].astype(str), sort=True)
        rows_list.append(np.flatnonzero(valid.to_numpy()))
        cols_list.append(codes + len(names))
        names.extend(f"{key}={u}" for u in uniques)
    rows = np.concatenate(rows_list) if rows_list else np.empty(0, dtype=np.int64)
    cols = np.concatenate(cols_list) if cols_list else np.empty(0, dtype=np.int64)
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_rows, len(names)))
    m.sum_duplicates()
    m.data[:] = 1.0
    return FeatureMatrix(m, np.asarray(names, dtype=object))


def build_member_features(table: pd.DataFrame) -> FeatureMatrix:
    """The member feature matrix (rows in ``table`` order) from :func:`member_feature_table`."""
    return _one_hot({k: table[k] for k in MEMBER_FEATURE_KEYS}, len(table))


def _band(values: pd.Series, labels: tuple[str, ...] = ("low", "mid", "high")) -> pd.Series:
    """Tercile bands of positive values; zero or missing is ``none``."""
    v = pd.to_numeric(values, errors="coerce")
    out = pd.Series("none", index=values.index, dtype=object)
    pos = v > 0
    if pos.sum() >= len(labels):
        out[pos] = pd.qcut(v[pos].rank(method="first"), len(labels), labels=list(labels)).astype(str)
    elif pos.any():
        out[pos] = labels[0]
    return out


def build_item_features(offers: pd.DataFrame, item_ids: IdMap) -> FeatureMatrix:
    """Item features of every item of ``item_ids``: catalogue attributes for offers, parsed tokens for the
    rest."""
    ids = pd.Series(item_ids.external_ids, dtype=object)
    kinds = pd.Series(item_kind(item_ids.external_ids), dtype=object)
    value = ids.str.split(":", n=1).str[1]
    n = len(ids)
    cols: dict[str, pd.Series] = {"kind": kinds}
    empty = pd.Series([None] * n, dtype=object)
    family, category, cabin, region, dest, origin, meal, price, miles = (empty.copy() for _ in range(9))
    # offers
    off = offers.set_index(offers[Col.OFFER_ID].astype(str))
    is_offer = kinds == "offer"
    oid = value[is_offer]
    priced = off.assign(_price=_band(off[Col.PRICE_CASH]) if Col.PRICE_CASH in off else "none")
    priced = priced.assign(_miles=_band(off[Col.PRICE_MILES]) if Col.PRICE_MILES in off else "none")
    for target, col in (
        (family, Col.FAMILY),
        (category, Col.CATEGORY),
        (cabin, Col.TARGET_CABIN),
        (region, Col.REGION),
        (dest, Col.DESTINATION),
        (meal, Col.MEAL),
        (price, "_price"),
        (miles, "_miles"),
    ):
        if col in priced:
            target[is_offer] = oid.map(priced[col]).to_numpy()
    # tokens
    for kind, target in (("dest", dest), ("cabin", cabin), ("meal", meal), ("category", category)):
        sel = kinds == kind
        target[sel] = value[sel]
    route = kinds == "route"
    parts = value[route].str.split("-", n=1)
    origin[route] = parts.str[0]
    dest[route] = parts.str[1]
    cols.update(
        family=family, category=category, cabin=cabin, region=region, dest=dest, origin=origin, meal=meal,
        price=price, miles=miles,
    )  # fmt: skip
    return _one_hot(cols, n)
