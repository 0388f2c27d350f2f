"""The only module that knows every area: repo → spec → plan → executor → tracking.

Each step is a function of values; the CLI (and later the service) calls
them in order and decides what to show.
"""

from __future__ import annotations

import json
import logging
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from trainops.cache import StageCache
from trainops.config import Settings
from trainops.errors import TrackingError
from trainops.git import GitRepo
from trainops.models import Plan, RunResult, StageStatus
from trainops.pipelines import memo
from trainops.pipelines.plan import build_plan, snapshot
from trainops.pipelines.spec import DVC_FILE, TRAINOPS_FILE, Spec, inside
from trainops.protocols import Executor, RunObserver

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """A repository at one exact commit."""

    repo: GitRepo
    commit: str
    ref: str | None
    branch: str | None

    @property
    def source(self) -> str:
        return str(self.repo.path)


def resolve_target(path: Path, ref: str | None) -> Target:
    repo, commit, branch = GitRepo.open_at(path, ref or "HEAD")
    return Target(repo, commit, ref or "HEAD", branch)


def plan_target(target: Target, *, memo_dir: Path | None = None) -> tuple[Spec, Plan]:
    """Read the pipeline committed at the target and plan it.

    With ``memo_dir``, plans are remembered per commit and specs per content
    of the pipeline files (see ``pipelines.memo``).
    """
    if memo_dir is not None:
        remembered = memo.load_plan(memo_dir, target.commit)
        if remembered is not None:
            spec, plan = remembered
            return spec, replace(plan, repo=target.source, ref=target.ref)
    spec = _spec_at(target, memo_dir)
    snap = snapshot(target.repo, target.commit, spec)
    plan = build_plan(spec, snap, repo=target.source, commit=target.commit, ref=target.ref)
    if memo_dir is not None:
        memo.save_plan(memo_dir, spec, plan)
    return spec, plan


def _spec_at(target: Target, memo_dir: Path | None) -> Spec:
    repo, commit, name = target.repo, target.commit, target.repo.path.name
    if memo_dir is None:
        from trainops.pipelines.loader import load_spec_at  # pydantic: only when parsing

        return load_spec_at(repo, commit, name=name)
    ids = repo.object_ids(commit, [TRAINOPS_FILE, DVC_FILE])
    key = memo.spec_key(name, ids)
    remembered = memo.load_spec(memo_dir, key)
    if remembered is not None:
        spec, sources = remembered
        others = [s for s in sources if s not in ids]  # a dvc.yaml elsewhere
        if not others or repo.object_ids(commit, others) == {s: sources[s] for s in others}:
            return spec
    from trainops.pipelines.loader import load_spec_at

    spec = load_spec_at(repo, commit, name=name)
    memo.save_spec(memo_dir, key, spec, repo.object_ids(commit, spec.sources))
    return spec


def new_run_id() -> str:
    """Sortable by start time, unique without coordination."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def run_plan(
    settings: Settings,
    spec: Spec,
    plan: Plan,
    *,
    executor: Executor,
    observer: RunObserver,
    cancel: threading.Event | None = None,
    use_cache: bool = True,
    branch: str | None = None,
    run_id: str | None = None,
) -> RunResult:
    """Execute ``plan``, record it in MLflow, and keep the result under the run dir."""
    run_id = run_id or new_run_id()
    result = executor.execute(
        plan,
        run_id=run_id,
        use_cache=use_cache,
        observer=observer,
        cancel=cancel or threading.Event(),
    )
    cache = StageCache(settings.cache_dir)
    if settings.tracking.enabled:
        result = _track(settings, spec, plan, result, cache, branch, observer)
    _save_result(settings, result)
    return result


def _track(
    settings: Settings,
    spec: Spec,
    plan: Plan,
    result: RunResult,
    cache: StageCache,
    branch: str | None,
    observer: RunObserver,
) -> RunResult:
    if not result.executed:
        # Nothing ran: the outputs are those of earlier runs, which MLflow already has.
        reused = [cache.lookup(plan.stage(s.name).cache_key) for s in result.stages if s.cached]
        ids = [e.mlflow_run_id for e in reused if e is not None and e.mlflow_run_id]
        return replace(result, mlflow_run_id=ids[-1] if ids else None)
    from trainops.tracking.mlflow import MlflowTracker

    tracker = MlflowTracker(
        settings.tracking_uri(),
        artifact_root=settings.artifact_root() if _local_store(settings) else None,
        experiment=settings.tracking.experiment or plan.pipeline,
    )
    params = {k: v for stage in plan.stages for k, v in stage.params.items()}
    observer.run_message(f"logging to MLflow ({settings.tracking_uri()})")
    with tempfile.TemporaryDirectory(prefix="trainops-model-") as tmp:
        model = _model_from_cache(spec, plan, result, cache, Path(tmp))
        try:
            mlflow_id = tracker.log_run(
                plan, result, params=params, branch=branch, model_path=model
            )
        except TrackingError as exc:
            log.warning("%s", exc)
            observer.run_message(f"warning: {exc}")
            return result
    for stage in result.stages:
        if stage.status is StageStatus.SUCCEEDED and not stage.cached:
            cache.annotate(plan.stage(stage.name).cache_key, mlflow_run_id=mlflow_id)
    return replace(result, mlflow_run_id=mlflow_id)


def _local_store(settings: Settings) -> bool:
    """A database or file store keeps artifacts where we say (not in ./mlruns);
    a tracking server decides for itself."""
    return settings.tracking_uri().split(":", 1)[0] in ("sqlite", "file", "postgresql", "mysql")


def _model_from_cache(
    spec: Spec, plan: Plan, result: RunResult, cache: StageCache, tmp: Path
) -> Path | None:
    """The declared model output, restored from the stage cache (no workspace needed)."""
    if spec.promote is None:
        return None
    path = spec.promote.model_path
    for stage in plan.stages:
        owner = next((o for o in stage.outs if inside(path, o)), None)
        if owner is None:
            continue
        if result.stages[plan.stages.index(stage)].status is not StageStatus.SUCCEEDED:
            return None
        entry = cache.lookup(stage.cache_key)
        if entry is None:
            return None
        cache.restore(entry, tmp, [owner])
        return tmp / path if (tmp / path).exists() else None
    return None


def _save_result(settings: Settings, result: RunResult) -> None:
    run_dir = settings.runs_dir / result.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
