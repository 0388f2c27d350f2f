"""The event inbox and run queue: SQLite by default, PostgreSQL by URL.

Records and status constants import nothing heavy, so routes and the CLI
can name them freely; ``Store`` (SQLAlchemy, and alembic when migrating)
loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainops.store.records import (
    EVENT_FAILED,
    EVENT_FINAL,
    EVENT_IGNORED,
    EVENT_PROCESSED,
    EVENT_PROCESSING,
    EVENT_RECEIVED,
    EVENT_STATUSES,
    RUN_CANCELLED,
    RUN_ERRORED,
    RUN_FAILED,
    RUN_FINAL,
    RUN_QUEUED,
    RUN_RUNNING,
    RUN_STATUSES,
    RUN_SUCCEEDED,
    RUN_SUPERSEDED,
    EventRecord,
    NewRun,
    ReportRecord,
    RunRecord,
)

if TYPE_CHECKING:
    from trainops.store.store import Store

__all__ = [
    "EVENT_FAILED",
    "EVENT_FINAL",
    "EVENT_IGNORED",
    "EVENT_PROCESSED",
    "EVENT_PROCESSING",
    "EVENT_RECEIVED",
    "EVENT_STATUSES",
    "RUN_CANCELLED",
    "RUN_ERRORED",
    "RUN_FAILED",
    "RUN_FINAL",
    "RUN_QUEUED",
    "RUN_RUNNING",
    "RUN_STATUSES",
    "RUN_SUCCEEDED",
    "RUN_SUPERSEDED",
    "EventRecord",
    "NewRun",
    "ReportRecord",
    "RunRecord",
    "Store",
]


def __getattr__(name: str) -> Any:
    if name == "Store":
        from trainops.store.store import Store

        return Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
