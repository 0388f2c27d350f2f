"""Turn ``examples/digits`` into a real git + DVC repository with a local remote.

The demo and the tests need what a team would have: a git history, data
tracked by DVC (not git) and pushed to a remote, so a fresh clone gets it
back with ``dvc pull``. Everything runs as child processes of this
interpreter (``sys.executable -m dvc``), so the DVC and scikit-learn that
trainops was installed with are the ones used, and never through a shell.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from trainops.config import child_env
from trainops.errors import ConfigError, DataError
from trainops.git import git

__all__ = ["make_demo_repo"]

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
