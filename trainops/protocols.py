"""The small protocols external systems hide behind, declared by their consumer.

Implementations name their backend (``LocalRunner``); test doubles start with
``Fake``. None of them needs a base class.
"""

from __future__ import annotations

import threading
from typing import Protocol

from trainops.models import CommitStatus, Plan, PullRequestRef, RunResult, StageResult


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


class Forge(Protocol):
    """What trainops asks of a code host, in our words (GitHub, GitLab, plain git).

    ``repo`` is the forge's full name (``acme/digits``); ``number`` a pull or
    merge request's number (GitHub) or iid (GitLab). Failures raise
    ``ForgeError``; transient ones (5xx, 429, secondary rate limits) are
    retried inside, honouring ``Retry-After``, before they do.
    """

    name: str

    def read_file(self, repo: str, ref: str, path: str) -> bytes | None:
        """The file's content at ``ref``, or None when it does not exist there."""

    def set_status(self, repo: str, sha: str, status: CommitStatus) -> None:
        """Create or replace the commit status ``status.context`` on ``sha``."""

    def upsert_comment(
        self, repo: str, number: int, key: str, body: str, *, sha: str | None = None
    ) -> str:
        """Create, or edit in place, the one comment on the merge request marked with
        ``key`` (a hidden marker in the body); returns the comment's id. ``sha`` is the
        commit the report is about (plain git, which has no merge requests, notes it)."""

    def open_pull_request(
        self, repo: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequestRef:
        """Open a pull request from branch ``head`` into ``base``, or reuse the open one."""

    def permission(self, repo: str, user: str) -> str:
        """``admin``, ``write``, ``read`` or ``none``: what ``user`` may do in ``repo``."""


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
