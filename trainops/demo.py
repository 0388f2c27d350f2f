"""Turn ``examples/digits`` into a real git + DVC repository with a local remote.

The demo and the tests need what a team would have: a git history, data
tracked by DVC (not git) and pushed to a remote, so a fresh clone gets it
back with ``dvc pull``. Everything runs as child processes of this
interpreter (``sys.executable -m dvc``), so the DVC and scikit-learn that
trainops was installed with are the ones used, and never through a shell.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from trainops.config import child_env
from trainops.errors import ConfigError, DataError
from trainops.git import git

__all__ = [
    "ensure_deploy_repo",
    "ensure_origin",
    "follow_run",
    "make_demo_repo",
    "new_demo_commit",
    "push",
]

log = logging.getLogger(__name__)

# What running the example in place would leave behind; a new repository
# starts without it (data comes from make_data.py, the rest from dvc repro).
_GENERATED = frozenset(
    {
        ".git",
        ".dvc",
        "dvc.lock",
        "metrics.json",
        "predictions.csv",
        "model",
        "data/raw",
        "data/raw.dvc",
        "data/prepared",
    }
)
_JUNK = frozenset({"__pycache__", ".venv", ".pytest_cache", ".ipynb_checkpoints"})
_STEP_TIMEOUT_S = 300.0


def make_demo_repo(example_dir: Path, dest: Path, remote_dir: Path) -> Path:
    """Create the example repository at ``dest`` and push its data to ``remote_dir``.

    ``dest`` must be absent or an empty directory. On failure ``dest`` is
    left as it was found, so the call can simply be repeated.
    """
    example_dir = example_dir.resolve()
    dest = dest.resolve()
    remote_dir = remote_dir.resolve()
    for needed in ("dvc.yaml", "scripts/make_data.py"):
        if not (example_dir / needed).is_file():
            raise ConfigError(f"creating the demo repository: {example_dir} has no {needed}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ConfigError(
            f"creating the demo repository at {dest}: it exists and is not an empty directory"
        )
    created = not dest.exists()
    try:
        _populate(example_dir, dest, remote_dir)
    except BaseException:
        _undo(dest, created)
        raise
    return dest


def _populate(example_dir: Path, dest: Path, remote_dir: Path) -> None:
    shutil.copytree(example_dir, dest, ignore=_ignore_generated(example_dir), dirs_exist_ok=True)
    log.info("copied %s to %s", example_dir, dest)

    git(["init", "-q", "-b", "main"], cwd=dest, doing=f"creating a git repository at {dest}")
    for key, value in (
        ("user.name", "trainops demo"),
        ("user.email", "demo@trainops.invalid"),
        ("commit.gpgsign", "false"),  # a host-wide signing setup must not block the demo
    ):
        git(["config", key, value], cwd=dest, doing=f"configuring git in {dest}")

    _run([sys.executable, "scripts/make_data.py"], dest, doing="writing the example data")
    _dvc(["init", "-q"], dest, doing="initialising DVC")
    remote_dir.mkdir(parents=True, exist_ok=True)
    _dvc(
        ["remote", "add", "-d", "local", str(remote_dir)],
        dest,
        doing=f"adding DVC remote {remote_dir}",
    )
    _dvc(["add", "-q", "data/raw"], dest, doing="tracking data/raw with DVC")

    git(["add", "-A"], cwd=dest, doing=f"staging the demo repository at {dest}")
    git(
        ["commit", "-q", "--no-verify", "-m", "digits: example pipeline with DVC-tracked data"],
        cwd=dest,
        doing=f"committing the demo repository at {dest}",
    )
    _dvc(["push", "-q"], dest, doing=f"pushing data to DVC remote {remote_dir}")
    log.info("demo repository ready at %s (DVC remote %s)", dest, remote_dir)


def _ignore_generated(root: Path) -> Callable[[str, list[str]], set[str]]:
    def ignore(directory: str, names: list[str]) -> set[str]:
        rel = Path(directory).relative_to(root)
        return {
            n for n in names if n in _JUNK or (rel / n).as_posix().removeprefix("./") in _GENERATED
        }

    return ignore


def _dvc(args: Sequence[str], cwd: Path, *, doing: str) -> None:
    _run([sys.executable, "-m", "dvc", *args], cwd, doing=doing)


def _run(argv: Sequence[str], cwd: Path, *, doing: str) -> None:
    """Run one step; a failure says what was being done and the step's last words."""
    try:
        proc = subprocess.run(
            list(argv),
            cwd=cwd,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=_STEP_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"{doing} in {cwd}: {exc}") from exc
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        detail = lines[-1] if lines else f"exit code {proc.returncode}"
        raise DataError(f"{doing} in {cwd}: {detail}")
    log.debug("%s: done", doing)


