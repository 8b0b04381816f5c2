"""Trips from flight legs: which legs end a journey and which only connect.

A flight's destination is where the member went only when they did not fly on from there: a leg followed by
the same member's departure from its destination airport within :data:`CONNECTION_HOURS`, to somewhere other
than where the leg came from, is a connection (the 24-hour rule airlines use for international connections).
Interaction tokens and the dataset description count journey destinations, not connecting hubs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CONNECTION_HOURS = 24.0


def connecting_legs(
    member: pd.Series | np.ndarray,
    origin: pd.Series | np.ndarray,
    destination: pd.Series | np.ndarray,
    departure: pd.Series | np.ndarray,
    hours: float = CONNECTION_HOURS,
) -> np.ndarray:
    """Boolean per leg (input order): the member flies on from this leg's destination within ``hours``.

    Legs are compared with the same member's next departure; ``departure`` is a datetime column (naive UTC).
    Only legs within one call are seen, so pass all of a member's legs together.
    """
    n = len(member)
    if n == 0:
        return np.zeros(0, dtype=bool)
    mem = pd.factorize(pd.Series(member))[0]  # a missing member matches no one (code -1)
    org, dst = _shared_codes(pd.Series(origin), pd.Series(destination))
    dep = pd.to_datetime(pd.Series(departure)).to_numpy("datetime64[s]").astype(np.int64)
    order = np.lexsort((dep, mem))
    m_o, o_o, d_o, t_o = mem[order], org[order], dst[order], dep[order]
    nxt = np.zeros(n, dtype=bool)
    same = (m_o[1:] == m_o[:-1]) & (m_o[1:] >= 0)
    gap = t_o[1:] - t_o[:-1]
    # flying back where it came from is a return; a missing airport (code -1) equals no airport
    onward = (o_o[1:] == d_o[:-1]) & (o_o[1:] >= 0) & ((d_o[1:] != o_o[:-1]) | (d_o[1:] < 0))
    nxt[:-1] = same & onward & (gap >= 0) & (gap <= hours * 3600)
    out = np.zeros(n, dtype=bool)
    out[order] = nxt
    return out


def _shared_codes(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of two columns over one vocabulary (-1 for missing): comparing codes instead of
    strings; categoricals (flights read part by part) are recoded through their categories only."""
    if isinstance(a.dtype, pd.CategoricalDtype) and isinstance(b.dtype, pd.CategoricalDtype):
        cats = a.cat.categories.union(b.cat.categories)
        out = []
        for s in (a, b):
            codes = s.cat.codes.to_numpy()
            recode = np.append(cats.get_indexer(s.cat.categories), -1)  # code -1 picks the trailing -1
            out.append(recode[codes])
        return out[0], out[1]
    codes = pd.factorize(pd.concat([a.astype(object), b.astype(object)], ignore_index=True))[0]
    return codes[: len(a)], codes[len(a) :]
