from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.gpu_runners.conftest import SourceRepo
from trainops.errors import ExecutorError, GitError
from trainops.git import git
from trainops.gpu_runners.workspace import Workspace, WorkspacePool, mirror_name

MakeSource = Callable[..., SourceRepo]


def head(path: Path) -> str:
    return git(["rev-parse", "HEAD"], cwd=path, doing="").stdout.decode().strip()


@pytest.fixture
def source(make_source: MakeSource) -> SourceRepo:
    repo = make_source()
    repo.commit({"train.py": "print('v1')\n", ".gitignore": "model.pt\n"}, "v1")
    return repo


def test_checkout_of_the_exact_commit(pool: WorkspacePool, source: SourceRepo) -> None:
    commit = source.git("rev-parse", "HEAD")
    with pool.acquire(source.path, commit) as ws:
        assert head(ws.path) == commit
        assert (ws.path / "train.py").read_text() == "print('v1')\n"
        assert ws.mirror.parent == pool.repos_dir
        assert ws.path.parent.name == ws.mirror.name
        assert ws.path.name == "ws-0"
        assert ws.commit == commit
        assert not (ws.path / ".dvc").exists()


def test_the_users_working_tree_is_untouched(pool: WorkspacePool, source: SourceRepo) -> None:
    v1 = source.git("rev-parse", "HEAD")
    v2 = source.commit({"train.py": "print('v2')\n"}, "v2")
    source.write({"train.py": "print('editing')\n", "scratch.txt": "notes"})
    (source.path / "model.pt").write_text("ignored but precious")
    before = source.git("status", "--porcelain", "--ignored")
    for commit in (v1, v2, v1):
        with pool.acquire(source.path, commit) as ws:
            (ws.path / "model.pt").write_text("workspace output")
    assert source.git("status", "--porcelain", "--ignored") == before
    assert (source.path / "train.py").read_text() == "print('editing')\n"
    assert (source.path / "model.pt").read_text() == "ignored but precious"
    assert source.git("rev-parse", "HEAD") == v2
    assert source.git("branch", "--show-current") == "main"
    assert len(source.git("worktree", "list").splitlines()) == 1


def test_a_reused_slot_is_clean(pool: WorkspacePool, source: SourceRepo) -> None:
    commit = source.git("rev-parse", "HEAD")
    with pool.acquire(source.path, commit) as ws:
        first = ws.path
        (ws.path / "train.py").write_text("changed by a stage")
        (ws.path / "model.pt").write_text("ignored output")
        (ws.path / "outputs").mkdir()
        (ws.path / "outputs" / "metrics.json").write_text("{}")
    with pool.acquire(source.path, commit) as ws:
        assert ws.path == first
        assert sorted(p.name for p in ws.path.iterdir()) == [".git", ".gitignore", "train.py"]
        assert (ws.path / "train.py").read_text() == "print('v1')\n"


