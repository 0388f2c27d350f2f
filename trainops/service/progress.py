"""A RunObserver that keeps a run's live progress in the store, for the API.

Stage transitions are written at once (they are few); log lines are not
stored (they live in the stage's log file, which the API tails).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from trainops.models import StageResult
from trainops.protocols import RunObserver
from trainops.store import Store


def initial_progress(pipeline: str | None, stages: tuple[str, ...]) -> dict[str, Any]:
    """Every stage from the start, in plan order: the API shows what is still to come."""
    return {
        "pipeline": pipeline,
        "stages": {name: {"status": "pending"} for name in stages},
        "message": None,
    }


class StoreProgress:
    """Records stage states as ``{"stages": {name: {...}}, "message": ...}``."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        stages: tuple[str, ...] = (),
        *,
        pipeline: str | None = None,
        on_change: Callable[[str], None] | None = None,
        also: RunObserver | None = None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.also = also
        self.on_change = on_change
        """Called with the run id after each stage transition (the reporter listens)."""
        self._lock = threading.Lock()
        self._state = initial_progress(pipeline, stages)

    def _save(self) -> None:
        self.store.update_run_progress(self.run_id, self._state)

    def _stage(self, name: str, **fields: Any) -> None:
        with self._lock:
            self._state["stages"].setdefault(name, {}).update(fields)
            self._save()
        if self.on_change is not None:
            self.on_change(self.run_id)

    def run_message(self, message: str) -> None:
        with self._lock:
            self._state["message"] = message
            self._save()
        if self.also:
            self.also.run_message(message)

    def stage_waiting(self, stage: str, reason: str) -> None:
        self._stage(stage, status="waiting", reason=reason)
        if self.also:
            self.also.stage_waiting(stage, reason)

    def stage_started(self, stage: str, attempt: int, gpus: tuple[str, ...]) -> None:
        self._stage(
            stage, status="running", attempt=attempt, gpus=list(gpus), started_at=time.time()
        )
        if self.also:
            self.also.stage_started(stage, attempt, gpus)

    def stage_log(self, stage: str, line: str) -> None:
        if self.also:
            self.also.stage_log(stage, line)

    def stage_finished(self, result: StageResult) -> None:
        self._stage(
            result.name,
            status=result.status.value,
            cached=result.cached,
            reason=result.reason,
            duration_s=round(result.duration_s, 3),
        )
        if self.also:
            self.also.stage_finished(result)
