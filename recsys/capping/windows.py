"""Cap windows: rolling (``24h``, ``7d``, ``90m``), calendar (``day``, ``week`` in the member's time zone),
lifetime.

A window answers two questions for a cap: *which impressions count now* and *when does the count reset*.

- **Rolling** ``<n><unit>`` (units ``s``, ``m``, ``h``, ``d``, ``w``): the impressions in ``(now - length,
  now]``. The count drops when the oldest counted impression is older than the window.
- **Calendar** ``day`` / ``week``: the impressions since local midnight (``day``) or since local Monday 00:00
  (``week``, ISO weeks) in the member's IANA time zone. The count resets at the next local midnight /
  Monday; on a daylight-saving change the local day is 23 or 25 hours long and the reset follows the wall
  clock.
- **Lifetime**: every impression ever (kept for the policy's ``lifetime_ttl``, default 400 days, so memory
  stays bounded; see docs/capping.md).

All functions take ``now`` as an aware ``datetime`` (time is injectable; nothing here reads the clock).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

logger = logging.getLogger(__name__)


class WindowKind(StrEnum):
    ROLLING = "rolling"
    CALENDAR = "calendar"
    LIFETIME = "lifetime"


_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_ROLLING_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
CALENDAR_UNITS = ("day", "week")
# The longest rolling window accepted (a longer one should be ``lifetime``).
MAX_ROLLING_SECONDS = 400 * 86_400


@dataclass(frozen=True)
class Window:
    """A parsed window. ``spec`` is the text it came from (``"7d"``, ``"day"``, ``"lifetime"``)."""

    spec: str
    kind: WindowKind
    seconds: int = 0  # rolling windows only
    unit: str = ""  # calendar windows only: "day" | "week"

    @property
    def label(self) -> str:
        """The window as it appears in reason codes: ``rolling_7d``, ``day``, ``week``, ``lifetime``."""
        if self.kind is WindowKind.ROLLING:
            return f"rolling_{self.spec}"
        return self.spec

    @property
    def code(self) -> str:
        """One letter naming the key type in Redis: r (sorted set), c (calendar counter), l (lifetime
        counter)."""
        return {WindowKind.ROLLING: "r", WindowKind.CALENDAR: "c", WindowKind.LIFETIME: "l"}[self.kind]

    def describe(self) -> str:
        """Human text: 'in the last 7 days', 'today', 'this week', 'ever'."""
        if self.kind is WindowKind.ROLLING:
            return f"in the last {human_duration(self.seconds)}"
        if self.kind is WindowKind.CALENDAR:
            return "today" if self.unit == "day" else "this week"
        return "ever"


def parse_window(spec: str) -> Window:
    """Parse ``24h``/``7d``/``90m``/``2w``, ``day``/``week``, or ``lifetime``; raise ValueError otherwise."""
    if not isinstance(spec, str):
        raise ValueError(
            f"window must be a string like '24h', '7d', 'day', 'week' or 'lifetime', got {spec!r}"
        )
    text = spec.strip().lower()
    if text == "lifetime":
        return Window(spec=text, kind=WindowKind.LIFETIME)
    if text in CALENDAR_UNITS:
        return Window(spec=text, kind=WindowKind.CALENDAR, unit=text)
    m = _ROLLING_RE.match(text)
    if not m:
        raise ValueError(
            f"cannot parse window {spec!r}: use a rolling length like '24h', '7d', '90m', '2w', "
            "a calendar window 'day' or 'week' (member's time zone), or 'lifetime'"
        )
    n, unit = int(m.group(1)), m.group(2)
    seconds = n * _UNIT_SECONDS[unit]
    if seconds <= 0:
        raise ValueError(f"window {spec!r} must be longer than zero")
    if seconds > MAX_ROLLING_SECONDS:
        raise ValueError(f"rolling window {spec!r} is longer than 400 days; use 'lifetime'")
    return Window(spec=f"{n}{unit}", kind=WindowKind.ROLLING, seconds=seconds)


def parse_duration(spec: str) -> timedelta:
    """Parse a duration such as ``14d``, ``36h``, ``90m`` (whole seconds at least)."""
    if not isinstance(spec, str):
        raise ValueError(f"duration must be a string like '14d' or '36h', got {spec!r}")
    m = _ROLLING_RE.match(spec.strip().lower())
    if not m:
        raise ValueError(f"cannot parse duration {spec!r}: use e.g. '14d', '36h', '90m', '2w'")
    seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration {spec!r} must be longer than zero")
    return timedelta(seconds=seconds)


def human_duration(seconds: float) -> str:
    """``604800`` → ``7 days``; ``86400`` → ``24 hours``; ``5400`` → ``90 minutes``."""
    s = int(seconds)
    if s % 86_400 == 0 and s > 86_400:
        n, name = s // 86_400, "day"
    elif s % 3600 == 0:
        n, name = s // 3600, "hour"
    elif s % 60 == 0:
        n, name = s // 60, "minute"
    else:
        n, name = s, "second"
    return f"{n} {name}{'s' if n != 1 else ''}"


@lru_cache(maxsize=1024)
def member_zone(name: str) -> ZoneInfo:
    """The member's IANA zone; an unknown or empty name falls back to UTC (logged once per name)."""
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        logger.warning("unknown time zone %r for calendar caps; using UTC", name)
        return ZoneInfo("UTC")


