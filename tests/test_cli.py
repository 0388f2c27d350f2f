"""The ``trainops`` command as a user runs it: a real process on small real git repos.

Every test drives the installed ``trainops`` script in a child process with
its own ``TRAINOPS_HOME``, so what is checked is exactly what a person (or
CI) sees: exit codes, stdout, stderr and the ``--json`` object. Stage
commands are plain shell (``echo``, ``cp``, ``sleep``), so the module stays
fast; the real ML pipeline is in ``test_e2e_run.py``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MakeRepo, commit_files, git, user_env

TRAINOPS = str(Path(sys.executable).parent / "trainops")
SCHEMA_FILE = (
    Path(__file__).resolve().parents[1] / "trainops" / "pipelines" / "trainops.schema.json"
)

HAS_NVIDIA = Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi") is not None

# a → b → d, and c on its own: b fails, so d is skipped while c still succeeds.
CHAIN = """\
version: 1
name: chain
stages:
  a:
    cmd: echo alpha > a.txt
    outs: [a.txt]
  b:
    cmd: cat a.txt > b.txt
    deps: [a.txt]
    outs: [b.txt]
  c:
    cmd: cp value.json metrics.json
    deps: [value.json]
    metrics: [metrics.json]
"""


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user: the venv's bin first on PATH, state under ``home``."""
    return user_env(home, TRAINOPS_RUNNER__KILL_GRACE_S="2", **extra)


