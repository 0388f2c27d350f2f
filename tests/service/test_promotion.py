"""Gate and GitOps promotion end to end: a passing default-branch run registers the model
in MLflow, moves the alias and proposes serving manifests to the deployment repository."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import MakeRepo, git, kserve_validator
from tests.fakes.github import FakeGitHub
from tests.service.conftest import (
    Forge,
    Service,
    githook_push,
    github_push,
    make_settings,
    wait_for,
)
from trainops.config import DeployRepoSettings
from trainops.forges.github import GitHubForge, Pacing
from trainops.forges.registry import ForgeRegistry
from trainops.service.serve import BackgroundServer
from trainops.tracking.registry import ModelRegistry

PROMOTED = """\
version: 1
name: toy
stages:
  train:
    cmd: mkdir -p model && cp value.json model/weights.json && cp value.json metrics.json
    deps: [value.json]
    outs: [model]
    metrics: [metrics.json]
gate:
  score: {{min: {minimum}}}
promote:
  model: {{name: toy, path: model}}
  deploy: {deploy}
  environments: [staging, prod]
"""


@pytest.fixture
def deploy_repo(make_repo: MakeRepo, tmp_path: Path) -> Path:
    seed = make_repo({"README.md": "deployments\n"}, "deploy-seed")
    bare = tmp_path / "deploy.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(bare))
    return bare


def start(tmp_path: Path, deploy: dict[str, DeployRepoSettings], **kw: Any) -> Service:
    settings = make_settings(tmp_path / "home")
    settings.tracking.enabled = True  # the registry needs the MLflow run
    settings.deploy.update(deploy)
    return Service(BackgroundServer(settings, **kw).start())


@pytest.fixture
def service(tmp_path: Path, deploy_repo: Path) -> Iterator[Service]:
    running = start(tmp_path, {"local": DeployRepoSettings(url=str(deploy_repo))})
    yield running
    running.close()


def commit_pipeline(forge: Forge, *, minimum: float, deploy: str = "local") -> str:
    text = PROMOTED.format(minimum=minimum, deploy=deploy)
    return forge.commit({"trainops.yaml": text, "value.json": '{"score": 0.75}\n'}, "model")


def promotion(service: Service, sha: str) -> dict[str, Any]:
    run = service.wait_final(service.run_for(sha)["id"], timeout=60)
    assert run["status"] == "succeeded", run
    detail: dict[str, Any] = service.run(run["id"])
    return detail


def test_a_passing_push_to_main_is_promoted_once(
    service: Service, forge: Forge, deploy_repo: Path, tmp_path: Path
) -> None:
    sha = commit_pipeline(forge, minimum=0.5)
    service.githook(githook_push(forge, sha))
    run = promotion(service, sha)
    assert run["gate"]["passed"] is True
    (staging,) = [p for p in run["promotion"]["promotions"] if p["environment"] == "staging"]
    assert [p["environment"] for p in run["promotion"]["promotions"]] == ["staging"]  # prod: ask
    branch = staging["branch"]
    manifest = git(deploy_repo, "show", f"{branch}:environments/staging/toy/inferenceservice.yaml")
    isvc = yaml.safe_load(manifest)
    assert isvc["kind"] == "InferenceService"
    assert isvc["metadata"]["annotations"]["trainops.io/commit"] == sha
    assert isvc["spec"]["predictor"]["model"]["storageUri"].startswith("file://")
    validate = kserve_validator()  # ../shared's CRD; tests/manifests says when it is absent
    if validate is not None:
        assert validate(isvc) == []
    registry = ModelRegistry(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    version = registry.alias_version("toy", "staging")
    assert version is not None and version.version == "1"
    assert version.tags["trainops.commit"] == sha
    # the same push again: no new model version, the same branch
    service.githook(githook_push(forge, sha))
    wait_for(lambda: len(service.events()) >= 2 or None, 10, "the second delivery")
    branches = git(deploy_repo, "branch", "--list", "trainops/promote/*").split()
    assert branches == [branch]
    assert registry.alias_version("toy", "staging") == version


def test_a_failed_gate_promotes_nothing(service: Service, forge: Forge, deploy_repo: Path) -> None:
    sha = commit_pipeline(forge, minimum=0.9)
    service.githook(githook_push(forge, sha))
    run = promotion(service, sha)
    assert run["gate"]["passed"] is False
    assert run["gate"]["results"][0]["message"] == "score 0.75 < min 0.9"
    assert run["promotion"] is None
    assert git(deploy_repo, "branch", "--list", "trainops/promote/*") == ""


def test_with_a_github_deploy_repo_exactly_one_pull_request(
    tmp_path: Path, forge: Forge, deploy_repo: Path
) -> None:
    with FakeGitHub() as fake:
        fake.add_repo("acme/deploy")
        fake.add_repo("acme/digits")
        settings = DeployRepoSettings(url=str(deploy_repo), forge="github", repo="acme/deploy")
        registry_settings = make_settings(tmp_path / "unused")
        forges = ForgeRegistry(
            registry_settings,
            forges={
                "github": GitHubForge(
                    fake.url,
                    token=fake.token,
                    pacing=Pacing(write_interval_s=0, request_interval_s=0, backoff_s=0.01),
                )
            },
        )
        running = start(tmp_path, {"gh": settings}, registry=forges)
        try:
            sha = commit_pipeline(forge, minimum=0.5, deploy="gh")
            body = github_push(forge, sha)
            running.github(body, delivery="same-delivery")
            run = promotion(running, sha)
            (promoted,) = run["promotion"]["promotions"]
            assert promoted["pull_request"]
            running.github(body, delivery="same-delivery")  # redelivered: a no-op
            running.github(body)  # a new delivery of the same push: the same run
            wait_for(lambda: len(running.events()) >= 2 or None, 10, "the deliveries")
            pulls = fake.count("POST /repos/acme/deploy/pulls")
            assert pulls == 1
            assert len(running.runs()) == 1
        finally:
            running.close()
