"""Plain git as a forge: the report goes into git notes on the commit, pushed to the origin.

In the plain-git mode there is no web UI, no merge request and no status API:
a bare repository with trainops' post-receive hook is the whole server. So the
report lives where ``git`` itself shows it, a note on the pushed commit::

    git fetch origin refs/notes/trainops:refs/notes/trainops
    git log --notes=trainops -1 <sha>

One note per commit in ``refs/notes/trainops``, rendered from the structured
state kept as JSON in a second notes ref, ``refs/notes/trainops-state`` (so
the note a human reads carries no machine block)::

    trainops/train     success  succeeded in 1.2s  http://trainops.example/runs/7
    trainops/evaluate  running  evaluating         http://trainops.example/runs/7
    trainops           running  2 of 3 stages      http://trainops.example/runs/7

    <the body stored under the first comment key>

    <the body stored under the next key, if any>

Statuses keep the order in which their contexts first appeared, comment
bodies the order in which their keys did.

Writing one (``set_status``, ``upsert_comment``) goes, under a per-origin lock
(a thread lock and an ``flock``, so threads and processes sharing a data dir
queue up): fetch both notes refs from the origin into our own bare clone of
it, fetch the commit if we lack it (which also proves the origin has it),
apply the change to the state, write both notes, and push both refs with
``--atomic``. Another service may have pushed notes in between: the push is
then rejected as not a fast-forward, and we fetch, re-apply and push again, a
few times, with a short backoff. A change that leaves the state as it was
pushes nothing.

The origin's post-receive hook runs for this push too, with the notes refs on
its standard input (``<old> <new> refs/notes/trainops``); trainops' hook
parser turns refs outside ``refs/heads/`` and ``refs/tags/`` into no Event,
so writing a report never triggers a run.

``repo`` is the origin as git is given it: the Event's ``repo.clone_url`` (for
the git hook, the bare repository's path, or the clone URL the hook was
installed with). Our clones live under ``work_dir``, one per origin, named
like the run mirrors (``<name>-<hash>``); they are bare and, where the server
allows it, blobless (``--filter=blob:none``: ``read_file`` fetches the blobs
it reads).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import logging
import os
import random
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from trainops.errors import ForgeError, GitError
from trainops.git import git
from trainops.gpu_runners.workspace import mirror_name
from trainops.models import CommitStatus, PullRequestRef

log = logging.getLogger(__name__)

NOTES_REF = "refs/notes/trainops"
"""The human-readable report, one note per commit (``git log --notes=trainops``)."""

STATE_REF = "refs/notes/trainops-state"
"""The same report as JSON, from which the note is rendered; ours alone to write."""

REFS = (NOTES_REF, STATE_REF)
_NOTES_REFSPEC = "+refs/notes/trainops*:refs/notes/trainops*"  # both refs; none is fine
_IDENTITY = {
    # Notes are commits: they need an author, and the service host may have none set.
    "GIT_AUTHOR_NAME": "trainops",
    "GIT_AUTHOR_EMAIL": "trainops@localhost",
    "GIT_COMMITTER_NAME": "trainops",
    "GIT_COMMITTER_EMAIL": "trainops@localhost",
}
_RETRIABLE = (
    # Rejected by the ancestry check on either side: someone pushed notes since our fetch.
    "fetch first",
    "non-fast-forward",
    "stale info",
    "atomic push failed",  # the other ref of our --atomic push was rejected
    # The server lost a race for the ref itself while another push updated it.
    "lock",
    "transaction failed",
    "failed to update ref",
    "incorrect old value",
)
"""Push rejections that mean "someone else wrote meanwhile": fetch, re-apply, push again."""

_OBJECT_ID = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")

State = dict[str, Any]
"""``{"statuses": [{context, state, description, url}], "comments": [{key, number, body}]}``"""


class LocalForge:
    """Reports as git notes on the origin repository; the plain-git mode's forge.

    ``work_dir`` holds one bare clone per origin (e.g. ``<data dir>/notes``);
    ``git_env`` carries credentials for fetch and push (``trainops.git.auth_env``);
    ``attempts`` bounds the fetch-apply-push rounds when other writers race us.
    """

    name = "git"

    def __init__(
        self, work_dir: Path, *, git_env: Mapping[str, str] | None = None, attempts: int = 6
    ) -> None:
        if attempts < 1:
            raise ValueError(f"a LocalForge needs at least one push attempt, not {attempts}")
        self.work_dir = work_dir.resolve()  # absolute: git runs in other directories
        self.attempts = attempts
        self._env = {**(git_env or {}), **_IDENTITY}
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._last_sha: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"LocalForge({str(self.work_dir)!r})"

    # -- the Forge protocol ------------------------------------------------------

    def read_file(self, repo: str, ref: str, path: str) -> bytes | None:
        """The file at ``ref`` (branch, tag or full sha) in the origin; None when the
        ref or the file does not exist there."""
        if ref.startswith("-") or not ref or "\n" in path:
            raise ForgeError(f"reading {path!r} at {ref!r}: not a ref or path git accepts")
        origin = _origin(repo)
        with self._locked(origin):
            try:
                clone = self._clone(origin)
                oid = self._fetch_ref(clone, origin, ref)
                if oid is None:
                    return None
                return self._read_blob(clone, f"{oid}:{path.lstrip('/')}")
            except GitError as exc:
                raise ForgeError(str(exc), transient=True) from exc

    def set_status(self, repo: str, sha: str, status: CommitStatus) -> None:
        """Create or replace the line for ``status.context`` in the note on ``sha``."""
        entry = {
            "context": status.context,
            "state": str(status.state),
            "description": status.description,
            "url": status.url,
        }

        def change(state: State) -> None:
            _put(state.setdefault("statuses", []), "context", entry)

        self._update(repo, sha, change, doing=f"setting status {status.context!r}")
        with self._guard:
            self._last_sha[_origin(repo)] = sha

    def upsert_comment(
        self, repo: str, number: int, key: str, body: str, *, sha: str | None = None
    ) -> str:
        """Store ``body`` under ``key`` in the note on ``sha``; returns ``<sha>:<key>``.

        Plain git has no merge requests: ``number`` is only recorded. Without
        ``sha`` the body goes to the commit this forge last set a status on in
        ``repo`` (a reporter sets the statuses of a run before its comment).
        """
        if sha is None:
            with self._guard:
                sha = self._last_sha.get(_origin(repo))
            if sha is None:
                raise ForgeError(
                    f"writing comment {key!r} in {repo}: plain git has no merge requests, so "
                    "the comment needs a commit (pass sha=, or set a status on it first)"
                )
        entry = {"key": key, "number": number, "body": body}

        def change(state: State) -> None:
            _put(state.setdefault("comments", []), "key", entry)

        self._update(repo, sha, change, doing=f"writing comment {key!r}")
        return f"{sha}:{key}"

    def open_pull_request(
        self, repo: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequestRef:
        """Always refused: a plain git server has no pull requests."""
        raise ForgeError(
            f"opening a pull request from {head!r} into {base!r} in {repo}: plain git "
            "repositories have no pull requests; promotion to a plain git repository "
            "pushes a branch instead"
        )

    def permission(self, repo: str, user: str) -> str:
        """``write`` for everyone: in the plain-git mode whoever can push to the server
        is trusted (access is the server's business: ssh keys, file permissions)."""
        return "write"

    # -- the note ----------------------------------------------------------------

    def _update(self, repo: str, sha: str, change: Callable[[State], None], *, doing: str) -> None:
        """Fetch, apply ``change`` to the state of ``sha``'s note, write, push; retry on races."""
        if not _OBJECT_ID.fullmatch(sha):
            raise ForgeError(f"{doing} on {sha!r}: not a full commit id")
        origin = _origin(repo)
        doing = f"{doing} on {sha[:12]} in {origin}"
        fetch = ["fetch", "--quiet", "--prune", "--no-tags", "origin", _NOTES_REFSPEC]
        rejected: str | None = None
        with self._locked(origin):
            try:
                clone = self._clone(origin)
                self._fetch_commit(clone, sha, doing)
                for attempt in range(1, self.attempts + 1):
                    self._run(clone, fetch, doing=f"{doing}: fetching notes")
                    before = self._read_state(clone, sha)
                    after = copy.deepcopy(before)
                    change(after)
                    if after == before:
                        return  # nothing new: no commit, no push, no hook
                    self._write(clone, sha, after, doing)
                    rejected = self._push(clone, doing)
                    if rejected is None:
                        return
                    log.info("%s: push rejected (%s), attempt %d", doing, rejected, attempt)
                    time.sleep(random.uniform(0.02, 0.1) * attempt)
            except GitError as exc:
                raise ForgeError(str(exc), transient=True) from exc
        raise ForgeError(
            f"{doing}: the notes push was rejected {self.attempts} times ({rejected})",
            transient=True,
        )

    def _read_state(self, clone: Path, sha: str) -> State:
        out = self._run(
            clone, ["notes", f"--ref={STATE_REF}", "show", sha], doing="reading", check=False
        )
        if out.returncode != 0:
            err = out.stderr.decode(errors="replace")
            if "no note found" in err:
                return {}
            raise GitError(f"reading the trainops state of {sha[:12]}: {_last_line(err)}")
        try:
            state = json.loads(out.stdout)
        except ValueError:
            log.warning("replacing the unreadable trainops state note on %s", sha[:12])
            return {}
        return state if isinstance(state, dict) else {}

    def _write(self, clone: Path, sha: str, state: State, doing: str) -> None:
        for ref, text in ((NOTES_REF, render(state)), (STATE_REF, _dump(state))):
            self._run(
                clone,
                ["notes", f"--ref={ref}", "add", "--force", "--file=-", sha],
                doing=f"{doing}: writing the note",
                input=text.encode(),
            )

    def _push(self, clone: Path, doing: str) -> str | None:
        """Push both notes refs atomically; None when done, the reason when it lost a race."""
        out = self._run(
            clone,
            ["push", "--atomic", "--porcelain", "origin", *(f"{r}:{r}" for r in REFS)],
            doing=f"{doing}: pushing notes",
            check=False,
        )
        if out.returncode == 0:
            return None
        # Porcelain lines: "!<TAB>src:dst<TAB>[rejected] (fetch first)".
        reasons = [
            line.split("\t")[-1]
            for line in out.stdout.decode(errors="replace").splitlines()
            if line.startswith("!")
        ]
        if reasons and all(any(r in reason for r in _RETRIABLE) for reason in reasons):
            return "; ".join(reasons)
        detail = reasons or out.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise GitError(f"{doing}: pushing notes: {'; '.join(detail) or 'git push failed'}")

    # -- our clone of the origin ---------------------------------------------------

    def _clone(self, origin: str) -> Path:
        """Our bare clone of ``origin`` (made on first use); the caller holds the lock."""
        path = self.work_dir / mirror_name(origin)
        if (path / "HEAD").is_file():
            return path
        partial = path.with_name(f"{path.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)  # not a repository: a clone cut short
        dest = str(partial)
        # Local paths ignore --filter (their objects are hard-linked anyway).
        git(
            ["clone", "--bare", "--quiet", "--no-tags", "--filter=blob:none", "--", origin, dest],
            cwd=self.work_dir,
            doing=f"cloning {origin} for its notes",
            env=self._env,
        )
        partial.rename(path)
        return path

    def _fetch_commit(self, clone: Path, sha: str, doing: str) -> None:
        """Make sure ``sha`` is here, fetching it by id: proof that the origin has it."""
        if self._has_commit(clone, sha):
            return
        out = self._run(
            clone, ["fetch", "--quiet", "--no-tags", "origin", sha], doing=doing, check=False
        )
        if out.returncode == 0 and self._has_commit(clone, sha):
            return
        err = out.stderr.decode(errors="replace")
        if out.returncode == 0 or "not our ref" in err:
            raise ForgeError(f"{doing}: the origin has no commit {sha}")
        raise ForgeError(f"{doing}: fetching the commit: {_last_line(err)}", transient=True)

    def _fetch_ref(self, clone: Path, origin: str, ref: str) -> str | None:
        """The object ``ref`` names in the origin, fetched here; None when there is none."""
        if _OBJECT_ID.fullmatch(ref) and self._has_commit(clone, ref):
            return ref
        doing = f"fetching {ref!r} from {origin}"
        fetch = ["fetch", "--quiet", "--no-tags", "origin", ref]
        out = self._run(clone, fetch, doing=doing, check=False)
        if out.returncode != 0:
            err = out.stderr.decode(errors="replace")
            if "couldn't find remote ref" in err or "not our ref" in err:
                return None
            raise GitError(f"{doing}: {_last_line(err)}")
        head = self._run(clone, ["rev-parse", "--verify", "FETCH_HEAD"], doing=doing)
        return head.stdout.decode().strip()

    def _read_blob(self, clone: Path, name: str) -> bytes | None:
        """The blob ``<commit>:<path>`` names; None when absent or not a file."""
        # --batch, unlike ``cat-file blob``, answers "missing" instead of failing.
        out = self._run(
            clone, ["cat-file", "--batch"], doing=f"reading {name}", input=f"{name}\n".encode()
        ).stdout
        header, _, content = out.partition(b"\n")
        fields = header.split(b" ")
        if len(fields) != 3 or fields[1] != b"blob":
            return None  # "<name> missing", or a tree
        return content[: int(fields[2])]

    def _has_commit(self, clone: Path, sha: str) -> bool:
        out = self._run(clone, ["cat-file", "-e", f"{sha}^{{commit}}"], doing="", check=False)
        return out.returncode == 0

    def _run(
        self,
        clone: Path,
        args: list[str],
        *,
        doing: str,
        input: bytes | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        # Always name the git dir: found by discovery, a clone gone missing would
        # make git walk up into whatever repository holds the data dir.
        return git(
            [f"--git-dir={clone}", *args],
            cwd=self.work_dir,
            doing=doing,
            input=input,
            check=check,
            env=self._env,
        )

    @contextlib.contextmanager
    def _locked(self, origin: str) -> Iterator[None]:
        """One writer per origin: a thread lock here, an flock across processes."""
        with self._guard:
            lock = self._locks.setdefault(origin, threading.Lock())
        with lock:
            try:
                self.work_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(
                    self.work_dir / f"{mirror_name(origin)}.lock",
                    os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                    0o644,
                )
            except OSError as exc:
                raise ForgeError(
                    f"opening the notes lock in {str(self.work_dir)!r}: {exc}"
                ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)


def render(state: State) -> str:
    """The note a human reads: aligned status lines, then each comment body."""
    blocks: list[str] = []
    statuses = state.get("statuses", [])
    if statuses:
        rows = [
            [s["context"], s["state"], " ".join(str(s["description"]).split()), s["url"] or ""]
            for s in statuses
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, [*widths, 0], strict=True))
            for row in rows
        ]
        blocks.append("\n".join(line.rstrip() for line in lines))
    blocks += [c["body"].strip() for c in state.get("comments", []) if c["body"].strip()]
    return "\n\n".join(blocks) + "\n"


def _put(entries: list[dict[str, Any]], field: str, entry: dict[str, Any]) -> None:
    """Replace the entry with the same ``field`` in place, or append it."""
    for i, old in enumerate(entries):
        if old.get(field) == entry[field]:
            entries[i] = entry
            return
    entries.append(entry)


def _dump(state: State) -> str:
    return json.dumps(state, sort_keys=True, ensure_ascii=False) + "\n"


def _origin(repo: str) -> str:
    """The origin as git is given it: local paths made absolute, URLs as they are."""
    if "://" in repo or _SCP_LIKE.match(repo):
        return repo
    return str(Path(repo).expanduser().resolve())


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "git failed"