class Cli:
    def __init__(self, tmp_path: Path) -> None:
        self.cwd = tmp_path  # no trainops.toml here: only the environment configures
        self.home = tmp_path / "home"
        self.env = cli_env(self.home)

    def __call__(self, *args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TRAINOPS, *map(str, args)],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def run_json(self, *args: str | Path, expect: int = 0) -> dict[str, Any]:
        proc = self("run", *args, "--json")
        assert proc.returncode == expect, _show(proc)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def _show(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def _stages(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in result["stages"]}


def _chain_repo(make_repo: MakeRepo) -> Path:
    return make_repo({"trainops.yaml": CHAIN, "value.json": '{"score": 0.75}\n'})


# -- validate / schema ----------------------------------------------------------


def test_validate_a_valid_pipeline(cli: Cli, make_repo: MakeRepo) -> None:
    repo = _chain_repo(make_repo)

    for target in (repo, repo / "trainops.yaml"):
        proc = cli("validate", target)
        assert proc.returncode == 0, _show(proc)
        assert "valid" in proc.stdout and "'chain'" in proc.stdout and "3 stage(s)" in proc.stdout
        assert proc.stderr == ""


def test_validate_reports_file_line_and_reason(cli: Cli, tmp_path: Path) -> None:
    pipeline = tmp_path / "bad"
    pipeline.mkdir()
    (pipeline / "trainops.yaml").write_text(
        "version: 1\n"
        "stages:\n"
        "  train:\n"
        "    cmd: python train.py\n"
        "    timeout: 10m\n"
        "    gpuz: 1\n"  # line 6: a typo
        "  test:\n"
        "    cmd: python test.py\n"
        "    retries: many\n"  # line 9: not a number
    )

    proc = cli("validate", pipeline)

    assert proc.returncode == 2, _show(proc)
    assert proc.stdout == ""
    problems = proc.stderr.splitlines()
    assert len(problems) == 2, proc.stderr  # every problem at once, one line each
    assert problems[0].startswith("trainops.yaml:6: stages.train.gpuz: unknown key"), problems
    assert "'gpus'" in problems[0]  # did you mean
    assert problems[1].startswith("trainops.yaml:9: stages.test.retries: "), problems
    assert "Traceback" not in proc.stderr


def test_validate_reports_the_line_of_a_bad_value(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "trainops.yaml").write_text(
        "version: 1\nstages:\n  a:\n    cmd: echo a\n  b:\n    cmd: echo b\n    timeout: soon\n"
    )

    proc = cli("validate", tmp_path / "trainops.yaml")

    assert proc.returncode == 2, _show(proc)
    assert proc.stderr.startswith("trainops.yaml:7: stages.b.timeout: 'soon' is not a duration")


def test_validate_a_missing_directory(cli: Cli, tmp_path: Path) -> None:
    proc = cli("validate", tmp_path / "nowhere")

    assert proc.returncode == 2, _show(proc)
    assert "nowhere" in proc.stderr and "does not exist" in proc.stderr


def test_schema_is_the_committed_one(cli: Cli) -> None:
    proc = cli("schema")

    assert proc.returncode == 0, _show(proc)
    committed = SCHEMA_FILE.read_text()
    assert json.loads(proc.stdout) == json.loads(committed)
    assert proc.stdout == committed  # byte for byte: `trainops schema > file` reproduces it


# -- plan ---------------------------------------------------------------------------


def test_plan_before_and_after_a_run(cli: Cli, make_repo: MakeRepo) -> None:
    repo = _chain_repo(make_repo)
    head = git(repo, "rev-parse", "HEAD")

    before = cli("plan", repo)
    assert before.returncode == 0, _show(before)
    assert f"chain @ {head[:12]}" in before.stdout
    for name in ("a", "b", "c"):
        assert any(line.split()[:2] == [name, "run"] for line in before.stdout.splitlines())
    assert "3 stage(s) would run, 0 cached" in before.stdout

    result = cli.run_json(repo)

    after = cli("plan", repo)
    assert after.returncode == 0, _show(after)
    assert after.stdout.count(f"cached (run {result['run_id']})") == 3, after.stdout
    assert "0 stage(s) would run, 3 cached" in after.stdout


def test_plan_and_run_with_an_unknown_ref(cli: Cli, make_repo: MakeRepo) -> None:
    repo = _chain_repo(make_repo)

    for command in ("plan", "run"):
        proc = cli(command, repo, "--ref", "no-such-branch")
        assert proc.returncode == 2, _show(proc)
        assert "'no-such-branch'" in proc.stderr
        assert "no such commit, branch or tag" in proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout
    assert not (cli.home / "runs").exists()


def test_plan_at_an_older_ref(cli: Cli, make_repo: MakeRepo) -> None:
    repo = _chain_repo(make_repo)
    first = git(repo, "rev-parse", "HEAD")
    commit_files(repo, {"trainops.yaml": CHAIN.replace("name: chain", "name: renamed")})

    proc = cli("plan", repo, "--ref", first[:10])

    assert proc.returncode == 0, _show(proc)
    assert proc.stdout.startswith(f"chain @ {first[:12]} ({first[:10]})")


# -- run ----------------------------------------------------------------------------


def test_run_json(cli: Cli, make_repo: MakeRepo) -> None:
    repo = _chain_repo(make_repo)

    result = cli.run_json(repo)

    assert result["commit"] == git(repo, "rev-parse", "HEAD")
    assert result["status"] == "succeeded"
    assert result["run_id"] and result["pipeline"] == "chain"
    assert sorted(s["name"] for s in result["stages"]) == ["a", "b", "c"]
    for stage in result["stages"]:
        assert stage["status"] == "succeeded"
        assert stage["cached"] is False
        assert isinstance(stage["duration_s"], float) and stage["duration_s"] >= 0
        assert stage["gpu_seconds"] == 0.0
        assert stage["energy_j"] is None  # CPU stages: no GPU energy to measure
        assert stage["exit_code"] == 0 and stage["attempts"] == 1
    assert result["metrics"] == {"score": 0.75}
    assert _stages(result)["c"]["metrics"] == {"score": 0.75}
    assert result["mlflow_run_id"] is None  # tracking is off
    saved = cli.home / "runs" / result["run_id"] / "result.json"
    assert json.loads(saved.read_text()) == result
    log = Path(_stages(result)["a"]["log_path"])
    assert log.is_file() and log.is_relative_to(cli.home)


def test_failing_stage(cli: Cli, make_repo: MakeRepo) -> None:
    failing = CHAIN.replace(
        "cmd: cat a.txt > b.txt", "cmd: cat a.txt > b.txt; echo 'b went wrong, no GPU-42'; exit 3"
    )
    failing += "  d:\n    cmd: cp b.txt d.txt\n    deps: [b.txt]\n    outs: [d.txt]\n"
    repo = make_repo({"trainops.yaml": failing, "value.json": '{"score": 0.5}\n'})

    result = cli.run_json(repo, expect=1)

    stages = _stages(result)
    assert result["status"] == "failed"
    assert stages["a"]["status"] == "succeeded"
    assert stages["b"]["status"] == "failed"
    assert stages["b"]["exit_code"] == 3 and stages["b"]["reason"] == "exit code 3"
    assert "b went wrong, no GPU-42" in Path(stages["b"]["log_path"]).read_text()
    assert stages["d"]["status"] == "skipped" and stages["d"]["attempts"] == 0
    assert "'b'" in stages["d"]["reason"]
    assert stages["c"]["status"] == "succeeded"  # an independent branch finishes
    assert result["metrics"] == {"score": 0.5}

    # What a person reads: the stage, its exit code and the last line it printed.
    proc = cli("run", repo, "--no-cache")
    assert proc.returncode == 1, _show(proc)
    out = proc.stdout + proc.stderr
    assert "stage 'b' failed: exit code 3" in out
    assert "b went wrong, no GPU-42" in out
    assert "Traceback" not in out


@pytest.mark.skipif(HAS_NVIDIA, reason="checks the message on a host without an NVIDIA GPU")
def test_gpu_stage_without_a_gpu(cli: Cli, make_repo: MakeRepo) -> None:
    pipeline = "version: 1\nstages:\n  train:\n    cmd: echo training\n    gpus: 1\n"
    pipeline += "  report:\n    cmd: echo report\n"
    repo = make_repo({"trainops.yaml": pipeline})

    proc = cli("run", repo, "--json")

    assert proc.returncode == 1, _show(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
    stages = _stages(json.loads(proc.stdout))
    train = stages["train"]
    assert train["status"] == "failed" and train["attempts"] == 0
    assert "GPU" in train["reason"] and "no NVIDIA" in train["reason"], train["reason"]
    assert "driver" in train["reason"]
    assert stages["report"]["status"] == "succeeded"
    assert "no NVIDIA" in proc.stderr  # the progress line says why too


def test_second_run_is_cached_and_no_cache_runs_all(cli: Cli, make_repo: MakeRepo) -> None:
    repo = _chain_repo(make_repo)
    first = cli.run_json(repo)
    assert not any(s["cached"] for s in first["stages"])

    second = cli.run_json(repo)

    assert second["status"] == "succeeded" and second["run_id"] != first["run_id"]
    for stage in second["stages"]:
        assert stage["cached"] is True and stage["attempts"] == 0
        assert stage["cached_from"] == first["run_id"]
    assert second["metrics"] == first["metrics"]
    assert not (cli.home / "runs" / second["run_id"] / "logs").exists()  # nothing ran

    third = cli.run_json(repo, "--no-cache")

    for stage in third["stages"]:
        assert stage["cached"] is False and stage["attempts"] == 1
        assert stage["status"] == "succeeded"
    assert third["metrics"] == first["metrics"]


def test_a_new_commit_reruns_only_what_changed(cli: Cli, make_repo: MakeRepo) -> None:
    repo = _chain_repo(make_repo)
    cli.run_json(repo)
    commit_files(repo, {"value.json": '{"score": 0.8}\n', "README.md": "docs\n"})

    result = cli.run_json(repo)

    cached = {s["name"]: s["cached"] for s in result["stages"]}
    assert cached == {"a": True, "b": True, "c": False}
    assert result["metrics"] == {"score": 0.8}


def test_run_uses_the_committed_content(cli: Cli, make_repo: MakeRepo) -> None:
    repo = _chain_repo(make_repo)
    (repo / "value.json").write_text('{"score": 0.11}\n')  # edited, not committed
    (repo / "trainops.yaml").write_text("stages: [not, what, HEAD, has\n")  # broken, too

    proc = cli("run", repo, "--json")

    assert proc.returncode == 0, _show(proc)
    assert json.loads(proc.stdout)["metrics"] == {"score": 0.75}  # what HEAD holds
    assert "uncommitted changes" in proc.stderr
    assert git(repo, "rev-parse", "HEAD")[:12] in proc.stderr
    assert (repo / "value.json").read_text() == '{"score": 0.11}\n'  # working tree untouched
    assert not (repo / "metrics.json").exists() and not (repo / "a.txt").exists()


def test_a_clean_repo_gets_no_note(cli: Cli, make_repo: MakeRepo) -> None:
    repo = _chain_repo(make_repo)

    proc = cli("run", repo, "--json")

    assert proc.returncode == 0, _show(proc)
    assert "uncommitted" not in proc.stderr


def _pids(pattern: str) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-f", pattern], capture_output=True, text=True, timeout=10, check=False
    )
    return [int(p) for p in out.stdout.split()]


@pytest.mark.skipif(shutil.which("pgrep") is None, reason="needs pgrep")
def test_ctrl_c_cancels_and_kills_the_stage(cli: Cli, make_repo: MakeRepo) -> None:
    seconds = f"60.{secrets.randbelow(10**6):06d}"  # a marker no other process has
    marker = f"sleep {seconds}"
    pipeline = f"version: 1\nstages:\n  nap:\n    cmd: echo napping; {marker}\n"
    repo = make_repo({"trainops.yaml": pipeline})
    out, err = cli.cwd / "out.txt", cli.cwd / "err.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [TRAINOPS, "run", str(repo)],
            cwd=cli.cwd,
            env=cli.env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while not ("started" in err.read_text() and _pids(marker.replace(".", r"\."))):
            assert proc.poll() is None, f"exited early: {err.read_text()}"
            assert time.monotonic() < deadline, f"the stage never started: {err.read_text()}"
            time.sleep(0.05)

        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=15)
        took = time.monotonic() - sent

        assert code == 130, f"{out.read_text()}\n{err.read_text()}"
        assert took < 5, f"took {took:.1f}s to stop"
        leftover = _pids(marker.replace(".", r"\."))
        for _ in range(20):
            if not leftover:
                break
            time.sleep(0.1)
            leftover = _pids(marker.replace(".", r"\."))
        assert leftover == [], "the stage's process outlived the run"
        assert "cancelling" in err.read_text()
        assert "cancelled" in out.read_text()
        assert "Traceback" not in out.read_text() + err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for pid in _pids(marker.replace(".", r"\.")):
            os.kill(pid, signal.SIGKILL)
