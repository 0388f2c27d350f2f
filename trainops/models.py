"""Frozen values shared along the one-way flow: spec → plan → run → result.

Every step takes values and returns new ones; nothing here does I/O. The
pipeline file's own values (``Spec``) live in ``trainops.pipelines.spec``;
what crosses into executors is the ``Plan``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


@dataclass(frozen=True, slots=True)
class Resources:
    """What a stage asks of a host besides GPUs.

    ``cpu`` counts cores (fractions allowed, as in Kubernetes); ``memory`` is
    a Kubernetes quantity string (``"8Gi"``), enforced on Argo and advisory
    on the local runner.
    """

    cpu: float | None = None
    memory: str | None = None


@dataclass(frozen=True)
class PlannedStage:
    """One stage ready to execute, with everything resolved at one commit."""

    name: str
    cmd: str
    wdir: str
    needs: tuple[str, ...]
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    metrics: tuple[str, ...]
    params: Mapping[str, Any]
    env: Mapping[str, str]
    gpus: int
    gpu_type: str | None
    resources: Resources
    timeout_s: float | None
    retries: int
    cache: bool
    cache_key: str
    key_inputs: Mapping[str, str] = field(default_factory=dict)
    """What went into ``cache_key`` (``dep:data/raw`` → ``dvc:md5:…``), for explaining misses."""


@dataclass(frozen=True)
class Plan:
    """A pipeline at one commit as a DAG; stages are in a topological order."""

    pipeline: str
    repo: str
    commit: str
    ref: str | None
    image: str | None
    data_pull: tuple[str, ...]
    stages: tuple[PlannedStage, ...]
    spec_digest: str

    def stage(self, name: str) -> PlannedStage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def downstream(self, name: str) -> tuple[str, ...]:
        """Every stage that transitively needs ``name``, in plan order."""
        hit = {name}
        for stage in self.stages:
            if hit.intersection(stage.needs):
                hit.add(stage.name)
        return tuple(s.name for s in self.stages if s.name in hit and s.name != name)


class StageStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # an upstream stage failed or the run was cancelled first
    CANCELLED = "cancelled"
    ERRORED = "errored"


class RunStatus(StrEnum):
    """``failed`` is the pipeline's outcome; ``errored`` means our side broke."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ERRORED = "errored"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class GpuUsage:
    """GPU telemetry of one stage execution (NVML), summed over its GPUs."""

    uuids: tuple[str, ...]
    gpu_seconds: float
    util_mean: float | None = None
    """Mean utilisation in percent over samples and GPUs; None when unreadable."""
    mem_peak_bytes: int | None = None
    energy_j: float | None = None


@dataclass(frozen=True)
class StageResult:
    name: str
    status: StageStatus
    cached: bool = False
    exit_code: int | None = None
    duration_s: float = 0.0
    attempts: int = 0
    gpu: GpuUsage | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    reason: str | None = None
    """Why it ended as it did, for a human: ``exit code 3``, ``timed out after 60s``."""
    log_path: str | None = None
    log_tail: str = ""
    cached_from: str | None = None
    """The run id whose execution this cache hit reuses."""

    @property
    def gpu_seconds(self) -> float:
        return self.gpu.gpu_seconds if self.gpu else 0.0

    @property
    def energy_j(self) -> float | None:
        return self.gpu.energy_j if self.gpu else None


@dataclass(frozen=True)
class RunResult:
    run_id: str
    pipeline: str
    repo: str
    commit: str
    ref: str | None
    status: RunStatus
    stages: tuple[StageResult, ...]
    metrics: Mapping[str, float]
    started_at: float
    finished_at: float
    error: str | None = None
    mlflow_run_id: str | None = None

    @property
    def executed(self) -> tuple[StageResult, ...]:
        """Stages that actually ran a process (not cache hits, not skipped)."""
        return tuple(s for s in self.stages if s.attempts > 0)

    @property
    def failed_stage(self) -> StageResult | None:
        return next((s for s in self.stages if s.status is StageStatus.FAILED), None)

    @property
    def duration_s(self) -> float:
        return self.finished_at - self.started_at

    def to_json(self) -> dict[str, Any]:
        """The ``trainops run --json`` object; stable keys, plain JSON types."""
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "repo": self.repo,
            "commit": self.commit,
            "ref": self.ref,
            "status": self.status.value,
            "duration_s": round(self.duration_s, 3),
            "error": self.error,
            "mlflow_run_id": self.mlflow_run_id,
            "stages": [
                {
                    "name": s.name,
                    "status": s.status.value,
                    "cached": s.cached,
                    "cached_from": s.cached_from,
                    "exit_code": s.exit_code,
                    "duration_s": round(s.duration_s, 3),
                    "attempts": s.attempts,
                    "gpu_seconds": round(s.gpu_seconds, 3),
                    "energy_j": None if s.energy_j is None else round(s.energy_j, 3),
                    "gpu_util_mean": s.gpu.util_mean if s.gpu else None,
                    "gpu_mem_peak_bytes": s.gpu.mem_peak_bytes if s.gpu else None,
                    "gpus": list(s.gpu.uuids) if s.gpu else [],
                    "reason": s.reason,
                    "log_path": s.log_path,
                    "log_tail": s.log_tail,
                    "metrics": dict(s.metrics),
                }
                for s in self.stages
            ],
            "metrics": dict(self.metrics),
        }


