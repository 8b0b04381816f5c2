"""The request log: one record per recommend decision, with its candidate set and propensities."""

from recsys.requestlog.record import (
    InvalidRequestRecord,
    PolicyRef,
    RequestRecord,
    ShownOffer,
    TripSnapshot,
    check_slate,
)

__all__ = [
    "InvalidRequestRecord",
    "PolicyRef",
    "RequestRecord",
    "ShownOffer",
    "TripSnapshot",
    "check_slate",
]
