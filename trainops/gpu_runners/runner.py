"""The embedded local runner: a Plan on this host's GPUs (or CPU), nothing else to start.

Order of work for one run:

1. cache triage — every stage whose key has a complete cache entry is a hit;
   a run of hits only returns at once, without a workspace;
2. a workspace at the exact commit, ``dvc pull`` of the declared data, and
   the outputs of cached stages that stages about to run depend on;
3. scheduling — a stage starts when its needs succeeded and its CPUs and
   GPUs are free; GPUs are held exclusively (a lock per GPU UUID) and a
   stage that waits for one says so; a failure skips its dependants only.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from trainops.cache import CacheEntry, StageCache
from trainops.config import Settings
from trainops.errors import DataError, TrainopsError
from trainops.gpu_runners import data
from trainops.gpu_runners.allocator import GpuAllocator, GpuLease
from trainops.gpu_runners.devices import GpuProbe
from trainops.gpu_runners.process import reap_orphans
from trainops.gpu_runners.stage import StageJob, execute_stage
from trainops.gpu_runners.workspace import WorkspacePool
from trainops.models import (
    Plan,
    PlannedStage,
    RunResult,
    RunStatus,
    StageResult,
    StageStatus,
    now,
)
from trainops.protocols import RunObserver

log = logging.getLogger(__name__)


@dataclass
class _Slots:
    """CPU cores free for new stages on this host (per run)."""

    free: float
    total: float

    def size(self, stage: PlannedStage) -> float:
        # A stage asking more than the host has still runs, alone.
        return min(stage.resources.cpu or 1.0, self.total)


class LocalRunner:
    """Executor for this host. ``probe`` defaults to NVML; tests pass a fake."""

    def __init__(
        self,
        settings: Settings,
        *,
        probe: GpuProbe | None = None,
        cache: StageCache | None = None,
        workspaces: WorkspacePool | None = None,
    ) -> None:
        self.settings = settings
        self._probe = probe
        self.cache = cache or StageCache(settings.cache_dir)
        self.workspaces = workspaces or WorkspacePool(
            settings.repos_dir,
            settings.workspaces_dir,
            settings.dvc_cache_dir,
            slots=settings.runner.workspaces_per_repo,
        )

    @property
    def probe(self) -> GpuProbe:
        if self._probe is None:
            from trainops.gpu_runners._nvml import NvmlProbe

            self._probe = NvmlProbe()
        return self._probe

    def execute(
        self,
        plan: Plan,
        *,
        run_id: str,
        use_cache: bool,
        observer: RunObserver,
        cancel: threading.Event,
    ) -> RunResult:
        started = now()
        hits = self._cache_hits(plan) if use_cache else {}
        results: dict[str, StageResult] = {}
        for stage in plan.stages:
            if stage.name in hits:
                entry = hits[stage.name]
                results[stage.name] = StageResult(
                    name=stage.name,
                    status=StageStatus.SUCCEEDED,
                    cached=True,
                    metrics=dict(entry.metrics),
                    reason=f"cached from run {entry.run_id}",
                    cached_from=entry.run_id,
                )
                observer.stage_finished(results[stage.name])
        error: str | None = None
        broken = False
        if len(hits) < len(plan.stages):
            try:
                self._run_in_workspace(plan, run_id, hits, results, observer, cancel)
            except DataError as exc:  # the repository's data: the pipeline's failure
                error = str(exc)
                _skip_rest(plan, results, "data could not be pulled", observer)
            except TrainopsError as exc:  # workspace, cache: ours
                error, broken = str(exc), True
                _skip_rest(plan, results, "the run could not go on", observer)
        return _result(plan, run_id, results, started, error, cancel.is_set(), broken)

    def _cache_hits(self, plan: Plan) -> dict[str, CacheEntry]:
        hits = {}
        for stage in plan.stages:
            entry = self.cache.lookup(stage.cache_key) if stage.cache else None
            if entry is not None:
                hits[stage.name] = entry
        return hits

    def _run_in_workspace(
        self,
        plan: Plan,
        run_id: str,
        hits: dict[str, CacheEntry],
        results: dict[str, StageResult],
        observer: RunObserver,
        cancel: threading.Event,
    ) -> None:
        log_dir = self.settings.runs_dir / run_id / "logs"
        # A run taken over from a dead worker: its stages may still be running.
        reap_orphans(log_dir, f"TRAINOPS_RUN_ID={run_id}")
        observer.run_message(f"checking out {plan.commit[:12]} into a workspace")
        with self.workspaces.acquire(plan.repo, plan.commit) as ws:
            if plan.data_pull:
                observer.run_message(f"dvc pull {' '.join(plan.data_pull)}")
                data.pull(ws.path, plan.data_pull)
            to_run = [s for s in plan.stages if s.name not in hits]
            for name in sorted({n for s in to_run for n in s.needs if n in hits}):
                self.cache.restore(hits[name], ws.path)
            log_dir.mkdir(parents=True, exist_ok=True)

            def job(stage: PlannedStage, lease: GpuLease | None) -> StageJob:
                return StageJob(plan, stage, run_id, ws.path, log_dir, lease)

            self._schedule(to_run, job, run_id, results, observer, cancel)

    def _schedule(
        self,
        stages: list[PlannedStage],
        make_job: Callable[[PlannedStage, GpuLease | None], StageJob],
        run_id: str,
        results: dict[str, StageResult],
        observer: RunObserver,
        cancel: threading.Event,
    ) -> None:
        cpus = float(self.settings.runner.cpu_slots or os.cpu_count() or 1)
        slots = _Slots(cpus, cpus)
        max_parallel = self.settings.runner.max_parallel or len(stages)
        pending = list(stages)
        running: set[str] = set()
        done: queue.Queue[tuple[PlannedStage, StageResult, float]] = queue.Queue()
        waiting: set[str] = set()
        allocator = (
            GpuAllocator(self.settings.locks_dir, self.probe)
            if any(s.gpus for s in stages)
            else None
        )

        def finish(stage: PlannedStage, result: StageResult) -> None:
            results[stage.name] = result
            observer.stage_finished(result)

        while pending or running:
            if cancel.is_set() and pending:
                for stage in pending:
                    finish(stage, StageResult(stage.name, StageStatus.SKIPPED, reason="cancelled"))
                pending = []
            for stage in list(pending):
                blocked = _blocked_by(stage, results)
                if blocked is not None:
                    pending.remove(stage)
                    finish(stage, StageResult(stage.name, StageStatus.SKIPPED, reason=blocked))
                    continue
                if any(n not in results for n in stage.needs):
                    continue
                if stage.gpus and allocator is not None:
                    impossible = allocator.impossible(stage.gpus, stage.gpu_type)
                    if impossible:
                        pending.remove(stage)
                        finish(
                            stage, StageResult(stage.name, StageStatus.FAILED, reason=impossible)
                        )
                        continue
                size = slots.size(stage)
                if running and (size > slots.free or len(running) >= max_parallel):
                    continue
                lease = None
                if stage.gpus and allocator is not None:
                    owner = f"{run_id}/{stage.name} (pid {os.getpid()})"
                    lease = allocator.try_acquire(stage.gpus, stage.gpu_type, owner=owner)
                    if lease is None:
                        if stage.name not in waiting:
                            waiting.add(stage.name)
                            kind = f" {stage.gpu_type}" if stage.gpu_type else ""
                            observer.stage_waiting(
                                stage.name, f"waiting for {stage.gpus}{kind} GPU(s): all busy"
                            )
                        continue
                pending.remove(stage)
                running.add(stage.name)
                slots.free -= size
                self._start(make_job(stage, lease), size, done, observer, cancel)
            if not running:
                if pending:
                    cancel.wait(self.settings.runner.gpu_poll_s)
                continue
            try:
                stage, result, size = done.get(timeout=self.settings.runner.gpu_poll_s)
            except queue.Empty:
                continue
            running.discard(stage.name)
            slots.free += size
            finish(stage, result)

    def _start(
        self,
        job: StageJob,
        size: float,
        done: queue.Queue[tuple[PlannedStage, StageResult, float]],
        observer: RunObserver,
        cancel: threading.Event,
    ) -> None:
        def work() -> None:
            try:
                result = execute_stage(
                    job,
                    settings=self.settings,
                    probe=self._probe if job.lease else None,
                    cache=self.cache,
                    observer=observer,
                    cancel=cancel,
                )
            except TrainopsError as exc:
                result = StageResult(job.stage.name, StageStatus.ERRORED, reason=str(exc))
            except Exception as exc:  # a bug of ours must not hang the run
                log.exception("stage %s crashed the runner", job.stage.name)
                reason = f"internal error: {type(exc).__name__}: {exc}"
                result = StageResult(job.stage.name, StageStatus.ERRORED, reason=reason)
            finally:
                if job.lease is not None:
                    job.lease.release()
            done.put((job.stage, result, size))

        threading.Thread(target=work, name=f"stage-{job.stage.name}", daemon=True).start()


def _blocked_by(stage: PlannedStage, results: dict[str, StageResult]) -> str | None:
    for need in stage.needs:
        upstream = results.get(need)
        if upstream is not None and upstream.status is not StageStatus.SUCCEEDED:
            return f"upstream stage {need!r} {upstream.status.value}"
    return None


def _skip_rest(
    plan: Plan, results: dict[str, StageResult], reason: str, observer: RunObserver
) -> None:
    for stage in plan.stages:
        if stage.name not in results:
            results[stage.name] = StageResult(stage.name, StageStatus.SKIPPED, reason=reason)
            observer.stage_finished(results[stage.name])


def _result(
    plan: Plan,
    run_id: str,
    results: dict[str, StageResult],
    started: float,
    error: str | None,
    cancelled: bool,
    broken: bool,
) -> RunResult:
    stages = tuple(results[s.name] for s in plan.stages)
    statuses = {s.status for s in stages}
    if broken or StageStatus.ERRORED in statuses:
        status = RunStatus.ERRORED
    elif cancelled or StageStatus.CANCELLED in statuses:
        status = RunStatus.CANCELLED
    elif error or StageStatus.FAILED in statuses or StageStatus.SKIPPED in statuses:
        status = RunStatus.FAILED
    else:
        status = RunStatus.SUCCEEDED
    metrics: dict[str, float] = {}
    for stage in stages:
        metrics.update(stage.metrics)
    return RunResult(
        run_id=run_id,
        pipeline=plan.pipeline,
        repo=plan.repo,
        commit=plan.commit,
        ref=plan.ref,
        status=status,
        stages=stages,
        metrics=metrics,
        started_at=started,
        finished_at=now(),
        error=error,
        mlflow_run_id=None,
    )
