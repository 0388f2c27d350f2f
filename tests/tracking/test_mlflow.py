"""MlflowTracker against real MLflow: SQLite store and file artifacts in tmp dirs.

Everything is read back through a plain ``MlflowClient``, the way a person
or the MLflow UI would see it. One database serves the module because
MLflow's first connection to a fresh SQLite file runs its migrations
(about 1.5 s); each test uses its own experiment instead.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from trainops.errors import TrackingError
from trainops.models import (
    GpuUsage,
    Plan,
    PlannedStage,
    Resources,
    RunResult,
    RunStatus,
    StageResult,
    StageStatus,
)
from trainops.tracking import MlflowTracker
from trainops.tracking.mlflow import batches, flatten_params, mlflow_key, run_metrics

COMMIT = "0123456789abcdef0123456789abcdef01234567"
T0 = 1_700_000_000.0


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    # Without an artifact location MLflow writes to ./mlruns; keep that out of the repo.
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(tracking URI, artifact root) shared by the module; migrations run once here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        root = tmp_path_factory.mktemp("mlflow")
        uri = f"sqlite:///{root / 'mlflow.db'}"
        MlflowClient(uri).search_experiments()
        yield uri, (root / "mlartifacts").as_uri()


@pytest.fixture
def tracker(store: tuple[str, str], request: pytest.FixtureRequest) -> MlflowTracker:
    uri, artifacts = store
    return MlflowTracker(uri, artifact_root=artifacts, experiment=f"exp-{request.node.name}")


@pytest.fixture
def client(store: tuple[str, str]) -> MlflowClient:
    return MlflowClient(store[0])


def _stage(name: str, needs: tuple[str, ...] = ()) -> PlannedStage:
    return PlannedStage(
        name=name,
        cmd=f"python src/{name}.py",
        wdir=".",
        needs=needs,
        deps=(),
        outs=(),
        metrics=(),
        params={},
        env={},
        gpus=0,
        gpu_type=None,
        resources=Resources(),
        timeout_s=None,
        retries=0,
        cache=True,
        cache_key=f"key-{name}",
    )


PLAN = Plan(
    pipeline="digits",
    repo="acme/digits",
    commit=COMMIT,
    ref="refs/heads/main",
    image=None,
    data_pull=("data/raw",),
    stages=(_stage("prepare"), _stage("train", ("prepare",)), _stage("evaluate", ("train",))),
    spec_digest="d" * 64,
)


def _result(tmp_path: Path, status: RunStatus = RunStatus.SUCCEEDED, **kw: Any) -> RunResult:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    (logs / "train-attempt1.log").write_text("epoch 1\nepoch 2\n")
    stages = (
        StageResult("prepare", StageStatus.SUCCEEDED, cached=True, cached_from="run-0"),
        StageResult(
            "train",
            StageStatus.SUCCEEDED,
            exit_code=0,
            duration_s=12.5,
            attempts=1,
            gpu=GpuUsage(("GPU-1",), 12.0, util_mean=87.5, mem_peak_bytes=2**30, energy_j=900.0),
            log_path=str(logs / "train-attempt1.log"),
        ),
        StageResult(
            "evaluate",
            StageStatus.SUCCEEDED,
            duration_s=1.25,
            attempts=1,
            log_path=str(logs / "missing.log"),
        ),
    )
    fields: dict[str, Any] = {
        "run_id": "run-1",
        "pipeline": "digits",
        "repo": "acme/digits",
        "commit": COMMIT,
        "ref": "refs/heads/main",
        "status": status,
        "stages": stages,
        "metrics": {"accuracy": 0.95, "f1_macro": 0.94, "eval:loss": 0.2},
        "started_at": T0,
        "finished_at": T0 + 20.0,
    }
    fields.update(kw)
    return RunResult(**fields)


def _model_dir(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "model.joblib").write_bytes(b"weights")
    (model / "sub" / "meta.json").write_text("{}")
    return model


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    found: list[str] = []
    for info in client.list_artifacts(run_id, path):
        found += _artifacts(client, run_id, info.path) if info.is_dir else [info.path]
    return sorted(found)


PARAMS = {"prepare": {"test_size": 0.25, "seed": 42}, "train": {"C": 1.0, "layers": [64, 32]}}


def test_log_run_records_everything(
    tracker: MlflowTracker, client: MlflowClient, tmp_path: Path
) -> None:
    result = _result(tmp_path)
    run_id = tracker.log_run(
        PLAN, result, params=PARAMS, branch="main", model_path=_model_dir(tmp_path)
    )

    run = client.get_run(run_id)
    assert run.info.run_name == "run-1"
    assert run.info.status == "FINISHED"
    assert (run.info.start_time, run.info.end_time) == (T0 * 1000, (T0 + 20) * 1000)
    assert run.data.params == {
        "prepare.test_size": "0.25",
        "prepare.seed": "42",
        "train.C": "1.0",
        "train.layers": "[64, 32]",
    }
    assert run.data.metrics == {
        "accuracy": 0.95,
        "f1_macro": 0.94,
        "eval_loss": 0.2,
        "stage.prepare.duration_s": 0.0,
        "stage.prepare.gpu_seconds": 0.0,
        "stage.train.duration_s": 12.5,
        "stage.train.gpu_seconds": 12.0,
        "stage.train.energy_j": 900.0,
        "stage.train.gpu_util_mean": 87.5,
        "stage.train.gpu_mem_peak_bytes": float(2**30),
        "stage.evaluate.duration_s": 1.25,
        "stage.evaluate.gpu_seconds": 0.0,
    }
    tags = run.data.tags
    assert {k: v for k, v in tags.items() if k.startswith("trainops.")} == {
        "trainops.run_id": "run-1",
        "trainops.pipeline": "digits",
        "trainops.repo": "acme/digits",
        "trainops.commit": COMMIT,
        "trainops.ref": "refs/heads/main",
        "trainops.branch": "main",
        "trainops.status": "succeeded",
        "trainops.stage.prepare.status": "succeeded",
        "trainops.stage.prepare.cached": "true",
        "trainops.stage.train.status": "succeeded",
        "trainops.stage.train.cached": "false",
        "trainops.stage.evaluate.status": "succeeded",
        "trainops.stage.evaluate.cached": "false",
        "trainops.cache_key.prepare": "key-prepare",
        "trainops.cache_key.train": "key-train",
        "trainops.cache_key.evaluate": "key-evaluate",
    }
    assert tags["mlflow.source.git.commit"] == COMMIT
    assert _artifacts(client, run_id) == [
        "logs/train.log",
        "model/model.joblib",
        "model/sub/meta.json",
    ]
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == tracker.experiment
    assert experiment.artifact_location == f"{tracker.artifact_root}/{tracker.experiment}"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (RunStatus.FAILED, "FAILED"),
        (RunStatus.ERRORED, "FAILED"),
        (RunStatus.CANCELLED, "KILLED"),
    ],
)
def test_status_and_single_file_model(
    tracker: MlflowTracker,
    client: MlflowClient,
    tmp_path: Path,
    status: RunStatus,
    expected: str,
) -> None:
    model = tmp_path / "model.pkl"
    model.write_bytes(b"pickle")
    result = _result(tmp_path, status, error="boom" if status is RunStatus.ERRORED else None)
    run_id = tracker.log_run(PLAN, result, params={}, branch=None, model_path=model)

    run = client.get_run(run_id)
    assert run.info.status == expected
    assert run.data.tags["trainops.status"] == status.value
    assert "trainops.branch" not in run.data.tags
    assert ("trainops.error" in run.data.tags) is (status is RunStatus.ERRORED)
    assert "model/model.pkl" in _artifacts(client, run_id)


def test_missing_model_is_not_an_error(
    tracker: MlflowTracker, client: MlflowClient, tmp_path: Path
) -> None:
    result = _result(tmp_path, RunStatus.FAILED)
    run_id = tracker.log_run(
        PLAN, result, params={}, branch=None, model_path=tmp_path / "nothing-here"
    )
    assert _artifacts(client, run_id) == ["logs/train.log"]


def test_find_run_and_idempotent_logging(tracker: MlflowTracker, tmp_path: Path) -> None:
    assert tracker.find_run("run-1") is None  # not even the experiment exists yet
    first = tracker.log_run(PLAN, _result(tmp_path), params={}, branch=None, model_path=None)
    assert tracker.find_run("run-1") == first
    assert tracker.find_run("run-2") is None
    assert tracker.find_run("it's") is None

    again = tracker.log_run(PLAN, _result(tmp_path), params={}, branch=None, model_path=None)
    assert again == first


def test_interrupted_run_is_replaced(
    tracker: MlflowTracker, client: MlflowClient, tmp_path: Path
) -> None:
    experiment_id = client.create_experiment(
        tracker.experiment, artifact_location=(tmp_path / "elsewhere").as_uri()
    )
    stale = client.create_run(experiment_id, tags={"trainops.run_id": "run-1"}).info.run_id

    run_id = tracker.log_run(PLAN, _result(tmp_path), params={}, branch=None, model_path=None)

    assert run_id != stale
    assert client.get_run(stale).info.lifecycle_stage == "deleted"
    assert tracker.find_run("run-1") == run_id


def test_large_runs_are_split_into_batches(
    tracker: MlflowTracker, client: MlflowClient, tmp_path: Path
) -> None:
    params = {f"p{i}": i for i in range(250)} | {"long": "x" * 7000}
    metrics = {f"m{i}": float(i) for i in range(1200)}
    result = _result(tmp_path, metrics=metrics)

    run_id = tracker.log_run(PLAN, result, params=params, branch=None, model_path=None)

    data = client.get_run(run_id).data
    assert len(data.params) == 251
    assert len(data.params["long"]) == 6000
    assert {k: v for k, v in data.metrics.items() if not k.startswith("stage.")} == metrics


def test_experiment_created_concurrently_is_reused(
    tracker: MlflowTracker,
    client: MlflowClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another worker creates the experiment between our lookup and our create."""
    theirs = client.create_experiment(
        tracker.experiment, artifact_location=(tmp_path / "theirs").as_uri()
    )
    own = tracker._client()
    real = own.get_experiment_by_name
    calls = iter([None])
    monkeypatch.setattr(own, "get_experiment_by_name", lambda n: next(calls, real(n)))

    run_id = tracker.log_run(PLAN, _result(tmp_path), params={}, branch=None, model_path=None)

    assert client.get_run(run_id).info.experiment_id == theirs


