"""Settings: built once (from ``trainops.toml`` and ``TRAINOPS_*``), passed down.

Nothing else in trainops reads ``os.environ`` for configuration. The
embedded defaults keep everything under one data dir, ``.trainops/`` in the
current directory or ``$TRAINOPS_HOME``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

# Environment every process trainops starts gets, so nothing phones home.
QUIET_ENV: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "DO_NOT_TRACK": "1",
}


class RunnerSettings(BaseModel):
    """The embedded local runner."""

    cpu_slots: float | None = None
    """Cores the runner may hand out to concurrent stages; default: all of this host's."""
    max_parallel: int | None = None
    """Most stages running at once; default: unlimited (bounded by cpu and GPUs)."""
    gpu_poll_s: float = 0.5
    """How often a stage waiting for a GPU looks again."""
    kill_grace_s: float = 5.0
    """Seconds between SIGTERM and SIGKILL when a stage is stopped."""
    telemetry_interval_s: float = 1.0
    log_tail_lines: int = 40
    workspaces_per_repo: int = 4


class TrackingSettings(BaseModel):
    """MLflow. Without a tracking URI: SQLite and artifacts in the data dir."""

    enabled: bool = True
    experiment: str | None = None
    """Experiment name; default: the pipeline's name."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRAINOPS_",
        env_nested_delimiter="__",
        extra="forbid",
        toml_file="trainops.toml",
    )

    home: Path = Path(".trainops")
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TRAINOPS_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
    )
    runner: RunnerSettings = RunnerSettings()
    tracking: TrackingSettings = TrackingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    # -- derived locations under the data dir ---------------------------------

    @property
    def data_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def locks_dir(self) -> Path:
        return self.data_dir / "locks"

    @property
    def repos_dir(self) -> Path:
        """Bare mirrors of the repositories trainops runs, one per repo."""
        return self.data_dir / "repos"

    @property
    def workspaces_dir(self) -> Path:
        return self.data_dir / "workspaces"

    @property
    def dvc_cache_dir(self) -> Path:
        """One DVC cache shared by all workspaces: data is fetched once per host."""
        return self.data_dir / "dvc-cache"

    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.data_dir / 'mlflow.db'}"

    def artifact_root(self) -> str:
        return (self.data_dir / "mlartifacts").as_uri()


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a process trainops starts.

    The host's environment minus trainops' own settings (they may hold
    secrets a pipeline must not see), plus ``QUIET_ENV`` and ``extra``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINOPS_")}
    env.update(QUIET_ENV)
    if extra:
        env.update(extra)
    return env
