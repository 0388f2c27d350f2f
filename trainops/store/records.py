"""What the store hands out: frozen records and the status strings they carry.

Kept apart from SQLAlchemy so routes, the worker and the dashboard can
name these types (and compare statuses) without paying for the database
imports; only ``Store`` itself needs them.

Timestamps are float epoch seconds (UTC), as ``trainops.models.now()``
returns and ``RunResult`` carries, so one clock and one unit run through
the whole flow.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

from trainops.models import Event

# -- event statuses: a delivery's life in the inbox ---------------------------------
EVENT_RECEIVED: Final = "received"
"""Stored by the webhook route, waiting for a worker."""
EVENT_PROCESSING: Final = "processing"
"""Claimed by a worker under a lease; reclaimable once the lease expires."""
EVENT_PROCESSED: Final = "processed"
"""Turned into zero or more runs."""
EVENT_IGNORED: Final = "ignored"
"""Nothing to do (a ping, a branch no trigger matches, a duplicate push)."""
EVENT_FAILED: Final = "failed"
"""Processing broke; ``note`` says why."""

EVENT_STATUSES: Final = frozenset(
    {EVENT_RECEIVED, EVENT_PROCESSING, EVENT_PROCESSED, EVENT_IGNORED, EVENT_FAILED}
)
EVENT_FINAL: Final = frozenset({EVENT_PROCESSED, EVENT_IGNORED, EVENT_FAILED})

# -- run statuses ---------------------------------------------------------------------
RUN_QUEUED: Final = "queued"
RUN_RUNNING: Final = "running"
RUN_SUCCEEDED: Final = "succeeded"
RUN_FAILED: Final = "failed"
"""The pipeline's outcome: a stage failed or the gate said no."""
RUN_ERRORED: Final = "errored"
"""Our side broke while running it."""
RUN_CANCELLED: Final = "cancelled"
RUN_SUPERSEDED: Final = "superseded"
"""A newer run of the same group (branch, merge request) made this one moot."""

RUN_FINAL: Final = frozenset(
    {RUN_SUCCEEDED, RUN_FAILED, RUN_ERRORED, RUN_CANCELLED, RUN_SUPERSEDED}
)
RUN_STATUSES: Final = frozenset({RUN_QUEUED, RUN_RUNNING}) | RUN_FINAL


@dataclass(frozen=True)
class EventRecord:
    """One stored delivery; ``event`` is the parsed value as the webhook route saw it."""

    id: int
    forge: str
    delivery_id: str
    kind: str
    repo: str | None
    """``event.repo.full_name``; None for deliveries about no repository (a ping)."""
    received_at: float
    status: str
    attempts: int
    """How many times a worker claimed it; above one means a worker died holding it."""
    note: str | None
    event: Event


@dataclass(frozen=True)
class NewRun:
    """A run to queue. ``run_key`` makes queuing idempotent; ``run_id`` names it."""

    run_id: str
    run_key: str
    event_id: int | None
    """The delivery that caused it; None for runs started by hand (CLI, API)."""
    forge: str
    repo: str
    clone_url: str
    commit: str
    ref: str | None
    branch: str | None
    mr_number: int | None
    trigger: str
    group_key: str | None = None
    """Runs sharing it supersede each other (e.g. ``github:acme/digits:mr:7``)."""
    priority: int = 0
    """Lower runs first; equal priorities run in queue order."""


@dataclass(frozen=True)
class RunRecord:
    """A stored run: what was asked (the ``NewRun`` fields) and where it stands."""

    run_id: str
    run_key: str
    event_id: int | None
    forge: str
    repo: str
    clone_url: str
    commit: str
    ref: str | None
    branch: str | None
    mr_number: int | None
    trigger: str
    group_key: str | None
    priority: int
    status: str
    queued_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    """Claims so far; above one means a worker died and another resumed it."""
    lease_owner: str | None
    lease_expires: float | None
    cancel_requested: bool
    superseded_by: str | None
    result: dict[str, Any] | None
    """``RunResult.to_json()`` once finished (or whatever the worker stored)."""
    error: str | None
    progress: dict[str, Any] | None
    """A JSON blob the worker rewrites as stages move, for the dashboard."""

    @property
    def finished(self) -> bool:
        return self.status in RUN_FINAL

    def stage_states(self) -> list[dict[str, Any]]:
        """The stages as dicts: the final result's once there is one, else the live
        progress (every stage, pending ones included), in plan order."""
        if self.result and self.result.get("stages"):
            return [dict(s) for s in self.result["stages"]]
        live = (self.progress or {}).get("stages", {})
        return [{"name": name, **state} for name, state in live.items()]


def check_status(value: str, allowed: Collection[str], what: str) -> None:
    """ValueError for a status the caller may not set: a typo must not reach the database."""
    if value not in allowed:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(sorted(allowed))}")


@dataclass(frozen=True)
class ReportRecord:
    """One pending report in the outbox: the latest desired state of one target.

    A target is what a forge shows in one place: the statuses of a commit
    (``status:...``) or the living comment of a merge request (``comment:...``).
    Each change replaces ``desired`` and bumps ``version``; delivery sends the
    newest version only, so a burst of stage changes costs one API call.
    """

    target: str
    kind: str  # "statuses" | "comment"
    forge: str
    repo: str
    sha: str | None
    mr_number: int | None
    desired: dict[str, Any]
    delivered: dict[str, Any] | None
    version: int
    attempts: int
    last_error: str | None
