"""The recommend pipeline: candidates → eligibility → score → expected value → diversity → caps → top k."""

from recsys.pipeline.types import (
    InvalidRequest,
    PipelineConfig,
    RankedOffer,
    RecommendRequest,
    RecommendResult,
    Stage,
    SuppressedCandidate,
    TripContext,
)

__all__ = [
    "InvalidRequest",
    "PipelineConfig",
    "RankedOffer",
    "RecommendRequest",
    "RecommendResult",
    "Stage",
    "SuppressedCandidate",
    "TripContext",
]