def _local_midnight(d: date, tz: ZoneInfo) -> datetime:
    """The first instant of local date ``d`` (handles zones whose midnight is skipped by a DST change)."""
    naive = datetime.combine(d, time(0))
    aware = naive.replace(tzinfo=tz)
    # If midnight does not exist (spring-forward at 00:00), round-tripping through UTC moves it forward.
    roundtrip = aware.astimezone(UTC).astimezone(tz)
    if roundtrip.replace(tzinfo=None) != naive:
        return roundtrip
    return aware


def calendar_period(unit: str, now: datetime, tz_name: str) -> tuple[str, datetime, datetime]:
    """The calendar period containing ``now`` for a member in ``tz_name``: (label, start UTC, end UTC).

    ``label`` identifies the period in keys: ``d2026-03-08`` for a day, ``w2026-W10`` for an ISO week.
    """
    tz = member_zone(tz_name)
    local = now.astimezone(tz)
    if unit == "day":
        d0 = local.date()
        d1 = d0 + timedelta(days=1)
        label = f"d{d0.isoformat()}"
    elif unit == "week":
        d0 = local.date() - timedelta(days=local.weekday())
        d1 = d0 + timedelta(days=7)
        iso = d0.isocalendar()
        label = f"w{iso.year}-W{iso.week:02d}"
    else:  # pragma: no cover - guarded by parse_window
        raise ValueError(f"unknown calendar unit {unit!r}")
    return label, _local_midnight(d0, tz).astimezone(UTC), _local_midnight(d1, tz).astimezone(UTC)


# (unit, zone name) -> (start ms, end ms, label) of the period last asked for: every request of the same zone
# falls in it until its end, so the zone arithmetic runs once per zone and day or week, not per request.
_CURRENT: dict[tuple[str, str], tuple[int, int, str]] = {}
_CURRENT_MAX = 4096  # zone names come from member profiles: bounded by the IANA list, but never trusted


def current_period(unit: str, now: datetime, tz_name: str) -> tuple[str, int]:
    """:func:`calendar_period`'s (label, end in ms) for ``now``, memoised per (unit, zone) until the period
    ends."""
    now_ms = to_ms(now)
    hit = _CURRENT.get((unit, tz_name))
    if hit is not None and hit[0] <= now_ms < hit[1]:
        return hit[2], hit[1]
    label, start, end = calendar_period(unit, now, tz_name)
    if len(_CURRENT) >= _CURRENT_MAX:
        _CURRENT.clear()
    _CURRENT[(unit, tz_name)] = (to_ms(start), to_ms(end), label)
    return label, to_ms(end)


def to_ms(dt: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime (naive datetimes are taken as UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def from_ms(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def iso_z(dt: datetime | None) -> str | None:
    """RFC 3339 in UTC, ``2026-11-23T08:00:00Z`` (whole seconds)."""
    if dt is None:
        return None
    dt = dt.astimezone(UTC)
    return f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}Z"
