"""Executing one stage in a workspace: attempts, telemetry, outputs, metrics, cache.

The scheduler (``runner.py``) decides *when* a stage runs and which GPUs it
holds; this module runs it and turns what happened into a ``StageResult``.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from trainops.cache import StageCache
from trainops.config import Settings, child_env
from trainops.errors import CacheError
from trainops.gpu_runners.allocator import GpuLease
from trainops.gpu_runners.devices import GpuProbe
from trainops.gpu_runners.process import ProcessOutcome, run_process
from trainops.gpu_runners.telemetry import GpuMonitor
from trainops.models import GpuUsage, Plan, PlannedStage, StageResult, StageStatus
from trainops.pipelines.metrics import parse_metrics
from trainops.protocols import RunObserver


@dataclass(frozen=True)
class StageJob:
    """Everything one stage execution needs, fixed before it starts."""

    plan: Plan
    stage: PlannedStage
    run_id: str
    workspace: Path
    log_dir: Path
    lease: GpuLease | None


def execute_stage(
    job: StageJob,
    *,
    settings: Settings,
    probe: GpuProbe | None,
    cache: StageCache,
    observer: RunObserver,
    cancel: threading.Event,
) -> StageResult:
    stage = job.stage
    uuids = job.lease.uuids if job.lease else ()
    env = child_env(
        {
            **stage.env,
            "CUDA_VISIBLE_DEVICES": job.lease.cuda_visible_devices if job.lease else "",
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "TRAINOPS_RUN_ID": job.run_id,
            "TRAINOPS_STAGE": stage.name,
            "TRAINOPS_COMMIT": job.plan.commit,
            "TRAINOPS_PIPELINE": job.plan.pipeline,
        }
    )
    cwd = job.workspace / stage.wdir
    cwd.mkdir(parents=True, exist_ok=True)
    _clear_outputs(job.workspace, stage)
    started = time.monotonic()
    wall_start = time.time()
    usages: list[GpuUsage] = []
    outcome: ProcessOutcome | None = None
    log_path = job.log_dir / f"{stage.name}.log"
    attempt = 0
    for attempt in range(1, stage.retries + 2):
        if attempt > 1:
            log_path = job.log_dir / f"{stage.name}.attempt{attempt}.log"
        observer.stage_started(stage.name, attempt, uuids)
        monitor = None
        if job.lease and probe is not None:
            monitor = GpuMonitor(probe, uuids, settings.runner.telemetry_interval_s)
            monitor.start()
        try:
            outcome = run_process(
                stage.cmd,
                cwd=cwd,
                env=env,
                log_path=log_path,
                timeout_s=stage.timeout_s,
                cancel=cancel,
                on_line=partial(observer.stage_log, stage.name),
                kill_grace_s=settings.runner.kill_grace_s,
                tail_lines=settings.runner.log_tail_lines,
                pid_file=job.log_dir / f"{stage.name}.pid",
            )
        finally:
            if monitor is not None:
                usages.append(monitor.stop())
        if outcome.exit_code == 0 or outcome.cancelled:
            break
    assert outcome is not None
    duration = time.monotonic() - started
    gpu = _sum_usage(usages, uuids)
    base = StageResult(
        name=stage.name,
        status=StageStatus.FAILED,
        exit_code=outcome.exit_code,
        duration_s=duration,
        attempts=attempt,
        gpu=gpu,
        log_path=str(log_path),
        log_tail=outcome.tail,
    )
    if outcome.cancelled:
        return replace(base, status=StageStatus.CANCELLED, reason="cancelled")
    if outcome.timed_out:
        return replace(base, reason=f"timed out after {stage.timeout_s:g}s")
    if outcome.exit_code != 0:
        return replace(base, reason=_exit_reason(outcome))
    missing = [p for p in stage.outs + stage.metrics if not (job.workspace / p).exists()]
    if missing:
        return replace(base, reason=f"declared output {missing[0]!r} was not produced")
    try:
        metrics = _read_metrics(job.workspace, stage.metrics)
    except ValueError as exc:
        return replace(base, reason=str(exc))
    produced = list(dict.fromkeys(stage.outs + stage.metrics))
    try:
        cache.save(
            stage.cache_key,
            job.workspace,
            produced,
            stage=stage.name,
            run_id=job.run_id,
            commit=job.plan.commit,
            created_at=wall_start,
            duration_s=duration,
            metrics=metrics,
            gpu_seconds=gpu.gpu_seconds if gpu else 0.0,
        )
    except CacheError as exc:
        return replace(base, status=StageStatus.ERRORED, reason=str(exc))
    return replace(base, status=StageStatus.SUCCEEDED, metrics=metrics)


def _clear_outputs(workspace: Path, stage: PlannedStage) -> None:
    """Remove declared outputs first (as DVC does), so a stale file never passes for new."""
    for rel in stage.outs + stage.metrics:
        path = workspace / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _read_metrics(workspace: Path, files: tuple[str, ...]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for rel in files:
        metrics.update(parse_metrics((workspace / rel).read_text(errors="replace"), rel))
    return metrics


def _exit_reason(outcome: ProcessOutcome) -> str:
    code = outcome.exit_code
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _sum_usage(usages: list[GpuUsage], uuids: tuple[str, ...]) -> GpuUsage | None:
    if not usages:
        return None
    utils = [u.util_mean for u in usages if u.util_mean is not None]
    mems = [u.mem_peak_bytes for u in usages if u.mem_peak_bytes is not None]
    energies = [u.energy_j for u in usages if u.energy_j is not None]
    return GpuUsage(
        uuids=uuids,
        gpu_seconds=sum(u.gpu_seconds for u in usages),
        util_mean=sum(utils) / len(utils) if utils else None,
        mem_peak_bytes=max(mems) if mems else None,
        energy_j=sum(energies) if energies else None,
    )
