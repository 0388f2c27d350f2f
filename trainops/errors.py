"""The one exception tree of trainops.

Exceptions mean *our side or the input is broken*; a pipeline that ran and
failed (a stage exited non-zero, a gate said no) is an outcome, carried by
``RunResult.status``, never an exception.

::

    TrainopsError
    ├── ConfigError          settings or the data dir are unusable
    ├── SpecError            an invalid trainops.yaml / dvc.yaml (file, line, reason)
    ├── GitError             a git command on a repository went wrong
    ├── DataError            DVC could not pull declared data
    ├── CacheError           the stage cache is unreadable or unwritable
    ├── StoreError           the event/run database is unreachable or refused a write
    ├── ExecutorError        an executor broke while running a plan
    │   └── GpuUnavailable   a stage asks for GPUs this host does not have
    ├── TrackingError        MLflow refused what we logged
    └── ForgeError           a code host (GitHub, GitLab, git) refused or failed a call
        └── ForgeNotConfigured   no credentials for that forge
"""

from __future__ import annotations

from dataclasses import dataclass


class TrainopsError(Exception):
    """Base of every error trainops raises on purpose."""


class ConfigError(TrainopsError):
    """Settings, the config file or the data dir cannot be used."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a pipeline file, located for a human."""

    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.reason}"


class SpecError(TrainopsError):
    """A pipeline file is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class GitError(TrainopsError):
    """A git command failed (not a repository, unknown ref, missing object)."""


class DataError(TrainopsError):
    """``dvc pull`` could not bring the declared data into the workspace."""


class CacheError(TrainopsError):
    """The stage cache could not be read or written."""


class StoreError(TrainopsError):
    """The event and run database could not be reached, migrated or written."""


class ExecutorError(TrainopsError):
    """An executor broke while running a plan (our side, not the pipeline's)."""


class GpuUnavailable(ExecutorError):
    """A stage asks for more (or other) GPUs than this host can ever give."""


class TrackingError(TrainopsError):
    """MLflow could not record a run."""


class ForgeError(TrainopsError):
    """A forge API call failed after its retries (or at once, for a client error)."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False):
        super().__init__(message)
        self.status = status
        self.transient = transient
        """Worth trying again later (5xx, 429, rate limits, connection errors)."""


class ForgeNotConfigured(ForgeError):
    """No credentials are configured for the forge an event came from."""
