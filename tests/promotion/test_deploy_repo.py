"""DeployRepo against real git: bare deployment repos in tmp_path, the fake GitHub for PRs."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import MakeRepo, commit_files, git
from tests.fakes.github import FakeGitHub
from trainops.errors import ForgeError
from trainops.forges.github import GitHubForge, Pacing
from trainops.models import PullRequestRef
from trainops.promotion.deploy_repo import (
    DeployRepo,
    Promotion,
    PromotionError,
    env_kustomization,
    promotion_branch,
)

STAGING = "environments/staging"
MODEL_KUSTOMIZATION = 'resources:\n- "inferenceservice.yaml"\n'


def manifest(model: str, version: str) -> str:
    return (
        'apiVersion: "serving.kserve.io/v1beta1"\nkind: "InferenceService"\n'
        f'metadata:\n  name: "{model}"\n  annotations:\n'
        f'    trainops.io/mlflow-model: "{model}/{version}"\n'
    )


def promotion(version: str, model: str = "digits", env: str = "staging") -> Promotion:
    return Promotion(
        model=model,
        version=version,
        environment=env,
        files={
            "inferenceservice.yaml": manifest(model, version),
            "kustomization.yaml": MODEL_KUSTOMIZATION,
        },
        title=f"Promote {model} v{version} to {env}",
        body=f"provenance of {model} v{version}: commit abc1234, data 9f3e",
    )


def show(bare: Path, ref: str, path: str) -> str | None:
    out = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=bare, capture_output=True)
    return out.stdout.decode() if out.returncode == 0 else None


def sha(bare: Path, ref: str) -> str | None:
    out = subprocess.run(["git", "rev-parse", "--verify", "-q", ref], cwd=bare, capture_output=True)
    return out.stdout.decode().strip() or None


@pytest.fixture
def deploy(make_repo: MakeRepo, tmp_path: Path) -> Path:
    """A bare deployment repo on main, already serving ``legacy`` in staging."""
    seed = make_repo(
        {
            "README.md": "deployments\n",
            f"{STAGING}/kustomization.yaml": "resources:\n  - ./legacy\n",
            f"{STAGING}/legacy/kustomization.yaml": "resources: []\n",
        },
        name="seed",
    )
    bare = tmp_path / "deploy.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(bare))
    return bare


def repo(deploy: Path, work: Path, **kw: object) -> DeployRepo:
    return DeployRepo(str(deploy), work, **kw)  # type: ignore[arg-type]


# -- names and YAML ---------------------------------------------------------------


def test_branch_name_is_readable_hashed_and_a_valid_ref() -> None:
    branch = promotion_branch("digits", "staging", "7")
    assert branch.startswith("trainops/promote/digits-staging-v7-")
    assert len(branch.rsplit("-", 1)[1]) == 8
    assert branch == promotion_branch("digits", "staging", "7")
    assert branch != promotion_branch("digits", "prod", "7")
    assert branch != promotion_branch("digits", "staging", "8")
    odd = promotion_branch("a..b", "st/ag ing", "1.0~rc:1@{x}.lock")
    assert odd.startswith("trainops/promote/a.b-st-ag-ing-v1.0-rc-1-x-.lock-")
    for name in (branch, odd):
        subprocess.run(["git", "check-ref-format", f"refs/heads/{name}"], check=True)


def test_env_kustomization_keeps_entries_and_adds_once() -> None:
    text = env_kustomization("resources:\n- ./legacy\nnamespace: ml\n", "digits", where="k")
    assert text is not None
    assert yaml.safe_load(text) == {"resources": ["./legacy", "digits"], "namespace": "ml"}
    assert '"resources":\n  - "./legacy"\n  - "digits"\n"namespace": "ml"\n' in text
    assert env_kustomization(text, "digits", where="k") is None
    assert env_kustomization(text, "legacy", where="k") is None
    fresh = env_kustomization(None, "digits", where="k")
    assert fresh is not None and '"digits"' in fresh and "Kustomization" in fresh
    with pytest.raises(PromotionError, match="k: 'resources' must be a list"):
        env_kustomization("resources: nope\n", "digits", where="k")


def test_a_promotion_must_name_plain_directories() -> None:
    with pytest.raises(PromotionError, match="model '../x'"):
        Promotion("../x", "1", "staging", {"a.yaml": ""}, "t", "b")
    with pytest.raises(PromotionError, match="plain relative path"):
        Promotion("digits", "1", "staging", {"../a.yaml": ""}, "t", "b")


# -- plain git ----------------------------------------------------------------------


def test_promote_pushes_one_branch_and_is_idempotent(deploy: Path, tmp_path: Path) -> None:
    deployer = repo(deploy, tmp_path / "work")
    first = deployer.promote(promotion("1"))
    branch = promotion_branch("digits", "staging", "1")
    assert first.branch == branch and first.changed and not first.fast_forwarded
    assert first.pull_request is None
    assert sha(deploy, f"refs/heads/{branch}") == first.commit
    assert show(deploy, branch, f"{STAGING}/digits/inferenceservice.yaml") == manifest(
        "digits", "1"
    )
    assert show(deploy, branch, f"{STAGING}/digits/kustomization.yaml") == MODEL_KUSTOMIZATION
    listing = show(deploy, branch, f"{STAGING}/kustomization.yaml")
    assert listing is not None and '  - "digits"' in listing
    assert yaml.safe_load(listing)["resources"] == ["./legacy", "digits"]
    assert show(deploy, "main", f"{STAGING}/digits/inferenceservice.yaml") is None  # not merged
    author = git(deploy, "log", "-1", "--format=%an <%ae>|%cn|%s", branch)
    assert author == "trainops <trainops@localhost>|trainops|Promote digits v1 to staging"

    again = deployer.promote(promotion("1"))
    assert (again.branch, again.commit, again.changed) == (branch, first.commit, False)
    # a fresh work dir (another host) sees the same branch and adds nothing either
    other = repo(deploy, tmp_path / "elsewhere").promote(promotion("1"))
    assert (other.commit, other.changed) == (first.commit, False)
    assert git(deploy, "rev-list", "--count", branch) == "2"  # seed + one promotion commit
    assert deployer.current("staging", "digits") is None  # main does not serve it yet


def test_fast_forward_promote_upgrade_and_rollback(deploy: Path, tmp_path: Path) -> None:
    deployer = repo(deploy, tmp_path / "work", fast_forward=True)
    v1 = deployer.promote(promotion("1"))
    assert v1.fast_forwarded and v1.changed
    assert sha(deploy, "refs/heads/main") == v1.commit
    assert deployer.current("staging", "digits") == manifest("digits", "1")
    assert deployer.current("staging", "digits", "kustomization.yaml") == MODEL_KUSTOMIZATION
    assert deployer.current("prod", "digits") is None

    again = deployer.promote(promotion("1"))  # main already serves it: nothing to do
    assert (again.branch, again.commit, again.changed, again.fast_forwarded) == (
        v1.branch,
        None,
        False,
        False,
    )
    assert sha(deploy, "refs/heads/main") == v1.commit

    v2 = deployer.promote(promotion("2"))
    assert v2.branch != v1.branch and v2.changed and v2.fast_forwarded
    assert git(deploy, "rev-parse", "main^") == v1.commit  # a true fast-forward
    assert deployer.current("staging", "digits") == manifest("digits", "2")

    back = deployer.promote(promotion("1"))  # rollback: the same path
    assert back.branch == v1.branch and back.changed and back.fast_forwarded
    assert git(deploy, "rev-parse", "main^") == v2.commit
    assert sha(deploy, f"refs/heads/{v1.branch}") == back.commit
    assert deployer.current("staging", "digits") == manifest("digits", "1")
    listing = yaml.safe_load(show(deploy, "main", f"{STAGING}/kustomization.yaml") or "")
    assert listing["resources"] == ["./legacy", "digits"]


def test_the_model_directory_holds_exactly_the_promotion_files(
    deploy: Path, tmp_path: Path
) -> None:
    deployer = repo(deploy, tmp_path / "work", fast_forward=True)
    extra = promotion("1")
    deployer.promote(
        Promotion("digits", "1", "staging", {**extra.files, "hpa.yaml": "kind: x\n"}, "t", "b")
    )
    assert show(deploy, "main", f"{STAGING}/digits/hpa.yaml") == "kind: x\n"
    deployer.promote(promotion("2"))
    assert show(deploy, "main", f"{STAGING}/digits/hpa.yaml") is None
    assert show(deploy, "main", f"{STAGING}/legacy/kustomization.yaml") == "resources: []\n"


def test_a_rejected_push_is_redone_on_the_new_base(
    deploy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone moves main between our fetch and our push: the lease refuses, we redo."""
    other = tmp_path / "human"
    git(tmp_path, "clone", "-q", str(deploy), str(other))
    original = DeployRepo._push
    calls: list[int] = []

    def racing_push(self: DeployRepo, *args: object, **kw: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            commit_files(other, {"environments/prod/kustomization.yaml": "resources: []\n"})
            git(other, "push", "-q", "origin", "main")
        original(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(DeployRepo, "_push", racing_push)
    result = repo(deploy, tmp_path / "work", fast_forward=True).promote(promotion("1"))
    assert len(calls) == 2 and result.fast_forwarded
    assert show(deploy, "main", "environments/prod/kustomization.yaml") == "resources: []\n"
    assert show(deploy, "main", f"{STAGING}/digits/inferenceservice.yaml") == manifest(
        "digits", "1"
    )
    assert git(deploy, "rev-parse", "main^") == git(other, "rev-parse", "HEAD")


def test_concurrent_promotions_to_one_environment_both_land(deploy: Path, tmp_path: Path) -> None:
    repos = {
        model: repo(deploy, tmp_path / f"work-{model}", fast_forward=True)
        for model in ("digits", "letters")
    }
    start = threading.Barrier(len(repos))
    results: dict[str, object] = {}

    def run(model: str) -> None:
        start.wait()
        try:
            results[model] = repos[model].promote(promotion("3", model=model))
        except Exception as exc:  # reported below
            results[model] = exc

    threads = [threading.Thread(target=run, args=(m,)) for m in repos]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    for model in repos:
        outcome = results[model]
        assert not isinstance(outcome, Exception), outcome
        assert show(deploy, "main", f"{STAGING}/{model}/inferenceservice.yaml") == manifest(
            model, "3"
        )
    listing = yaml.safe_load(show(deploy, "main", f"{STAGING}/kustomization.yaml") or "")
    assert listing["resources"] == ["./legacy", "digits", "letters"]
    assert git(deploy, "rev-list", "--count", "main") == "3"  # linear: seed + two


class RecordingForge:
    """A Forge that records open_pull_request calls (and who holds the lock meanwhile)."""

    name = "recording"

    def __init__(self, deployer: list[DeployRepo], fail: ForgeError | None = None) -> None:
        self.deployer = deployer
        self.fail = fail
        self.holders: list[str | None] = []

    def open_pull_request(
        self, repo: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequestRef:
        self.holders.append(self.deployer[0].lock_holder("staging", "digits"))
        if self.fail:
            raise self.fail
        return PullRequestRef(1, f"https://forge/{repo}/pull/1", True)


def test_the_promotion_lock_names_its_holder(deploy: Path, tmp_path: Path) -> None:
    holder: list[DeployRepo] = []
    forge = RecordingForge(holder)
    deployer = DeployRepo(str(deploy), tmp_path / "work", forge=forge, forge_repo="acme/deploy")  # type: ignore[arg-type]
    holder.append(deployer)
    deployer.promote(promotion("4"))
    assert forge.holders[0] is not None and "promoting digits v4 to staging" in forge.holders[0]
    assert deployer.lock_holder("staging", "digits") is None


def test_errors_say_what_was_being_done(deploy: Path, tmp_path: Path) -> None:
    missing = repo(tmp_path / "nowhere.git", tmp_path / "work")
    with pytest.raises(PromotionError, match="listing refs of .*nowhere.git") as info:
        missing.promote(promotion("1"))
    assert info.value.__cause__ is not None
    holder: list[DeployRepo] = []
    forge = RecordingForge(holder, fail=ForgeError("503 from the forge", transient=True))
    deployer = DeployRepo(str(deploy), tmp_path / "w2", forge=forge, forge_repo="acme/deploy")  # type: ignore[arg-type]
    holder.append(deployer)
    with pytest.raises(PromotionError, match="opening the pull request .* 503") as failed:
        deployer.promote(promotion("1"))
    assert failed.value.transient and isinstance(failed.value.__cause__, ForgeError)
    with pytest.raises(PromotionError, match="forge_repo"):
        DeployRepo(str(deploy), tmp_path / "w3", forge=forge)  # type: ignore[arg-type]


# -- with a forge -------------------------------------------------------------------


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    with FakeGitHub(token="deploy-token") as fake:
        fake.add_repo("acme/deploy")
        yield fake


def test_two_promotions_of_one_version_make_one_pull_request(
    deploy: Path, tmp_path: Path, fake_github: FakeGitHub
) -> None:
    forge = GitHubForge(
        fake_github.url,
        token=fake_github.token,
        pacing=Pacing(write_interval_s=0, request_interval_s=0, backoff_s=0.01),
    )
    deployer = DeployRepo(str(deploy), tmp_path / "work", forge=forge, forge_repo="acme/deploy")
    first = deployer.promote(promotion("5"))
    second = deployer.promote(promotion("5"))
    assert first.pull_request is not None and first.pull_request.created
    assert second.pull_request is not None and not second.pull_request.created
    assert second.pull_request.number == first.pull_request.number
    assert (second.commit, second.changed) == (first.commit, False)
    pulls = fake_github.repos["acme/deploy"].pulls
    assert len(pulls) == 1
    assert fake_github.count("POST /repos/acme/deploy/pulls") == 1
    pr = fake_github.pull_request("acme/deploy", first.pull_request.number)
    assert (pr.head, pr.base) == (promotion_branch("digits", "staging", "5"), "main")
    assert pr.title == "Promote digits v5 to staging"
    assert pr.body == promotion("5").body
    assert sha(deploy, f"refs/heads/{pr.head}") == first.commit
