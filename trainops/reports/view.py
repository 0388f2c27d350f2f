"""What a run looks like on a forge, as values: commit statuses and the comment's context.

Pure functions of the run's record (its live progress or final result), the
baseline and the service's URL. ``failed`` (a stage failed, the gate said
no) is reported calmly with the facts; ``errored`` (our side broke) briefly,
with the run id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainops.models import CommitState, CommitStatus
from trainops.reports.baseline import Baseline
from trainops.store import RunRecord

CONTEXT = "trainops"
_DESCRIPTION_LIMIT = 140

_STAGE_STATE = {
    "pending": CommitState.PENDING,
    "waiting": CommitState.PENDING,
    "running": CommitState.RUNNING,
    "succeeded": CommitState.SUCCESS,
    "failed": CommitState.FAILURE,
    "skipped": CommitState.FAILURE,
    "cancelled": CommitState.ERROR,
    "errored": CommitState.ERROR,
}


def run_url(service_url: str, run_id: str) -> str:
    return f"{service_url.rstrip('/')}/api/runs/{run_id}"


_STAGE_DEFAULTS: dict[str, Any] = {
    "status": "pending",
    "cached": False,
    "cached_from": None,
    "reason": None,
    "duration_s": 0.0,
    "attempts": 0,
    "gpu_seconds": 0.0,
    "energy_j": None,
    "log_tail": "",
}


def stages_of(run: RunRecord) -> list[dict[str, Any]]:
    """The stages as the report shows them (the final result's, or the live progress),
    each with every field, so templates need no guards."""
    return [
        {**_STAGE_DEFAULTS, **{k: v for k, v in s.items() if v is not None}}
        for s in run.stage_states()
    ]


def gate_of(run: RunRecord) -> dict[str, Any] | None:
    gate = (run.result or {}).get("gate")
    return gate if isinstance(gate, dict) else None


def statuses(run: RunRecord, service_url: str) -> list[CommitStatus]:
    """One status per stage, one for the gate (when there is one) and one overall."""
    url = run_url(service_url, run.run_id)
    out = []
    for stage in stages_of(run):
        state = _STAGE_STATE.get(str(stage.get("status") or "pending"), CommitState.PENDING)
        if run.status in ("cancelled", "superseded") and state in (
            CommitState.PENDING,
            CommitState.RUNNING,
        ):
            state = CommitState.ERROR
        out.append(CommitStatus(f"{CONTEXT}/{stage['name']}", state, _stage_text(stage, run), url))
    gate = gate_of(run)
    if gate is not None:
        failures = [r["message"] for r in gate["results"] if not r["passed"]]
        text = "passed" if gate["passed"] else "; ".join(failures)
        state = CommitState.SUCCESS if gate["passed"] else CommitState.FAILURE
        out.append(CommitStatus(f"{CONTEXT}/gate", state, _short(text), url))
    out.append(CommitStatus(CONTEXT, *overall(run), url))
    return out


def overall(run: RunRecord) -> tuple[CommitState, str]:
    gate = gate_of(run)
    if run.status == "queued":
        return CommitState.PENDING, "queued"
    if run.status == "running":
        return CommitState.RUNNING, "running"
    if run.status == "succeeded":
        if gate is not None and not gate["passed"]:
            return CommitState.FAILURE, "the gate failed"
        stages = stages_of(run)
        cached = sum(1 for s in stages if s.get("cached"))
        return CommitState.SUCCESS, _short(
            f"{len(stages)} stage(s), {cached} cached" + _metrics(run)
        )
    if run.status == "failed":
        failed = next((s for s in stages_of(run) if s.get("status") == "failed"), None)
        if failed is not None:
            return CommitState.FAILURE, _short(
                f"stage {failed['name']} failed: {failed.get('reason')}"
            )
        return CommitState.FAILURE, _short(run.error or "failed")
    if run.status == "superseded":
        return (
            CommitState.ERROR,
            f"superseded by run {run.superseded_by}" if run.superseded_by else "stopped",
        )
    if run.status == "cancelled":
        return CommitState.ERROR, "cancelled"
    return CommitState.ERROR, _short(f"trainops error (run {run.run_id})")


def _metrics(run: RunRecord) -> str:
    metrics = (run.result or {}).get("metrics") or {}
    shown = [f"{k} {v:.4g}" for k, v in list(metrics.items())[:2]]
    return f"; {', '.join(shown)}" if shown else ""


def _stage_text(stage: dict[str, Any], run: RunRecord) -> str:
    status = str(stage.get("status") or "pending")
    if stage.get("cached"):
        return _short(str(stage.get("reason") or "cached"))
    if status == "succeeded":
        return f"succeeded in {float(stage.get('duration_s') or 0):.1f}s"
    if status in ("pending", "waiting", "running"):
        if run.status == "queued":
            return "queued"
        if run.status in ("cancelled", "superseded"):
            return run.status
        return _short(stage.get("reason") or status) if status == "waiting" else status
    return _short(f"{status}: {stage.get('reason') or ''}".rstrip(": "))


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _DESCRIPTION_LIMIT else text[: _DESCRIPTION_LIMIT - 1] + "…"


@dataclass(frozen=True)
class MetricRow:
    name: str
    value: float
    baseline: float | None

    @property
    def delta(self) -> float | None:
        return None if self.baseline is None else self.value - self.baseline


def comment_context(
    run: RunRecord,
    *,
    pipeline: str,
    baseline: Baseline | None,
    service_url: str,
    superseded: list[RunRecord],
) -> dict[str, Any]:
    """Everything the comment template may use (plain values only)."""
    stages = stages_of(run)
    result = run.result or {}
    metrics = result.get("metrics") or {}
    rows = [
        MetricRow(k, float(v), baseline.metrics.get(k) if baseline else None)
        for k, v in sorted(metrics.items())
    ]
    failed = next((s for s in stages if s.get("status") == "failed"), None)
    state, summary = overall(run)
    return {
        "pipeline": pipeline,
        "run": {
            "id": run.run_id,
            "status": run.status,
            "commit": run.commit,
            "short": run.commit[:12],
            "branch": run.branch,
            "url": run_url(service_url, run.run_id),
            "error": run.error,
            "superseded_by": run.superseded_by,
            "mlflow_run_id": result.get("mlflow_run_id"),
            "duration_s": result.get("duration_s"),
            "state": state.value,
            "summary": summary,
        },
        "stages": stages,
        "executed": [s for s in stages if s.get("attempts") and not s.get("cached")],
        "cached": [s for s in stages if s.get("cached")],
        "gpu_seconds": sum(float(s.get("gpu_seconds") or 0) for s in stages),
        "energy_j": sum(float(s.get("energy_j") or 0) for s in stages),
        "metrics": rows,
        "baseline": baseline,
        "gate": gate_of(run),
        "failed": failed,
        "superseded": [{"id": r.run_id, "short": r.commit[:12]} for r in superseded],
    }
