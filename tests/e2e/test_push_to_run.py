"""Issue 3's end-to-end promise: ``git push`` to a bare repo with the hook → a run at that sha.

The service is a real ``trainops serve`` process; the push is a real ``git
push`` whose post-receive hook (installed by ``trainops hook install``)
notifies it. What a run did is read back through the HTTP API only.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path

from tests.conftest import MakeRepo, commit_files, git
from tests.e2e.service import Service, kill_matching, pids_matching, push, wait_for

# The stage's output and metrics come from files that differ per commit, so
# what the run reports proves which commit it checked out.
PIPELINE = """\
version: 1
name: e2e
stages:
  build:
    cmd: {sleep}cat seed.txt | tee out.txt && cp seed.json metrics.json
    deps: [seed.txt, seed.json]
    outs: [out.txt]
    metrics: [metrics.json]
"""


def _files(seed: int, sleep: str = "") -> dict[str, str]:
    return {
        "trainops.yaml": PIPELINE.format(sleep=f"{sleep} && " if sleep else ""),
        "seed.txt": f"seed-{seed}\n",
        "seed.json": f'{{"seed": {seed}}}\n',
    }


def _work_repo(make_repo: MakeRepo, origin: Path, seed: int, sleep: str = "") -> tuple[Path, str]:
    work = make_repo(_files(seed, sleep), name="work")
    git(work, "remote", "add", "origin", str(origin))
    return work, git(work, "rev-parse", "HEAD")


def _accepted(output: str, service: Service) -> bool:
    return f"trainops: accepted ({service.url}/webhooks/git)" in output


def test_a_push_runs_the_pipeline_at_exactly_the_pushed_sha(
    service: Service, origin: Path, make_repo: MakeRepo
) -> None:
    service.start()
    seed = secrets.randbelow(10**6)
    work, sha = _work_repo(make_repo, origin, seed)

    said = push(work, service, "main")

    assert _accepted(said, service), said
    run = service.wait_run_of(sha)
    final = service.wait_finished(run["id"])
    assert final["status"] == "succeeded", final
    assert final["commit"] == sha and final["branch"] == "main" and final["trigger"] == "push"
    assert final["metrics"] == {"seed": seed}, final
    (stage,) = final["stages"]
    assert stage["name"] == "build" and stage["status"] == "succeeded", stage
    assert f"seed-{seed}" in stage["log_tail"], stage


def test_pushing_the_same_commit_again_makes_no_new_run(
    service: Service, origin: Path, make_repo: MakeRepo
) -> None:
    service.start()
    work, sha = _work_repo(make_repo, origin, seed=7)
    assert _accepted(push(work, service, "main"), service)
    first = service.wait_finished(service.wait_run_of(sha)["id"])
    assert first["status"] == "succeeded", first

    # Nothing new: git does not even call the hook.
    again = push(work, service, "main")
    # The hook firing again for the same sha (a re-run hook, a replayed notification):
    # a new delivery, the same run key.
    hook = subprocess.run(
        ["python3", str(origin / "hooks" / "post-receive")],
        input=f"{'0' * 40} {sha} refs/heads/main\n",
        env={**service.env, "GIT_DIR": str(origin)},
        cwd=origin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert "Everything up-to-date" in again and not _accepted(again, service), again
    assert hook.returncode == 0 and _accepted(hook.stderr, service), hook.stderr
    wait_for(
        lambda: _all_events_done(service),
        "the replayed delivery to be processed",
        context=service.logs,
    )
    assert [r["id"] for r in service.runs()] == [first["id"]]
    assert service.run(first["id"])["attempts"] == 1


def _all_events_done(service: Service) -> bool:
    answer = service.http.get("/api/events")
    events = answer.json()
    return len(events) == 2 and all(e["status"] != "received" for e in events)


def test_a_second_push_supersedes_the_running_run(
    service: Service, origin: Path, make_repo: MakeRepo
) -> None:
    marker = f"sleep 20.{secrets.randbelow(10**6):06d}"  # this test's stage, and only it
    service.start()
    try:
        work, sha_a = _work_repo(make_repo, origin, seed=1, sleep=marker)
        assert _accepted(push(work, service, "main"), service)
        run_a = service.wait_run_of(sha_a)
        service.wait_status(run_a["id"], {"running"})
        wait_for(lambda: pids_matching(marker), f"the stage {marker!r} to start")

        sha_b = commit_files(work, _files(seed=2), "quick")
        assert _accepted(push(work, service, "main"), service)
        pushed = time.monotonic()

        run_b = service.wait_run_of(sha_b)
        final_a = service.wait_finished(run_a["id"], timeout=10)
        stopped_after = time.monotonic() - pushed
        final_b = service.wait_finished(run_b["id"])

        assert final_a["status"] == "superseded", final_a
        assert final_a["superseded_by"] == run_b["id"], final_a
        assert stopped_after < 5, f"run A took {stopped_after:.1f}s to stop"
        assert final_b["status"] == "succeeded" and final_b["commit"] == sha_b, final_b
        assert final_b["metrics"] == {"seed": 2}, final_b
        assert pids_matching(marker) == [], "the superseded stage is still running"
        assert len(service.runs()) == 2
    finally:
        kill_matching(marker)
