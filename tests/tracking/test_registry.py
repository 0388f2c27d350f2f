"""ModelRegistry against real MLflow: SQLite registry and file artifacts under tmp dirs.

Runs are logged the way ``MlflowTracker`` logs them (model files as
artifacts under ``model/``) through a plain ``MlflowClient``, and every
result is read back through one too. One database serves the module, as in
``test_mlflow.py``, since MLflow migrates a fresh SQLite file on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pytest
from mlflow.tracking import MlflowClient

from trainops.errors import TrackingError
from trainops.tracking.registry import ModelRegistry, ModelVersionRef

COMMIT = "7222500"


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(tmp_path)  # nothing may land in ./mlruns of the repo


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(tracking URI, artifact root dir) shared by the module; migrations run once here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        root = tmp_path_factory.mktemp("mlflow")
        uri = f"sqlite:///{root / 'mlflow.db'}"
        MlflowClient(uri).search_experiments()
        yield uri, root / "mlartifacts"


@pytest.fixture
def client(store: tuple[str, Path]) -> MlflowClient:
    return MlflowClient(store[0])


@pytest.fixture
def registry(store: tuple[str, Path]) -> ModelRegistry:
    return ModelRegistry(store[0])


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A registered model name of the test's own."""
    return f"digits-{request.node.name}".replace("[", "-").replace("]", "")


LogRun = Callable[[str], str]


@pytest.fixture
def log_run(client: MlflowClient, store: tuple[str, Path], tmp_path: Path, name: str) -> LogRun:
    """``log_run("run-1")`` → the id of a finished MLflow run with ``model/`` artifacts."""
    experiment_id = client.create_experiment(
        f"exp-{name}", artifact_location=(store[1] / name).as_uri()
    )

    def log(trainops_run_id: str) -> str:
        model = tmp_path / trainops_run_id / "model"
        model.mkdir(parents=True)
        (model / "model.joblib").write_bytes(f"weights of {trainops_run_id}".encode())
        (model / "MLmodel").write_text("flavors: {}\n")
        run = client.create_run(experiment_id, tags={"trainops.run_id": trainops_run_id})
        run_id = str(run.info.run_id)
        client.log_artifacts(run_id, str(model), "model")
        client.set_terminated(run_id)
        return run_id

    return log


def _tags(trainops_run_id: str) -> dict[str, str]:
    return {
        "trainops.run_id": trainops_run_id,
        "trainops.repo": "acme/digits",
        "trainops.commit": COMMIT,
        "trainops.data_hash": "md5:0123abcd",
    }


def _local_path(uri: str) -> Path:
    parts = urlsplit(uri)
    assert parts.scheme == "file", uri
    return Path(url2pathname(parts.path))


def test_register_is_idempotent_and_concrete(
    registry: ModelRegistry, client: MlflowClient, log_run: LogRun, name: str
) -> None:
    run_id = log_run("run-1")

    first = registry.register(name, run_id=run_id, tags=_tags("run-1"))
    again = registry.register(name, run_id=run_id, tags=_tags("run-1"))

    assert first == again
    assert first.version == "1" and first.name == name and first.run_id == run_id
    assert [str(v.version) for v in client.search_model_versions(f"name = '{name}'")] == ["1"]
    # a concrete URI KServe can read, pointing at the logged files
    assert first.download_uri.startswith("file://")
    assert not first.download_uri.startswith(("models:", "runs:"))
    assert (_local_path(first.download_uri) / "model.joblib").read_bytes() == b"weights of run-1"
    assert first.source == first.download_uri
    # tags read back exactly, as strings (a short sha stays a string)
    assert first.tags == _tags("run-1")
    assert client.get_model_version(name, "1").tags == _tags("run-1")


def test_idempotent_by_mlflow_run_without_the_tag(
    registry: ModelRegistry, client: MlflowClient, log_run: LogRun, name: str
) -> None:
    run_id = log_run("run-1")
    first = registry.register(name, run_id=run_id, tags={"trainops.commit": COMMIT})
    again = registry.register(name, run_id=run_id, tags={"trainops.commit": COMMIT})
    assert first.version == again.version == "1"
    assert len(client.search_model_versions(f"name = '{name}'")) == 1


