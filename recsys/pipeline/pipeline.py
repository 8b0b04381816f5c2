"""The orchestrator: :class:`OfferPipeline` wires the stages (implementation lands in the next commit)."""

from __future__ import annotations

from typing import Any

from recsys.pipeline.types import PipelineConfig, RecommendRequest, RecommendResult


class OfferPipeline:
    """candidates → eligibility → score → expected value → diversity → frequency caps → top k.

    ``bundle`` is a :class:`recsys.models.bundle.ModelBundle`; ``member_store`` a
    :class:`recsys.stores.member_store.MemberStore`; ``cap_enforcer`` a
    :class:`recsys.capping.api.CapEnforcer`
    (None: the caps stage is a no-op); ``network`` the airport network (lounges, airports known).
    """

    def __init__(
        self,
        bundle: Any,
        member_store: Any,
        cap_enforcer: Any | None = None,
        config: PipelineConfig = PipelineConfig(),
        network: Any | None = None,
    ) -> None:
        self.bundle = bundle
        self.member_store = member_store
        self.cap_enforcer = cap_enforcer
        self.config = config
        self.network = network

    def recommend(self, request: RecommendRequest) -> RecommendResult:
        """Ranked, eligible, explained and capped offers for one request."""
        raise NotImplementedError
