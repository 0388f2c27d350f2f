"""Fixtures of the e2e tests: a service process (always killed), a bare origin with the hook."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import git
from tests.e2e.service import TRAINOPS, Service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """A ``trainops serve`` not started yet (tests choose its flags); stopped in teardown."""
    svc = Service(tmp_path)
    try:
        yield svc
    finally:
        svc.kill()
        svc.stop()


@pytest.fixture
def origin(tmp_path: Path, service: Service) -> Path:
    """A bare repository people push to, with trainops' hook pointing at ``service``."""
    bare = tmp_path / "origin" / "e2e.git"
    bare.parent.mkdir()
    git(bare.parent, "init", "-q", "--bare", "-b", "main", str(bare))
    proc = subprocess.run(
        [TRAINOPS, "hook", "install", str(bare), "--url", service.url],
        cwd=tmp_path,
        env=service.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, f"hook install failed\n{proc.stdout}\n{proc.stderr}"
    assert f"pushes notify {service.url}/webhooks/git" in proc.stdout
    return bare
