"""``trainops run`` end to end on the digits example: real git, DVC, scikit-learn and MLflow.

One demo repository (data on a local DVC remote) serves the module; the
``trainops`` command runs in a child process exactly as a user would start
it, and what it recorded is read back with a plain ``MlflowClient``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import git, user_env
from trainops.demo import make_demo_repo

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits"
TRAINOPS = str(Path(sys.executable).parent / "trainops")
STAGES = ("prepare", "train", "evaluate")


def _env(home: Path, *, tracking: bool) -> dict[str, str]:
    return user_env(home, TRAINOPS_TRACKING__ENABLED=str(tracking).lower())


def _check(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert proc.returncode == 0, f"{argv} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _dvc(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return _check([sys.executable, "-m", "dvc", *args], repo, env)


@dataclass
class Demo:
    root: Path
    repo: Path
    home: Path

    def trainops_run(
        self, repo: Path, *args: str, home: Path | None = None, tracking: bool = True
    ) -> tuple[dict[str, Any], float]:
        """``trainops run REPO --json``: the result and the command's wall time."""
        started = time.monotonic()
        proc = subprocess.run(
            [TRAINOPS, "run", str(repo), "--json", *args],
            cwd=self.root,
            env=_env(home or self.home, tracking=tracking),
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        took = time.monotonic() - started
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr
        result: dict[str, Any] = json.loads(proc.stdout)
        return result, took

    def commit(self, message: str) -> str:
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", message)
        return git(self.repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    root = tmp_path_factory.mktemp("e2e")
    repo = make_demo_repo(EXAMPLE, root / "digits", root / "dvc-remote")
    return Demo(root=root, repo=repo, home=root / "home")


@pytest.fixture(scope="module")
def first_run(demo: Demo) -> dict[str, Any]:
    """The first run of the demo repository at its first commit, tracked in MLflow."""
    result, _ = demo.trainops_run(demo.repo)
    return result


def _cached(result: dict[str, Any]) -> dict[str, bool]:
    return {s["name"]: s["cached"] for s in result["stages"]}


def test_first_run_trains_and_is_tracked(demo: Demo, first_run: dict[str, Any]) -> None:
    assert first_run["status"] == "succeeded"
    # The demo repository's one commit (later tests add more on top of it).
    assert first_run["commit"] == git(demo.repo, "rev-list", "--max-parents=0", "HEAD")
    assert [s["name"] for s in first_run["stages"]] == list(STAGES)
    for stage in first_run["stages"]:
        assert stage["status"] == "succeeded" and stage["cached"] is False
        assert stage["attempts"] == 1 and stage["gpu_seconds"] == 0.0
    metrics = first_run["metrics"]
    assert metrics["accuracy"] > 0.9 and metrics["f1_macro"] > 0.9

    mlflow_id = first_run["mlflow_run_id"]
    assert mlflow_id
    client = MlflowClient(tracking_uri=f"sqlite:///{demo.home}/mlflow.db")
    run = client.get_run(mlflow_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["accuracy"] == pytest.approx(metrics["accuracy"])
    assert run.data.metrics["f1_macro"] == pytest.approx(metrics["f1_macro"])
    params = run.data.params
    assert params["train.C"] == "0.5" and params["train.max_iter"] == "500"
    assert params["prepare.test_size"] == "0.25"
    tags = run.data.tags
    assert tags["trainops.commit"] == first_run["commit"]
    assert tags["trainops.run_id"] == first_run["run_id"]
    assert client.get_experiment(run.info.experiment_id).name == "digits"
    model = {a.path for a in client.list_artifacts(mlflow_id, "model")}
    assert {"model/model.joblib", "model/meta.json"} <= model
    # Artifacts live under TRAINOPS_HOME, not in some ./mlruns of the current directory.
    assert run.info.artifact_uri.startswith((demo.home / "mlartifacts").as_uri())
    assert not (demo.root / "mlruns").exists()


def test_unchanged_rerun_is_cached_and_fast(demo: Demo, first_run: dict[str, Any]) -> None:
    result, took = demo.trainops_run(demo.repo, "--ref", first_run["commit"])

    assert result["status"] == "succeeded"
    assert result["commit"] == first_run["commit"]
    assert all(_cached(result).values()), result
    assert all(s["attempts"] == 0 for s in result["stages"])
    assert result["metrics"] == first_run["metrics"]
    assert result["mlflow_run_id"] == first_run["mlflow_run_id"]
    assert took < 2.0, f"a fully cached run took {took:.2f}s"


def test_a_data_change_reruns_everything_downstream(demo: Demo, first_run: dict[str, Any]) -> None:
    demo.trainops_run(demo.repo)  # HEAD is in the stage cache
    raw = demo.repo / "data" / "raw" / "digits.csv"
    if not raw.exists():
        _dvc(demo.repo, "pull", "-q", "data/raw.dvc")
    lines = raw.read_text().splitlines(keepends=True)
    pixels = lines[1].split(",")
    assert pixels[0] in ("0", "1"), lines[1]
    pixels[0] = "1" if pixels[0] == "0" else "0"  # one byte of one image
    lines[1] = ",".join(pixels)
    raw.write_text("".join(lines))
    _dvc(demo.repo, "add", "-q", "data/raw")
    head = demo.commit("data: fix one pixel")
    _dvc(demo.repo, "push", "-q")

    result, _ = demo.trainops_run(demo.repo, tracking=False)  # MLflow: checked above

    assert result["commit"] == head and result["status"] == "succeeded"
    assert _cached(result) == dict.fromkeys(STAGES, False)
    assert all(s["attempts"] == 1 for s in result["stages"])
    assert result["metrics"]["accuracy"] > 0.9


def test_a_code_change_reruns_only_its_stage(demo: Demo, first_run: dict[str, Any]) -> None:
    before, _ = demo.trainops_run(demo.repo)  # HEAD is in the stage cache
    evaluate = demo.repo / "src" / "evaluate.py"
    evaluate.write_text(evaluate.read_text() + "# scored the same way, just explained\n")
    head = demo.commit("evaluate: a comment")

    result, _ = demo.trainops_run(demo.repo, tracking=False)

    assert result["commit"] == head and result["status"] == "succeeded"
    assert _cached(result) == {"prepare": True, "train": True, "evaluate": False}
    assert [s["name"] for s in result["stages"] if s["attempts"]] == ["evaluate"]
    assert result["metrics"] == before["metrics"]


def test_a_dvc_only_repo_matches_dvc_repro(demo: Demo, first_run: dict[str, Any]) -> None:
    dvc_only = demo.root / "dvc-only"
    _check(["git", "clone", "-q", str(demo.repo), str(dvc_only)], demo.root)
    git(dvc_only, "rm", "-q", "trainops.yaml")
    git(dvc_only, "commit", "-q", "-m", "no trainops.yaml: plain DVC")
    head = git(dvc_only, "rev-parse", "HEAD")

    reference = demo.root / "reference"
    _check(["git", "clone", "-q", str(dvc_only), str(reference)], demo.root)
    assert git(reference, "rev-parse", "HEAD") == head

    # trainops (with a home of its own: every stage really runs, no hits from the tests
    # above) and plain DVC in the reference clone run side by side to save time.
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(
            demo.trainops_run, dvc_only, home=demo.root / "home-dvc-only", tracking=False
        )
        env = _env(demo.root / "unused", tracking=False)
        _dvc(reference, "pull", "-q", "data/raw.dvc", env=env)
        _dvc(reference, "repro", "-q", env=env)
        result, _ = running.result(timeout=300)
    expected = json.loads((reference / "metrics.json").read_text())

    assert result["commit"] == head and result["status"] == "succeeded"
    assert result["pipeline"] == "dvc-only"  # no trainops.yaml: named after the repository
    assert _cached(result) == dict.fromkeys(STAGES, False)
    assert set(expected) == {"accuracy", "f1_macro"}
    assert result["metrics"] == expected
