"""Orphaned stages of a dead runner are killed before a run is taken over."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from trainops.gpu_runners.process import reap_orphans


def start(marker: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TRAINOPS_RUN_ID": marker}
    return subprocess.Popen(["sh", "-c", "sleep 30 & wait"], env=env, start_new_session=True)


def test_only_the_runs_own_groups_are_killed(tmp_path: Path) -> None:
    mine, other = start("r1"), start("r2")
    try:
        (tmp_path / "train.pid").write_text(f"{mine.pid}\n")
        (tmp_path / "eval.pid").write_text(f"{other.pid}\n")
        (tmp_path / "gone.pid").write_text("999999999\n")
        time.sleep(0.1)
        assert reap_orphans(tmp_path, "TRAINOPS_RUN_ID=r1") == [mine.pid]
        assert mine.wait(5) == -9
        assert other.poll() is None
        assert list(tmp_path.glob("*.pid")) == []
    finally:
        for proc in (mine, other):
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
