"""The cap policy: a validated YAML file, resolved per tier, reloadable without a restart.

The format is documented for marketers in ``docs/capping.md``; ``config/caps.yaml`` is the default policy.
Validation is strict (pydantic, ``extra="forbid"``): an unknown scope, a negative limit, a window that
cannot be parsed, an unknown tier, an unknown key or a tier override naming a cap that does not exist is
rejected by :func:`load_policy` with a :class:`PolicyError` whose message names the file, the LINE and the
field, e.g.::

    config/caps.yaml line 14, caps[2].scope: Input should be 'member', ... (got 'member_route')

:class:`PolicyHolder` keeps the running policy and swaps in a new one on :meth:`PolicyHolder.reload` (or
when the file's mtime changes, checked at most every ``poll_interval_s``); a bad file is logged and the
running policy stays.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from recsys.capping.windows import Window, parse_duration, parse_window
from recsys.schema import OfferCategory, OfferFamily, Placement, Tier

logger = logging.getLogger(__name__)


class Scope(StrEnum):
    """What a cap counts: impressions of one member, split by offer / category / family / placement or not
    at all."""

    MEMBER = "member"
    MEMBER_OFFER = "member_offer"
    MEMBER_CATEGORY = "member_category"
    MEMBER_FAMILY = "member_family"
    MEMBER_PLACEMENT = "member_placement"


def _check_window(v: str) -> str:
    return parse_window(v).spec


def _check_duration(v: str) -> str:
    parse_duration(v)
    return v.strip().lower()


WindowSpec = Annotated[str, AfterValidator(_check_window)]
DurationSpec = Annotated[str, AfterValidator(_check_duration)]
CapName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CapRule(_Strict):
    """At most ``limit`` impressions within ``window``, counted per ``scope``; optional filters narrow what
    counts."""

    name: CapName
    scope: Scope
    limit: int = Field(ge=0)
    window: WindowSpec
    families: list[OfferFamily] | None = None
    categories: list[OfferCategory] | None = None
    placements: list[Placement] | None = None
    offers: list[str] | None = None
    description: str = ""


class CapOverride(_Strict):
    """A tier's change to one cap: a different limit and/or window, or the cap switched off."""

    limit: int | None = Field(default=None, ge=0)
    window: WindowSpec | None = None
    disabled: bool = False


class CooldownSpec(_Strict):
    """How long an offer (and optionally its whole category) is hidden after the event."""

    offer: DurationSpec | None = None
    category: DurationSpec | None = None


class Cooldowns(_Strict):
    dismiss: CooldownSpec = CooldownSpec(offer="14d")
    purchase: CooldownSpec = CooldownSpec(offer="30d")


class TierOverride(_Strict):
    caps: dict[CapName, CapOverride] = Field(default_factory=dict)
    cooldowns: Cooldowns | None = None


class LocalCap(_Strict):
    """fail_open: a conservative per-process cap used while Redis is unavailable (in addition to the policy's
    own caps, counted in this process only)."""

    limit: int = Field(default=1, ge=0)
    window: WindowSpec = "1h"
    max_members: int = Field(default=100_000, ge=1)


class Outage(_Strict):
    mode: Literal["fail_closed", "fail_open"] = "fail_closed"
    breaker_backoff_ms: float = Field(default=500, gt=0, le=60_000)
    breaker_max_backoff_ms: float = Field(default=5_000, gt=0, le=600_000)
    local_cap: LocalCap = LocalCap()


class Exempt(_Strict):
    """Offers never capped, never counted (service messages)."""

    offers: list[str] = Field(default_factory=list)
    categories: list[OfferCategory] = Field(default_factory=list)
    honour_offer_flag: bool = True  # the catalogue's ``exempt`` column (CapCandidate.exempt)


_TIER_VALUES = frozenset(t.value for t in Tier)


