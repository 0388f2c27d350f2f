"""Checkouts of an exact commit for runs, reused, never the user's working tree.

A run may start while its author keeps editing, so nothing reads or writes
the repository it came from beyond ``git clone``/``git fetch``: each source
gets one bare mirror (``repos/<name>-<hash>``), and runs get worktrees of
that mirror (``workspaces/<name>-<hash>/ws-<n>``), a handful per source,
each claimed with ``flock`` so that concurrent runs (threads or processes)
never share one. A slot is created once and then reused: checking out
another commit and ``git clean -ffdqx`` is much faster than a fresh
checkout, and removing every untracked file is safe because outputs and
pulled data are all reproducible.

DVC repositories get ``.dvc/config.local`` pointing their cache at one
directory shared by all workspaces, so data is downloaded once per host.

Git submodules and Git LFS objects are out of scope: a workspace holds the
commit's own tree only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from trainops.errors import ExecutorError, GitError
from trainops.git import git

log = logging.getLogger(__name__)

_POLL_S = 0.2
"""How often a run waiting for a free slot looks again."""


@dataclass
class Workspace:
    """A checkout of ``commit`` held by one run until ``release()``."""

    path: Path
    commit: str
    mirror: Path
    _lock_fd: int = field(default=-1, repr=False, compare=False)

    def release(self) -> None:
        """Give the slot back; its files stay until the next run cleans them."""
        fd, self._lock_fd = self._lock_fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class WorkspacePool:
    """Mirrors and reusable worktree slots, ``slots`` per source repository."""

    def __init__(
        self, repos_dir: Path, workspaces_dir: Path, dvc_cache_dir: Path, slots: int = 4
    ) -> None:
        if slots < 1:
            raise ValueError(
                f"a workspace pool needs at least one slot per repository, not {slots}"
            )
        # Absolute, because git runs with other working directories.
        self.repos_dir = repos_dir.resolve()
        self.workspaces_dir = workspaces_dir.resolve()
        self.dvc_cache_dir = dvc_cache_dir.resolve()
        self.slots = slots

    def __repr__(self) -> str:
        return f"WorkspacePool({str(self.workspaces_dir)!r}, slots={self.slots})"

    def acquire(self, source: str | Path, commit: str) -> Workspace:
        """A clean checkout of ``commit`` from ``source`` (a path or a git URL).

        Waits while every slot of this source is in use. Raises GitError when
        the source cannot be mirrored or does not have the commit, and
        ExecutorError when the data dir is unusable.
        """
        origin = _origin(source)
        name = mirror_name(origin)
        mirror = self.mirror(source, commit)
        slot, fd = _claim_slot(self.workspaces_dir / name, self.slots)
        try:
            self._check_out(mirror, slot, commit)
        except BaseException:
            os.close(fd)
            raise
        log.debug("workspace %s holds %s at %s", slot, origin, commit[:12])
        return Workspace(path=slot, commit=commit, mirror=mirror, _lock_fd=fd)

    # -- the mirror ------------------------------------------------------------

    def mirror(
        self, source: str | Path, commit: str, *, git_env: Mapping[str, str] | None = None
    ) -> Path:
        """The bare mirror of ``source``, holding ``commit``; fetches only when it must.

        The service reads pipeline files from it (``git cat-file``) before any
        workspace exists. ``git_env`` carries credentials for clone and fetch
        (``trainops.git.auth_env``). Raises GitError when ``commit`` cannot be had.
        """
        origin = _origin(source)
        name = mirror_name(origin)
        path = self.repos_dir / name
        if _has_commit(path, commit):
            return path  # the usual case: no network, no lock
        with _flocked(self.repos_dir / f"{name}.lock"):
            if not (path / "HEAD").is_file():
                self._clone(origin, path, git_env)
            elif not _has_commit(path, commit):
                git(
                    [f"--git-dir={path}", "fetch", "--prune", "--quiet"],
                    cwd=self.repos_dir,
                    doing=f"fetching {origin} into its mirror",
                    env=git_env,
                )
        if not _has_commit(path, commit):
            raise GitError(f"checking out {commit}: no such commit in {origin} (fetched just now)")
        return path

    def _clone(self, origin: str, path: Path, git_env: Mapping[str, str] | None) -> None:
        """Clone next to ``path`` and rename, so a clone cut short leaves no mirror behind."""
        partial = path.with_name(f"{path.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)  # not a repository (checked by the caller)
        git(
            ["clone", "--mirror", "--quiet", "--", origin, str(partial)],
            cwd=self.repos_dir,
            doing=f"mirroring {origin}",
            env=git_env,
        )
        partial.rename(path)

    # -- slots -----------------------------------------------------------------

    def _check_out(self, mirror: Path, slot: Path, commit: str) -> None:
        git_dir = _worktree_git_dir(mirror, slot)
        if git_dir is not None:
            try:
                _reset(git_dir, slot, commit)
            except GitError as exc:
                log.warning("recreating workspace %s: %s", slot, exc)
                git_dir = None
        if git_dir is None:
            # Missing, half deleted or not ours: start afresh.
            shutil.rmtree(slot, ignore_errors=True)
            self._add_worktree(mirror, slot, commit)
        if (slot / ".dvc").is_dir():
            self._share_dvc_cache(slot)

    def _add_worktree(self, mirror: Path, slot: Path, commit: str) -> None:
        doing = f"creating workspace {str(slot)!r} at {commit[:12]}"
        # A slot directory deleted by hand leaves its registration behind.
        git([f"--git-dir={mirror}", "worktree", "prune"], cwd=mirror, doing=doing)
        git(
            [f"--git-dir={mirror}", "worktree", "add", "--quiet", "--detach", str(slot), commit],
            cwd=mirror,
            doing=doing,
        )

    def _share_dvc_cache(self, slot: Path) -> None:
        """Point the workspace's DVC cache at the host's shared one (DVC's ini format)."""
        self.dvc_cache_dir.mkdir(parents=True, exist_ok=True)
        config = slot / ".dvc" / "config.local"
        config.write_text(f"[cache]\n    dir = {self.dvc_cache_dir}\n")


def _has_commit(mirror: Path, commit: str) -> bool:
    if not (mirror / "HEAD").is_file():
        return False
    out = git(
        [f"--git-dir={mirror}", "cat-file", "-e", f"{commit}^{{commit}}"],
        cwd=mirror,
        doing="",
        check=False,
    )
    return out.returncode == 0


def _worktree_git_dir(mirror: Path, slot: Path) -> Path | None:
    """The mirror's admin dir for the worktree at ``slot``; None unless it is sound.

    Every git command on a slot names its git dir and work tree explicitly:
    found by discovery, a slot missing its ``.git`` file would make git walk
    up, and the data dir may well sit inside the user's own repository,
    where ``checkout --force`` and ``clean -x`` must never run.
    """
    try:
        text = (slot / ".git").read_text()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    git_dir = Path(text.removeprefix("gitdir:").strip())
    if not git_dir.is_absolute():
        git_dir = slot / git_dir
    sound = git_dir.resolve().parent == (mirror / "worktrees").resolve()
    return git_dir if sound and (git_dir / "HEAD").is_file() else None


def _reset(git_dir: Path, slot: Path, commit: str) -> None:
    """Bring a used slot to exactly ``commit``, dropping every untracked and ignored file."""
    doing = f"resetting workspace {str(slot)!r} to {commit[:12]}"
    where = [f"--git-dir={git_dir}", f"--work-tree={slot}"]
    git([*where, "checkout", "--force", "--quiet", "--detach", commit], cwd=slot, doing=doing)
    git([*where, "clean", "-ffdqx"], cwd=slot, doing=doing)


def _open_lock(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ExecutorError(f"opening the lock file {str(path)!r}: {exc}") from exc


def _claim_slot(slots_dir: Path, slots: int) -> tuple[Path, int]:
    """The first free slot and the fd holding its lock; waits while all are taken."""
    waited = False
    while True:
        for n in range(slots):
            fd = _open_lock(slots_dir / f"ws-{n}.lock")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return slots_dir / f"ws-{n}", fd
        if not waited:
            log.info("all %d workspaces in %s are in use; waiting", slots, slots_dir)
            waited = True
        time.sleep(_POLL_S)


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (blocking): one clone or fetch at a time."""
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _origin(source: str | Path) -> str:
    """The source as git is given it: local paths made absolute, URLs as they are."""
    text = str(source)
    if isinstance(source, Path) or "://" not in text and not _SCP_LIKE.match(text):
        return str(Path(text).expanduser().resolve())
    return text


_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")
"""``git@host:owner/repo.git``, git's scp-like URL syntax."""


def mirror_name(origin: str) -> str:
    """A directory name for ``origin``: readable base name plus a short hash of the whole.

    The hash keeps ``a/digits`` and ``b/digits`` apart; the base name lets a
    human find a repository's mirror and workspaces.
    """
    base = re.split(r"[/:]", origin.rstrip("/"))[-1].removesuffix(".git") or "repo"
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base)
    digest = hashlib.sha256(origin.encode()).hexdigest()[:12]
    return f"{base}-{digest}"
