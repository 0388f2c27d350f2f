"""The JSON API: events, runs (stages, metrics, queue position, log tails), cancel.

Reads are open to whoever reaches the service (bind it to a private
address); writes need ``service.api_token`` as a bearer token when one is
configured. Blocking store calls run in FastAPI's thread pool (plain ``def``).
"""

from __future__ import annotations

import hmac
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request

from trainops.config import Settings
from trainops.store import EventRecord, RunRecord, Store

router = APIRouter(prefix="/api", tags=["api"])

TAIL_LINES = 20


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


StoreDep = Annotated[Store, Depends(_store)]
SettingsDep = Annotated[Settings, Depends(_settings)]


def _authorized(
    settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    token = settings.service.api_token
    if not token:
        return
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.reveal().encode()):
        raise HTTPException(401, "this needs `Authorization: Bearer <service.api_token>`")


@router.get("/events")
def list_events(
    store: StoreDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[dict[str, Any]]:
    """Deliveries, newest first, with what became of them."""
    return [_event_json(e) for e in store.list_events(limit)]


@router.get("/runs")
def list_runs(
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    repo: str | None = None,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """Runs, newest first; queued ones say their place in the queue."""
    return [
        _run_json(store, r, detail=False) for r in store.list_runs(limit, repo=repo, status=status)
    ]


@router.get("/runs/{run_id}")
def get_run(run_id: str, store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    """One run: its stages (live while it runs), metrics, result and log tails."""
    run = store.get_run(run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id!r}")
    data = _run_json(store, run, detail=True)
    data["stages"] = _stages(run, settings.runs_dir / run_id / "logs")
    return data


@router.post("/runs/{run_id}/cancel", dependencies=[Depends(_authorized)])
def cancel_run(run_id: str, request: Request) -> dict[str, Any]:
    """Stop a run: a queued one at once, a running one's stages within a second."""
    record = request.app.state.worker.cancel(run_id)
    if record is None:
        raise HTTPException(404, f"no run {run_id!r}")
    return _run_json(request.app.state.store, record, detail=False)


def _time(value: datetime | float | None) -> str | float | None:
    return value.isoformat() if isinstance(value, datetime) else value


def _event_json(e: EventRecord) -> dict[str, Any]:
    return {
        "id": e.id,
        "forge": e.forge,
        "delivery_id": e.delivery_id,
        "kind": e.kind,
        "repo": e.repo,
        "received_at": _time(e.received_at),
        "status": e.status,
        "attempts": e.attempts,
        "note": e.note,
        "ref": e.event.ref,
        "commit": e.event.after,
    }


def _run_json(store: Store, r: RunRecord, *, detail: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": r.run_id,
        "status": r.status,
        "repo": r.repo,
        "commit": r.commit,
        "ref": r.ref,
        "branch": r.branch,
        "merge_request": r.mr_number,
        "trigger": r.trigger,
        "priority": r.priority,
        "queued_at": _time(r.queued_at),
        "started_at": _time(r.started_at),
        "finished_at": _time(r.finished_at),
        "attempts": r.attempts,
        "superseded_by": r.superseded_by or None,
        "cancel_requested": r.cancel_requested,
        "queue_position": store.queue_position(r.run_id) if r.status == "queued" else None,
        "error": r.error,
        "metrics": (r.result or {}).get("metrics", {}),
    }
    if detail:
        data["event_id"] = r.event_id
        data["run_key"] = r.run_key
        data["mlflow_run_id"] = (r.result or {}).get("mlflow_run_id")
        data["message"] = None if r.finished else (r.progress or {}).get("message")
        data["gate"] = (r.result or {}).get("gate")
        data["promotion"] = (r.result or {}).get("promotion")
    return data


def _stages(run: RunRecord, log_dir: Path) -> list[dict[str, Any]]:
    """The run's stages (final or live) with the tails of their logs."""
    stages = run.stage_states()
    for stage in stages:
        if not stage.get("log_tail"):
            stage["log_tail"] = _tail(log_dir / f"{stage['name']}.log")
    return stages


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 64 * 1024))
            lines = deque(f.read().decode(errors="replace").splitlines(), maxlen=TAIL_LINES)
    except OSError:
        return ""
    return "\n".join(lines)
