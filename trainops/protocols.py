"""The small protocols external systems hide behind, declared by their consumer.

Implementations name their backend (``LocalRunner``); test doubles start with
``Fake``. None of them needs a base class.
"""

from __future__ import annotations

import threading
from typing import Protocol

from trainops.models import Plan, RunResult, StageResult


class RunObserver(Protocol):
    """Hears what a run is doing, as it happens (terminal progress, later the service)."""

    def run_message(self, message: str) -> None:
        """A run-level step: preparing the workspace, pulling data."""

    def stage_waiting(self, stage: str, reason: str) -> None:
        """The stage is ready but waits, e.g. for a GPU; ``reason`` says for what."""

    def stage_started(self, stage: str, attempt: int, gpus: tuple[str, ...]) -> None: ...

    def stage_log(self, stage: str, line: str) -> None:
        """One line the stage printed (without its newline)."""

    def stage_finished(self, result: StageResult) -> None: ...


class Executor(Protocol):
    """Runs a Plan somewhere (this host, an Argo cluster) and returns its outcome.

    ``cancel`` is set by another thread to stop the run: running stages are
    killed, pending ones skipped, and the result says ``cancelled``.
    """

    def execute(
        self,
        plan: Plan,
        *,
        run_id: str,
        use_cache: bool,
        observer: RunObserver,
        cancel: threading.Event,
    ) -> RunResult: ...


class SilentObserver:
    """A RunObserver that ignores everything (library use, tests)."""

    def run_message(self, message: str) -> None:
        return None

    def stage_waiting(self, stage: str, reason: str) -> None:
        return None

    def stage_started(self, stage: str, attempt: int, gpus: tuple[str, ...]) -> None:
        return None

    def stage_log(self, stage: str, line: str) -> None:
        return None

    def stage_finished(self, result: StageResult) -> None:
        return None