class CapPolicy(_Strict):
    """The whole policy. Build with :func:`load_policy` (line-numbered errors) or
    ``CapPolicy.model_validate``."""

    version: str = "1"
    count_on: Literal["serve", "event"] = "serve"
    timeout_ms: float = Field(default=250, gt=0, le=1000)  # the same default as the service's clients
    lifetime_ttl: DurationSpec = "400d"
    # How per-offer rolling counters are written (both are always read): 2 = one field per time bucket listing
    # the offers shown in it; 1 = one field per offer, the layout service versions before it write. Set 1
    # while such versions still run beside this one (docs/capping.md, "Upgrading the cap state").
    state_layout: Literal[1, 2] = 2
    outage: Outage = Outage()
    exempt: Exempt = Exempt()
    caps: list[CapRule] = Field(default_factory=list)
    cooldowns: Cooldowns = Cooldowns()
    tiers: dict[Tier, TierOverride] = Field(default_factory=dict)

    _resolved: dict[str, ResolvedPolicy] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _cross_check(self, info: Any) -> CapPolicy:
        if info.context and info.context.get("defer_cross_check"):
            return self
        issues = cross_check(self)
        if issues:
            raise ValueError("; ".join(f"{_fmt_path(p)}: {m}" for p, m in issues))
        return self

    def resolved(self, tier: str) -> ResolvedPolicy:
        """The caps and cool-downs in force for ``tier`` (an unknown tier gets the base policy)."""
        key = tier if tier in _TIER_VALUES else ""  # unknown tiers share the base policy (bounded cache)
        r = self._resolved.get(key)
        if r is None:
            r = _resolve(self, key)
            self._resolved[key] = r
        return r

    def max_limit(self, cap_name: str) -> int:
        """The largest limit any tier has for the cap (used to bound stored history)."""
        limits = [r.limit for r in self.caps if r.name == cap_name]
        for t in self.tiers.values():
            o = t.caps.get(cap_name)
            if o is not None and o.limit is not None:
                limits.append(o.limit)
        return max(limits, default=0)


def cross_check(policy: CapPolicy) -> list[tuple[tuple[str | int, ...], str]]:
    """Rules spanning several fields: unique cap names, overrides naming existing caps, breaker back-offs."""
    issues: list[tuple[tuple[str | int, ...], str]] = []
    seen: dict[str, int] = {}
    for i, c in enumerate(policy.caps):
        if c.name in seen:
            issues.append((("caps", i, "name"), f"duplicate cap name {c.name!r} (also caps[{seen[c.name]}])"))
        seen.setdefault(c.name, i)
    for tier, o in policy.tiers.items():
        for name in o.caps:
            if name not in seen:
                issues.append(
                    (
                        ("tiers", tier.value, "caps", name),
                        f"override for unknown cap {name!r}; known: {sorted(seen)}",
                    )
                )
    if policy.outage.breaker_max_backoff_ms < policy.outage.breaker_backoff_ms:
        issues.append((("outage", "breaker_max_backoff_ms"), "must be >= breaker_backoff_ms"))
    return issues


# ------------------------------------------------------------------------------------------------------------
# Resolution per tier
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedCap:
    """One cap as it applies to a tier."""

    name: str
    scope: Scope
    limit: int
    window: Window
    families: frozenset[str] | None
    categories: frozenset[str] | None
    placements: frozenset[str] | None
    offers: frozenset[str] | None
    history_limit: int  # largest limit across tiers: how many rolling entries to keep

    def applies(self, family: str, category: str, offer_id: str, placement: str) -> bool:
        return (
            (self.families is None or family in self.families)
            and (self.categories is None or category in self.categories)
            and (self.placements is None or placement in self.placements)
            and (self.offers is None or offer_id in self.offers)
        )

    def subkey(self, family: str, category: str, offer_id: str, placement: str) -> str:
        """The value the cap is counted per (``-`` for a member-wide cap)."""
        if self.scope is Scope.MEMBER_OFFER:
            return offer_id
        if self.scope is Scope.MEMBER_CATEGORY:
            return category
        if self.scope is Scope.MEMBER_FAMILY:
            return family
        if self.scope is Scope.MEMBER_PLACEMENT:
            return placement
        return "-"

    @property
    def reason(self) -> str:
        """Reason code of a suppression by this cap, e.g. ``cap:member_offer:rolling_7d``."""
        return f"cap:{self.scope.value}:{self.window.label}"


@dataclass(frozen=True)
class ResolvedCooldowns:
    """Seconds (0 = none) an offer / category is hidden after a dismissal or a purchase."""

    dismiss_offer: int
    dismiss_category: int
    purchase_offer: int
    purchase_category: int


