"""The baseline a run is compared with: the last successful run on its target branch.

Looked up in the store, never re-run. For a merge request the target branch
is the one it would merge into; for a push, the branch itself (its previous
successful run).
"""

from __future__ import annotations

from dataclasses import dataclass

from trainops.store import RUN_SUCCEEDED, RunRecord, Store


@dataclass(frozen=True)
class Baseline:
    run_id: str
    commit: str
    branch: str
    metrics: dict[str, float]


def target_branch(store: Store, run: RunRecord) -> str | None:
    if run.mr_number is not None and run.event_id is not None:
        event = store.get_event(run.event_id)
        if event is not None and event.event.merge_request is not None:
            return event.event.merge_request.target_branch
    return run.branch


def find_baseline(store: Store, run: RunRecord, *, scan: int = 200) -> Baseline | None:
    branch = target_branch(store, run)
    if branch is None:
        return None
    for other in store.list_runs(scan, repo=run.repo, status=RUN_SUCCEEDED):
        if (
            other.run_id != run.run_id
            and other.forge == run.forge
            and other.trigger == "push"
            and other.branch == branch
            and other.queued_at <= run.queued_at
            and other.result
        ):
            metrics = {k: float(v) for k, v in (other.result.get("metrics") or {}).items()}
            return Baseline(other.run_id, other.commit, branch, metrics)
    return None
