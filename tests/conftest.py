"""Shared fixtures: quiet environment, settings under tmp_path, real git repos."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from trainops.config import QUIET_ENV, Settings

SHARED = Path(__file__).resolve().parents[2] / "shared"

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


@pytest.fixture(autouse=True, scope="session")
def _quiet_environment() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in (*QUIET_ENV, *GIT_IDENTITY)}
    os.environ.update(QUIET_ENV)
    os.environ.update(GIT_IDENTITY)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.load(
        environ={}, home=tmp_path / "home", runner={"kill_grace_s": 1.0, "gpu_poll_s": 0.05}
    )


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``trainops`` subprocess as a user would start it: the venv's
    bin first on PATH (the examples' stages call ``python``), state under ``home``,
    tracking off unless asked, and nothing inherited that configures trainops or
    MLflow, or proxies loopback traffic."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TRAINOPS_")
        and k != "MLFLOW_TRACKING_URI"
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["TRAINOPS_HOME"] = str(home)
    env["TRAINOPS_TRACKING__ENABLED"] = "false"
    env.update(extra)
    return env


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def write_files(root: Path, files: Mapping[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def commit_files(repo: Path, files: Mapping[str, str | bytes], message: str = "change") -> str:
    write_files(repo, files)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


MakeRepo = Callable[..., Path]


@pytest.fixture
def make_repo(tmp_path: Path) -> MakeRepo:
    """``make_repo({"trainops.yaml": ...}, name="demo")`` → a committed repo on branch main."""

    def make(files: Mapping[str, str | bytes], name: str = "repo") -> Path:
        repo = tmp_path / name
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        commit_files(repo, files, "initial")
        return repo

    return make


def dvc(repo: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, check=True, capture_output=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite golden files from the current output (refused when CI is set)",
    )


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[Path, str], None]:
    """``golden(path, text)``: compare with the file, or rewrite it with --update-golden."""
    update = bool(request.config.getoption("--update-golden"))
    if update and os.environ.get("CI"):
        pytest.fail("--update-golden is refused when CI is set")

    def check(path: Path, text: str) -> None:
        if update or not path.exists():
            if os.environ.get("CI"):
                pytest.fail(f"golden file {path} is missing")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        assert text == path.read_text(), f"{path} differs; rerun with --update-golden to accept"

    return check


# -- KServe's InferenceService CRD, made strict (REFERENCE.md §4) ------------------------

KSERVE_CRD = SHARED / "kserve" / "serving.kserve.io_inferenceservices.yaml"
CrdErrors = Callable[[dict[str, Any]], list[str]]


def strictify(node: Any) -> None:
    """Reject unknown fields where a schema lists its properties."""
    if isinstance(node, dict):
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for child in node.values():
            strictify(child)
    elif isinstance(node, list):
        for child in node:
            strictify(child)


def kserve_validator() -> CrdErrors | None:
    """Errors of a manifest against the strict v1beta1 schema; None without ../shared."""
    if not KSERVE_CRD.is_file():
        return None
    import jsonschema
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(KSERVE_CRD.read_text(), Loader=loader)  # noqa: S506 (a safe loader)
    v1beta1 = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    schema = copy.deepcopy(v1beta1["schema"]["openAPIV3Schema"])
    strictify(schema)
    validator = jsonschema.Draft7Validator(schema)

    def errors(manifest: dict[str, Any]) -> list[str]:
        found = validator.iter_errors(manifest)
        return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in found]

    return errors


@pytest.fixture(scope="session")
def crd_errors() -> CrdErrors:
    validator = kserve_validator()
    if validator is None:
        pytest.skip(f"KServe CRD not found at {KSERVE_CRD} (../shared is absent)")
    return validator
