"""The durable event log: impressions, clicks, purchases and dismissals sent back by the app."""

from recsys.events.log import (
    AppendResult,
    EventLog,
    EventLogUnavailable,
    EventRecord,
    events_table,
    metadata,
)

__all__ = ["AppendResult", "EventLog", "EventLogUnavailable", "EventRecord", "events_table", "metadata"]