def test_deleted_experiment_is_refused(
    tracker: MlflowTracker, client: MlflowClient, tmp_path: Path
) -> None:
    client.delete_experiment(client.create_experiment(tracker.experiment))
    with pytest.raises(TrackingError, match="is deleted"):
        tracker.log_run(PLAN, _result(tmp_path), params={}, branch=None, model_path=None)


def test_mlflow_errors_become_tracking_errors(
    store: tuple[str, str], client: MlflowClient, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    tracker = MlflowTracker(store[0], artifact_root=blocker.as_uri(), experiment="exp-broken")

    with pytest.raises(TrackingError, match=r"logging run run-1 to MLflow at sqlite:///") as info:
        tracker.log_run(
            PLAN, _result(tmp_path), params={}, branch=None, model_path=_model_dir(tmp_path)
        )

    assert info.value.__cause__ is not None
    assert tracker.find_run("run-1") is None  # the half-logged run was deleted


def test_password_in_uri_is_not_in_errors() -> None:
    tracker = MlflowTracker("http://bob:hunter2@127.0.0.1:9/", artifact_root=None, experiment="x")
    assert "hunter2" not in repr(tracker)


def test_importing_tracking_does_not_import_mlflow() -> None:
    code = "import sys, trainops.tracking; sys.exit('mlflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# -- pure helpers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("train.epochs", "train.epochs"),
        ("eval/acc top-1", "eval/acc top-1"),
        ("loss@val:1", "loss_val_1"),
        ("a//b/./c/", "a/b/c"),
        ("/abs/../x", "abs/__/x"),
        ("é", "_"),
        ("", "_"),
        ("k" * 300, "k" * 250),
    ],
)
def test_mlflow_key(name: str, key: str) -> None:
    assert mlflow_key(name) == key


