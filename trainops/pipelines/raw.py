"""The pipeline file as written (format version 1): pydantic, unknown keys rejected.

This is the *raw* layer (Atlantis ``config/raw``): it mirrors the YAML a
user writes and produces the JSON Schema for editors. ``spec.py`` turns it
into the frozen values the rest of trainops uses, so a format change touches
this module only.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"
STAGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
ENV_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|M|G|T|P)?$"
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(value: float | int | str) -> float:
    """Seconds from ``90``, ``"90s"``, ``"10m"``, ``"1h30m"``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '10m'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value.strip())
        if not value.strip() or not match or not any(match.groups()):
            raise ValueError(f"{value!r} is not a duration; write e.g. 90, '90s', '10m' or '1h30m'")
        h, m, s = (float(g) if g else 0.0 for g in match.groups())
        seconds = h * 3600 + m * 60 + s
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


class _Raw(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


Duration = Annotated[
    float | str,
    Field(description="Seconds, or a string like '90s', '10m', '1h30m'.", examples=["30m"]),
]
ParamItem = Annotated[
    str | dict[str, list[str] | None],
    Field(
        description=(
            "A key in params.yaml ('train.epochs'), or {file: [keys]} for another file; "
            "{file: null} takes every key of that file."
        )
    ),
]


class RawResources(_Raw):
    """CPU and memory a stage asks for (GPUs are asked for with `gpus`)."""

    cpu: float | None = Field(None, gt=0, description="Cores, fractions allowed (Kubernetes).")
    memory: str | None = Field(
        None, pattern=QUANTITY_PATTERN, description="A Kubernetes quantity, e.g. '8Gi'."
    )


class RawStage(_Raw):
    """One stage. Paths are relative to `wdir`; for stages in dvc.yaml set only what DVC
    cannot say (GPUs, resources, env, timeout, retries, needs)."""

    cmd: str | list[str] | None = Field(
        None, description="Shell command (a list runs each in turn, stopping at a failure)."
    )
    wdir: str | None = Field(None, description="Working directory, relative to the repo root.")
    needs: list[str] = Field(
        default_factory=list,
        description="Stages that must finish first (besides those implied by deps and outs).",
    )
    deps: list[str] = Field(default_factory=list, description="Files/dirs the stage reads.")
    outs: list[str] = Field(default_factory=list, description="Files/dirs the stage writes.")
    params: list[ParamItem] = Field(default_factory=list)
    metrics: list[str] = Field(
        default_factory=list, description="JSON or YAML metrics files the stage writes."
    )
    gpus: int = Field(0, ge=0, le=64, description="Number of whole GPUs, held exclusively.")
    gpu_type: str | None = Field(
        None,
        description="GPU product, as NVML names it or as the nvidia.com/gpu.product label "
        "writes it (e.g. NVIDIA-GeForce-RTX-3090).",
        min_length=1,
    )
    resources: RawResources | None = None
    env: dict[str, str | int | float | bool] = Field(default_factory=dict)
    timeout: Duration | None = None
    retries: int = Field(0, ge=0, le=10, description="Re-runs after a failure.")
    cache: bool = Field(True, description="false: never reuse an earlier execution.")

    @field_validator("env")
    @classmethod
    def _env_keys(cls, env: dict[str, Any]) -> dict[str, Any]:
        for key in env:
            if not re.match(ENV_KEY_PATTERN, key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
        return env

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float | str | None) -> float | str | None:
        if value is not None:
            parse_duration(value)
        return value


class RawData(_Raw):
    pull: list[str] | None = Field(
        None,
        description="DVC targets to `dvc pull` before stages run; default: every "
        "DVC-tracked dependency of the stages.",
    )


class RawBootstrap(_Raw):
    """A statistical check on per-example outputs: the candidate's and the baseline's
    predictions, paired by id, compared with a paired bootstrap confidence interval.
    Fails only when the whole interval lies beyond a regression of `margin`. The metric
    must be `accuracy` (mean of label == predicted) or `error_rate` (mean of label !=
    predicted)."""

    predictions: str = Field(
        description="CSV with a header and one row per example, written by a stage "
        "(listed under its outs or metrics); relative to the repository root.",
        min_length=1,
    )
    id: str = Field("id", min_length=1, description="Column with the example's id.")
    label: str = Field("label", min_length=1, description="Column with the true label.")
    predicted: str = Field(
        "predicted", min_length=1, description="Column with the model's prediction."
    )
    margin: float = Field(
        0.0, ge=0, description="Tolerated regression (absolute, e.g. 0.01 of accuracy)."
    )
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence of the interval.")
    resamples: int = Field(2000, ge=100, le=100000, description="Bootstrap resamples.")
    seed: int = Field(0, ge=0, description="Seed of the resampling (the verdict is repeatable).")


class RawGateRule(_Raw):
    """Checks on one metric. `max_drop` compares with the default branch's baseline:
    a number is an absolute drop, a string like '2%' a relative one. `bootstrap` compares
    per-example predictions with the baseline's."""

    min: float | None = None
    max: float | None = None
    max_drop: float | str | None = None
    required: bool = Field(
        True,
        description="Fail the gate when the metric is missing from the metrics files "
        "(with `bootstrap`: when the run's predictions file is missing; a rule with only "
        "`bootstrap` does not need the metric in the metrics files).",
    )
    bootstrap: RawBootstrap | None = None

    @field_validator("max_drop")
    @classmethod
    def _max_drop(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, str) and not re.match(r"^\d+(\.\d+)?%$", value.strip()):
            raise ValueError(f"{value!r}: write an absolute drop (0.01) or a relative one ('2%')")
        if isinstance(value, float | int) and value < 0:
            raise ValueError("max_drop must not be negative")
        return value


class RawModelRef(_Raw):
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", description="Registered model name."
    )
    path: str = Field(description="The stage output that holds the model.")


