"""Plans remembered per commit: a commit's content never changes, so neither does its plan.

Re-planning the same sha (a re-run, a redelivered webhook, a fully cached
run) then costs one file read instead of parsing and validating YAML. The
memo is keyed by the commit and by trainops' version and plan format; an
unreadable or foreign file is simply a miss.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from pathlib import Path

from trainops import __version__
from trainops.models import Plan
from trainops.pipelines.spec import Spec

FORMAT = 1


def _path(memo_dir: Path, commit: str) -> Path:
    return memo_dir / commit[:2] / f"{commit}.pickle"


def load(memo_dir: Path, commit: str) -> tuple[Spec, Plan] | None:
    try:
        with _path(memo_dir, commit).open("rb") as f:
            stamp, spec, plan = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, AttributeError, TypeError):
        return None
    if stamp != (FORMAT, __version__) or not isinstance(plan, Plan) or plan.commit != commit:
        return None
    return spec, plan


def save(memo_dir: Path, spec: Spec, plan: Plan) -> None:
    path = _path(memo_dir, plan.commit)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            pickle.dump(((FORMAT, __version__), spec, plan), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
