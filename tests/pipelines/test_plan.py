"""Spec + commit → Plan: deterministic, content-addressed cache keys that chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import MakeRepo, commit_files, git
from trainops.errors import SpecError
from trainops.git import GitRepo
from trainops.models import Plan
from trainops.orchestrator import plan_target, resolve_target

PIPELINE = """\
version: 1
name: chain
stages:
  prepare:
    cmd: python prepare.py
    deps: [prepare.py, data/raw]
    outs: [data/prepared]
    params: [prepare.seed]
  train:
    cmd: python train.py
    deps: [train.py, data/prepared]
    outs: [model]
    params: [train]
  evaluate:
    cmd: python evaluate.py
    deps: [evaluate.py, model]
    metrics: [metrics.json]
  report:
    cmd: python report.py
    deps: [report.py]
    outs: [report.md]
"""

DVC_FILE = """\
outs:
- md5: {md5}.dir
  size: 100
  nfiles: 1
  hash: md5
  path: raw
"""

FILES = {
    "trainops.yaml": PIPELINE,
    "params.yaml": "prepare:\n  seed: 1\ntrain:\n  lr: 0.1\n  epochs: 3\nunused: 5\n",
    "prepare.py": "print('prepare')\n",
    "train.py": "print('train')\n",
    "evaluate.py": "print('evaluate')\n",
    "report.py": "print('report')\n",
    "data/raw.dvc": DVC_FILE.format(md5="a" * 32),
    "data/.gitignore": "/raw\n",
}


def plan_of(repo: Path, ref: str | None = None) -> Plan:
    return plan_target(resolve_target(repo, ref))[1]


def keys(plan: Plan) -> dict[str, str]:
    return {s.name: s.cache_key for s in plan.stages}


def changed(before: Plan, after: Plan) -> set[str]:
    a, b = keys(before), keys(after)
    return {name for name in a if a[name] != b[name]}


def test_plan_is_deterministic_and_resolved(make_repo: MakeRepo) -> None:
    repo = make_repo(FILES)
    first, second = plan_of(repo), plan_of(repo)
    assert first == second
    assert [s.name for s in first.stages] == ["prepare", "train", "evaluate", "report"]
    train = first.stage("train")
    assert train.needs == ("prepare",)
    assert dict(train.params) == {"train.lr": 0.1, "train.epochs": 3}
    assert first.data_pull == ("data/raw",)  # the DVC-tracked dependency
    assert first.commit == git(repo, "rev-parse", "HEAD")
    assert train.key_inputs["dep:data/prepared"].startswith("stage:prepare:")
    assert first.stage("prepare").key_inputs["dep:data/raw"] == f"dvc:data/raw:{'a' * 32}.dir"


def test_same_content_at_another_commit_has_the_same_keys(make_repo: MakeRepo) -> None:
    repo = make_repo(FILES)
    before = plan_of(repo)
    commit_files(repo, {"README.md": "docs only\n"})
    after = plan_of(repo)
    assert after.commit != before.commit
    assert changed(before, after) == set()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"train.py": "print('train v2')\n"}, {"train", "evaluate"}),
        ({"report.py": "print('report v2')\n"}, {"report"}),
        ({"data/raw.dvc": DVC_FILE.format(md5="b" * 32)}, {"prepare", "train", "evaluate"}),
        (
            {"params.yaml": FILES["params.yaml"].replace("seed: 1", "seed: 2")},
            {"prepare", "train", "evaluate"},
        ),
        ({"params.yaml": FILES["params.yaml"].replace("unused: 5", "unused: 6")}, set()),
        (
            {"params.yaml": FILES["params.yaml"].replace("lr: 0.1", "lr: 0.2")},
            {"train", "evaluate"},
        ),
        (
            {"trainops.yaml": PIPELINE.replace("python evaluate.py", "python evaluate.py -v")},
            {"evaluate"},
        ),
    ],
)
def test_a_change_reaches_exactly_the_stages_downstream(
    make_repo: MakeRepo, edit: dict[str, str], expected: set[str]
) -> None:
    repo = make_repo(FILES)
    before = plan_of(repo)
    commit_files(repo, edit)
    assert changed(before, plan_of(repo)) == expected


def test_plan_at_an_older_ref_reads_that_commit(make_repo: MakeRepo) -> None:
    repo = make_repo(FILES)
    old = git(repo, "rev-parse", "HEAD")
    commit_files(repo, {"train.py": "print('new')\n"})
    assert plan_of(repo, old).commit == old
    assert keys(plan_of(repo, old)) == keys(plan_of(repo, "HEAD~1"))


def test_working_tree_changes_are_not_part_of_the_plan(make_repo: MakeRepo) -> None:
    repo = make_repo(FILES)
    before = plan_of(repo)
    (repo / "train.py").write_text("print('uncommitted')\n")
    assert plan_of(repo) == before
    assert GitRepo(repo).is_dirty()


def test_missing_dependency_and_parameter_are_spec_errors(make_repo: MakeRepo) -> None:
    repo = make_repo({**FILES, "trainops.yaml": PIPELINE.replace("[report.py]", "[nowhere.py]")})
    with pytest.raises(SpecError, match="depends on 'nowhere.py', which is not in git"):
        plan_of(repo)
    commit_files(repo, {"trainops.yaml": PIPELINE.replace("prepare.seed", "prepare.nope")})
    with pytest.raises(SpecError, match="reads parameter 'prepare.nope'"):
        plan_of(repo)


def test_image_and_env_are_part_of_the_key(make_repo: MakeRepo) -> None:
    repo = make_repo(FILES)
    before = plan_of(repo)
    commit_files(
        repo, {"trainops.yaml": PIPELINE.replace("name: chain", "name: chain\nimage: x:1")}
    )
    assert changed(before, plan_of(repo)) == {"prepare", "train", "evaluate", "report"}