class RawPromote(_Raw):
    model: RawModelRef
    deploy: str | None = Field(
        None, description="A deployment repo named in the service's configuration."
    )
    environments: list[str] = Field(default_factory=lambda: ["staging"])


class RawTriggers(_Raw):
    """Which git events run the pipeline (service mode). Default: pushes to the default
    branch and merge requests (never a fork's without a maintainer's approval)."""

    branches: list[str] | None = Field(
        None,
        description="Branch patterns whose pushes run the pipeline ('release/*'); "
        "default: the repository's default branch only.",
    )
    merge_requests: bool = Field(True, description="Run for merge (pull) requests.")
    tags: bool = Field(False, description="Run for pushed tags.")
    paths: list[str] | None = Field(
        None,
        description="Run only when a changed path matches one of these patterns "
        "('src/**', 'params.yaml'); default: any change.",
    )


class RawPipeline(_Raw):
    """trainops.yaml, format version 1."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="trainops.yaml",
        json_schema_extra={"$id": "https://trainops.dev/schema/trainops-v1.json"},
    )

    version: Literal[1] = Field(description="Format version; always 1.")
    name: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="Pipeline name (lowercase, digits, '-'); default: the repository's name.",
    )
    image: str | None = Field(None, description="Container image for cluster runs.")
    dvc_yaml: str | bool = Field(
        True,
        description="Import stages from dvc.yaml (true, the default, when it exists), "
        "from another path, or not at all (false).",
    )
    data: RawData | None = None
    stages: dict[str, RawStage] = Field(default_factory=dict)
    gate: dict[str, RawGateRule] = Field(
        default_factory=dict, description="Metric name → rules; all must hold."
    )
    promote: RawPromote | None = None
    triggers: RawTriggers | None = None


class RawDvcStage(BaseModel):
    """A stage of dvc.yaml, as far as trainops reads it (DVC's own schema is wider)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cmd: str | list[str]
    wdir: str | None = None
    deps: list[str] = Field(default_factory=list)
    params: list[str | dict[str, list[str] | None]] = Field(default_factory=list)
    outs: list[str | dict[str, dict[str, Any] | None]] = Field(default_factory=list)
    metrics: list[str | dict[str, dict[str, Any] | None]] = Field(default_factory=list)
    plots: list[Any] = Field(default_factory=list)
    frozen: bool = False
    always_changed: bool = False
    desc: str | None = None
    meta: Any = None


class RawDvcFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stages: dict[str, RawDvcStage] = Field(default_factory=dict)
    vars: list[Any] = Field(default_factory=list)
    plots: list[Any] = Field(default_factory=list)
    metrics: list[str] = Field(default_factory=list)
    params: list[str] = Field(default_factory=list)
    artifacts: dict[str, Any] = Field(default_factory=dict)
    datasets: list[Any] = Field(default_factory=list)
