"""Plans remembered per commit, specs per content of the pipeline files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import MakeRepo, commit_files
from trainops.orchestrator import plan_target, resolve_target

PIPELINE = "version: 1\ndvc_yaml: ml/dvc.yaml\nstages: {train: {gpus: 0}}\n"
DVC = (
    "stages:\n  train:\n    cmd: echo {word} > out.txt\n    deps: [seed.txt]\n    outs: [out.txt]\n"
)


def repo_with_memo(make_repo: MakeRepo) -> Path:
    return make_repo(
        {"trainops.yaml": PIPELINE, "ml/dvc.yaml": DVC.format(word="a"), "ml/seed.txt": "1"}
    )


def test_memoized_plans_equal_fresh_ones(make_repo: MakeRepo, tmp_path: Path) -> None:
    repo = repo_with_memo(make_repo)
    memo = tmp_path / "memo"
    fresh = plan_target(resolve_target(repo, None))
    assert plan_target(resolve_target(repo, None), memo_dir=memo) == fresh
    assert plan_target(resolve_target(repo, None), memo_dir=memo) == fresh  # from the memo
    commit_files(repo, {"README.md": "docs\n"})
    spec, plan = plan_target(resolve_target(repo, None), memo_dir=memo)  # spec from the memo
    assert (spec, plan) == plan_target(resolve_target(repo, None))


def test_a_changed_dvc_yaml_elsewhere_is_not_served_from_the_memo(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    repo = repo_with_memo(make_repo)
    memo = tmp_path / "memo"
    first = plan_target(resolve_target(repo, None), memo_dir=memo)[0]
    commit_files(repo, {"ml/dvc.yaml": DVC.format(word="b")})
    second = plan_target(resolve_target(repo, None), memo_dir=memo)[0]
    assert first.stage("train").cmd == "echo a > out.txt"
    assert second.stage("train").cmd == "echo b > out.txt"


def test_a_corrupt_memo_is_a_miss(make_repo: MakeRepo, tmp_path: Path) -> None:
    repo = repo_with_memo(make_repo)
    memo = tmp_path / "memo"
    expected = plan_target(resolve_target(repo, None), memo_dir=memo)
    for path in memo.rglob("*.pickle"):
        path.write_bytes(b"garbage")
    assert plan_target(resolve_target(repo, None), memo_dir=memo) == expected


def test_a_new_commit_with_the_same_pipeline_files_needs_no_pydantic(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    repo = repo_with_memo(make_repo)
    memo = tmp_path / "memo"
    plan_target(resolve_target(repo, None), memo_dir=memo)
    commit_files(repo, {"ml/seed.txt": "2"})
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from trainops.orchestrator import plan_target, resolve_target\n"
        f"target = resolve_target({str(repo)!r}, None)\n"
        f"spec, plan = plan_target(target, memo_dir=Path({str(memo)!r}))\n"
        "assert plan.stages[0].name == 'train'\n"
        "print('pydantic' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
