"""The valid pipeline as frozen values: what the rest of trainops reads.

Built from the raw layer by ``validate.build_spec``. This module imports no
pydantic, so code that only reads a Spec (a memoized plan, a cached run)
stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from trainops.models import Resources

TRAINOPS_FILE = "trainops.yaml"
DVC_FILE = "dvc.yaml"
DEFAULT_PARAMS = "params.yaml"


@dataclass(frozen=True)
class ParamRef:
    """A parameter a stage reads: ``key`` in ``file`` (None: the whole file)."""

    file: str
    key: str | None


@dataclass(frozen=True)
class StageSpec:
    """A stage with every path relative to the repository root."""

    name: str
    cmd: str
    wdir: str
    needs: tuple[str, ...]
    """Resolved: explicit `needs` plus stages whose outputs this stage depends on."""
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    metrics: tuple[str, ...]
    params: tuple[ParamRef, ...]
    gpus: int = 0
    gpu_type: str | None = None
    resources: Resources = Resources()
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float | None = None
    retries: int = 0
    cache: bool = True
    source: str = TRAINOPS_FILE
    line: int | None = None

    @property
    def produces(self) -> tuple[str, ...]:
        """Everything the stage writes: outs and metrics files."""
        return self.outs + tuple(m for m in self.metrics if m not in self.outs)


BOOTSTRAP_METRICS = ("accuracy", "error_rate")
"""Gate metrics a bootstrap rule can test: each is the mean of a per-example score
(accuracy: 1 when ``label == predicted``; error_rate: 1 when they differ)."""


@dataclass(frozen=True)
class BootstrapRule:
    """A paired bootstrap of candidate against baseline on per-example predictions."""

    predictions: str
    """The CSV a stage writes (repo-relative), one row per example."""
    id: str = "id"
    """Column names in that CSV: the example's id, its true label, the prediction."""
    label: str = "label"
    predicted: str = "predicted"
    margin: float = 0.0
    """Fail only when the whole interval lies beyond a regression of this size."""
    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 0


@dataclass(frozen=True)
class GateRule:
    metric: str
    min: float | None = None
    max: float | None = None
    max_drop: float | None = None
    relative: bool = False
    """``max_drop`` is a fraction of the baseline (written '2%') rather than absolute."""
    required: bool = True
    bootstrap: BootstrapRule | None = None


@dataclass(frozen=True)
class PromoteSpec:
    model_name: str
    model_path: str
    deploy: str | None
    environments: tuple[str, ...]


@dataclass(frozen=True)
class TriggerSpec:
    branches: tuple[str, ...] | None = None
    """Branch patterns; None: the repository's default branch."""
    merge_requests: bool = True
    tags: bool = False
    paths: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Spec:
    name: str
    image: str | None
    data_pull: tuple[str, ...] | None
    """Explicit `data.pull` targets, or None for "every DVC-tracked dependency"."""
    stages: tuple[StageSpec, ...]
    gate: tuple[GateRule, ...]
    promote: PromoteSpec | None
    sources: tuple[str, ...]
    triggers: TriggerSpec = TriggerSpec()

    def stage(self, name: str) -> StageSpec:
        return next(s for s in self.stages if s.name == name)


def inside(path: str, parent: str) -> bool:
    """``path`` equals ``parent`` or lies below it (both repo-relative)."""
    return parent == "." or path == parent or path.startswith(parent.rstrip("/") + "/")


def overlaps(a: str, b: str) -> bool:
    return inside(a, b) or inside(b, a)