def result_from_json(data: Mapping[str, Any]) -> RunResult:
    """The inverse of ``RunResult.to_json`` (the API and the run dir keep results as JSON)."""
    stages = []
    for s in data.get("stages", []):
        gpu = None
        if s.get("gpus"):
            gpu = GpuUsage(
                uuids=tuple(s["gpus"]),
                gpu_seconds=s.get("gpu_seconds", 0.0),
                util_mean=s.get("gpu_util_mean"),
                mem_peak_bytes=s.get("gpu_mem_peak_bytes"),
                energy_j=s.get("energy_j"),
            )
        stages.append(
            StageResult(
                name=s["name"],
                status=StageStatus(s["status"]),
                cached=s.get("cached", False),
                exit_code=s.get("exit_code"),
                duration_s=s.get("duration_s", 0.0),
                attempts=s.get("attempts", 0),
                gpu=gpu,
                metrics=s.get("metrics", {}),
                reason=s.get("reason"),
                log_path=s.get("log_path"),
                log_tail=s.get("log_tail", ""),
                cached_from=s.get("cached_from"),
            )
        )
    duration = data.get("duration_s", 0.0)
    return RunResult(
        run_id=data["run_id"],
        pipeline=data.get("pipeline", ""),
        repo=data.get("repo", ""),
        commit=data.get("commit", ""),
        ref=data.get("ref"),
        status=RunStatus(data["status"]),
        stages=tuple(stages),
        metrics=data.get("metrics", {}),
        started_at=0.0,
        finished_at=duration,
        error=data.get("error"),
        mlflow_run_id=data.get("mlflow_run_id"),
    )


def now() -> float:
    """Wall-clock seconds; one place so tests can reason about time."""
    return time.time()


# -- inbound: what a forge (or a git hook) told us ------------------------------


class EventKind(StrEnum):
    PUSH = "push"  # a branch moved
    TAG = "tag"  # a tag was pushed
    MERGE_REQUEST = "merge_request"  # GitHub pull request / GitLab merge request
    COMMENT = "comment"  # a comment on a merge request
    PING = "ping"  # the forge checking the hook


@dataclass(frozen=True)
class RepoRef:
    """The repository an event is about, as the forge names it."""

    forge: str  # github | gitlab | git
    full_name: str  # "acme/digits"; for a plain git server, the repo's path
    clone_url: str
    default_branch: str | None = None
    web_url: str | None = None


@dataclass(frozen=True)
class MergeRequestRef:
    number: int  # GitHub PR number, GitLab MR iid
    action: str  # opened | synchronize | reopened | closed | merged | update | ...
    title: str
    url: str
    source_branch: str
    target_branch: str
    head_sha: str
    is_fork: bool
    """The source branch lives in another repository: its code is untrusted."""
    source_clone_url: str | None = None
    draft: bool = False


@dataclass(frozen=True)
class Event:
    """One webhook delivery, normalized; the same shape for every forge."""

    forge: str
    delivery_id: str
    kind: str
    repo: RepoRef | None
    action: str | None = None
    ref: str | None = None  # "refs/heads/main"
    before: str | None = None
    after: str | None = None  # the commit to run (push: new head; MR: head sha)
    deleted: bool = False
    merge_request: MergeRequestRef | None = None
    comment: str | None = None
    author: str | None = None
    author_association: str | None = None
    """GitHub's OWNER / MEMBER / COLLABORATOR / CONTRIBUTOR / NONE; None where unknown."""
    changed_paths: tuple[str, ...] | None = None
    """Paths the pushed commits touched, when the forge listed them all; None: unknown."""
    head_message: str | None = None

    @property
    def branch(self) -> str | None:
        if self.ref and self.ref.startswith("refs/heads/"):
            return self.ref.removeprefix("refs/heads/")
        return None

    @property
    def tag(self) -> str | None:
        if self.ref and self.ref.startswith("refs/tags/"):
            return self.ref.removeprefix("refs/tags/")
        return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        values = dict(data)
        if values.get("repo") is not None:
            values["repo"] = RepoRef(**values["repo"])
        if values.get("merge_request") is not None:
            values["merge_request"] = MergeRequestRef(**values["merge_request"])
        if values.get("changed_paths") is not None:
            values["changed_paths"] = tuple(values["changed_paths"])
        return cls(**values)


# -- outbound: what we tell a forge ---------------------------------------------


class CommitState(StrEnum):
    """A commit status, in our words; each forge maps it to its own."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"  # the pipeline said no: a stage failed, the gate refused
    ERROR = "error"  # our side broke, or the run was cancelled


@dataclass(frozen=True)
class CommitStatus:
    context: str  # "trainops/train", "trainops"
    state: CommitState
    description: str  # ≤ 140 characters (GitHub's limit)
    url: str | None = None


@dataclass(frozen=True)
class PullRequestRef:
    number: int
    url: str
    created: bool
    """False when an open pull request for the same head branch was reused."""
