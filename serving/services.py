"""Everything a request may need, built once by the lifespan and kept on ``app.state.services``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from recsys.capping.types import CapEnforcer
from recsys.events import EventLog
from recsys.experiments import ExperimentStore
from recsys.experiments.attribution import RequestSource
from recsys.experiments.report import OfflineEstimator
from recsys.requestlog.writer import RequestWriter
from recsys.stores.member_store import MemberStore
from recsys.stores.redis import RedisClients
from serving.config import Settings
from serving.experiments import ExperimentRuntime
from serving.metrics import Metrics
from serving.model_holder import ModelHolder
from serving.ratelimit import RateLimiter
from serving.tracking import TrackingSigner


@dataclass
class Services:
    settings: Settings
    holder: ModelHolder
    event_log: EventLog
    member_store: MemberStore
    cap_enforcer: CapEnforcer | None
    airports: frozenset[str]
    signer: TrackingSigner
    metrics: Metrics
    clock: Callable[[], datetime]
    redis: RedisClients | None = None  # the worker's Redis clients (stores, locks, readiness pings)
    request_writer: RequestWriter | None = None  # None: the request log is off
    experiment_store: ExperimentStore | None = None
    experiments: ExperimentRuntime | None = None  # routes requests of running experiments to their arms
    request_log: RequestSource | None = None  # read back for experiment attribution
    offline_estimator: OfflineEstimator | None = None  # the policy evaluation's estimate beside the lift
    rate_limiter: RateLimiter | None = None  # None: recommendations are not rate limited
    closers: list[Callable[[], Any]] = field(default_factory=list)
