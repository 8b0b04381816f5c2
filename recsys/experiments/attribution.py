"""Attribution: events → tracking token's request id → request record → experiment and variant.

A member is exposed at their first request logged under the experiment; their arm is that request's variant
(a member later logged under another variant is a *crossover*: counted, reported, kept in their first arm).
An event counts for the experiment only when its tracking token names a request of the experiment, it is the
same member's, and it happened at or after that member's first exposure. Events without a token, or whose
request is not in the experiment, are counted as unattributed, never guessed.

Sources are Protocols: the service's request log (``recsys.requestlog``) and event log satisfy them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from recsys.requestlog.record import RequestRecord
from recsys.schema import EventType


class ExposureLike(Protocol):
    """One logged request of the experiment: who, when, which arm, how many offers it showed."""

    @property
    def request_id(self) -> str: ...
    @property
    def member_id(self) -> str: ...
    @property
    def request_time(self) -> datetime: ...
    @property
    def variant(self) -> str | None: ...
    @property
    def shown(self) -> int: ...


class RequestSource(Protocol):
    """The request log, read back per experiment (``recsys.requestlog.SqlRequestLog.exposures``)."""

    def exposures(self, experiment: str, since: datetime, until: datetime) -> Iterator[ExposureLike]: ...


@dataclass(frozen=True)
class Exposure:
    request_id: str
    member_id: str
    request_time: datetime
    variant: str | None
    shown: int


def exposures_of(records: Iterable[RequestRecord]) -> list[Exposure]:
    """Request records as the exposures :func:`attribute` reads."""
    return [Exposure(r.request_id, r.member_id, r.request_time, r.variant, len(r.shown)) for r in records]


class EventLike(Protocol):
    @property
    def member_id(self) -> str: ...
    @property
    def offer_id(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def event_time(self) -> datetime: ...
    @property
    def request_id(self) -> str | None: ...


class EventSource(Protocol):
    """The event log, read back by event time."""

    def between(
        self, since: datetime, until: datetime, *, event_types: Collection[str] | None = None
    ) -> Iterator[EventLike]: ...


@dataclass(frozen=True)
class Price:
    cash: float = 0.0
    miles: float = 0.0


@dataclass
class MemberOutcome:
    """One exposed member's counts in their arm (events after first exposure only)."""

    member_id: str
    variant: str
    first_exposure: datetime
    requests: int = 0
    empty_requests: int = 0
    impressions: int = 0
    clicks: int = 0
    purchases: int = 0
    dismissals: int = 0
    revenue: float = 0.0
    miles: float = 0.0
    first_purchase: datetime | None = None
    crossover: bool = False


@dataclass
class Attribution:
    members: dict[str, MemberOutcome] = field(default_factory=dict)
    requests: int = 0
    events_attributed: int = 0
    events_before_exposure: int = 0
    events_unattributed: int = 0  # no token, or a request outside the experiment
    events_wrong_member: int = 0

    def by_variant(self) -> dict[str, list[MemberOutcome]]:
        out: dict[str, list[MemberOutcome]] = {}
        for m in self.members.values():
            out.setdefault(m.variant, []).append(m)
        return out

    @property
    def crossovers(self) -> int:
        return sum(1 for m in self.members.values() if m.crossover)


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def attribute(
    records: Iterable[ExposureLike],
    events: Iterable[EventLike],
    prices: Mapping[str, Price],
) -> Attribution:
    """Tie ``events`` to the experiment's requests (``records``, all of one experiment; any order)."""
    out = Attribution()
    request_member: dict[str, tuple[str, str]] = {}  # request id -> (member, variant)
    for r in sorted(records, key=lambda r: (_utc(r.request_time), r.request_id)):
        if r.variant is None:
            continue
        out.requests += 1
        t = _utc(r.request_time)
        m = out.members.get(r.member_id)
        if m is None:
            m = out.members[r.member_id] = MemberOutcome(r.member_id, r.variant, t)
        elif r.variant != m.variant:
            m.crossover = True
        m.requests += 1
        if r.shown == 0:
            m.empty_requests += 1
        request_member[r.request_id] = (r.member_id, r.variant)
    for ev in events:
        rid = ev.request_id
        owner = request_member.get(rid) if rid is not None else None
        if owner is None:
            out.events_unattributed += 1
            continue
        if owner[0] != ev.member_id:
            out.events_wrong_member += 1
            continue
        m = out.members[owner[0]]
        t = _utc(ev.event_time)
        if t < m.first_exposure:
            out.events_before_exposure += 1
            continue
        out.events_attributed += 1
        kind = ev.event_type
        if kind == EventType.IMPRESSION:
            m.impressions += 1
        elif kind == EventType.CLICK:
            m.clicks += 1
        elif kind == EventType.DISMISS:
            m.dismissals += 1
        elif kind == EventType.PURCHASE:
            m.purchases += 1
            price = prices.get(ev.offer_id, Price())
            m.revenue += price.cash
            m.miles += price.miles
            if m.first_purchase is None or t < m.first_purchase:
                m.first_purchase = t
    return out
