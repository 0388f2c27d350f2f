"""Plain git, through the ``git`` command: read-only views of a commit, mirrors.

trainops reads pipeline files and content ids at an exact commit without
touching anybody's working tree, so everything here addresses objects by
sha. Arguments are passed as argv lists, never through a shell.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from trainops.errors import GitError

_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",  # a missing credential fails instead of hanging
    "GIT_CONFIG_NOSYSTEM": "1",
    "LC_ALL": "C",
}


def git(
    args: Sequence[str],
    *,
    cwd: Path | str,
    doing: str,
    input: bytes | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``git args`` in ``cwd``; on failure raise GitError saying what was being done.

    ``env`` adds variables (credentials go here, never into argv, where any
    user on the host could read them in the process list).
    """
    env = {**os.environ, **_GIT_ENV, **(env or {})}
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, input=input, capture_output=True, env=env, check=False
        )
    except FileNotFoundError as exc:
        raise GitError(f"{doing}: git is not installed or not on PATH") from exc
    if check and proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(f"{doing}: {detail[-1] if detail else f'git exited {proc.returncode}'}")
    return proc


class GitRepo:
    """A repository on disk (bare or not), read at commits."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"GitRepo({str(self.path)!r})"

    def _git(self, *args: str, doing: str, input: bytes | None = None) -> bytes:
        return git(args, cwd=self.path, doing=doing, input=input).stdout

    @classmethod
    def open_at(cls, path: Path | str, ref: str) -> tuple[GitRepo, str, str | None]:
        """The repository containing ``path``, the commit ``ref`` names, and the branch
        (``main`` for ``main`` or for HEAD on main; None for a sha, tag or detached HEAD).

        One git call: this is on the path of every run.
        """
        p = Path(path)
        if ref.startswith("-"):
            raise GitError(f"resolving {ref!r}: not a ref")
        if not p.is_dir():
            raise GitError(f"opening repository {str(p)!r}: no such directory")
        out = git(
            ["rev-parse", "--show-toplevel", f"{ref}^{{commit}}", "--symbolic-full-name", ref],
            cwd=p,
            doing=f"resolving {ref!r}",
            check=False,
        )
        lines = out.stdout.decode().splitlines()
        if out.returncode != 0 or len(lines) < 2:
            err = out.stderr.decode(errors="replace")
            if "not a git repository" in err:
                raise GitError(f"opening repository {str(p)!r}: not a git repository")
            raise GitError(f"resolving {ref!r} in {str(p)!r}: no such commit, branch or tag")
        symbolic = lines[2] if len(lines) > 2 else ""
        branch = (
            symbolic.removeprefix("refs/heads/") if symbolic.startswith("refs/heads/") else None
        )
        return cls(Path(lines[0])), lines[1], branch

    def is_dirty(self) -> bool:
        """Uncommitted changes to tracked files (untracked files do not count)."""
        out = self._git("status", "--porcelain", "--untracked-files=no", doing="reading status")
        return bool(out.strip())

    def read_files(self, sha: str, paths: Iterable[str]) -> dict[str, bytes | None]:
        """The content of each path at ``sha`` (None where absent), in one git call."""
        wanted = list(dict.fromkeys(paths))
        if not wanted:
            return {}
        request = "".join(f"{sha}:{p}\n" for p in wanted).encode()
        out = self._git("cat-file", "--batch", doing=f"reading files at {sha[:12]}", input=request)
        result: dict[str, bytes | None] = {}
        pos = 0
        for path in wanted:
            end = out.index(b"\n", pos)
            header = out[pos:end].decode()
            pos = end + 1
            if header.endswith(" missing") or header.endswith(" ambiguous"):
                result[path] = None
                continue
            _oid, kind, size_text = header.split(" ")
            size = int(size_text)
            result[path] = out[pos : pos + size] if kind == "blob" else None
            pos += size + 1
        return result

    def object_ids(self, sha: str, paths: Iterable[str]) -> dict[str, str]:
        """Git object ids (blob for a file, tree for a directory) of tracked paths at ``sha``.

        Paths git does not track at ``sha`` are absent from the result.
        """
        wanted = [p.rstrip("/") for p in dict.fromkeys(paths)]
        if not wanted:
            return {}
        out = self._git(
            "ls-tree", "-z", "--full-tree", sha, "--", *wanted, doing=f"listing paths at {sha[:12]}"
        )
        ids: dict[str, str] = {}
        for entry in out.split(b"\0"):
            if not entry:
                continue
            meta, _, name = entry.partition(b"\t")
            ids[name.decode()] = meta.split(b" ")[2].decode()
        return ids

    def list_files(self, sha: str, prefix: str = "") -> list[str]:
        """Every file path at ``sha`` (optionally under ``prefix``)."""
        args = ["ls-tree", "-r", "-z", "--name-only", "--full-tree", sha]
        if prefix:
            args += ["--", prefix]
        out = self._git(*args, doing=f"listing files at {sha[:12]}")
        return [p.decode() for p in out.split(b"\0") if p]


def auth_env(token: str, user: str = "x-access-token") -> dict[str, str]:
    """Git environment that sends ``token`` on HTTPS fetches, without a credential helper.

    GitHub takes ``x-access-token:<token>``, GitLab ``oauth2:<token>``, as basic auth.
    Passed as ``GIT_CONFIG_*`` variables (git ≥ 2.31), so it is neither in argv
    nor written to any config file.
    """
    basic = base64.b64encode(f"{user}:{token}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
    }
