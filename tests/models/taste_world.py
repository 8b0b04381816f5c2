"""A small hand-made world with planted tastes (fast, no generator needed), for the model tests.

A module of its own, not conftest.py: every test directory has a conftest, so ``from conftest import`` picks
whichever was imported first and fails when directories are collected together."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.layout import DatasetWriter
from recsys.schema import Col

END = datetime(2026, 6, 1)


def write_taste_world(dest: Path, n_members: int = 120, seed: int = 0) -> Path:
    """Two kinds of members: 'eaters' (gold, fly PEK-CTU in C, take VGML, buy meal offers and award flights to
    CTU) and 'loungers' (basic, fly SHA-CAN in Y, buy lounge and Wi-Fi offers). One offer nobody touches."""
    rng = np.random.default_rng(seed)
    members = pd.DataFrame(
        {
            Col.MEMBER_ID: [f"M{i:04d}" for i in range(n_members)],
            Col.TIER: ["gold" if i % 2 == 0 else "basic" for i in range(n_members)],
            Col.HOME_AIRPORT: ["PEK" if i % 2 == 0 else "SHA" for i in range(n_members)],
        }
    )
    offers = pd.DataFrame(
        [
            ("MEAL-VGML", "ancillary", "meal", None, None, "VGML", 30.0, 0),
            ("MEAL-SIG", "ancillary", "meal", "C", None, "SIG", 60.0, 0),
            ("AWD-CTU", "redemption", "award_flight", "C", "CTU", None, 0.0, 40000),
            ("LOUNGE", "ancillary", "lounge", None, None, None, 50.0, 0),
            ("WIFI", "ancillary", "wifi", None, None, None, 10.0, 0),
            ("UPG-YW", "upsell", "cabin_upgrade", "W", None, None, 200.0, 0),
            ("NEW-OFFER", "ancillary", "meal", None, None, "AVML", 25.0, 0),  # no interactions at all
        ],
        columns=[Col.OFFER_ID, Col.FAMILY, Col.CATEGORY, Col.TARGET_CABIN, Col.DESTINATION, Col.MEAL,
                 Col.PRICE_CASH, Col.PRICE_MILES],
    )  # fmt: skip
    liked = {0: ["MEAL-VGML", "MEAL-SIG", "AWD-CTU"], 1: ["LOUNGE", "WIFI", "UPG-YW"]}
    others = {0: liked[1], 1: liked[0]}
    events, flights = [], []
    for i, m in enumerate(members[Col.MEMBER_ID]):
        kind = i % 2
        if i >= n_members - 4:  # the last four members have no history at all
            continue
        for _ in range(6):
            t = END - timedelta(days=float(rng.uniform(1, 300)))
            offer = str(rng.choice(liked[kind]))
            events.append((m, offer, "impression", t))
            events.append((m, offer, "click" if rng.random() < 0.5 else "purchase", t + timedelta(minutes=5)))
            other = str(rng.choice(others[kind]))
            events.append((m, other, "impression", t))
            if rng.random() < 0.3:
                events.append((m, other, "dismiss", t + timedelta(minutes=1)))
        for _ in range(3):
            t = END - timedelta(days=float(rng.uniform(1, 300)))
            if kind == 0:
                flights.append((m, "PEK", "CTU", "C", "VGML", t))
            else:
                flights.append((m, "SHA", "CAN", "Y", "STD", t))
    ev = pd.DataFrame(events, columns=[Col.MEMBER_ID, Col.OFFER_ID, Col.EVENT_TYPE, Col.EVENT_TIME])
    fl = pd.DataFrame(
        flights,
        columns=[Col.MEMBER_ID, Col.ORIGIN, Col.DESTINATION, Col.CABIN, Col.MEAL_CODE, Col.DEPARTURE_TIME],
    )
    with DatasetWriter(dest) as w:
        w.write_table("members", members)
        w.write_table("offers", offers)
        w.write_table("interactions", ev)
        w.write_table("flights", fl)
        w.commit({"source": "tests.models.taste_world"})
    return dest
