"""Promotion, end to end: MLflow registry version + alias → serving manifests → deploy repo.

The one place that knows the three parts; the worker calls ``promote_run``
for a passing default-branch run, ``trainops promote`` calls
``promote_version`` for an explicit version (a rollback is the same path).
Credentials for the deployment repository come from the service's
configuration (``deploy.<name>`` and the forge's token), never from the ML
repository.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass

from trainops.config import DeployRepoSettings, Settings
from trainops.errors import ConfigError, TrainopsError
from trainops.forges.registry import ForgeRegistry
from trainops.git import auth_env
from trainops.manifests.serving import ServingSpec, render_inference_service, render_kustomization
from trainops.models import Plan
from trainops.pipelines.spec import Spec
from trainops.promotion.deploy_repo import DeployRepo, Promotion
from trainops.tracking.registry import ModelRegistry, ModelVersionRef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromotionOutcome:
    environment: str
    model: str
    version: str
    branch: str
    changed: bool
    pull_request: str | None
    fast_forwarded: bool
    manifest: str  # path in the deploy repo

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Provenance:
    """Where a model version came from, for the pull request body and the registry tags."""

    repo: str
    commit: str
    run_id: str
    mlflow_run_id: str
    data_hash: str
    metrics: dict[str, float]
    merge_request: str | None = None


def data_hash(plan: Plan) -> str:
    """A hash of the DVC content ids of every data dependency of the plan."""
    ids = sorted(
        part
        for stage in plan.stages
        for key, value in stage.key_inputs.items()
        if key.startswith("dep:")
        for part in value.split()
        if part.startswith("dvc:")
    )
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


class Promoter:
    def __init__(self, settings: Settings, forges: ForgeRegistry) -> None:
        self.settings = settings
        self.forges = forges

    def deploy_settings(self, name: str | None) -> tuple[str, DeployRepoSettings]:
        if name is None:
            if len(self.settings.deploy) != 1:
                raise ConfigError(
                    "promoting: say which deployment repository (promote.deploy in "
                    f"trainops.yaml); configured: {', '.join(self.settings.deploy) or 'none'}"
                )
            name = next(iter(self.settings.deploy))
        deploy = self.settings.deploy.get(name)
        if deploy is None or not deploy.url:
            raise ConfigError(
                f"promoting: no deployment repository {name!r} is configured; set "
                f"TRAINOPS_DEPLOY__{name.upper()}__URL (and __FORGE, __REPO for a pull request)"
            )
        return name, deploy

    def promote_run(
        self, spec: Spec, plan: Plan, provenance: Provenance, environments: tuple[str, ...]
    ) -> list[PromotionOutcome]:
        """Register the run's model, move each environment's alias, propose the manifests."""
        assert spec.promote is not None
        registry = ModelRegistry(self.settings.tracking_uri())
        version = registry.register(
            spec.promote.model_name,
            run_id=provenance.mlflow_run_id,
            # No trainops.run_id tag: a fully cached re-run has the same MLflow run and
            # so the same model files, and must find the same version (one per model).
            tags={
                "trainops.repo": provenance.repo,
                "trainops.commit": provenance.commit,
                "trainops.run": provenance.run_id,
                "trainops.data_hash": provenance.data_hash,
            },
        )
        gpus = max((s.gpus for s in plan.stages if _produces(s.outs, spec)), default=0)
        return [
            self.promote_version(
                version, env, deploy=spec.promote.deploy, gpus=gpus, provenance=provenance
            )
            for env in environments
        ]

    def promote_version(
        self,
        version: ModelVersionRef,
        environment: str,
        *,
        deploy: str | None,
        gpus: int = 0,
        provenance: Provenance | None = None,
    ) -> PromotionOutcome:
        name, settings = self.deploy_settings(deploy)
        commit = (provenance.commit if provenance else version.tags.get("trainops.commit")) or ""
        run_id = (provenance.run_id if provenance else version.tags.get("trainops.run")) or ""
        serving = ServingSpec(
            model=version.name,
            version=version.version,
            environment=environment,
            namespace=settings.namespace.format(environment=environment),
            storage_uri=version.download_uri,
            commit=commit,
            run_id=run_id,
            mlflow_run_id=version.run_id,
            gpus=gpus,
            service_account=settings.service_account,
        )
        manifest = render_inference_service(serving, templates_dir=settings.templates_dir)
        repo = self._repo(name, settings)
        served = repo.current(environment, version.name)
        served_metrics = self._served_metrics(served)
        result = repo.promote(
            Promotion(
                model=version.name,
                version=version.version,
                environment=environment,
                files={
                    "inferenceservice.yaml": manifest,
                    "kustomization.yaml": render_kustomization(["inferenceservice.yaml"]),
                },
                title=f"Promote {version.name} v{version.version} to {environment}",
                body=_body(version, environment, provenance, served, served_metrics),
            )
        )
        ModelRegistry(self.settings.tracking_uri()).set_alias(
            version.name, environment, version.version
        )
        log.info(
            "promoted %s v%s to %s on %s", version.name, version.version, environment, result.branch
        )
        return PromotionOutcome(
            environment=environment,
            model=version.name,
            version=version.version,
            branch=result.branch,
            changed=result.changed,
            pull_request=result.pull_request.url if result.pull_request else None,
            fast_forwarded=result.fast_forwarded,
            manifest=f"environments/{environment}/{version.name}/inferenceservice.yaml",
        )

    def _served_metrics(self, served: str | None) -> dict[str, float]:
        """Metrics of the MLflow run behind the manifest served now, when it says which."""
        run = None
        for line in (served or "").splitlines():
            if "trainops.io/mlflow-run" in line:
                run = line.split(":", 1)[1].strip().strip('"')
        if not run:
            return {}
        try:
            return ModelRegistry(self.settings.tracking_uri()).run_metrics(run)
        except TrainopsError:
            return {}

    def _repo(self, name: str, settings: DeployRepoSettings) -> DeployRepo:
        forge = None
        git_env = None
        if settings.forge in ("github", "gitlab"):
            forge = self.forges.get(settings.forge)
            token = getattr(self.settings, settings.forge).token
            if token:
                user = "oauth2" if settings.forge == "gitlab" else "x-access-token"
                git_env = auth_env(token.reveal(), user)
        return DeployRepo(
            settings.url,
            self.settings.data_dir / "deploy" / name,
            base_branch=settings.base_branch,
            forge=forge,
            forge_repo=settings.repo,
            fast_forward=settings.fast_forward and forge is None,  # a forge means review
            git_env=git_env,
        )


def _produces(outs: tuple[str, ...], spec: Spec) -> bool:
    assert spec.promote is not None
    path = spec.promote.model_path
    return any(path == o or path.startswith(o.rstrip("/") + "/") for o in outs)


def _body(
    version: ModelVersionRef,
    env: str,
    provenance: Provenance | None,
    served: str | None,
    served_metrics: dict[str, float],
) -> str:
    lines = [
        f"trainops proposes **{version.name} v{version.version}** for `{env}`.",
        "",
        "| | |",
        "|---|---|",
        f"| model version | `{version.name}` v{version.version} (MLflow alias `{env}`) |",
        f"| storage | `{version.download_uri}` |",
    ]
    if provenance is not None:
        lines += [
            f"| training commit | `{provenance.commit}` in `{provenance.repo}` |",
            f"| trainops run | `{provenance.run_id}` |",
            f"| MLflow run | `{provenance.mlflow_run_id}` |",
            f"| data hash | `{provenance.data_hash}` |",
        ]
        if provenance.merge_request:
            lines.append(f"| merge request | {provenance.merge_request} |")
        if provenance.metrics:
            lines += ["", f"| metric | this version | served in `{env}` now |", "|---|---:|---:|"]
            for k, v in sorted(provenance.metrics.items()):
                now = served_metrics.get(k)
                lines.append(f"| {k} | {v:.4g} | {'' if now is None else f'{now:.4g}'} |")
    lines += ["", "Served there now:" if served else f"Nothing is served in `{env}` yet."]
    if served:
        annotation = next(
            (line.strip() for line in served.splitlines() if "trainops.io/mlflow-model" in line),
            "(not a trainops manifest)",
        )
        lines.append(f"`{annotation}`")
    return "\n".join(lines) + "\n"
