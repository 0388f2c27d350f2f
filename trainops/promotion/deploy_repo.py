"""The deployment repository: serving manifests committed on a promotion branch, pushed.

Layout (what Argo CD's git directory generator or a Flux ``Kustomization`` reads)::

    environments/<env>/kustomization.yaml              resources: one entry per model dir
    environments/<env>/<model>/kustomization.yaml      resources: [inferenceservice.yaml]
    environments/<env>/<model>/inferenceservice.yaml   written by trainops

A promotion of (model, environment, version) lives on one branch,
:func:`promotion_branch`, whose name carries a hash of the three. The model's
directory becomes exactly the promotion's files (trainops owns it); the
environment's kustomization gains the model's entry if it lacks one (other
entries are kept). Then, through a :class:`~trainops.protocols.Forge`, a pull
request is opened (or the open one reused); for a plain git deployment repo
the branch is pushed and, with ``fast_forward``, the base branch is moved to it.

Idempotent: when the base branch already serves the files there is nothing to
propose; when the promotion branch already holds them (and is not merged yet)
it is reused as it is, so promoting the same version twice makes one branch, one
commit and one pull request. A rollback is a promotion of an older version.

Everything happens in a bare working clone under ``work_dir``, without a
working tree: trees are built in a throw-away index and committed with
``git commit-tree``, so nothing is ever checked out. Pushes carry
``--force-with-lease`` against what was just fetched; when someone else moved a
ref meanwhile the push is rejected, and the promotion is redone on the new
base, a few times.

Promotions of the same (model, environment) are serialised, and so is the use
of one working clone, by a thread lock plus an ``fcntl`` lock file under
``work_dir/locks`` (processes sharing ``work_dir`` queue; the lock file names
its holder, see :meth:`DeployRepo.lock_holder`).

Errors raise :class:`PromotionError` (defined here, a ``TrainopsError``).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import yaml

from trainops.errors import ForgeError, GitError, TrainopsError
from trainops.git import GitRepo, git
from trainops.manifests.serving import dump_yaml
from trainops.models import PullRequestRef
from trainops.protocols import Forge

log = logging.getLogger(__name__)

PUSH_ATTEMPTS = 5
"""Tries of fetch → commit → push before a promotion whose push keeps being rejected fails."""
ENV_ROOT = "environments"
BRANCH_PREFIX = "trainops/promote/"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}\Z")
_PATH_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z")
_RETRYABLE = (
    "stale info",
    "fetch first",
    "non-fast-forward",
    "atomic push failed",
    "atomic transaction failed",
    "already exists",
    "incorrect old value",
    "failed to update ref",
    "failed to lock",
    "cannot lock",
)
"""Push rejections that mean "someone moved the ref meanwhile": fetch and redo."""


class PromotionError(TrainopsError):
    """A promotion could not be committed, pushed or proposed; says what was being done.

    ``transient``: worth trying again later (a push rejected every time, a forge
    that is down).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Promotion:
    """What to serve: ``files`` go to ``environments/<environment>/<model>/``."""

    model: str
    version: str
    environment: str
    files: Mapping[str, str]
    """Path relative to the model's directory → content (``inferenceservice.yaml``,
    ``kustomization.yaml``). The directory ends up holding exactly these files."""
    title: str
    """Pull request title, also the commit's subject."""
    body: str
    """Pull request body: the provenance, written by the caller."""

    def __post_init__(self) -> None:
        for what, value in (("model", self.model), ("environment", self.environment)):
            if not _NAME.match(value):
                raise PromotionError(
                    f"promoting: {what} {value!r} cannot name a directory of the deployment "
                    "repository (letters, digits, '.', '_', '-'; starting with a letter or digit)"
                )
        if not str(self.version).strip():
            raise PromotionError(f"promoting {self.model}: the version is empty")
        if not self.files:
            raise PromotionError(f"promoting {self.model} v{self.version}: no files to commit")
        for rel in self.files:
            parts = rel.split("/")
            if not all(_PATH_PART.match(p) for p in parts):
                raise PromotionError(
                    f"promoting {self.model} v{self.version}: {rel!r} is not a plain relative "
                    "path inside the model's directory"
                )
        if not self.title.strip():
            raise PromotionError(f"promoting {self.model} v{self.version}: the title is empty")

    @property
    def directory(self) -> str:
        """The model's directory in the deployment repository."""
        return f"{ENV_ROOT}/{self.environment}/{self.model}"


