"""The recommend pipeline: candidates → eligibility → score → expected value → diversity → caps → top k."""

from recsys.pipeline.pipeline import OfferPipeline
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
    "OfferPipeline",
    "PipelineConfig",
    "RankedOffer",
    "RecommendRequest",
    "RecommendResult",
    "Stage",
    "SuppressedCandidate",
    "TripContext",
]
