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
    mem = np.asarray(member, dtype=object)
    org = np.asarray(origin, dtype=object)
    dst = np.asarray(destination, dtype=object)
    dep = pd.to_datetime(pd.Series(departure)).to_numpy("datetime64[s]").astype(np.int64)
    order = np.lexsort((dep, pd.factorize(mem)[0]))
    m_o, o_o, d_o, t_o = mem[order], org[order], dst[order], dep[order]
    nxt = np.zeros(n, dtype=bool)
    same = m_o[1:] == m_o[:-1]
    gap = t_o[1:] - t_o[:-1]
    onward = (o_o[1:] == d_o[:-1]) & (d_o[1:] != o_o[:-1])  # flying back where it came from is a return
    nxt[:-1] = same & onward & (gap >= 0) & (gap <= hours * 3600)
    out = np.zeros(n, dtype=bool)
    out[order] = nxt
    return out
