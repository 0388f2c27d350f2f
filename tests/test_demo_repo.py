"""The digits example becomes a real git + DVC repository that trains and clones.

Real git, real DVC with a local-directory remote, real scikit-learn: this is
the repository every end-to-end test and ``trainops demo`` start from.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainops.config import child_env
from trainops.demo import make_demo_repo
from trainops.errors import ConfigError, DataError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits"


def _env() -> dict[str, str]:
    # Stage commands say `python`: the interpreter running the tests must be the one found.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return child_env({"PATH": path})


def _run(*argv: str, cwd: Path) -> str:
    proc = subprocess.run(
        argv, cwd=cwd, env=_env(), capture_output=True, text=True, check=False, timeout=300
    )
    assert proc.returncode == 0, f"{argv} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _dvc(*args: str, cwd: Path) -> str:
    return _run(sys.executable, "-m", "dvc", *args, cwd=cwd)


def test_demo_repo_trains_and_clones(tmp_path: Path) -> None:
    remote = tmp_path / "dvc-remote"
    repo = make_demo_repo(EXAMPLE, tmp_path / "digits", remote)

    assert repo == tmp_path / "digits"
    tracked = set(_run("git", "ls-files", cwd=repo).split())
    assert {
        "dvc.yaml",
        "params.yaml",
        "trainops.yaml",
        ".dvc/config",
        "data/raw.dvc",
        "data/.gitignore",
        "src/train.py",
    } <= tracked
    assert not any(p.startswith("data/raw/") for p in tracked)  # data lives in DVC
    assert _run("git", "status", "--porcelain", cwd=repo) == ""
    assert any(remote.rglob("*")), "dvc push left the remote empty"

    _dvc("repro", cwd=repo)

    metrics = json.loads((repo / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.9 and metrics["f1_macro"] > 0.9
    assert (repo / "model" / "model.joblib").is_file()
    with (repo / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    test_rows = (repo / "data" / "prepared" / "test.csv").read_text().count("\n") - 1
    assert list(rows[0]) == ["id", "label", "predicted"] and len(rows) == test_rows > 400
    # The committed .gitignore files are exactly what DVC wants: repro adds to none of them.
    changed = {line[3:] for line in _run("git", "status", "--porcelain", cwd=repo).splitlines()}
    assert changed == {"dvc.lock", "metrics.json"}

    clone = tmp_path / "clone"
    _run("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    assert not (clone / "data" / "raw").exists()
    _dvc("pull", "-q", "data/raw.dvc", cwd=clone)
    raw = "data/raw/digits.csv"
    assert (clone / raw).read_bytes() == (repo / raw).read_bytes()


def test_dest_must_be_empty(tmp_path: Path) -> None:
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an empty directory"):
        make_demo_repo(EXAMPLE, dest, tmp_path / "remote")
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]


def test_failure_leaves_dest_as_found(tmp_path: Path) -> None:
    example = tmp_path / "example"
    (example / "scripts").mkdir(parents=True)
    (example / "dvc.yaml").write_text("stages: {}\n")
    (example / "scripts" / "make_data.py").write_text("raise SystemExit('no data today')\n")
    dest = tmp_path / "dest"
    dest.mkdir()

    with pytest.raises(DataError, match="writing the example data in .*: no data today"):
        make_demo_repo(example, dest, tmp_path / "remote")
    assert list(dest.iterdir()) == []
