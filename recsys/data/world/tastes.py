"""Shared travel tastes of the loyalty world, and the generator's settings that shape them.

A taste (beach and resort, Japan and Korea, European cities...) loads on many destinations of the network.
Each member holds a hidden mix of tastes (a Dirichlet draw around the population shares); the mix drives the
leisure and family trips they fly (so taste shows in flight histories) and the award flights and destination
hotels they accept (the acceptance model's taste term). Flying to one beach therefore predicts interest in
another: the cross-item signal that collaborative filtering captures and a per-destination count cannot.

Loadings are hand-set per destination (1.0 = the taste's signature places) over the Air China network; a
destination missing from the network is skipped, so the tables survive a network rebuild.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


@dataclass(frozen=True)
class Taste:
    """A travel taste: its name, the default share of members leaning to it, and its destination loadings."""

    name: str
    title: str
    share: float
    loadings: dict[str, float]


def _loadings(text: str) -> dict[str, float]:
    """``"SYX:1.0 HAK:0.8"`` -> {"SYX": 1.0, "HAK": 0.8}."""
    return {code: float(w) for code, w in (item.split(":") for item in text.split())}


TASTES: tuple[Taste, ...] = (
    Taste(
        "beach_resort",
        "Beach and resort",
        0.22,
        _loadings(
            "SYX:1.0 HAK:0.8 XMN:0.6 BHY:0.6 ZHA:0.3 HKT:1.0 BKK:0.7 CNX:0.4 SIN:0.5 OKA:0.7 HNL:0.9 "
            "CUN:0.9 MNL:0.4 SGN:0.4 CGK:0.3"
        ),
    ),
    Taste(
        "japan_korea",
        "Japan and Korea",
        0.18,
        _loadings(
            "NRT:1.0 HND:0.9 KIX:1.0 NGO:0.6 CTS:0.8 FUK:0.6 HIJ:0.4 SDJ:0.4 OKA:0.4 ICN:1.0 GMP:0.6 "
            "PUS:0.7 CJJ:0.3 TAE:0.3 MWX:0.2 YNJ:0.6 DLC:0.5 TAO:0.5 SHE:0.3"
        ),
    ),
    Taste(
        "european_cities",
        "European cities",
        0.12,
        _loadings(
            "CDG:1.0 LHR:1.0 LGW:0.5 FCO:1.0 BCN:0.9 MAD:0.7 ATH:0.7 VIE:0.8 MUC:0.7 FRA:0.6 MXP:0.7 "
            "GVA:0.6 CPH:0.6 ARN:0.6 HEL:0.5 IST:0.6 SVO:0.5 WAW:0.4 XIY:0.7 HGH:0.6 NKG:0.5 HRB:0.5 "
            "TAO:0.3 JDZ:0.3"
        ),
    ),
    Taste(
        "family_theme_parks",
        "Family theme parks",
        0.16,
        _loadings(
            "PVG:1.0 SHA:0.6 HKG:1.0 CAN:0.7 ZUH:0.9 SZX:0.5 PEK:0.5 SYX:0.4 NRT:0.6 KIX:0.6 SIN:0.8 "
            "LAX:0.8 MFM:0.5 HNL:0.3 CKG:0.3"
        ),
    ),
    Taste(
        "nature_culture",
        "Landscapes and heritage",
        0.18,
        _loadings(
            "KMG:0.8 LJG:1.0 JZH:1.0 DYG:0.9 LXA:1.0 LZY:0.7 KWL:0.9 TXN:0.9 WUS:0.7 DCY:0.6 XNN:0.6 "
            "URC:0.6 KHG:0.6 XIY:0.6 CTU:0.5 HLD:0.5 AKL:0.8 SYD:0.6 MEL:0.5 KTM:0.8 YVR:0.5 REP:0.6 "
            "CAI:0.6"
        ),
    ),
    Taste(
        "business_hubs",
        "Business hubs",
        0.14,
        _loadings(
            "PEK:1.0 PVG:1.0 SHA:0.8 SZX:0.9 CAN:0.9 CTU:0.6 HGH:0.5 TSN:0.4 WUH:0.4 NKG:0.4 HKG:0.9 "
            "TPE:0.5 SIN:0.7 NRT:0.5 ICN:0.5 FRA:0.8 LHR:0.7 JFK:0.7 EWR:0.5 SFO:0.6 ORD:0.4 DXB:0.5 "
            "BOM:0.3 DEL:0.3"
        ),
    ),
)
TASTE_NAMES: tuple[str, ...] = tuple(t.name for t in TASTES)


class WorldSettings(BaseModel):
    """Settings of the generator's travel behaviour (defaults: the project's default world).

    ``tastes``: how many tastes of :data:`TASTES` the world uses (its first ``tastes``); ``taste_shares``: the
    population share around which members' taste mixes are drawn (one per taste, summing to 1; default: the
    tastes' own shares, renormalised); ``taste_concentration``: the Dirichlet concentration (small: members
    lean to one taste; large: everyone holds the average mix); ``taste_weight``: the share of a leisure or
    family trip's destination choice that follows taste rather than hub size; ``international_leisure_share``
    and ``international_business_share``: the average probability that a trip of that purpose crosses a
    border (members' tastes shift their own); ``card_holder_share``: members holding the co-branded card;
    ``unflown_stays_per_year``: partner hotel stays a year on leisure trips not flown with the airline (rail,
    other carriers), placed by the member's tastes, for a member of average leisure and family share.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tastes: int = Field(default=len(TASTES), ge=1, le=len(TASTES))
    taste_shares: tuple[float, ...] | None = None
    taste_concentration: float = Field(default=0.15, gt=0)
    taste_weight: float = Field(default=0.9, ge=0, le=1)
    international_leisure_share: float = Field(default=0.12, ge=0, le=1)
    international_business_share: float = Field(default=0.08, ge=0, le=1)
    card_holder_share: float = Field(default=0.15, ge=0, le=1)
    unflown_stays_per_year: float = Field(default=1.5, ge=0, le=20)

    @model_validator(mode="after")
    def _shares(self) -> WorldSettings:
        if self.taste_shares is not None:
            if len(self.taste_shares) != self.tastes:
                raise ValueError(
                    f"taste_shares has {len(self.taste_shares)} values for {self.tastes} tastes; "
                    "give one per taste"
                )
            if any(not np.isfinite(s) or s < 0 for s in self.taste_shares):
                raise ValueError(f"taste_shares must be non-negative numbers, got {list(self.taste_shares)}")
            total = float(sum(self.taste_shares))
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"taste_shares must sum to 1, got {total:g}")
        return self

    def shares(self) -> np.ndarray:
        """Population shares of the world's tastes (sum 1)."""
        if self.taste_shares is not None:
            return np.asarray(self.taste_shares, dtype=float)
        s = np.array([t.share for t in TASTES[: self.tastes]])
        return np.asarray(s / s.sum())

    def names(self) -> tuple[str, ...]:
        return TASTE_NAMES[: self.tastes]


class SettingsError(ValueError):
    """A generator setting outside its range; the message names the setting."""


def parse_settings(settings: WorldSettings | dict[str, Any] | None) -> WorldSettings:
    """Validate generator settings; raises :class:`SettingsError` naming each bad setting."""
    if settings is None:
        return WorldSettings()
    if isinstance(settings, WorldSettings):
        return settings
    try:
        return WorldSettings.model_validate(settings)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = str(err["msg"]).removeprefix("Value error, ")
            loc = ".".join(str(p) for p in err["loc"])
            problems.append(f"{loc}: {msg} (got {err['input']!r})" if loc else msg)
        raise SettingsError("bad generator setting: " + "; ".join(problems)) from None


def loading_matrix(iata: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """(airports x tastes) loadings in [0, 1], airports in ``iata`` order (0 where a taste is silent)."""
    index = {str(c): i for i, c in enumerate(iata)}
    by_name = {t.name: t for t in TASTES}
    out = np.zeros((len(iata), len(names)))
    for k, name in enumerate(names):
        for code, w in by_name[name].loadings.items():
            if code in index:
                out[index[code], k] = w
    return out