def test_flatten_params() -> None:
    flat = flatten_params({"a": {"b": {"c": True}}, "l": (1, "x"), "n": None, "s": "y" * 7000})
    assert flat == {"a.b.c": "True", "l": '[1, "x"]', "n": "None", "s": "y" * 6000}


def test_batches_respect_mlflow_limits() -> None:
    metrics = {f"m{i}": 1.0 for i in range(2500)}
    params = {f"p{i}": "v" for i in range(150)}
    tags = {f"t{i}": "x" * 8000 for i in range(150)}
    got = list(batches(metrics, params, tags))
    assert [len(m) for m, _, _ in got] and all(
        len(m) <= 1000 and len(p) <= 100 and len(t) <= 100 for m, p, t in got
    )
    assert all(sum(len(k) + len(str(v)) for part in b for k, v in part) < 1_000_000 for b in got)
    assert sum(len(m) for m, _, _ in got) == 2500
    assert sum(len(t) for _, _, t in got) == 150
    assert list(batches({}, {}, {})) == []


def test_run_metrics_skip_skipped_stages_and_non_numbers(tmp_path: Path) -> None:
    result = _result(tmp_path, metrics={"acc": 0.9, "ok": True, "name": "x"})
    skipped = replace(result, stages=(StageResult("train", StageStatus.SKIPPED),))
    assert run_metrics(skipped) == {"acc": 0.9}
