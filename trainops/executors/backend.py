"""The Argo Workflows backend as an ``Executor``: the same Plan, on Kubernetes GPU nodes.

``execute`` renders the Plan (``manifests.argo``), submits it under a name
derived from the run id (a resubmission after a restart answers 409 and the
running workflow is adopted, so a GPU job never runs twice), then follows it
with the list-then-watch loop, turning node phases into the observer's stage
events — including why a GPU pod is pending — until the workflow ends.
Cancelling stops it (``shutdown: Terminate``) and waits for it to wind down.

The stage cache is local to the host that wrote it; cluster runs do not use
it yet (see the README), so ``use_cache`` is ignored here.
"""

from __future__ import annotations

import logging
import threading
import time

from trainops.config import Settings
from trainops.errors import ExecutorError
from trainops.executors.argo import ArgoClient, WorkflowState, stage_statuses
from trainops.manifests.argo import (
    ENTRYPOINT,
    RunLabels,
    metrics_parameters,
    render_workflow,
    template_names,
)
from trainops.models import Plan, RunResult, RunStatus, StageResult, StageStatus, now
from trainops.pipelines.metrics import parse_metrics
from trainops.protocols import RunObserver

log = logging.getLogger(__name__)

STOP_WAIT_S = 60.0


class ArgoExecutor:
    def __init__(self, settings: Settings, client: ArgoClient | None = None) -> None:
        self.settings = settings
        self._client = client

    @property
    def client(self) -> ArgoClient:
        if self._client is None:
            self._client = ArgoClient.from_config(
                self.settings.argo.namespace, self.settings.argo.kubeconfig
            )
        return self._client

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
        workflow = render_workflow(
            plan, self.settings.argo, run=RunLabels(run_id=run_id, repo=plan.repo), run_key=run_id
        )
        name = workflow["metadata"]["name"]
        names = {
            v: k for k, v in template_names((s.name for s in plan.stages), (ENTRYPOINT,)).items()
        }
        state = self.client.submit(workflow)
        observer.run_message(f"workflow {name} in {self.settings.argo.namespace}")
        latest = _Latest(state)
        stop_watch = threading.Event()
        watcher = threading.Thread(
            target=self._watch, args=(run_id, latest, stop_watch), name=f"argo-{name}", daemon=True
        )
        watcher.start()
        seen: dict[str, tuple[StageStatus | None, str | None]] = {}
        stopping_since: float | None = None
        try:
            while True:
                state = latest.wait(1.0)
                self._report(state, names, seen, observer)
                if state.terminal:
                    break
                if cancel.is_set() and stopping_since is None:
                    self.client.stop(name)
                    stopping_since = time.monotonic()
                if stopping_since and time.monotonic() - stopping_since > STOP_WAIT_S:
                    break
        finally:
            stop_watch.set()
        return _result(plan, run_id, state, names, started, cancelled=cancel.is_set())

    def _watch(self, run_id: str, latest: _Latest, stop: threading.Event) -> None:
        selector = f"trainops.io/run-id={run_id}"
        try:
            self.client.follow(selector, lambda _kind, s: latest.set(s), stop=stop)
        except ExecutorError as exc:  # the main loop falls back to polling
            log.warning("watching %s: %s; polling instead", selector, exc)
            while not stop.wait(2.0):
                try:
                    latest.set(self.client.get(latest.name))
                except ExecutorError as again:
                    log.warning("polling workflow %s: %s", latest.name, again)

    def _report(
        self,
        state: WorkflowState,
        names: dict[str, str],
        seen: dict[str, tuple[StageStatus | None, str | None]],
        observer: RunObserver,
    ) -> None:
        for stage, (status, reason) in stage_statuses(state, names).items():
            if seen.get(stage) == (status, reason):
                continue
            before = seen.get(stage)
            seen[stage] = (status, reason)
            if status is None and reason and reason.startswith("pending"):
                observer.stage_waiting(stage, reason)
            elif status is None and (before is None or before[1] != "running"):
                observer.stage_started(stage, 1, ())
            elif status is not None:
                observer.stage_finished(StageResult(stage, status, reason=reason))


class _Latest:
    """The newest state of one workflow, handed from the watch thread to the run."""

    def __init__(self, state: WorkflowState) -> None:
        self.name = state.name
        self._state = state
        self._changed = threading.Event()
        self._lock = threading.Lock()

    def set(self, state: WorkflowState) -> None:
        if state.name != self.name:
            return
        with self._lock:
            self._state = state
        self._changed.set()

    def wait(self, timeout: float) -> WorkflowState:
        self._changed.wait(timeout)
        self._changed.clear()
        with self._lock:
            return self._state


def _result(
    plan: Plan,
    run_id: str,
    state: WorkflowState,
    names: dict[str, str],
    started: float,
    *,
    cancelled: bool,
) -> RunResult:
    statuses = stage_statuses(state, names)
    tasks = {stage: task for task, stage in names.items()}
    stages = []
    metrics: dict[str, float] = {}
    for planned in plan.stages:
        status, reason = statuses.get(planned.name, (None, None))
        node = state.node(tasks[planned.name])
        found: dict[str, float] = {}
        if node is not None and status is StageStatus.SUCCEEDED:
            for parameter, file in metrics_parameters(planned).items():
                text = node.outputs.get(parameter)
                if text:
                    try:
                        found.update(parse_metrics(text, file))
                    except ValueError:
                        reason = f"metrics file {file!r} could not be read"
        metrics.update(found)
        stages.append(
            StageResult(
                name=planned.name,
                status=status or (StageStatus.CANCELLED if cancelled else StageStatus.SKIPPED),
                attempts=1 if node is not None else 0,
                duration_s=_duration(node.started_at, node.finished_at) if node else 0.0,
                metrics=found,
                reason=reason,
            )
        )
    if cancelled:
        run_status = RunStatus.CANCELLED
    elif state.phase == "Succeeded":
        run_status = RunStatus.SUCCEEDED
    elif state.phase == "Error" and not any(s.status is StageStatus.FAILED for s in stages):
        run_status = RunStatus.ERRORED
    else:
        run_status = RunStatus.FAILED
    return RunResult(
        run_id=run_id,
        pipeline=plan.pipeline,
        repo=plan.repo,
        commit=plan.commit,
        ref=plan.ref,
        status=run_status,
        stages=tuple(stages),
        metrics=metrics,
        started_at=started,
        finished_at=now(),
        error=None if run_status is RunStatus.SUCCEEDED else state.message,
    )


def _duration(start: str | None, end: str | None) -> float:
    from datetime import datetime

    if not start or not end:
        return 0.0
    try:
        parse = datetime.fromisoformat
        return (
            parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))
        ).total_seconds()
    except ValueError:
        return 0.0
