"""One MLflow run per pipeline run: params, metrics, tags, model and logs.

Everything goes through an explicit ``MlflowClient(tracking_uri)``, never
``mlflow.set_tracking_uri``: global state would leak between the runs of
different repositories a worker handles. ``mlflow`` is imported inside
methods only (see the package docstring).

Params, metrics and tags are sent with ``log_batch`` (one SQL transaction
or one HTTP request per batch instead of one per value: a per-value
``log_metric`` costs 17–35 ms on SQLite), chunked to MLflow's batch limits.
The helpers that turn a ``RunResult`` into keys and values are pure, so
they can be read and tested without MLflow.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from trainops.errors import TrackingError
from trainops.models import Plan, RunResult, RunStatus, StageStatus

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

__all__ = ["MlflowTracker", "batches", "flatten_params", "mlflow_key", "run_metrics", "run_tags"]

log = logging.getLogger(__name__)

# MLflow's own limits (mlflow.utils.validation); values beyond them are rejected
# or truncated with a log line, so we cut them ourselves, predictably.
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
# A REST log_batch request may be at most 1 MB of JSON; keep a margin for the framing.
MAX_BATCH_BYTES = 900_000

TAG_RUN_ID = "trainops.run_id"

_MLFLOW_STATUS = {
    RunStatus.SUCCEEDED: "FINISHED",
    RunStatus.FAILED: "FAILED",
    RunStatus.ERRORED: "FAILED",
    RunStatus.CANCELLED: "KILLED",
}

# MLflow accepts \w (Unicode), "_-. /" and, except on Windows, ":". We keep the
# portable ASCII subset so a key means the same on every tracking server.
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")
_BAD_FILE_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")


def mlflow_key(name: str) -> str:
    """``name`` made acceptable as an MLflow param, metric or tag key.

    Other characters become ``_``. MLflow also refuses keys that would name a
    different file once normalised as a path (``a//b``, ``./a``, ``a/..``,
    ``/a``), because file stores keep one file per key; such segments are
    dropped or replaced so ``eval/acc`` stays ``eval/acc``.
    """
    cleaned = _BAD_KEY_CHARS.sub("_", name)
    parts = ["__" if p == ".." else p for p in cleaned.split("/") if p not in ("", ".")]
    return "/".join(parts)[:MAX_KEY_LENGTH] or "_"


def flatten_params(params: Mapping[str, object], prefix: str = "") -> dict[str, str]:
    """Nested params as MLflow params: ``{"train": {"epochs": 3}}`` → ``{"train.epochs": "3"}``.

    Lists become JSON (``[64, 32]``) so they read back unambiguously; values
    are cut to MLflow's 6000 characters.
    """
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
            continue
        if isinstance(value, list | tuple):
            text = json.dumps(list(value), default=str)
        else:
            text = str(value)
        flat[mlflow_key(name)] = text[:MAX_PARAM_VALUE_LENGTH]
    return flat


def run_tags(plan: Plan, result: RunResult, *, branch: str | None) -> dict[str, str]:
    """Tags that let a run be found and explained from MLflow alone."""
    tags = {
        TAG_RUN_ID: result.run_id,
        "trainops.pipeline": result.pipeline,
        "trainops.repo": result.repo,
        "trainops.commit": result.commit,
        "mlflow.source.git.commit": result.commit,
        "trainops.status": result.status.value,
    }
    if result.ref is not None:
        tags["trainops.ref"] = result.ref
    if branch is not None:
        tags["trainops.branch"] = branch
    if result.error:
        tags["trainops.error"] = result.error
    for stage in result.stages:
        tags[mlflow_key(f"trainops.stage.{stage.name}.status")] = stage.status.value
        tags[mlflow_key(f"trainops.stage.{stage.name}.cached")] = str(stage.cached).lower()
    for planned in plan.stages:
        tags[mlflow_key(f"trainops.cache_key.{planned.name}")] = planned.cache_key
    return {k: v[:MAX_TAG_VALUE_LENGTH] for k, v in tags.items()}


def run_metrics(result: RunResult) -> dict[str, float]:
    """The pipeline's metrics plus per-stage time and GPU telemetry.

    Skipped stages ran nothing and get no telemetry; a cache hit does, since
    its zero GPU seconds are the point of the cache.
    """
    metrics: dict[str, float] = {}
    for name, value in result.metrics.items():
        # metrics.json may hold strings or booleans; MLflow metrics are numbers.
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics[mlflow_key(name)] = float(value)
    for stage in result.stages:
        if stage.status is StageStatus.SKIPPED:
            continue
        telemetry: dict[str, float | int | None] = {
            "duration_s": stage.duration_s,
            "gpu_seconds": stage.gpu_seconds,
            "energy_j": stage.energy_j,
            "gpu_util_mean": stage.gpu.util_mean if stage.gpu else None,
            "gpu_mem_peak_bytes": stage.gpu.mem_peak_bytes if stage.gpu else None,
        }
        for what, number in telemetry.items():
            if number is not None:
                metrics[mlflow_key(f"stage.{stage.name}.{what}")] = float(number)
    return metrics


Batch = tuple[list[tuple[str, float]], list[tuple[str, str]], list[tuple[str, str]]]


def batches(
    metrics: Mapping[str, float], params: Mapping[str, str], tags: Mapping[str, str]
) -> Iterator[Batch]:
    """Split metrics, params and tags into ``log_batch`` calls MLflow accepts.

    Limits per call: 1000 metrics, 100 params, 100 tags, and about 1 MB of
    request; usually everything fits in one call.
    """
    current: Batch = ([], [], [])
    size = 0
    items: list[tuple[int, str, Any]] = [
        *((0, k, v) for k, v in metrics.items()),
        *((1, k, v) for k, v in params.items()),
        *((2, k, v) for k, v in tags.items()),
    ]
    for kind, key, value in items:
        item_size = len(key.encode()) + len(str(value).encode()) + 64
        limit = MAX_METRICS_PER_BATCH if kind == 0 else MAX_PARAMS_TAGS_PER_BATCH
        if len(current[kind]) >= limit or size + item_size > MAX_BATCH_BYTES:
            yield current
            current, size = ([], [], []), 0
        current[kind].append((key, value))
        size += item_size
    if any(current):
        yield current


def _redact(uri: str) -> str:
    """``uri`` without a password, for error messages (tracking URIs may carry one)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class MlflowTracker:
    """Records pipeline runs in one MLflow experiment.

    ``artifact_root`` (a URI such as ``file:///…/mlartifacts``) matters when
    the tracking store is a database we own: the experiment is created with
    its artifacts under ``<artifact_root>/<experiment>``. Leave it None for an
    MLflow server, which decides artifact locations itself; with a database
    URI and no root, MLflow would write artifacts to ``./mlruns`` wherever
    the process happens to run.
    """

    def __init__(self, tracking_uri: str, *, artifact_root: str | None, experiment: str) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self.experiment = experiment
        self._client_: MlflowClient | None = None
        self._experiment_id: str | None = None

    def __repr__(self) -> str:
        return f"MlflowTracker({_redact(self.tracking_uri)!r}, experiment={self.experiment!r})"

    # -- public ----------------------------------------------------------------

    def log_run(
        self,
        plan: Plan,
        result: RunResult,
        *,
        params: Mapping[str, object],
        branch: str | None,
        model_path: Path | None,
    ) -> str:
        """Record ``result`` as one finished MLflow run; returns the MLflow run id.

        Idempotent per trainops run id: if a completed MLflow run already
        carries it (a worker retrying after a crash), that run's id is
        returned and nothing is logged again. A leftover of an interrupted
        attempt, still RUNNING, is deleted and the run logged afresh.
        """
        from mlflow.exceptions import MlflowException

        doing = f"logging run {result.run_id} to MLflow at {_redact(self.tracking_uri)}"
        mlflow_run_id: str | None = None
        try:
            client = self._client()
            experiment_id = self._ensure_experiment(client)
            existing = self._search(client, experiment_id, result.run_id)
            if existing is not None:
                if existing.info.status != "RUNNING":
                    return str(existing.info.run_id)
                log.info(
                    "deleting interrupted MLflow run %s",
                    existing.info.run_id,
                    extra={"run_id": result.run_id},
                )
                client.delete_run(existing.info.run_id)
            tags = run_tags(plan, result, branch=branch)
            identity = {k: tags.pop(k) for k in (TAG_RUN_ID, "trainops.pipeline")}
            run = client.create_run(
                experiment_id,
                start_time=_ms(result.started_at),
                tags=identity,
                run_name=result.run_id,
            )
            mlflow_run_id = str(run.info.run_id)
            self._log_values(client, mlflow_run_id, result, params=params, tags=tags)
            self._log_files(client, mlflow_run_id, result, model_path)
            client.set_terminated(
                mlflow_run_id,
                status=_MLFLOW_STATUS[result.status],
                end_time=_ms(result.finished_at),
            )
        except (MlflowException, OSError) as exc:
            if mlflow_run_id is not None:
                self._discard(mlflow_run_id)
            raise TrackingError(f"{doing}: {exc}") from exc
        return mlflow_run_id

    def find_run(self, trainops_run_id: str) -> str | None:
        """The id of the live MLflow run recorded for a trainops run, if any."""
        from mlflow.exceptions import MlflowException

        try:
            client = self._client()
            experiment_id = self._find_experiment(client)
            if experiment_id is None:
                return None
            run = self._search(client, experiment_id, trainops_run_id)
        except MlflowException as exc:
            raise TrackingError(
                f"looking up run {trainops_run_id} in MLflow at {_redact(self.tracking_uri)}: {exc}"
            ) from exc
        return None if run is None else str(run.info.run_id)

    # -- internals ---------------------------------------------------------------

    def _client(self) -> MlflowClient:
        if self._client_ is None:
            from mlflow.tracking import MlflowClient

            # Its notes on creating and migrating the SQLite schema are noise to
            # someone watching a training run.
            logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
            self._client_ = MlflowClient(self.tracking_uri)
        return self._client_

    def _find_experiment(self, client: MlflowClient) -> str | None:
        if self._experiment_id is not None:
            return self._experiment_id
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            return None
        if experiment.lifecycle_stage == "deleted":
            # As mlflow.set_experiment does: logging into a deleted experiment
            # would hide runs, and silently restoring it would undo a decision.
            raise TrackingError(
                f"MLflow experiment {self.experiment!r} at {_redact(self.tracking_uri)} "
                "is deleted; restore it or delete it permanently (mlflow gc)"
            )
        self._experiment_id = str(experiment.experiment_id)
        return self._experiment_id

    def _ensure_experiment(self, client: MlflowClient) -> str:
        from mlflow.exceptions import MlflowException

        found = self._find_experiment(client)
        if found is not None:
            return found
        location = None
        if self.artifact_root is not None:
            folder = _BAD_FILE_CHARS.sub("_", self.experiment)
            location = f"{self.artifact_root.rstrip('/')}/{folder}"
        try:
            self._experiment_id = client.create_experiment(
                self.experiment, artifact_location=location
            )
        except MlflowException:
            # Another worker may have created it between our lookup and create.
            found = self._find_experiment(client)
            if found is None:
                raise
        assert self._experiment_id is not None
        return self._experiment_id

    @staticmethod
    def _search(client: MlflowClient, experiment_id: str, trainops_run_id: str) -> Run | None:
        quote = "'" if "'" not in trainops_run_id else '"'
        if quote in trainops_run_id:
            return None  # no filter string can say it, so no run was logged under it by us
        runs = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_RUN_ID}` = {quote}{trainops_run_id}{quote}",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return runs[0] if runs else None

    @staticmethod
    def _log_values(
        client: MlflowClient,
        mlflow_run_id: str,
        result: RunResult,
        *,
        params: Mapping[str, object],
        tags: Mapping[str, str],
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        stamp = _ms(result.finished_at)
        metrics = run_metrics(result)
        for m, p, t in batches(metrics, flatten_params(params), tags):
            client.log_batch(
                mlflow_run_id,
                metrics=[Metric(k, v, stamp, 0) for k, v in m],
                params=[Param(k, v) for k, v in p],
                tags=[RunTag(k, v) for k, v in t],
            )

    @staticmethod
    def _log_files(
        client: MlflowClient, mlflow_run_id: str, result: RunResult, model_path: Path | None
    ) -> None:
        if model_path is not None:
            if model_path.is_dir():
                client.log_artifacts(mlflow_run_id, str(model_path), "model")
            elif model_path.is_file():
                client.log_artifact(mlflow_run_id, str(model_path), "model")
            else:
                log.warning(
                    "model output %s does not exist; not logged to MLflow",
                    model_path,
                    extra={"run_id": result.run_id},
                )
        logs = [
            (s.name, Path(s.log_path))
            for s in result.stages
            if s.log_path and Path(s.log_path).is_file()
        ]
        if not logs:
            return
        # Copied under the stage's name so they read logs/<stage>.log whatever
        # the runner called the files.
        with tempfile.TemporaryDirectory(prefix="trainops-logs-") as tmp:
            for name, path in logs:
                shutil.copyfile(path, Path(tmp) / f"{_BAD_FILE_CHARS.sub('_', name)}.log")
            client.log_artifacts(mlflow_run_id, tmp, "logs")

    def _discard(self, mlflow_run_id: str) -> None:
        """Delete a half-logged run so nobody mistakes it for a record (best effort)."""
        from mlflow.exceptions import MlflowException

        try:
            self._client().delete_run(mlflow_run_id)
        except MlflowException:
            log.warning("could not delete half-logged MLflow run %s", mlflow_run_id)