@dataclass(frozen=True)
class PromotionResult:
    branch: str
    commit: str | None
    """The commit that carries the promotion (on ``branch``, and on the base branch when
    fast-forwarded); None when the base branch already serves exactly these files, so
    there was nothing to propose (no push, no pull request)."""
    changed: bool
    """A new commit was made and pushed; False when an existing one was reused."""
    pull_request: PullRequestRef | None
    fast_forwarded: bool
    """The base branch was moved to ``commit`` (plain git, ``fast_forward=True``)."""


def promotion_branch(model: str, environment: str, version: str) -> str:
    """``trainops/promote/<model>-<env>-v<version>-<hash8>``, safe as a git ref name.

    The hash covers the three exact values, so names that sanitise alike stay apart.
    """
    digest = hashlib.sha256(f"{model}\0{environment}\0{version}".encode()).hexdigest()[:8]
    shown = version if re.match(r"[vV]\d", version) else f"v{version}"
    readable = _ref_safe(f"{model}-{environment}-{shown}")[:100].strip(".-")
    return f"{BRANCH_PREFIX}{readable or 'model'}-{digest}"


def _ref_safe(text: str) -> str:
    """One ref component: no '/', no '..', no control or special characters."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    text = re.sub(r"\.{2,}", ".", text)
    text = re.sub(r"-{2,}", "-", text)
    return text.strip(".-")


def _redact(text: str) -> str:
    """Hide credentials a URL might carry (``https://user:token@host``)."""
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", text)


# -- the environment's kustomization ----------------------------------------------


def _entry(resource: str) -> str:
    return resource.strip().removeprefix("./").rstrip("/")


def env_kustomization(current: str | None, model: str, *, where: str) -> str | None:
    """The environment's kustomization listing ``model``, or None when it already does.

    Existing keys and entries are kept; ``resources`` is sorted. Written by
    :func:`trainops.manifests.serving.dump_yaml` (every string double-quoted).
    """
    document: dict[str, Any]
    if current is None:
        document = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [],
        }
    else:
        try:
            loaded = yaml.safe_load(current)
        except yaml.YAMLError as exc:
            raise PromotionError(f"{where}: not valid YAML ({exc})") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise PromotionError(f"{where}: expected a mapping (a Kustomization)")
        document = loaded
    resources = document.get("resources") or []
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        raise PromotionError(f"{where}: 'resources' must be a list of strings")
    if model in {_entry(r) for r in resources}:
        return None
    document["resources"] = sorted({*resources, model})
    return dump_yaml(document)


# -- locks ------------------------------------------------------------------------

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


