"""Nothing acknowledged is lost, nothing is done twice: the service killed and restarted.

``trainops serve`` is a real process killed with SIGKILL (no shutdown code
runs), then started again on the same data dir. Also the README's main
command, ``trainops demo``, end to end in its test mode.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import MakeRepo, git
from tests.e2e.service import (
    TRAINOPS,
    Service,
    kill_matching,
    pids_matching,
    push,
    service_env,
    wait_for,
)
from tests.webhooks.signing import fixture_body, github_headers
from trainops.store import Store

QUICK = """\
version: 1
name: e2e
stages:
  build:
    cmd: cat seed.txt | tee out.txt && cp seed.json metrics.json
    deps: [seed.txt, seed.json]
    outs: [out.txt]
    metrics: [metrics.json]
"""

SLOW = """\
version: 1
name: e2e
stages:
  build:
    cmd: {marker} && echo done | tee out.txt
    outs: [out.txt]
"""


def _bare_with(make_repo: MakeRepo, tmp_path: Path, files: dict[str, str]) -> tuple[Path, str]:
    """A bare origin holding one commit of ``files`` on main (no hook); returns it and the sha."""
    work = make_repo(files, name="work")
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(work, "push", "-q", str(bare), "main")
    return bare, git(work, "rev-parse", "HEAD")


def _github_push(service: Service, bare: Path, sha: str) -> tuple[bytes, dict[str, str]]:
    """Our recorded GitHub push delivery, now about ``sha`` in ``bare``, signed."""
    payload = json.loads(fixture_body("github", "push.branch"))
    payload["after"] = sha
    payload["head_commit"]["id"] = sha
    payload["commits"][-1]["id"] = sha
    payload["repository"]["clone_url"] = str(bare)
    payload["repository"]["default_branch"] = "main"
    body = json.dumps(payload).encode()
    return body, github_headers(body, service.github_secret, "push", str(uuid.uuid4()))


def _store_rows(service: Service) -> tuple[list[str], list[str]]:
    """(event statuses, run commits) read from the store itself, no service involved."""
    with Store.open(f"sqlite:///{service.home}/trainops.db") as store:
        events = [e.status for e in store.list_events(500)]
        runs = [r.commit for r in store.list_runs(500)]
    return events, runs


def test_an_acknowledged_delivery_survives_sigkill_and_runs_once(
    service: Service, make_repo: MakeRepo, tmp_path: Path
) -> None:
    bare, sha = _bare_with(
        make_repo, tmp_path, {"trainops.yaml": QUICK, "seed.txt": "s\n", "seed.json": '{"v": 3}'}
    )
    service.start("--no-worker")  # web only: nothing can process the delivery
    body, headers = _github_push(service, bare, sha)

    answer = service.http.post("/webhooks/github", content=body, headers=headers)
    assert answer.status_code == 202 and answer.json()["status"] == "accepted", answer.text
    service.kill()

    assert _store_rows(service) == (["received"], [])  # acknowledged, durable, not yet a run

    service.start()  # with its worker
    run = service.wait_run_of(sha)
    final = service.wait_finished(run["id"])
    assert final["status"] == "succeeded" and final["metrics"] == {"v": 3}, final

    again = service.http.post("/webhooks/github", content=body, headers=headers)
    assert again.status_code == 202 and again.json()["status"] == "duplicate", again.text
    time.sleep(0.5)  # a few worker polls: nothing new may appear
    assert [r["id"] for r in service.runs()] == [run["id"]]
    assert service.run(run["id"])["attempts"] == 1
    assert _store_rows(service) == (["processed"], [sha])


def test_a_run_in_flight_when_the_service_dies_is_taken_over(
    service: Service, origin: Path, make_repo: MakeRepo
) -> None:
    marker = f"sleep 3.{secrets.randbelow(10**6):06d}"  # this test's stage, and only it
    work = make_repo({"trainops.yaml": SLOW.format(marker=marker)}, name="work")
    git(work, "remote", "add", "origin", str(origin))
    sha = git(work, "rev-parse", "HEAD")
    service.start()
    try:
        assert "trainops: accepted" in push(work, service, "main")
        run = service.wait_run_of(sha)
        service.wait_status(run["id"], {"running"})
        wait_for(lambda: pids_matching(marker), f"the stage {marker!r} to start")

        service.kill()
        killed = time.monotonic()
        service.start()

        final = service.wait_finished(run["id"])
        took = time.monotonic() - killed
        assert final["status"] == "succeeded", final
        assert final["attempts"] >= 2, final
        assert final["stages"][0]["log_tail"].endswith("done"), final
        assert [r["id"] for r in service.runs()] == [run["id"]]
        assert took < 15, f"the takeover took {took:.1f}s"
    finally:
        kill_matching(marker)


@pytest.mark.slow
def test_the_demo_command_end_to_end(tmp_path: Path) -> None:
    env = service_env(tmp_path / "home")
    demo = tmp_path / "demo"

    def run_demo() -> str:
        proc = subprocess.run(
            [TRAINOPS, "demo", "--exit", "--port", "0", "--dir", str(demo)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        said = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"exit {proc.returncode}\n{said}"
        return said

    first = run_demo()
    assert re.search(r"^\s*accuracy\s+0\.\d+", first, re.MULTILINE), first
    assert "trainops: accepted" in first, first
    assert re.search(r"run \S+: succeeded · 3 of 3 stage\(s\) executed", first), first

    second = run_demo()
    assert re.search(r"run \S+: succeeded · 0 of 3 stage\(s\) executed", second), second
    assert re.search(r"^\s*accuracy\s+0\.\d+", second, re.MULTILINE), second