def test_concurrent_runs_get_different_slots(pool: WorkspacePool, source: SourceRepo) -> None:
    commit = source.git("rev-parse", "HEAD")
    got: list[Workspace] = []
    threads = [
        threading.Thread(target=lambda: got.append(pool.acquire(source.path, commit)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ws.path.name for ws in got) == ["ws-0", "ws-1"]
    for ws in got:
        assert head(ws.path) == commit

    # Both of the pool's two slots are taken: a third run waits for one.
    third: list[Workspace] = []
    waiter = threading.Thread(target=lambda: third.append(pool.acquire(source.path, commit)))
    waiter.start()
    time.sleep(0.3)
    assert not third
    got[1].release()
    waiter.join(timeout=5)
    assert [ws.path for ws in third] == [got[1].path]
    got[0].release()
    third[0].release()


def test_a_commit_made_after_the_mirror_exists_is_fetched(
    pool: WorkspacePool, source: SourceRepo
) -> None:
    with pool.acquire(source.path, source.git("rev-parse", "HEAD")):
        pass
    v2 = source.commit({"train.py": "print('v2')\n"}, "v2")
    with pool.acquire(source.path, v2) as ws:
        assert (ws.path / "train.py").read_text() == "print('v2')\n"


def test_a_known_commit_needs_no_fetch(pool: WorkspacePool, source: SourceRepo) -> None:
    commit = source.git("rev-parse", "HEAD")
    with pool.acquire(source.path, commit):
        pass
    moved = source.path.with_name("moved")
    source.path.rename(moved)  # fetching now would fail
    with pool.acquire(source.path, commit) as ws:
        assert head(ws.path) == commit


def test_an_unknown_commit_is_a_git_error(pool: WorkspacePool, source: SourceRepo) -> None:
    missing = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(GitError, match=missing) as caught:
        pool.acquire(source.path, missing)
    assert str(source.path) in str(caught.value)
    # The slot was not kept.
    with pool.acquire(source.path, source.git("rev-parse", "HEAD")) as ws:
        assert ws.path.name == "ws-0"


def test_a_missing_source_is_a_git_error(pool: WorkspacePool, tmp_path: Path) -> None:
    with pytest.raises(GitError, match="mirroring"):
        pool.acquire(tmp_path / "nowhere", "0" * 40)


def test_dvc_repos_share_one_cache(pool: WorkspacePool, make_source: MakeSource) -> None:
    repo = make_source("dvcrepo")
    commit = repo.commit({".dvc/config": "", ".dvc/.gitignore": "/config.local\n"}, "dvc")
    for _ in range(2):  # written again after the clean of a reused slot
        with pool.acquire(repo.path, commit) as ws:
            config = (ws.path / ".dvc" / "config.local").read_text()
            assert config == f"[cache]\n    dir = {pool.dvc_cache_dir.resolve()}\n"
            assert pool.dvc_cache_dir.is_dir()


def test_a_vanished_slot_is_recreated(pool: WorkspacePool, source: SourceRepo) -> None:
    commit = source.git("rev-parse", "HEAD")
    with pool.acquire(source.path, commit) as ws:
        path = ws.path
    shutil.rmtree(path)
    with pool.acquire(source.path, commit) as ws:
        assert ws.path == path and head(path) == commit
    worktrees = git(["worktree", "list"], cwd=ws.mirror, doing="").stdout.decode()
    assert len(worktrees.splitlines()) == 2  # the mirror and one slot


def test_a_broken_slot_inside_the_users_repo_never_touches_it(source: SourceRepo) -> None:
    # The default data dir is .trainops/ in the current directory: often the
    # user's repository. A slot without its .git must not let git find theirs.
    home = source.path / ".trainops"
    pool = WorkspacePool(home / "repos", home / "workspaces", home / "dvc-cache")
    commit = source.git("rev-parse", "HEAD")
    with pool.acquire(source.path, commit) as ws:
        (ws.path / ".git").unlink()
    source.write({"train.py": "uncommitted work\n", "new.txt": "untracked"})
    with pool.acquire(source.path, commit) as ws:
        assert head(ws.path) == commit
    assert (source.path / "train.py").read_text() == "uncommitted work\n"
    assert (source.path / "new.txt").read_text() == "untracked"


def test_sources_get_their_own_mirrors(pool: WorkspacePool, make_source: MakeSource) -> None:
    a = make_source("a/digits")
    b = make_source("b/digits")
    ca = a.commit({"x": "a"})
    cb = b.commit({"x": "b"})
    with pool.acquire(a.path, ca) as wa, pool.acquire(b.path, cb) as wb:
        assert wa.mirror != wb.mirror
        assert wa.mirror.name.startswith("digits-") and wb.mirror.name.startswith("digits-")
        assert (wa.path / "x").read_text() == "a" and (wb.path / "x").read_text() == "b"


@pytest.mark.parametrize(
    ("origin", "base"),
    [
        ("/home/u/digits", "digits"),
        ("/home/u/digits/", "digits"),
        ("https://github.com/acme/digits.git", "digits"),
        ("git@gitlab.com:acme/vision models.git", "vision_models"),
    ],
)
def test_mirror_names_are_readable_and_distinct(origin: str, base: str) -> None:
    name = mirror_name(origin)
    assert name.startswith(f"{base}-") and len(name) == len(base) + 13
    assert mirror_name(origin + "x") != name


def test_an_unusable_data_dir_is_an_executor_error(tmp_path: Path, source: SourceRepo) -> None:
    (tmp_path / "blocked").write_text("a file, not a directory")
    pool = WorkspacePool(tmp_path / "blocked", tmp_path / "ws", tmp_path / "dvc-cache")
    with pytest.raises(ExecutorError, match="lock file"):
        pool.acquire(source.path, source.git("rev-parse", "HEAD"))


def test_relative_data_dirs(
    tmp_path: Path, source: SourceRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    pool = WorkspacePool(Path(".t/repos"), Path(".t/ws"), Path(".t/dvc-cache"))
    commit = source.git("rev-parse", "HEAD")
    with pool.acquire(source.path, commit) as ws:
        assert ws.path == tmp_path / ".t" / "ws" / ws.mirror.name / "ws-0"
        assert head(ws.path) == commit