@contextmanager
def _locked(path: Path, holder: str) -> Iterator[None]:
    """Exclusive across threads (a lock per path) and processes (``flock`` on the file)."""
    key = str(path.absolute())
    with _THREAD_LOCKS_GUARD:
        lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
    with lock:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PromotionError(f"opening the lock file {path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{holder}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the flock


def _holder(what: str) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{what} (pid {os.getpid()}, since {now})"


# -- the repository ---------------------------------------------------------------


@dataclass(frozen=True)
class _Refs:
    base: str | None
    branch: str | None


class _Rejected(Exception):
    """A push (or fetch) lost a race with another writer: redo on fresh refs."""


class DeployRepo:
    """One deployment repository, reached at ``url`` (any URL git takes, or a path).

    ``forge`` and ``forge_repo`` (e.g. ``acme/deploy``): open pull requests there.
    Without a forge the branch is only pushed; ``fast_forward`` then also moves
    ``base_branch`` to it. ``git_env`` carries credentials
    (:func:`trainops.git.auth_env`), never the URL.
    """

    def __init__(
        self,
        url: str,
        work_dir: Path,
        *,
        base_branch: str = "main",
        forge: Forge | None = None,
        forge_repo: str | None = None,
        fast_forward: bool = False,
        git_env: Mapping[str, str] | None = None,
        author: tuple[str, str] = ("trainops", "trainops@localhost"),
    ) -> None:
        if not url or url.startswith("-"):
            raise PromotionError(f"deployment repository: {url!r} is not a repository URL")
        if forge is not None and not forge_repo:
            raise PromotionError(
                f"deployment repository {_redact(url)}: a forge needs forge_repo (owner/name)"
            )
        if forge is not None and fast_forward:
            raise PromotionError(
                f"deployment repository {_redact(url)}: fast_forward is for plain git; "
                "with a forge the pull request is the way in"
            )
        check = git(
            ["check-ref-format", "--branch", base_branch],
            cwd=Path("/"),
            doing="checking the base branch name",
            check=False,
        )
        if check.returncode != 0 or base_branch.startswith("-"):
            raise PromotionError(f"deployment repository: {base_branch!r} is not a branch name")
        self.url = url
        self.work_dir = Path(work_dir)
        self.base_branch = base_branch
        self.forge = forge
        self.forge_repo = forge_repo
        self.fast_forward = fast_forward
        self._git_env = dict(git_env or {})
        name, email = author
        self._author_env = {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }
        stem = _ref_safe(url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")) or "deploy"
        self._name = f"{stem}-{hashlib.sha256(url.encode()).hexdigest()[:8]}"
        self.clone_dir = self.work_dir / f"{self._name}.git"
        self._locks = self.work_dir / "locks"

    def __repr__(self) -> str:
        return f"DeployRepo({_redact(self.url)!r}, base_branch={self.base_branch!r})"

    # -- public -------------------------------------------------------------------

    def current(
        self, environment: str, model: str, filename: str = "inferenceservice.yaml"
    ) -> str | None:
        """What the base branch serves now for ``model`` in ``environment`` (None: nothing)."""
        if not (_NAME.match(environment) and _NAME.match(model) and _PATH_PART.match(filename)):
            raise PromotionError(
                f"reading {environment}/{model}/{filename}: not a path trainops writes"
            )
        path = f"{ENV_ROOT}/{environment}/{model}/{filename}"
        with self._repo_lock(f"reading {path}"):
            self._ensure_clone()
            try:
                refs = self._fetch(None)
            except _Rejected as exc:
                raise PromotionError(f"reading {path}: {exc}", transient=True) from exc
            if refs.base is None:
                return None
            content = self._read(refs.base, path)
        return None if content is None else content.decode(errors="replace")

    def lock_holder(self, environment: str, model: str) -> str | None:
        """Who holds the promotion lock of (model, environment) now, or None when free."""
        path = self._model_lock_path(environment, model)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def promote(self, promotion: Promotion) -> PromotionResult:
        """Commit, push and propose ``promotion``; see the module's docstring."""
        p = promotion
        branch = promotion_branch(p.model, p.environment, p.version)
        what = f"promoting {p.model} v{p.version} to {p.environment}"
        with _locked(self._model_lock_path(p.environment, p.model), _holder(what)):
            result: PromotionResult | None = None
            for attempt in range(1, PUSH_ATTEMPTS + 1):
                try:
                    with self._repo_lock(what):
                        self._ensure_clone()
                        result = self._attempt(p, branch)
                    break
                except _Rejected as exc:
                    log.info("%s: %s (attempt %d); redoing on the new base", what, exc, attempt)
                    time.sleep(random.uniform(0.02, 0.1) * attempt)
            if result is None:
                raise PromotionError(
                    f"{what}: the push to {_redact(self.url)} was rejected {PUSH_ATTEMPTS} "
                    "times (other writers keep moving the branch)",
                    transient=True,
                )
            if self.forge is None or result.commit is None:
                return result
            assert self.forge_repo is not None
            try:
                pr = self.forge.open_pull_request(
                    self.forge_repo,
                    head=branch,
                    base=self.base_branch,
                    title=p.title,
                    body=p.body,
                )
            except ForgeError as exc:
                raise PromotionError(
                    f"{what}: opening the pull request {branch} → {self.base_branch} in "
                    f"{self.forge_repo}: {exc}",
                    transient=exc.transient,
                ) from exc
            return PromotionResult(branch, result.commit, result.changed, pr, False)

    # -- one try --------------------------------------------------------------------

    def _attempt(self, p: Promotion, branch: str) -> PromotionResult:
        refs = self._fetch(branch)
        wanted = self._tree_with(refs.base, p)
        if refs.base is not None and wanted == self._tree_of(refs.base):
            log.info("%s already serves %s v%s", self.base_branch, p.directory, p.version)
            return PromotionResult(branch, None, False, None, False)
        commit: str | None = None
        head = refs.branch
        if (
            head is not None
            and (refs.base is None or not self._is_ancestor(head, refs.base))  # not merged yet
            and self._tree_with(head, p) == self._tree_of(head)  # holds these files
            and (not self.fast_forward or refs.base is None or self._is_ancestor(refs.base, head))
        ):
            commit = head
        changed = commit is None
        if commit is None:
            commit = self._commit(wanted, refs.base, p)
        updates: list[tuple[str, str, str | None]] = []
        if commit != head:
            updates.append((commit, f"refs/heads/{branch}", head))
        if self.fast_forward:
            updates.append((commit, f"refs/heads/{self.base_branch}", refs.base))
        if updates:
            self._push(updates, doing=f"pushing {branch}")
        return PromotionResult(branch, commit, changed, None, self.fast_forward)

    # -- git --------------------------------------------------------------------------

    def _git(
        self,
        *args: str,
        doing: str,
        input: bytes | None = None,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> CompletedProcess[bytes]:
        try:
            return git(
                args,
                cwd=self.clone_dir,
                doing=doing,
                input=input,
                check=check,
                env={**self._git_env, **(env or {})},
            )
        except GitError as exc:
            raise PromotionError(_redact(str(exc))) from exc

    def _out(self, *args: str, doing: str, input: bytes | None = None, **kw: Any) -> str:
        return self._git(*args, doing=doing, input=input, **kw).stdout.decode().strip()

    def _ensure_clone(self) -> None:
        if (self.clone_dir / "HEAD").is_file():
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.work_dir / f".{self._name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            git(
                ["init", "-q", "--bare", str(tmp)],
                cwd=self.work_dir,
                doing=f"creating the working clone of {_redact(self.url)}",
            )
            tmp.rename(self.clone_dir)
        except (GitError, OSError) as exc:
            raise PromotionError(
                f"creating the working clone of {_redact(self.url)} in {self.work_dir}: {exc}"
            ) from exc

    def _fetch(self, branch: str | None) -> _Refs:
        """Fetch the base branch and ``branch`` (when they exist); their shas, as fetched."""
        base_ref = f"refs/heads/{self.base_branch}"
        branch_ref = f"refs/heads/{branch}" if branch else None
        wanted = [r for r in (base_ref, branch_ref) if r]
        listed = self._out(
            "ls-remote", "--", self.url, *wanted, doing=f"listing refs of {_redact(self.url)}"
        )
        present = {line.split("\t", 1)[1] for line in listed.splitlines() if "\t" in line}
        shas: dict[str, str | None] = dict.fromkeys(wanted)
        refspecs = [f"+{r}:{self._tracking(r)}" for r in wanted if r in present]
        if refspecs:
            proc = self._git(
                "fetch",
                "-q",
                "--no-tags",
                "--no-write-fetch-head",
                "--",
                self.url,
                *refspecs,
                doing=f"fetching from {_redact(self.url)}",
                check=False,
            )
            if proc.returncode != 0:
                err = proc.stderr.decode(errors="replace")
                if "couldn't find remote ref" in err:  # deleted since ls-remote
                    raise _Rejected("a ref vanished while fetching")
                last = (err.strip().splitlines() or ["git failed"])[-1]
                raise PromotionError(_redact(f"fetching from {self.url}: {last}"))
        for ref in wanted:
            if ref in present:
                shas[ref] = self._out(
                    "rev-parse",
                    "--verify",
                    f"{self._tracking(ref)}^{{commit}}",
                    doing="reading refs",
                )
            else:  # gone (or never there): forget what an earlier fetch left
                self._git("update-ref", "-d", self._tracking(ref), doing="dropping a stale ref")
        return _Refs(shas[base_ref], shas[branch_ref] if branch_ref else None)

    @staticmethod
    def _tracking(ref: str) -> str:
        return "refs/remotes/origin/" + ref.removeprefix("refs/heads/")

    def _read(self, commit: str, path: str) -> bytes | None:
        try:
            return GitRepo(self.clone_dir).read_files(commit, [path])[path]
        except GitError as exc:
            raise PromotionError(str(exc)) from exc

    def _tree_of(self, commit: str) -> str:
        return self._out("rev-parse", f"{commit}^{{tree}}", doing=f"reading {commit[:12]}")

    def _is_ancestor(self, older: str, newer: str) -> bool:
        proc = self._git(
            "merge-base", "--is-ancestor", older, newer, doing="comparing commits", check=False
        )
        if proc.returncode not in (0, 1):
            raise PromotionError(f"comparing {older[:12]} with {newer[:12]}: git failed")
        return proc.returncode == 0

    def _tree_with(self, parent: str | None, p: Promotion) -> str:
        """The tree of ``parent`` with the promotion's files written (not committed)."""
        index = self.clone_dir / f"trainops-index-{uuid.uuid4().hex}"
        env = {"GIT_INDEX_FILE": str(index)}
        doing = f"writing {p.directory}"
        try:
            if parent is None:
                self._git("read-tree", "--empty", doing=doing, env=env)
            else:
                self._git("read-tree", parent, doing=doing, env=env)
            listed = self._git("ls-files", "-z", "--", f"{p.directory}/", doing=doing, env=env)
            existing = [n.decode() for n in listed.stdout.split(b"\0") if n]
            desired = {f"{p.directory}/{rel}": content for rel, content in p.files.items()}
            entries = [f"0 {'0' * 40}\t{path}" for path in existing if path not in desired]
            for path, content in sorted(desired.items()):
                blob = self._out(
                    "hash-object", "-w", "--stdin", doing=doing, input=content.encode()
                )
                entries.append(f"100644 {blob}\t{path}")
            env_file = f"{ENV_ROOT}/{p.environment}/kustomization.yaml"
            current = self._read(parent, env_file) if parent else None
            listing = env_kustomization(
                None if current is None else current.decode(errors="replace"),
                p.model,
                where=f"{env_file} at {parent[:12] if parent else 'an empty repository'}",
            )
            if listing is not None:
                blob = self._out(
                    "hash-object", "-w", "--stdin", doing=doing, input=listing.encode()
                )
                entries.append(f"100644 {blob}\t{env_file}")
            payload = "".join(f"{e}\0" for e in entries).encode()
            self._git("update-index", "-z", "--index-info", doing=doing, input=payload, env=env)
            return self._out("write-tree", doing=doing, env=env)
        finally:
            index.unlink(missing_ok=True)

    def _commit(self, tree: str, parent: str | None, p: Promotion) -> str:
        message = (
            f"{p.title.strip()}\n\n"
            f"Trainops-Model: {p.model}\n"
            f"Trainops-Version: {p.version}\n"
            f"Trainops-Environment: {p.environment}\n"
        )
        args = ["commit-tree", tree, *(["-p", parent] if parent else []), "-F", "-"]
        return self._out(
            *args,
            doing=f"committing {p.directory}",
            input=message.encode(),
            env=self._author_env,
        )

    def _push(self, updates: list[tuple[str, str, str | None]], *, doing: str) -> None:
        """Move each ref to its commit if it still is where we fetched it; all or none.

        Raises ``_Rejected`` when another writer got there first.
        """
        args = ["push", "--porcelain"]
        if len(updates) > 1:
            args.append("--atomic")
        args += [f"--force-with-lease={ref}:{old or ''}" for _sha, ref, old in updates]
        args += ["--", self.url, *(f"{sha}:{ref}" for sha, ref, _old in updates)]
        proc = self._git(*args, doing=doing, check=False)
        if proc.returncode == 0:
            return
        lines = proc.stdout.decode(errors="replace").splitlines()
        refused = [line.split("\t")[-1] for line in lines if line.startswith("!\t")]
        if refused and all(any(r in why for r in _RETRYABLE) for why in refused):
            raise _Rejected(f"push rejected: {'; '.join(refused)}")
        detail = "; ".join(refused) or (proc.stderr.decode(errors="replace").strip() or "failed")
        raise PromotionError(_redact(f"{doing} to {self.url}: {detail}"))

    # -- locks ----------------------------------------------------------------------

    def _model_lock_path(self, environment: str, model: str) -> Path:
        return self._locks / f"{self._name}--{environment}--{model}.lock"

    @contextmanager
    def _repo_lock(self, what: str) -> Iterator[None]:
        with _locked(self._locks / f"{self._name}.lock", _holder(what)):
            yield