@dataclass(frozen=True)
class PlanEntry:
    """What one candidate reads under a resolved policy, as the cap plan compiler
    (``recsys.capping.engine.build_plan``) found it: it depends on the offer, its placement and the policy
    only, so the compiler keeps it per policy instead of naming the same fields again per request."""

    exempt: bool
    cooldowns: tuple[tuple[str, str, str, int], ...]  # (field, reason, target, duration ms)
    counters: tuple[
        tuple[str, str, ResolvedCap, str], ...
    ]  # (field, the cap's field prefix, cap, counted value)


# (offer id, category, family, the offer's exempt flag, placement, with cool-downs)
PlanKey = tuple[str, str, str, bool, str, bool]


@dataclass(frozen=True)
class ResolvedPolicy:
    tier: str
    caps: tuple[ResolvedCap, ...]
    cooldowns: ResolvedCooldowns
    exempt_offers: frozenset[str]
    exempt_categories: frozenset[str]
    honour_offer_flag: bool
    _applicable: dict[tuple[str, str, str], tuple[ResolvedCap, ...]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )
    plan_entries: dict[PlanKey, PlanEntry] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def caps_for(self, family: str, category: str, placement: str) -> tuple[ResolvedCap, ...]:
        """The caps whose family/category/placement filters admit this combination (offer filters aside)."""
        key = (family, category, placement)
        caps = self._applicable.get(key)
        if caps is None:
            caps = tuple(
                c
                for c in self.caps
                if (c.families is None or family in c.families)
                and (c.categories is None or category in c.categories)
                and (c.placements is None or placement in c.placements)
            )
            if len(self._applicable) < 10_000:
                self._applicable[key] = caps
        return caps

    def is_exempt(self, offer_id: str, category: str, flag: bool) -> bool:
        return (
            (flag and self.honour_offer_flag)
            or offer_id in self.exempt_offers
            or category in self.exempt_categories
        )

    def cap(self, name: str) -> ResolvedCap | None:
        for c in self.caps:
            if c.name == name:
                return c
        return None


def _secs(spec: str | None) -> int:
    return int(parse_duration(spec).total_seconds()) if spec else 0


