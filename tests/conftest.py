"""Shared fixtures: quiet environment, settings under tmp_path, real git repos."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

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
