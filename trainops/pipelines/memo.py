"""Plans and specs remembered by content, so re-planning skips YAML and pydantic.

- A plan is remembered per commit: a commit's content never changes, so
  neither does its plan (a re-run, a redelivered webhook).
- A spec is remembered per content of the pipeline files (their git blob
  ids): a new commit that leaves them alone — most pushes — reuses the
  validated spec and only re-plans, which is a few git calls.

Records carry trainops' version and a format number; an unreadable, stale
or foreign file is simply a miss.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainops import __version__
from trainops.models import Plan
from trainops.pipelines.spec import Spec

FORMAT = 2


def _shape() -> str:
    """The field names of every pickled class: a changed value type is a miss, not a crash."""
    from dataclasses import fields

    from trainops.models import PlannedStage, Resources
    from trainops.pipelines import spec as s

    classes = (
        Plan,
        PlannedStage,
        Resources,
        s.Spec,
        s.StageSpec,
        s.ParamRef,
        s.GateRule,
        s.PromoteSpec,
        s.TriggerSpec,
        s.BootstrapRule,
    )
    return ";".join(f"{c.__name__}:{','.join(f.name for f in fields(c))}" for c in classes)


_STAMP = (FORMAT, __version__, hashlib.sha256(_shape().encode()).hexdigest()[:16])


def load_plan(memo_dir: Path, commit: str) -> tuple[Spec, Plan] | None:
    record = _load(memo_dir / "plans" / commit[:2] / f"{commit}.pickle")
    if record is None:
        return None
    spec, plan = record
    if not isinstance(spec, Spec) or not isinstance(plan, Plan) or plan.commit != commit:
        return None
    return spec, plan


def save_plan(memo_dir: Path, spec: Spec, plan: Plan) -> None:
    _save(memo_dir / "plans" / plan.commit[:2] / f"{plan.commit}.pickle", (spec, plan))


def spec_key(default_name: str, file_ids: Mapping[str, str]) -> str:
    """The memo key of a spec read from files with these blob ids."""
    text = repr((default_name, sorted(file_ids.items())))
    return hashlib.sha256(text.encode()).hexdigest()


def load_spec(memo_dir: Path, key: str) -> tuple[Spec, dict[str, str]] | None:
    """The spec and the blob ids of every file it was read from."""
    record = _load(memo_dir / "specs" / key[:2] / f"{key}.pickle")
    if record is None:
        return None
    spec, sources = record
    return (spec, sources) if isinstance(spec, Spec) and isinstance(sources, dict) else None


def save_spec(memo_dir: Path, key: str, spec: Spec, sources: Mapping[str, str]) -> None:
    _save(memo_dir / "specs" / key[:2] / f"{key}.pickle", (spec, dict(sources)))


def _load(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            stamp, payload = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, AttributeError, TypeError):
        return None
    return payload if stamp == _STAMP else None


def _save(path: Path, payload: Any) -> None:
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            pickle.dump((_STAMP, payload), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