def _undo(dest: Path, created: bool) -> None:
    """Put ``dest`` back as it was: absent, or an empty directory."""
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def ensure_origin(work: Path, bare: Path) -> Path:
    """A bare "origin" for the demo repository (the server people push to), once."""
    if not (bare / "HEAD").is_file():
        bare.parent.mkdir(parents=True, exist_ok=True)
        git(
            ["init", "-q", "--bare", "-b", "main", str(bare)],
            cwd=bare.parent,
            doing=f"creating the bare origin {bare}",
        )
    remotes = git(["remote"], cwd=work, doing="listing remotes").stdout.decode().split()
    verb = "set-url" if "origin" in remotes else "add"
    git(["remote", verb, "origin", str(bare)], cwd=work, doing=f"pointing origin at {bare}")
    return bare


def new_demo_commit(work: Path, bare: Path) -> str:
    """The commit to push: the first one, or one that touches no stage's inputs."""
    pushed = git(["rev-parse", "--verify", "-q", "main"], cwd=bare, doing="", check=False)
    head = git(["rev-parse", "HEAD"], cwd=work, doing="reading HEAD").stdout.decode().strip()
    if pushed.returncode != 0 or pushed.stdout.decode().strip() != head:
        return head  # not pushed yet
    notes = work / "PUSHES.md"
    count = len(notes.read_text().splitlines()) if notes.exists() else 0
    with notes.open("a") as f:
        f.write(f"- demo push {count + 1}\n")
    git(["add", "PUSHES.md"], cwd=work, doing="staging PUSHES.md")
    git(
        ["commit", "-q", "--no-verify", "-m", f"docs: demo push {count + 1}"],
        cwd=work,
        doing="committing a change no stage depends on",
    )
    return git(["rev-parse", "HEAD"], cwd=work, doing="reading HEAD").stdout.decode().strip()


def push(work: Path) -> str:
    """``git push origin main``; returns what the server said (the hook's lines)."""
    out = git(["push", "origin", "HEAD:refs/heads/main"], cwd=work, doing="pushing to origin")
    return "\n".join(
        line.removeprefix("remote: ").strip()
        for line in out.stderr.decode(errors="replace").splitlines()
        if line.startswith("remote: ")
    )


TERMINAL = frozenset({"succeeded", "failed", "errored", "cancelled", "superseded"})


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def follow_run(
    service: str,
    commit: str,
    *,
    on_change: Callable[[dict[str, Any]], None],
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Watch the service's API until the run of ``commit`` ends; returns its final JSON.

    ``on_change`` gets the run each time its status or a stage's state moves.
    """
    deadline = time.monotonic() + timeout_s
    run_id = None
    seen = None
    while time.monotonic() < deadline:
        if run_id is None:
            runs = _get(f"{service}/api/runs?limit=20")
            run_id = next((r["id"] for r in runs if r["commit"] == commit), None)
        if run_id is not None:
            run = _get(f"{service}/api/runs/{urllib.parse.quote(run_id)}")
            state = (run["status"], [(s["name"], s.get("status")) for s in run["stages"]])
            if state != seen:
                seen = state
                on_change(run)
            if run["status"] in TERMINAL:
                return dict(run)
        time.sleep(0.2)
    raise TimeoutError(f"no finished run for {commit[:12]} after {timeout_s:.0f}s")


def ensure_deploy_repo(bare: Path) -> Path:
    """A bare deployment repository with a ``main`` branch (promotions branch off it)."""
    if (bare / "HEAD").is_file():
        return bare
    bare.parent.mkdir(parents=True, exist_ok=True)
    seed = bare.with_name(bare.name + ".seed")
    shutil.rmtree(seed, ignore_errors=True)
    git(["init", "-q", "-b", "main", str(seed)], cwd=bare.parent, doing="creating the deploy repo")
    (seed / "README.md").write_text(
        "# deployment repository\n\nArgo CD or Flux applies `environments/<env>/`; "
        "trainops proposes changes on `trainops/promote/...` branches.\n"
    )
    for args in (
        ["add", "README.md"],
        [
            "-c",
            "user.name=trainops demo",
            "-c",
            "user.email=demo@trainops.invalid",
            "commit",
            "-q",
            "-m",
            "deployment repository",
        ],
        ["clone", "-q", "--bare", str(seed), str(bare)],
    ):
        git(args, cwd=seed, doing=f"creating the deploy repo {bare}")
    shutil.rmtree(seed, ignore_errors=True)
    return bare
