"""``trainops serve`` killed with SIGKILL mid-run, then started again.

The run is taken over once, and the dead service's stage (a process group of
its own, which outlives the service) is stopped before the new attempt runs
in what may be the same workspace. ``tests/e2e/test_restart.py`` covers an
acknowledged but unprocessed delivery. The installed ``trainops`` command
runs in a child process, configured by ``TRAINOPS_*`` variables only, as an
operator would run it: a crash is only a crash when the process really dies.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import user_env
from tests.service.conftest import (
    FINAL,
    GITHUB_SECRET,
    Forge,
    github_push,
    pipeline,
    wait_for,
)
from tests.webhooks.signing import github_headers

TRAINOPS = str(Path(sys.executable).parent / "trainops")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Serve:
    """``trainops serve`` in a child process, on a fresh port each start."""

    def __init__(self, tmp_path: Path) -> None:
        self.cwd = tmp_path  # no trainops.toml there: the environment configures
        self.env = user_env(
            tmp_path / "home",
            TRAINOPS_GITHUB__WEBHOOK_SECRET=GITHUB_SECRET,
            TRAINOPS_SERVICE__LEASE_S="1",
            TRAINOPS_SERVICE__POLL_S="0.05",
            TRAINOPS_RUNNER__KILL_GRACE_S="1",
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.starts = 0

    def start(self, *args: str) -> None:
        port = _free_port()
        self.starts += 1
        log = (self.cwd / f"serve-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [TRAINOPS, "serve", "--port", str(port), *args],
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.url = f"http://127.0.0.1:{port}"
        wait_for(self._up, 30, f"trainops serve on port {port}")

    def _up(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log()
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown handler, no lease released, no stage stopped by us."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.cwd.glob("serve-*.log")))

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.url}{path}", timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def push(self, body: bytes, delivery: str) -> httpx.Response:
        headers = github_headers(body, GITHUB_SECRET, "push", delivery)
        return httpx.post(f"{self.url}/webhooks/github", content=body, headers=headers, timeout=10)

    def final(self, run_id: str, timeout: float = 20) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            run: dict[str, Any] = self.get(f"/api/runs/{run_id}")
            return run if run["status"] in FINAL else None

        return wait_for(done, timeout, f"run {run_id} to finish\n{self.log()}")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    server = Serve(tmp_path)
    yield server
    server.stop()


def test_a_run_in_flight_at_a_crash_is_taken_over_once(
    serve: Serve, forge: Forge, tmp_path: Path
) -> None:
    # The first attempt of the stage sleeps 8 s, a later one not at all; each writes
    # its pid (the leader of its process group) when it starts.
    trace = tmp_path / "stage-trace"
    stage = (
        f"echo $$ >> {trace} && "
        f"if [ $(wc -l < {trace}) -eq 1 ]; then sleep 8; fi && "
        "echo prepared > prepared.txt"
    )
    sha = forge.commit({"trainops.yaml": pipeline(stage)}, "Train for a while")
    serve.start()
    assert serve.push(github_push(forge, sha), str(uuid.uuid4())).status_code == 202
    wait_for(trace.is_file, 15, "the stage to start")
    [first] = serve.get("/api/runs")
    assert first["status"] == "running"
    serve.kill()
    orphan = int(trace.read_text().split()[0])
    try:
        serve.start()
        run = serve.final(first["id"])  # taken over once the dead worker's lease ran out
        assert run["status"] == "succeeded", run
        assert run["attempts"] == 2
        assert run["metrics"] == {"score": 0.75}
        assert [r["id"] for r in serve.get("/api/runs")] == [first["id"]]
        # The dead service's stage did not go on beside the new attempt.
        assert not _running(orphan), "the killed service's stage survived the takeover"
    finally:
        if _running(orphan):
            os.killpg(orphan, signal.SIGKILL)  # that stage's own group, started by this test


def _running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
