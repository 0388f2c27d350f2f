"""Bring a workspace's DVC-tracked data in from its remote, in process.

DVC runs in this process (``dvc.repo.Repo``) rather than as ``dvc pull``:
that saves a Python start and DVC's import (~0.5 s) per run. Its
exceptions are turned into DataError messages a user can act on, naming
the paths. What dvc 3.x really raises (checked against 3.67) is not what
its docstrings suggest:

- no remote configured: no ``NoRemoteError`` (the data index swallows it);
  the fetch quietly finds nothing and checkout raises ``CheckoutError``;
- objects missing from the remote: ``CheckoutError`` when nothing could be
  fetched, ``DownloadError`` (a bare count of files) when some were;
- a default remote that is not defined: ``RemoteNotFoundError``;
- a target no ``.dvc`` file or ``dvc.yaml`` declares: ``NoOutputOrStageError``.

So ``pull`` is done as its two halves, fetch then checkout (exactly what
``Repo.pull`` does), so that a failed download still gets the checkout that
names the outputs it left missing; the cause is then told apart by looking
at the repository's remote configuration.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainops.errors import DataError

log = logging.getLogger(__name__)


def pull(workspace: Path, targets: Sequence[str]) -> None:
    """Fetch and check out ``targets`` (paths relative to ``workspace``; none: everything).

    Objects already in the cache (the host's shared DVC cache, see
    ``workspace.py``) are not downloaded again. Raises DataError.
    """
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo

    _quiet_dvc()
    # DVC resolves targets against the process's working directory, which a
    # threaded runner cannot change: hand it absolute paths.
    paths = [str(workspace / t) for t in targets] or None
    try:
        repo = Repo(str(workspace))
    except NotDvcRepoError as exc:
        raise DataError(f"pulling data into {workspace}: not a DVC repository") from exc
    except DvcException as exc:
        raise DataError(
            f"pulling data into {workspace}: opening the DVC repository: {exc}"
        ) from exc
    try:
        _fetch_and_check_out(repo, workspace, targets, paths)
    finally:
        repo.close()


def _quiet_dvc() -> None:
    """Route DVC's log records into ours instead of its own console handlers.

    Importing ``dvc`` installs handlers that print INFO to stdout and
    WARNING to stderr, which would mix into trainops' own output (and
    break ``--json``). Without them DVC's records propagate to whatever
    logging the application set up; WARNING also turns DVC's progress
    bars off. Idempotent.
    """
    from dvc.logger import LoggerHandler

    for name in ("dvc", "dvc_objects", "dvc_data"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, LoggerHandler)]:
            logger.removeHandler(handler)
        logger.setLevel(logging.WARNING)


def _fetch_and_check_out(
    repo: Any, workspace: Path, targets: Sequence[str], paths: list[str] | None
) -> None:
    from dvc.config import RemoteNotFoundError
    from dvc.exceptions import CheckoutError, DownloadError, DvcException, NoOutputOrStageError

    what = ", ".join(targets) if targets else "every DVC-tracked path"
    download_error: DownloadError | None = None
    try:
        try:
            repo.fetch(targets=paths)
        except DownloadError as exc:
            download_error = exc
        # force: the workspace is ours and freshly cleaned; without it DVC may
        # prompt on stdin before overwriting.
        repo.checkout(targets=paths, force=True)
    except CheckoutError as exc:
        failed = [_relative(p, workspace) for p in exc.result.get("failed", [])]
        failed = failed or list(targets)
        raise _missing(repo, failed) from exc
    except NoOutputOrStageError as exc:
        untracked = _untracked(repo, paths or [], targets) or list(targets)
        raise DataError(
            f"pulling {', '.join(untracked)}: not tracked by DVC (no .dvc file or dvc.yaml "
            "output declares it); fix data.pull in trainops.yaml or `dvc add` it"
        ) from exc
    except RemoteNotFoundError as exc:
        name = _default_remote(repo)
        raise DataError(
            f"pulling {what}: the default DVC remote {name!r} is not defined; "
            f"add it with `dvc remote add {name} URL` and commit .dvc/config"
        ) from exc
    except DvcException as exc:
        raise DataError(f"pulling {what} with DVC in {workspace}: {exc}") from exc
    if download_error is not None:
        raise _missing(repo, list(targets) or ["some DVC-tracked data"]) from download_error


def _missing(repo: Any, failed: list[str]) -> DataError:
    """The error for outputs whose objects could not be had from the cache or remote."""
    paths = ", ".join(failed)
    name = _default_remote(repo)
    if name is None:
        return DataError(
            f"pulling {paths}: the repository declares no default DVC remote; add one with "
            "`dvc remote add -d NAME URL` and commit .dvc/config"
        )
    url = _remote_url(repo, name)
    return DataError(
        f"pulling data: missing from remote {name!r} ({url}): {paths}; "
        "run `dvc push` in the repository"
    )


def _relative(dvc_path: object, workspace: Path) -> str:
    """DVC names failed outputs relative to the process's cwd; name them as in the repo."""
    path = Path(os.path.abspath(str(dvc_path)))
    try:
        return str(path.relative_to(workspace.resolve()))
    except ValueError:
        return str(dvc_path)


def _default_remote(repo: Any) -> str | None:
    name = repo.config.get("core", {}).get("remote")
    return str(name) if name else None


def _remote_url(repo: Any, name: str) -> str:
    url = repo.config.get("remote", {}).get(name, {}).get("url")
    return str(url) if url else "no url"


def _untracked(repo: Any, paths: list[str], targets: Sequence[str]) -> list[str]:
    """Which of the targets DVC cannot find, asked one by one (error path only)."""
    from dvc.exceptions import DvcException

    bad = []
    for path, target in zip(paths, targets, strict=True):
        try:
            repo.stage.collect_granular(path)
        except DvcException:
            bad.append(target)
    return bad
