"""Real git repositories for the workspace and data tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from trainops.gpu_runners.workspace import WorkspacePool

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "DVC_NO_ANALYTICS": "1",
}


class SourceRepo:
    """A user's repository on disk: commits, and uncommitted changes left around."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        out = subprocess.run(
            ["git", *args],
            cwd=self.path,
            env={**os.environ, **GIT_ENV},
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def dvc(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "dvc", *args],
            cwd=self.path,
            env={**os.environ, **GIT_ENV},
            check=True,
            capture_output=True,
        )

    def write(self, files: Mapping[str, str]) -> None:
        for rel, text in files.items():
            path = self.path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def commit(self, files: Mapping[str, str] | None = None, message: str = "change") -> str:
        self.write(files or {})
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def make_source(tmp_path: Path) -> Callable[[str], SourceRepo]:
    return lambda name="src": SourceRepo(tmp_path / name)


@pytest.fixture
def pool(tmp_path: Path) -> WorkspacePool:
    home = tmp_path / "home"
    return WorkspacePool(home / "repos", home / "workspaces", home / "dvc-cache", slots=2)
