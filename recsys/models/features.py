"""Member and item feature matrices for the content models (LightFM, hybrid), offline and online alike.

A feature is a ``"key=value"`` name. Members (:data:`MEMBER_FEATURE_KEYS`)::

    tier=gold  segment=keep  home=PEK  cabin=C (the cabin flown most)  meal=VGML (the special meal taken most)

Items (offers and tokens share names, which is what links an award flight to CTU with members who fly to CTU)::

    kind=offer|dest|route|cabin|meal|category   family=upsell  category=meal  cabin=C  region=asia
    dest=CTU  origin=PEK  meal=VGML  price=low|mid|high  miles=none|low|mid|high

The service builds the same names from a member's online profile with :func:`member_feature_names`, so a member
the model never saw is scored from the same features as in training (no training/serving skew).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.ids import IdMap
from recsys.interactions import CABIN_PREFIX, MEAL_PREFIX, InteractionMatrix, item_kind
from recsys.models.base import FeatureMatrix
from recsys.schema import Col

# Keys of a member's features, in the order of the profile dict the service passes (``member_features``).
MEMBER_FEATURE_KEYS: tuple[str, ...] = ("tier", "segment", "home_airport", "cabin", "meal")
_SHORT = {"home_airport": "home"}


def member_feature_names(profile: Mapping[str, Any] | None) -> list[str]:
    """Feature names of one member from a profile dict (keys :data:`MEMBER_FEATURE_KEYS`; others ignored)."""
    if not profile:
        return []
    names = []
    for key in MEMBER_FEATURE_KEYS:
        value = profile.get(key)
        if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
            continue
        names.append(f"{_SHORT.get(key, key)}={value}")
    return names


def member_habits(inter: InteractionMatrix) -> pd.DataFrame:
    """Each member's most-weighted cabin and special meal from the interaction matrix (None without any)."""
    ids = inter.item_ids.external_ids
    out = pd.DataFrame({Col.MEMBER_ID: inter.member_ids.external_ids})
    for key, prefix in (("cabin", CABIN_PREFIX), ("meal", MEAL_PREFIX)):
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
    members: pd.DataFrame, inter: InteractionMatrix, segments: pd.Series | None = None
) -> pd.DataFrame:
    """One row per member of ``inter`` (same order) with the :data:`MEMBER_FEATURE_KEYS` columns.

    ``members`` is the members table (tier, home airport); ``segments`` an optional Series of segment labels
    indexed by member id.
    """
    base = pd.DataFrame({Col.MEMBER_ID: inter.member_ids.external_ids})
    info = members.set_index(Col.MEMBER_ID)
    base["tier"] = base[Col.MEMBER_ID].map(info[Col.TIER]) if Col.TIER in info else None
    base["home_airport"] = (
        base[Col.MEMBER_ID].map(info[Col.HOME_AIRPORT]) if Col.HOME_AIRPORT in info else None
    )
    base["segment"] = base[Col.MEMBER_ID].map(segments) if segments is not None else None
    habits = member_habits(inter)
    base["cabin"] = habits["cabin"].to_numpy()
    base["meal"] = habits["meal"].to_numpy()
    return base[[Col.MEMBER_ID, *MEMBER_FEATURE_KEYS]]


def _one_hot(columns: dict[str, pd.Series], n_rows: int) -> FeatureMatrix:
    """Rows × ``key=value`` indicators of several categorical columns (missing values give no feature)."""
    rows_list, cols_list, names = [], [], []
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
    return _one_hot({_SHORT.get(k, k): table[k] for k in MEMBER_FEATURE_KEYS}, len(table))


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
    """Item features of every item of ``item_ids``: catalogue attributes for offers, parsed tokens for the rest."""
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