def _set(values: Iterable[Any] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(str(v) for v in values)


def _resolve(policy: CapPolicy, tier: str) -> ResolvedPolicy:
    override = policy.tiers.get(Tier(tier)) if tier in Tier._value2member_map_ else None
    caps: list[ResolvedCap] = []
    for rule in policy.caps:
        limit, window = rule.limit, rule.window
        if override is not None and rule.name in override.caps:
            o = override.caps[rule.name]
            if o.disabled:
                continue
            limit = o.limit if o.limit is not None else limit
            window = o.window if o.window is not None else window
        caps.append(
            ResolvedCap(
                name=rule.name,
                scope=rule.scope,
                limit=limit,
                window=parse_window(window),
                families=_set(rule.families),
                categories=_set(rule.categories),
                placements=_set(rule.placements),
                offers=_set(rule.offers),
                history_limit=max(policy.max_limit(rule.name), limit),
            )
        )
    cd = override.cooldowns if override is not None and override.cooldowns is not None else policy.cooldowns
    return ResolvedPolicy(
        tier=tier,
        caps=tuple(caps),
        cooldowns=ResolvedCooldowns(
            dismiss_offer=_secs(cd.dismiss.offer),
            dismiss_category=_secs(cd.dismiss.category),
            purchase_offer=_secs(cd.purchase.offer),
            purchase_category=_secs(cd.purchase.category),
        ),
        exempt_offers=frozenset(policy.exempt.offers),
        exempt_categories=frozenset(c.value for c in policy.exempt.categories),
        honour_offer_flag=policy.exempt.honour_offer_flag,
    )


# ------------------------------------------------------------------------------------------------------------
# Loading with line-numbered errors
# ------------------------------------------------------------------------------------------------------------


class PolicyError(ValueError):
    """A policy file that cannot be used. ``issues`` holds (line or None, field path, message) triples."""

    def __init__(self, source: str, issues: Sequence[tuple[int | None, str, str]]):
        self.source = source
        self.issues = list(issues)
        lines = [
            f"{source}{f' line {ln}' if ln is not None else ''}, {path or '<top>'}: {msg}"
            for ln, path, msg in self.issues
        ]
        super().__init__("invalid cap policy:\n  " + "\n  ".join(lines))


def _fmt_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += "(key)"
        else:
            out += f".{part}" if out else str(part)
    return out


def _line_of(root: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """The 1-based line of the YAML node at pydantic location ``loc`` (deepest existing node)."""
    if root is None:
        return None
    node: yaml.Node = root
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            if part == "[key]":
                return line  # the key itself (we are already on its key line)
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    line = k.start_mark.line + 1
                    node = v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _input_hint(err: Any) -> str:
    inp = err.get("input")
    if err.get("type") in {"missing"} or isinstance(inp, dict | list):
        return ""
    return f" (got {inp!r})"


def parse_policy(text: str, source: str = "<policy>") -> CapPolicy:
    """Validate policy YAML text; raise :class:`PolicyError` naming line and field on any problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise PolicyError(source, [(mark.line + 1 if mark else None, "", f"not valid YAML: {e}")]) from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(source, [(1, "", "the policy must be a mapping (key: value lines)")])
    try:
        policy = CapPolicy.model_validate(data, context={"defer_cross_check": True})
    except ValidationError as e:
        issues = []
        for err in e.errors():
            loc = tuple(err["loc"])
            msg = err["msg"].removeprefix("Value error, ") + _input_hint(err)
            issues.append((_line_of(root, loc), _fmt_path(loc), msg))
        raise PolicyError(source, issues) from e
    problems = cross_check(policy)
    if problems:
        raise PolicyError(source, [(_line_of(root, p), _fmt_path(p), m) for p, m in problems])
    return policy


def load_policy(path: str | os.PathLike[str]) -> CapPolicy:
    """Read and validate a policy file (see :func:`parse_policy`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise PolicyError(str(p), [(None, "", f"cannot read policy file: {e}")]) from e
    return parse_policy(text, source=str(p))


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    changed: bool
    version: str
    error: str | None = None


class PolicyHolder:
    """The running policy, swapped atomically on reload; a bad file never replaces a good policy.

    ``holder.policy`` is cheap to read on every request: it checks the file's mtime at most every
    ``poll_interval_s`` seconds (0 disables polling; call :meth:`reload` explicitly, e.g. from an admin
    endpoint).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        policy: CapPolicy | None = None,
        poll_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if path is None and policy is None:
            raise ValueError("PolicyHolder needs a path or a policy")
        self.path = Path(path) if path is not None else None
        self.poll_interval_s = poll_interval_s
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._clock = clock  # seconds, for the polling interval only (tests pass their own)
        self._last_check = clock()
        if policy is None:
            assert self.path is not None
            self._mtime = self._stat()
            policy = load_policy(self.path)  # at start-up a bad file is fatal (fail loudly)
        elif self.path is not None:
            self._mtime = self._stat()
        self._policy: CapPolicy = policy

    @classmethod
    def static(cls, policy: CapPolicy) -> PolicyHolder:
        return cls(policy=policy, poll_interval_s=0)

    def replace(self, policy: CapPolicy) -> None:
        """Put a policy in force directly (already validated), e.g. one built in code."""
        with self._lock:
            self._policy = policy

    def _stat(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime if self.path is not None else None
        except OSError:
            return None

    @property
    def policy(self) -> CapPolicy:
        if self.path is not None and self.poll_interval_s > 0:
            now = self._clock()
            if now - self._last_check >= self.poll_interval_s and self._lock.acquire(blocking=False):
                try:
                    self._last_check = now
                    mtime = self._stat()
                    if mtime is not None and mtime != self._mtime:
                        self._reload_locked(mtime)
                finally:
                    self._lock.release()
        return self._policy

    def reload(self) -> ReloadResult:
        """Re-read the file now. On error the running policy stays and the error is returned (and logged)."""
        if self.path is None:
            return ReloadResult(ok=True, changed=False, version=self._policy.version)
        with self._lock:
            return self._reload_locked(self._stat())

    def _reload_locked(self, mtime: float | None) -> ReloadResult:
        assert self.path is not None
        self._mtime = mtime
        try:
            new = load_policy(self.path)
        except PolicyError as e:
            self.last_error = str(e)
            logger.error("cap policy reload failed; keeping version %s in force: %s", self._policy.version, e)
            return ReloadResult(ok=False, changed=False, version=self._policy.version, error=str(e))
        changed = new.model_dump() != self._policy.model_dump()
        self._policy = new
        self.last_error = None
        logger.info("cap policy %s loaded from %s", new.version, self.path)
        return ReloadResult(ok=True, changed=changed, version=new.version)