def test_aliases_move_between_versions(registry: ModelRegistry, log_run: LogRun, name: str) -> None:
    assert registry.alias_version(name, "staging") is None  # no such model yet
    v1 = registry.register(name, run_id=log_run("run-1"), tags=_tags("run-1"))
    assert registry.alias_version(name, "staging") is None  # no such alias yet
    v2 = registry.register(name, run_id=log_run("run-2"), tags=_tags("run-2"))
    assert (v1.version, v2.version) == ("1", "2")
    assert v1.download_uri != v2.download_uri

    registry.set_alias(name, "staging", v1.version)
    assert registry.alias_version(name, "staging") == v1
    registry.set_alias(name, "staging", v2.version)
    registry.set_alias(name, "prod", v1.version)

    staging = registry.alias_version(name, "staging")
    assert staging == v2 and staging.tags["trainops.run_id"] == "run-2"
    assert registry.alias_version(name, "prod") == v1
    assert registry.get(name, "2") == v2


def test_concurrent_duplicate_is_removed(
    registry: ModelRegistry, client: MlflowClient, log_run: LogRun, name: str
) -> None:
    """Another worker registered the same run first, between our lookup and our create."""
    run_id = log_run("run-1")
    first = registry.register(name, run_id=run_id, tags=_tags("run-1"))
    real = ModelRegistry._find
    calls: list[object] = []

    def racing_find(*args: Any) -> Any:
        calls.append(args)
        return None if len(calls) == 1 else real(*args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ModelRegistry, "_find", staticmethod(racing_find))
        again = registry.register(name, run_id=run_id, tags=_tags("run-1"))

    assert len(calls) == 2  # it created version 2, found version 1, and deleted its own
    assert again == first
    assert [str(v.version) for v in client.search_model_versions(f"name = '{name}'")] == ["1"]


def test_runs_uri_versions_resolve_to_the_artifacts(
    registry: ModelRegistry, client: MlflowClient, log_run: LogRun, name: str
) -> None:
    """A version registered elsewhere with a ``runs:/`` source still yields a concrete URI."""
    run_id = log_run("run-1")
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run_id}/model", run_id)
    assert client.get_model_version_download_uri(name, str(version.version)).startswith("runs:/")

    ref = registry.get(name, str(version.version))

    assert ref.source == f"runs:/{run_id}/model"
    assert (_local_path(ref.download_uri) / "model.joblib").is_file()


def test_errors_become_tracking_errors(
    registry: ModelRegistry, client: MlflowClient, log_run: LogRun, name: str
) -> None:
    with pytest.raises(TrackingError, match=rf"reading version 9 of model '{name}'") as info:
        registry.get(name, "9")
    assert info.value.__cause__ is not None

    run_id = log_run("run-1")
    with pytest.raises(TrackingError, match="no artifacts under 'weights'"):
        registry.register(name, run_id=run_id, artifact_path="weights", tags=_tags("run-1"))

    with pytest.raises(TrackingError, match=r"registering run nope as model") as info:
        registry.register(name, run_id="nope", tags=_tags("run-1"))
    assert info.value.__cause__ is not None

    registry.register(name, run_id=run_id, tags=_tags("run-1"))
    with pytest.raises(TrackingError, match=r"setting alias 'staging' .* version 7"):
        registry.set_alias(name, "staging", "7")

    with pytest.raises(TrackingError, match="both kinds of quote"):
        registry.register('it\'s "x"', run_id=run_id, tags=_tags("run-1"))


def test_password_is_not_in_repr() -> None:
    assert "hunter2" not in repr(ModelRegistry("http://bob:hunter2@127.0.0.1:9/"))


def test_ref_is_a_frozen_value() -> None:
    ref = ModelVersionRef("m", "1", None, "s3://b/m", "s3://b/m", {})
    with pytest.raises(AttributeError):
        ref.version = "2"  # type: ignore[misc]
