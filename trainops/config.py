"""Settings: built once (``trainops.toml``, then ``TRAINOPS_*``), passed down.

Nothing else in trainops reads ``os.environ`` for configuration. The
embedded defaults keep everything under one data dir, ``.trainops/`` in the
current directory or ``$TRAINOPS_HOME``.

Plain dataclasses and a small loader rather than pydantic-settings: every
``trainops`` command builds Settings, and pydantic-settings alone costs about
140 ms of imports — more than half of a fully cached run. The loader is
strict in the same way: unknown keys in the file are errors naming the key,
values are converted by the field's type, nested sections use ``__`` in
environment names (``TRAINOPS_RUNNER__CPU_SLOTS=4``).
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from trainops.errors import ConfigError

ENV_PREFIX = "TRAINOPS_"
CONFIG_FILE = Path("trainops.toml")

# Environment every process trainops starts gets, so nothing phones home.
QUIET_ENV: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "DO_NOT_TRACK": "1",
}


@dataclass
class RunnerSettings:
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


@dataclass
class TrackingSettings:
    """MLflow. Without a tracking URI: SQLite and artifacts in the data dir."""

    enabled: bool = True
    experiment: str | None = None
    """Experiment name; default: the pipeline's name."""


class Secret(str):
    """A string that does not show itself in reprs, logs or tracebacks."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('**********')" if self else "Secret('')"

    def reveal(self) -> str:
        """The value, said out loud where it is really needed (a comparison, a header)."""
        return str.__str__(self)


@dataclass
class ForgeSettings:
    """One inbound webhook source. Enabled by configuring its secret, never without one."""

    webhook_secret: Secret | None = None
    """GitHub: the HMAC secret; GitLab: the X-Gitlab-Token; git hook: the bearer token."""
    enabled: bool | None = None
    """None: enabled exactly when a secret is set. True without a secret refuses to start."""
    token: Secret | None = None
    """A personal or project access token: fetching private repositories over HTTPS
    (sent through the environment, never in argv) and reporting back."""
    api_url: str | None = None
    """GitHub Enterprise (``https://ghe.example/api/v3``) or a self-managed GitLab
    (``https://gitlab.example``); default: github.com / gitlab.com."""
    app_id: str | None = None
    """GitHub App id: with ``private_key``, reports go out as the App (installation tokens)."""
    private_key: Secret | None = None
    """The GitHub App's PEM private key."""
    timeout_s: float = 10.0
    retries: int = 4
    """Attempts after the first for 5xx, 429 and secondary-rate-limit answers."""

    def active(self, name: str) -> bool:
        if self.enabled and not self.webhook_secret:
            raise ConfigError(
                f"{name} webhooks are enabled but {name}.webhook_secret is not set; set "
                f"TRAINOPS_{name.upper()}__WEBHOOK_SECRET (trainops never accepts unverified hooks)"
            )
        return bool(self.webhook_secret) and self.enabled is not False


@dataclass
class ServiceSettings:
    """The webhook service and its worker."""

    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    """How forges and people reach the service (links in reports); default: http://host:port."""
    max_body_bytes: int = 25 * 1024 * 1024
    """GitHub caps payloads at 25 MB; anything larger is refused with 413."""
    worker: bool = True
    """Run the worker in this process; false for a web-only replica (another process works)."""
    max_concurrent_runs: int = 1
    """Runs executing at once; the rest wait in the queue (default-branch runs first)."""
    lease_s: float = 30.0
    """A worker renews its claim this often (/3); a dead worker's work is taken over after it."""
    poll_s: float = 1.0
    api_token: Secret | None = None
    """When set, POST /api/* needs ``Authorization: Bearer <token>``."""


@dataclass
class ReportSettings:
    """Reporting back to forges (statuses and the living merge-request comment)."""

    enabled: bool = True
    templates_dir: Path | None = None
    """A directory whose ``comment.md.j2`` replaces the built-in comment template."""


@dataclass
class DeployRepoSettings:
    """A deployment repository that serving manifests are proposed to (GitOps)."""

    url: str = ""
    """What git clones: an https/ssh URL, or a path for a plain git repository."""
    forge: str = "git"
    """github | gitlab (open a pull request through its API) | git (push a branch only)."""
    repo: str | None = None
    """The forge's name for it (``acme/deploy``); needed for github and gitlab."""
    base_branch: str = "main"
    fast_forward: bool = False
    """Plain git only: also move the base branch to the promotion (no review step)."""
    namespace: str = "ml-{environment}"
    """Kubernetes namespace per environment; ``{environment}`` is replaced."""
    service_account: str | None = None
    """The predictor's service account (storage credentials for the model)."""
    templates_dir: Path | None = None
    """A directory whose ``inferenceservice.yaml.j2`` replaces the built-in one."""


@dataclass
class PromotionSettings:
    enabled: bool = True
    auto_environments: tuple[str, ...] = ("staging",)
    """Environments a passing default-branch run is promoted to without being asked."""
    branches: tuple[str, ...] = ()
    """Branches whose passing runs promote; default: the repository's default branch."""


@dataclass
class ArgoSettings:
    """The Argo Workflows backend: cluster defaults every rendered Workflow gets."""

    namespace: str = "ml-ci"
    service_account: str | None = "trainops-workflow"
    image: str | None = None
    """Image for stages when the pipeline names none (it must hold git, dvc and python)."""
    trainops_image: str = "ghcr.io/trainops/trainops:0.1"
    """Image of trainops itself, for the gate step."""
    gpu_pools: dict[str, str] = field(default_factory=dict)
    """gpu_type → key in the ``trainops-gpu-pools`` ConfigMap: a semaphore per GPU pool."""
    gpu_pool_configmap: str = "trainops-gpu-pools"
    priority_class: str | None = None
    pending_timeout_s: int = 1800
    """How long a pod may stay unschedulable (no GPU free, no node matches) before failing."""
    ttl_after_completion_s: int = 86400
    secret_env: dict[str, str] = field(default_factory=dict)
    """Env var → ``secret-name/key``: credentials (MLflow, DVC remote) by reference only."""
    kubeconfig: Path | None = None
    """None: in-cluster config, else ~/.kube/config."""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Settings:
    home: Path = Path(".trainops")
    mlflow_tracking_uri: str | None = None
    """Also read from ``MLFLOW_TRACKING_URI``, as every MLflow user expects."""
    store_url: str | None = None
    """SQLAlchemy URL of the service's store; default: SQLite in the data dir."""
    runner: RunnerSettings = field(default_factory=RunnerSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    reports: ReportSettings = field(default_factory=ReportSettings)
    promotion: PromotionSettings = field(default_factory=PromotionSettings)
    executor: str = "local"
    """local (this host's GPUs or CPU) | argo (Argo Workflows on Kubernetes)."""
    argo: ArgoSettings = field(default_factory=ArgoSettings)
    deploy: dict[str, DeployRepoSettings] = field(default_factory=dict)
    """Deployment repositories by the name pipelines use in ``promote.deploy``."""
    github: ForgeSettings = field(default_factory=ForgeSettings)
    gitlab: ForgeSettings = field(default_factory=ForgeSettings)
    githook: ForgeSettings = field(default_factory=ForgeSettings)

    def forges(self) -> dict[str, Secret]:
        """The enabled webhook sources and their secrets (ConfigError if one is half set)."""
        out = {}
        for name in ("github", "gitlab", "githook"):
            forge: ForgeSettings = getattr(self, name)
            if forge.active(name) and forge.webhook_secret:
                out[name] = forge.webhook_secret
        return out

    def secrets(self) -> list[str]:
        """Every configured secret value, for redacting reports and logs."""
        found = [self.service.api_token]
        for forge in (self.github, self.gitlab, self.githook):
            found += [forge.webhook_secret, forge.token, forge.private_key]
        return [s.reveal() for s in found if s]

    def store_uri(self) -> str:
        return self.store_url or f"sqlite:///{self.data_dir / 'trainops.db'}"

    def service_url(self) -> str:
        return self.service.public_url or f"http://{self.service.host}:{self.service.port}"

    def __post_init__(self) -> None:
        # Accept sections as mappings too: Settings(runner={"cpu_slots": 2}).
        for f in fields(self):
            value = getattr(self, f.name)
            kind = _hints(type(self))[f.name]
            if isinstance(value, Mapping) and is_dataclass(kind):
                setattr(self, f.name, _build(kind, value, f.name))
            elif isinstance(value, Mapping):
                setattr(self, f.name, _convert(kind, value, f.name))
        self.home = Path(self.home)

    @classmethod
    def load(
        cls,
        config_file: Path | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Defaults < ``config_file`` (or ./trainops.toml) < environment < ``overrides``."""
        data: dict[str, Any] = {}
        path = config_file or (CONFIG_FILE if CONFIG_FILE.is_file() else None)
        if path is not None:
            try:
                data = tomllib.loads(path.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"reading settings from {str(path)!r}: {exc}") from exc
        env = _from_env(os.environ if environ is None else environ)
        known = {f.name for f in fields(cls)}
        _merge(data, {k: v for k, v in env.items() if k in known})  # others: not ours
        _merge(data, overrides)
        settings: Settings = _build(cls, data, str(path) if path else "settings")
        return settings

    # -- derived locations under the data dir ---------------------------------

    @property
    def data_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def memo_dir(self) -> Path:
        """Plans per commit and specs per content of the pipeline files."""
        return self.data_dir / "memo"

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


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """``TRAINOPS_RUNNER__CPU_SLOTS=4`` → ``{"runner": {"cpu_slots": "4"}}``."""
    data: dict[str, Any] = {}
    uri = environ.get("MLFLOW_TRACKING_URI")
    if uri:
        data["mlflow_tracking_uri"] = uri
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX:
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[path[-1]] = value
    return data


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> None:
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _build(cls: Any, data: Mapping[str, Any], where: str) -> Any:
    """An instance of dataclass ``cls`` from ``data``; unknown keys are errors."""
    hints = _hints(cls)
    names = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(
                f"{where}: unknown setting {key!r} (known: {', '.join(sorted(names))})"
            )
        kwargs[key] = _convert(hints[key], value, f"{where}.{key}" if where else key)
    return cls(**kwargs)


def _convert(kind: Any, value: Any, where: str) -> Any:
    if is_dataclass(kind) and isinstance(kind, type):
        if isinstance(value, kind):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a section of settings")
        return _build(kind, value, where)
    origin = typing.get_origin(kind)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table of named sections")
        item = typing.get_args(kind)[1]
        return {str(k): _convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"{where}: expected a list")
        return tuple(str(i).strip() for i in items if str(i).strip())
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    empty = value is None or (isinstance(value, str) and value.lower() in ("", "none", "null"))
    if empty and type(None) in options:
        return None
    for option in options:
        if option is type(None):
            continue
        try:
            return _scalar(option, value)
        except (TypeError, ValueError):
            continue
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options if o is not type(None))
    raise ConfigError(f"{where}: {value!r} is not a valid {names}")


def _scalar(kind: type, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(value)
    if kind in (int, float) and isinstance(value, bool):
        raise TypeError(value)
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    if kind is Path:
        return Path(str(value))
    if kind is Secret:
        if not isinstance(value, str):
            raise TypeError(value)
        return Secret(value)
    return kind(value)
