"""The capping types the stores and the pipeline share: members, candidates, decisions, the enforcer's
interface. Below the stores, so they import it; :mod:`recsys.capping.api` (above them) adds the factory."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from recsys.capping.policy import PolicyHolder

__all__ = [
    "REASON_COOLDOWN_DISMISS_CATEGORY",
    "REASON_COOLDOWN_DISMISS_OFFER",
    "REASON_OUTAGE_CLOSED",
    "REASON_PURCHASED",
    "REASON_PURCHASED_CATEGORY",
    "CapCandidate",
    "CapDecision",
    "CapEnforcer",
    "CapMember",
    "CapState",
    "StoreUnavailable",
    "Suppression",
    "SuppressionCounters",
]

REASON_COOLDOWN_DISMISS_OFFER = "cooldown:dismiss:offer"
REASON_COOLDOWN_DISMISS_CATEGORY = "cooldown:dismiss:category"
REASON_PURCHASED = "purchased"
REASON_PURCHASED_CATEGORY = "purchased:category"
REASON_OUTAGE_CLOSED = "outage:fail_closed"


@dataclass(frozen=True)
class CapMember:
    """Who is being capped. ``time_zone`` is an IANA name (calendar windows follow it; unknown → UTC)."""

    member_id: str
    tier: str
    time_zone: str = "UTC"

    def __post_init__(self) -> None:
        if not self.member_id or "{" in self.member_id or "}" in self.member_id:
            raise ValueError(f"member_id must be non-empty and contain no braces, got {self.member_id!r}")


@dataclass(frozen=True)
class CapCandidate:
    """One ranked candidate offer. ``family``/``category`` are OfferFamily/OfferCategory values."""

    offer_id: str
    family: str
    category: str
    exempt: bool = False


@dataclass(frozen=True)
class Suppression:
    """Why an offer was left out: a ``reason`` code and a human ``detail`` for marketers and support."""

    offer_id: str
    reason: str
    detail: str


@dataclass(frozen=True)
class CapDecision:
    """The offers to show (rank order, at most k), the ones dropped and why, and any store degradation."""

    selected: list[str]
    suppressed: list[Suppression]
    degraded: str | None = None
    # The considered candidates that break a cap or are in a cool-down on their own, before anything this
    # request selects counts (None: unknown, the store was unavailable). The others are the request's
    # candidate set after caps; ``suppressed`` also holds offers only this request's own picks crowded out.
    blocked: list[str] | None = None


class SuppressionCounters:
    """Thread-safe counts of suppressions by reason code (plus ``degraded:<mode>`` per degraded call)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._counts[reason] += n

    def add_many(self, reasons: Sequence[str]) -> None:
        if not reasons:
            return
        with self._lock:
            self._counts.update(reasons)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


@dataclass(frozen=True)
class CapState:
    """One member's cap hash as read: its fields and the version field a commit must still find (``""``:
    the member has no cap state)."""

    version: str
    fields: dict[str, str]

    @classmethod
    def of(cls, fields: dict[str, str]) -> CapState:
        return cls(fields.get("v", ""), fields)


class StoreUnavailable(Exception):
    """The counter store did not answer in time (or at all); the outage policy applies."""


class CapEnforcer(Protocol):
    """Frequency-cap enforcement (see :mod:`recsys.capping.api` for the semantics). Thread-safe."""

    # select_and_record looks at the first max(candidate_window, 5 * k) candidates (None: all of them)
    candidate_window: int | None

    @property
    def counters(self) -> SuppressionCounters:
        """Suppressions by reason code (and degraded calls), for metrics."""
        ...

    @property
    def holder(self) -> PolicyHolder:
        """The policy holder (the policy in force, reloads)."""
        ...

    def select_and_record(
        self,
        member: CapMember,
        candidates: Sequence[CapCandidate],
        k: int,
        placement: str,
        now: datetime,
        record: bool = True,
        also_check: Sequence[CapCandidate] = (),
        state: CapState | None = None,
    ) -> CapDecision:
        """Take up to ``k`` candidates in rank order that break no cap; record their impressions.

        ``also_check``: candidates never selected, only checked on their own (they appear in
        ``CapDecision.blocked`` when blocked): the rest of a candidate set the ranking left out.
        ``state``: the member's cap hash when the caller already read it (the member store reads it in the
        same round trip as the profile, see :meth:`state_key`); the store is then only called to record."""
        ...

    async def aselect_and_record(
        self,
        member: CapMember,
        candidates: Sequence[CapCandidate],
        k: int,
        placement: str,
        now: datetime,
        record: bool = True,
        also_check: Sequence[CapCandidate] = (),
        state: CapState | None = None,
    ) -> CapDecision:
        """:meth:`select_and_record` for an event loop."""
        ...

    def record_event(
        self, member: CapMember, offer: CapCandidate, event_type: str, placement: str, now: datetime
    ) -> None:
        """Apply an app event: impression (count_on=event), dismiss (cool-downs), purchase (suppression)."""
        ...

    def member_state(self, member: CapMember, now: datetime, offer_ids: Iterable[str] = ()) -> dict[str, Any]:
        """A JSON-able view for support staff: each cap's count, limit and reset time; active cool-downs.
        ``offer_ids`` (the catalogue's) name the offers of per-offer counters, which store a code of the
        id."""
        ...

    def with_policy(self, holder: PolicyHolder) -> CapEnforcer:
        """The same counter store (and outage handling) under another policy: an experiment arm's caps
        count the same impressions and events as the default policy's."""
        ...

    def state_key(self, member_id: str) -> str | None:
        """The member's cap hash, for a store at the same :meth:`location` to read with the profile."""
        ...

    def location(self) -> str | None:
        """Which Redis holds the counters (None: this process)."""
        ...

    def ping(self) -> bool:
        """True when the counter store answers (always true in-process); for readiness checks."""
        ...

    def status(self) -> dict[str, Any]:
        """Store health for metrics and admin pages: store, breaker_open, last_error, failures."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

    async def aclose(self) -> None:
        """Release the running loop's asyncio connections."""
        ...
