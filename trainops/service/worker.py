"""The worker: stored events → runs → results, with leases so nothing is lost or done twice.

Two kinds of loops share one store:

- the **event loop** claims received events (oldest first), applies the
  trigger policy, reads the pipeline at the event's commit from a mirror and
  creates one run per run key, superseding older runs of the same branch or
  merge request;
- **run loops** (``service.max_concurrent_runs`` of them) claim queued runs
  in priority order — default branch first — and execute them with the
  local runner, renewing their lease and watching for cancellation.

A worker that dies leaves claimed rows whose lease expires; the next worker
(or this one after a restart) takes them over, so an acknowledged delivery
always becomes a run, once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from trainops.config import Settings
from trainops.errors import ConfigError, SpecError, TrainopsError
from trainops.forges.registry import ForgeRegistry
from trainops.git import GitRepo, auth_env
from trainops.gpu_runners.workspace import WorkspacePool
from trainops.models import Event, Plan, RunResult, RunStatus
from trainops.orchestrator import Target, new_run_id, plan_target, run_plan
from trainops.pipelines.gate import evaluate_gate, read_predictions
from trainops.pipelines.spec import Spec
from trainops.protocols import Executor
from trainops.reports.baseline import find_baseline
from trainops.reports.reporter import Reporter
from trainops.service.progress import StoreProgress, initial_progress
from trainops.store import EventRecord, NewRun, RunRecord, Store
from trainops.triggers import CloseGroup, Ignore, decide, run_key, screen

log = logging.getLogger(__name__)

ExecutorFactory = Callable[[Settings], Executor]


def _local_runner(settings: Settings) -> Executor:
    """The executor ``settings.executor`` names: this host (default) or Argo Workflows."""
    if settings.executor == "argo":
        from trainops.executors.backend import ArgoExecutor

        return ArgoExecutor(settings)
    if settings.executor != "local":
        raise ConfigError(f"executor {settings.executor!r}: use 'local' or 'argo'")
    from trainops.gpu_runners.runner import LocalRunner

    return LocalRunner(settings)


class Worker:
    """One per service process; ``start()`` its threads, ``stop()`` them."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        executor_factory: ExecutorFactory = _local_runner,
        reporter: Reporter | None = None,
        forges: ForgeRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.reporter = reporter
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.wake = threading.Event()
        self._reports_due = threading.Event()
        """Set by the web app when it stored an event: look now, not at the next poll."""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._cancels: dict[str, threading.Event] = {}
        self.forges = forges or ForgeRegistry(settings)
        self._lock = threading.Lock()
        self._executor = executor_factory(settings)
        self.mirrors = WorkspacePool(
            settings.repos_dir, settings.workspaces_dir, settings.dvc_cache_dir
        )

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        loops = [("events", self._event_loop)] + [
            (f"runs-{i}", self._run_loop) for i in range(self.settings.service.max_concurrent_runs)
        ]
        if self.reporter is not None:
            loops.append(("reports", self._report_loop))
        for name, target in loops:
            thread = threading.Thread(target=target, name=f"trainops-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("worker %s started", self.owner)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; cancel running stages (their runs are taken over after a restart)."""
        self._stop.set()
        self.wake.set()
        self._reports_due.set()
        with self._lock:
            for cancel in self._cancels.values():
                cancel.set()
        for thread in self._threads:
            thread.join(timeout)

    # -- events → runs -----------------------------------------------------------

    def _event_loop(self) -> None:
        while not self._stop.is_set():
            try:
                record = self.store.claim_event(self.owner, self.settings.service.lease_s)
            except TrainopsError as exc:
                log.warning("claiming an event: %s", exc)
                record = None
            if record is None:
                self.wake.wait(self.settings.service.poll_s)
                self.wake.clear()
                continue
            try:
                status, note = self.process_event(record)
            except Exception as exc:  # one bad event must not stop the loop
                log.exception("processing event %s", record.id)
                status, note = "failed", f"{type(exc).__name__}: {exc}"
            self.store.finish_event(record.id, status, note)

    def process_event(self, record: EventRecord) -> tuple[str, str]:
        """Decide and record what the event means; returns the event's (status, note)."""
        event = record.event
        screened = screen(event)
        if isinstance(screened, Ignore):
            return "ignored", screened.reason
        if isinstance(screened, CloseGroup):
            touched = self.store.supersede(screened.group_key, by_run_id="")
            self._cancel_local(touched)
            self._report(*touched)
            return "processed", f"{screened.reason}; stopped {len(touched)} run(s)"
        assert event.repo is not None and event.after
        commit = event.merge_request.head_sha if event.merge_request else event.after
        commit = commit or event.after
        try:
            mirror = self.mirrors.mirror(
                event.repo.clone_url, commit, git_env=self._auth(event.forge)
            )
            target = Target(GitRepo(mirror), commit, event.ref, event.branch)
            spec, plan = plan_target(target, memo_dir=self.settings.memo_dir)
        except SpecError as exc:
            return self._invalid_pipeline(record, event, commit, exc)
        decision = decide(event, spec.triggers)
        if isinstance(decision, Ignore):
            return "ignored", decision.reason
        key = run_key(event, decision, plan.spec_digest)
        run, created = self.store.create_run(
            NewRun(
                run_id=new_run_id(),
                run_key=key,
                event_id=record.id,
                forge=event.forge,
                repo=event.repo.full_name,
                clone_url=event.repo.clone_url,
                commit=decision.commit,
                ref=decision.ref,
                branch=decision.branch,
                mr_number=decision.mr_number,
                trigger=decision.trigger,
                group_key=decision.group_key,
                priority=decision.priority,
            )
        )
        if not created:
            return "processed", f"same run as {run.run_id}"
        names = tuple(s.name for s in plan.stages)
        self.store.update_run_progress(run.run_id, initial_progress(spec.name, names))
        superseded = self.store.supersede(decision.group_key, by_run_id=run.run_id)
        if superseded:
            log.info("run %s supersedes %s", run.run_id, ", ".join(superseded))
            self._cancel_local(superseded)
        self._report(run.run_id, *superseded)
        self.wake.set()
        return "processed", f"run {run.run_id}"

    def _invalid_pipeline(
        self, record: EventRecord, event: Event, commit: str, exc: SpecError
    ) -> tuple[str, str]:
        """An invalid pipeline file is the repository's failure: a failed run says where."""
        assert event.repo is not None
        run, created = self.store.create_run(
            NewRun(
                run_id=new_run_id(),
                run_key=f"invalid:{event.forge}:{event.repo.full_name}:{commit}",
                event_id=record.id,
                forge=event.forge,
                repo=event.repo.full_name,
                clone_url=event.repo.clone_url,
                commit=commit,
                ref=event.ref or "",
                branch=event.branch,
                mr_number=event.merge_request.number if event.merge_request else None,
                trigger=event.kind,
                group_key=f"invalid:{record.id}",
                priority=0,
            )
        )
        if created:
            self.store.finish_run(run.run_id, "failed", result=None, error=str(exc))
            self._report(run.run_id)
        return "processed", f"invalid pipeline: run {run.run_id}"

    # -- runs --------------------------------------------------------------------

    def _run_loop(self) -> None:
        while not self._stop.is_set():
            try:
                run = self.store.claim_run(self.owner, self.settings.service.lease_s)
            except TrainopsError as exc:
                log.warning("claiming a run: %s", exc)
                run = None
            if run is None:
                self.wake.wait(self.settings.service.poll_s)
                continue
            try:
                self.execute(run)
            except Exception as exc:
                log.exception("executing run %s", run.run_id)
                self.store.finish_run(
                    run.run_id, "errored", result=None, error=f"{type(exc).__name__}: {exc}"
                )

    def execute(self, run: RunRecord) -> None:
        cancel = threading.Event()
        with self._lock:
            self._cancels[run.run_id] = cancel
        heartbeat = threading.Thread(target=self._heartbeat, args=(run.run_id, cancel), daemon=True)
        heartbeat.start()
        self._report(run.run_id)
        try:
            spec, plan, result = self._execute(run, cancel)
        finally:
            with self._lock:
                self._cancels.pop(run.run_id, None)
            cancel.set()  # ends the heartbeat
        if self._stop.is_set() and result.status is RunStatus.CANCELLED:
            return  # shutting down: the lease expires and the run is taken over
        latest = self.store.get_run(run.run_id)
        status = result.status.value
        if result.status is RunStatus.CANCELLED and latest and latest.superseded_by is not None:
            status = "superseded"
        data = result.to_json()
        gate = self._gate(spec, plan, run, result)
        if gate is not None:
            data["gate"] = gate
        promotion = self._promote(run, spec, plan, result, gate)
        if promotion is not None:
            data["promotion"] = promotion
        self.store.finish_run(run.run_id, status, result=data, error=result.error)
        self._report(run.run_id)

    def _execute(self, run: RunRecord, cancel: threading.Event) -> tuple[Spec, Plan, RunResult]:
        mirror = self.mirrors.mirror(run.clone_url, run.commit, git_env=self._auth(run.forge))
        target = Target(GitRepo(mirror), run.commit, run.ref, run.branch)
        spec, plan = plan_target(target, memo_dir=self.settings.memo_dir)
        plan = replace(plan, repo=run.clone_url)  # workspaces mirror the origin, not the mirror
        progress = StoreProgress(
            self.store,
            run.run_id,
            tuple(s.name for s in plan.stages),
            pipeline=spec.name,
            on_change=self._report,
        )
        result = run_plan(
            self.settings,
            spec,
            plan,
            executor=self._executor,
            observer=progress,
            cancel=cancel,
            branch=run.branch,
            run_id=run.run_id,
        )
        return spec, plan, result

    def _gate(
        self, spec: Spec, plan: Plan, run: RunRecord, result: RunResult
    ) -> dict[str, Any] | None:
        """The gate's verdict on a successful run, against the target branch's baseline.

        Per-example predictions for statistical rules come from the stage cache
        (this run) and from the copy each run keeps in its run dir (the baseline).
        """
        if not spec.gate or result.status is not RunStatus.SUCCEEDED:
            return None
        baseline = find_baseline(self.store, run)
        keep = self.settings.runs_dir / run.run_id / "gate"

        def candidate(path: str) -> str | None:
            text = _output_text(self.settings, plan, path)
            if text is not None:
                (keep / path).parent.mkdir(parents=True, exist_ok=True)
                (keep / path).write_text(text)
            return text

        def previous(path: str) -> str | None:
            assert baseline is not None
            kept = self.settings.runs_dir / baseline.run_id / "gate" / path
            return kept.read_text() if kept.is_file() else None

        predictions = read_predictions(spec.gate, candidate, previous if baseline else None)
        verdict = evaluate_gate(
            spec.gate,
            result.metrics,
            baseline.metrics if baseline else None,
            predictions=predictions,
        )
        return {
            "passed": verdict.passed,
            "baseline_run": baseline.run_id if baseline else None,
            "results": [asdict(r) for r in verdict.results],
        }

    # -- promotion -----------------------------------------------------------------

    def _promote(
        self,
        run: RunRecord,
        spec: Spec,
        plan: Plan,
        result: RunResult,
        gate: dict[str, Any] | None,
    ) -> dict[str, Any] | None:
        """Promote a passing default-branch run; its outcome (or error) goes in the result.

        A promotion problem never fails the run: the model is trained and
        evaluated either way, and ``trainops promote`` can finish the job.
        """
        environments = self._promotable(run, result, gate, spec)
        if not environments:
            return None
        from trainops.promotion.promoter import Promoter, Provenance, data_hash

        assert result.mlflow_run_id is not None
        provenance = Provenance(
            repo=run.repo,
            commit=run.commit,
            run_id=run.run_id,
            mlflow_run_id=result.mlflow_run_id,
            data_hash=data_hash(plan),
            metrics=dict(result.metrics),
        )
        try:
            outcomes = Promoter(self.settings, self.forges).promote_run(
                spec, plan, provenance, environments
            )
        except TrainopsError as exc:
            log.warning("promoting run %s: %s", run.run_id, exc)
            return {"error": str(exc)}
        return {"promotions": [o.to_json() for o in outcomes]}

    def _promotable(
        self,
        run: RunRecord,
        result: RunResult,
        gate: dict[str, Any] | None,
        spec: Spec,
    ) -> tuple[str, ...]:
        settings = self.settings.promotion
        if spec.promote is None or not settings.enabled:
            return ()
        if result.status is not RunStatus.SUCCEEDED or not result.mlflow_run_id:
            return ()
        if (gate is not None and not gate["passed"]) or run.trigger != "push":
            return ()
        default = None
        if run.event_id is not None:
            record = self.store.get_event(run.event_id)
            if record is not None and record.event.repo is not None:
                default = record.event.repo.default_branch
        branches = settings.branches or ((default or "main"),)
        if run.branch not in branches:
            return ()
        return tuple(e for e in spec.promote.environments if e in settings.auto_environments)

    # -- reports -------------------------------------------------------------------

    def _report(self, *run_ids: str) -> None:
        """Tell the reporter; a report problem never disturbs the run."""
        if self.reporter is None:
            return
        for run_id in run_ids:
            try:
                self.reporter.run_changed(run_id)
            except Exception:
                log.exception("queueing the report of run %s", run_id)
        self._reports_due.set()

    def _report_loop(self) -> None:
        assert self.reporter is not None
        while not self._stop.is_set():
            try:
                delivered = self.reporter.deliver_once(self.owner)
            except Exception:
                log.exception("delivering a report")
                delivered = False
            if not delivered:
                self._reports_due.wait(self.settings.service.poll_s)
                self._reports_due.clear()

    def _heartbeat(self, run_id: str, cancel: threading.Event) -> None:
        """Keep the lease and notice a cancel or supersede requested through the store."""
        every = max(self.settings.service.lease_s / 3, 0.05)
        check = min(every, 0.5)
        waited = 0.0
        while not cancel.wait(check):
            waited += check
            latest = self.store.get_run(run_id)
            if latest is None or latest.cancel_requested:
                cancel.set()
                return
            if waited >= every:
                waited = 0.0
                if not self.store.renew_run_lease(
                    run_id, self.owner, self.settings.service.lease_s
                ):
                    log.warning("lost the lease of run %s; stopping it here", run_id)
                    cancel.set()
                    return

    def _auth(self, forge: str) -> dict[str, str] | None:
        """Credentials to fetch a forge's private repositories over HTTPS, if configured."""
        settings = {"github": self.settings.github, "gitlab": self.settings.gitlab}.get(forge)
        if settings is None or not settings.token:
            return None
        user = "oauth2" if forge == "gitlab" else "x-access-token"
        return auth_env(settings.token.reveal(), user)

    def _cancel_local(self, run_ids: list[str]) -> None:
        with self._lock:
            for run_id in run_ids:
                if run_id in self._cancels:
                    self._cancels[run_id].set()

    def cancel(self, run_id: str) -> RunRecord | None:
        """Cancel a run: queued ones at once, running ones through their heartbeat."""
        record = self.store.request_cancel(run_id)
        self._cancel_local([run_id])
        return record


def _output_text(settings: Settings, plan: Plan, path: str) -> str | None:
    """A stage output's text, read back from the stage cache (no workspace needed)."""
    import tempfile

    from trainops.cache import StageCache
    from trainops.pipelines.spec import inside

    cache = StageCache(settings.cache_dir)
    for stage in plan.stages:
        owner = next((o for o in stage.outs + stage.metrics if inside(path, o)), None)
        entry = cache.lookup(stage.cache_key) if owner else None
        if owner is None or entry is None:
            continue
        with tempfile.TemporaryDirectory(prefix="trainops-gate-") as tmp:
            cache.restore(entry, Path(tmp), [owner])
            target = Path(tmp) / path
            return target.read_text(errors="replace") if target.is_file() else None
    return None
