"""``data.pull`` against real DVC: a repository, a local-directory remote, workspaces."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.gpu_runners.conftest import SourceRepo
from trainops.errors import DataError
from trainops.gpu_runners.data import pull
from trainops.gpu_runners.workspace import WorkspacePool


@dataclass(frozen=True)
class DvcSource:
    repo: SourceRepo
    remote: Path
    pushed: str
    """data/ and labels.csv tracked and pushed."""
    unpushed: str
    """``pushed`` plus extra.txt, added but never pushed."""
    no_remote: str
    """``unpushed`` with the remote removed from .dvc/config."""


@pytest.fixture(scope="module")
def dvc_source(tmp_path_factory: pytest.TempPathFactory) -> DvcSource:
    root = tmp_path_factory.mktemp("dvc")
    repo = SourceRepo(root / "project")
    remote = root / "remote"
    repo.commit({"README": "digits\n"}, "initial")
    repo.dvc("init", "-q")
    repo.dvc("remote", "add", "-d", "store", str(remote))
    repo.write({"data/raw/a.txt": "alpha\n", "data/raw/b.txt": "beta\n", "labels.csv": "x,y\n"})
    repo.dvc("add", "-q", "data/raw", "labels.csv")
    repo.dvc("push", "-q")
    pushed = repo.commit(message="data")
    repo.write({"extra.txt": "never pushed\n"})
    repo.dvc("add", "-q", "extra.txt")
    unpushed = repo.commit(message="extra")
    repo.dvc("remote", "remove", "store")
    no_remote = repo.commit(message="no remote")
    shutil.rmtree(repo.path / ".dvc" / "cache")  # what a pull finds must come from the remote
    return DvcSource(repo, remote, pushed, unpushed, no_remote)


@pytest.fixture(autouse=True)
def _dvc_site_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep DVC's per-repo index out of /var/tmp."""
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))


@pytest.fixture
def workspace(pool: WorkspacePool, dvc_source: DvcSource) -> Iterator[Path]:
    with pool.acquire(dvc_source.repo.path, dvc_source.pushed) as ws:
        yield ws.path


def test_pull_brings_the_declared_data(
    workspace: Path, pool: WorkspacePool, capfd: pytest.CaptureFixture[str]
) -> None:
    pull(workspace, ["data/raw", "labels.csv"])
    assert (workspace / "data/raw/a.txt").read_text() == "alpha\n"
    assert (workspace / "data/raw/b.txt").read_text() == "beta\n"
    assert (workspace / "labels.csv").read_text() == "x,y\n"
    assert any(p.is_file() for p in pool.dvc_cache_dir.rglob("*"))  # the shared cache
    out, _err = capfd.readouterr()
    assert out == ""  # DVC prints nothing on our stdout (think `trainops run --json`)


def test_pull_of_one_target_only(workspace: Path) -> None:
    pull(workspace, ["labels.csv"])
    assert (workspace / "labels.csv").exists()
    assert not (workspace / "data/raw").exists()


def test_the_shared_cache_serves_other_workspaces(
    tmp_path: Path, workspace: Path, pool: WorkspacePool, dvc_source: DvcSource
) -> None:
    pull(workspace, ["data/raw"])
    aside = dvc_source.remote.rename(tmp_path / "remote-aside")  # only the host's cache has it
    try:
        with pool.acquire(dvc_source.repo.path, dvc_source.no_remote) as other:
            assert other.path != workspace
            pull(other.path, ["data/raw"])
            assert (other.path / "data/raw/a.txt").read_text() == "alpha\n"
    finally:
        aside.rename(dvc_source.remote)


def test_no_remote(pool: WorkspacePool, dvc_source: DvcSource) -> None:
    with (
        pool.acquire(dvc_source.repo.path, dvc_source.no_remote) as ws,
        pytest.raises(DataError) as caught,
    ):
        pull(ws.path, ["data/raw"])
    message = str(caught.value)
    assert "data/raw" in message
    assert "declares no default DVC remote" in message
    assert "dvc remote add -d NAME URL" in message
    assert type(caught.value.__cause__).__name__ == "CheckoutError"


def test_objects_deleted_from_the_remote(
    tmp_path: Path, pool: WorkspacePool, dvc_source: DvcSource
) -> None:
    damaged = tmp_path / "damaged-remote"
    shutil.copytree(dvc_source.remote, damaged)
    victim = next(p for p in damaged.rglob("*") if p.is_file() and not p.name.endswith(".dir"))
    victim.unlink()
    with pool.acquire(dvc_source.repo.path, dvc_source.pushed) as ws:
        with (ws.path / ".dvc" / "config.local").open("a") as config:
            config.write(f"['remote \"store\"']\n    url = {damaged}\n")
        with pytest.raises(DataError) as caught:
            pull(ws.path, ["data/raw", "labels.csv"])
    message = str(caught.value)
    assert f"missing from remote 'store' ({damaged})" in message
    assert "run `dvc push` in the repository" in message
    assert "data/raw" in message or "labels.csv" in message


def test_data_never_pushed(pool: WorkspacePool, dvc_source: DvcSource) -> None:
    with (
        pool.acquire(dvc_source.repo.path, dvc_source.unpushed) as ws,
        pytest.raises(DataError, match=r"missing from remote 'store' .*: extra\.txt; run"),
    ):
        pull(ws.path, ["extra.txt"])


def test_a_target_dvc_does_not_track(workspace: Path) -> None:
    with pytest.raises(DataError, match=r"pulling README, nothere: not tracked by DVC"):
        pull(workspace, ["README", "labels.csv", "nothere"])


def test_not_a_dvc_repository(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a DVC repository"):
        pull(tmp_path, ["data"])


def test_no_targets_pulls_everything_available(pool: WorkspacePool, dvc_source: DvcSource) -> None:
    with pool.acquire(dvc_source.repo.path, dvc_source.pushed) as ws:
        pull(ws.path, [])
        assert (ws.path / "data/raw/b.txt").exists() and (ws.path / "labels.csv").exists()
