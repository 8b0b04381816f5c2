"""The request log: one record per recommend decision, with its candidate set and propensities."""

from recsys.requestlog.record import (
    InvalidRequestRecord,
    PolicyRef,
    RequestRecord,
    ShownOffer,
    TripSnapshot,
    check_slate,
)
from recsys.requestlog.store import RequestLog, SqlRequestLog
from recsys.requestlog.writer import BatchingRequestWriter, BatchSettings, RequestWriter, WriterObserver

__all__ = [
    "BatchSettings",
    "BatchingRequestWriter",
    "InvalidRequestRecord",
    "PolicyRef",
    "RequestLog",
    "RequestRecord",
    "RequestWriter",
    "ShownOffer",
    "SqlRequestLog",
    "TripSnapshot",
    "WriterObserver",
    "check_slate",
]
