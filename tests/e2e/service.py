"""A ``trainops serve`` child process on a free port, and what the e2e tests need around it.

The service runs exactly as an operator starts it: the installed ``trainops``
script, a clean environment (no inherited ``TRAINOPS_*``), its state under a
temporary ``TRAINOPS_HOME``, short leases and polls so takeovers happen in
seconds. Its output goes to a log file that failures print.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.conftest import user_env

BIN = Path(sys.executable).parent
TRAINOPS = str(BIN / "trainops")
TERMINAL = frozenset({"succeeded", "failed", "errored", "cancelled", "superseded"})
DEADLINE_S = 30.0
POLL_S = 0.1

T = TypeVar("T")


def free_port() -> int:
    """A port nobody listens on right now (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def service_env(home: Path, **extra: str) -> dict[str, str]:
    """A user's environment: venv bin first on PATH, no inherited trainops settings or proxies."""
    return user_env(
        home,
        TRAINOPS_SERVICE__LEASE_S="2",
        TRAINOPS_SERVICE__POLL_S="0.1",
        TRAINOPS_RUNNER__KILL_GRACE_S="1",
        **extra,
    )


def wait_for(
    probe: Callable[[], T | None],
    what: str | Callable[[], str],
    *,
    timeout: float = DEADLINE_S,
    context: Callable[[], str] = str,
) -> T:
    """Poll ``probe`` every 0.1 s until it returns something truthy; fail after ``timeout``.

    ``what`` (or what it returns) and ``context()`` are said on failure, as they are then.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {said}\n{context()}")
        time.sleep(POLL_S)


def pids_matching(marker: str) -> list[int]:
    """Processes whose command line contains ``marker`` (a stage's unique command)."""
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def kill_matching(marker: str) -> None:
    for pid in pids_matching(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Service:
    """``trainops serve`` in a child process; ``start()``, ``kill()`` (SIGKILL), ``stop()``."""

    def __init__(self, root: Path, **extra_env: str) -> None:
        self.root = root
        self.home = root / "home"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.githook_secret = secrets.token_urlsafe(24)
        self.github_secret = secrets.token_urlsafe(24)
        self.env = service_env(
            self.home,
            TRAINOPS_GITHOOK__WEBHOOK_SECRET=self.githook_secret,
            TRAINOPS_GITHUB__WEBHOOK_SECRET=self.github_secret,
            **extra_env,
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.http = httpx.Client(base_url=self.url, trust_env=False, timeout=10)

    @property
    def log_file(self) -> Path:
        return self.root / f"serve.{self.starts}.log"

    def start(self, *args: str) -> Service:
        """Start ``trainops serve ARGS`` and wait until /healthz answers."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        with self.log_file.open("wb") as log:
            self.proc = subprocess.Popen(
                [TRAINOPS, "serve", "--port", str(self.port), *args],
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._healthy, f"{self.url}/healthz", context=self.logs)
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"trainops serve exited {self.proc.returncode}\n{self.logs()}")
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the machine or the OOM killer takes it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.http.close()

    def logs(self) -> str:
        parts = []
        for n in range(1, self.starts + 1):
            path = self.root / f"serve.{n}.log"
            if path.is_file():
                text = path.read_text(errors="replace")
                parts.append(f"--- trainops serve #{n} ({path})\n{text[-6000:]}")
        return "\n".join(parts)

    # -- the HTTP API --------------------------------------------------------------

    def runs(self) -> list[dict[str, Any]]:
        answer = self.http.get("/api/runs", params={"limit": 500})
        assert answer.status_code == 200, answer.text
        runs: list[dict[str, Any]] = answer.json()
        return runs

    def run(self, run_id: str) -> dict[str, Any]:
        answer = self.http.get(f"/api/runs/{run_id}")
        assert answer.status_code == 200, answer.text
        run: dict[str, Any] = answer.json()
        return run

    def runs_of(self, commit: str) -> list[dict[str, Any]]:
        return [r for r in self.runs() if r["commit"] == commit]

    def wait_run_of(self, commit: str, *, timeout: float = DEADLINE_S) -> dict[str, Any]:
        """The run of ``commit``, once it exists."""

        def probe() -> dict[str, Any] | None:
            found = self.runs_of(commit)
            return found[0] if found else None

        return wait_for(probe, f"a run of {commit[:12]}", timeout=timeout, context=self.logs)

    def wait_status(
        self, run_id: str, statuses: set[str] | frozenset[str], *, timeout: float = DEADLINE_S
    ) -> dict[str, Any]:
        """The run once its status is one of ``statuses``."""

        def probe() -> dict[str, Any] | None:
            run = self.run(run_id)
            return run if run["status"] in statuses else None

        return wait_for(
            probe,
            lambda: f"run {run_id} to be {'/'.join(sorted(statuses))}: {self.run(run_id)}",
            timeout=timeout,
            context=self.logs,
        )

    def wait_finished(self, run_id: str, *, timeout: float = DEADLINE_S) -> dict[str, Any]:
        return self.wait_status(run_id, TERMINAL, timeout=timeout)


def push(work: Path, service: Service, *args: str) -> str:
    """``git push origin ARGS`` as a user runs it; returns what git said (hook lines included)."""
    proc = subprocess.run(
        ["git", "push", "origin", *args],
        cwd=work,
        env=service.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, f"git push failed\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr
