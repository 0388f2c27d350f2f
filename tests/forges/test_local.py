"""LocalForge against real bare repositories: notes pushed to the origin, races, the hook."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MakeRepo, commit_files, git
from trainops import githook
from trainops.errors import ForgeError
from trainops.forges.local import LocalForge
from trainops.models import CommitState, CommitStatus
from trainops.webhooks.githook import parse_githook

TOKEN = "hook-token"


@dataclass
class Origin:
    bare: Path
    work: Path
    shas: list[str]


@pytest.fixture
def origin(tmp_path: Path, make_repo: MakeRepo) -> Origin:
    """A bare origin with two commits on main, pushed from a work repo."""
    work = make_repo({"trainops.yaml": "version: 1\n", "data/params.yaml": "lr: 0.1\n"})
    first = git(work, "rev-parse", "HEAD")
    second = commit_files(work, {"train.py": "print('hi')\n"}, "add train.py")
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(work, "push", "-q", str(bare), "main")
    return Origin(bare=bare, work=work, shas=[first, second])


def notes_in_fresh_clone(tmp_path: Path, bare: Path, sha: str, name: str = "reader") -> str:
    """What a user sees: clone, fetch the notes, ``git log --notes=trainops``."""
    clone = tmp_path / name
    git(tmp_path, "clone", "-q", str(bare), str(clone))
    git(clone, "fetch", "-q", "origin", "refs/notes/trainops:refs/notes/trainops")
    return git(clone, "log", "--notes=trainops", "-1", sha)


def status(context: str, state: CommitState, description: str) -> CommitStatus:
    return CommitStatus(context, state, description, url="http://trainops.test/runs/7")


def test_statuses_and_the_latest_comment_show_in_git_log(tmp_path: Path, origin: Origin) -> None:
    forge = LocalForge(tmp_path / "notes")
    sha = origin.shas[1]
    forge.set_status(str(origin.bare), sha, status("trainops/train", CommitState.RUNNING, "go"))
    forge.set_status(
        str(origin.bare), sha, status("trainops/train", CommitState.SUCCESS, "succeeded in 1.2s")
    )
    forge.set_status(str(origin.bare), sha, status("trainops", CommitState.SUCCESS, "all passed"))
    forge.upsert_comment(str(origin.bare), 1, "trainops", "## Run 7\nfirst draft")
    comment_id = forge.upsert_comment(
        str(origin.bare), 1, "trainops", "## Run 7\n\n| metric | value |\n| acc | 0.93 |"
    )

    log = notes_in_fresh_clone(tmp_path, origin.bare, sha)
    assert comment_id == f"{sha}:trainops"
    assert "Notes (trainops):" in log
    assert "trainops/train  success  succeeded in 1.2s  http://trainops.test/runs/7" in log
    assert "trainops        success  all passed         http://trainops.test/runs/7" in log
    assert log.count("## Run 7") == 1 and "| acc | 0.93 |" in log
    assert "first draft" not in log and "running" not in log
    assert '"statuses"' not in log  # the JSON state stays in its own ref


def test_comment_on_an_explicit_commit_and_an_unchanged_report_pushes_nothing(
    tmp_path: Path, origin: Origin
) -> None:
    forge = LocalForge(tmp_path / "notes")
    first = origin.shas[0]
    forge.upsert_comment(str(origin.bare), 0, "trainops", "report for the first", sha=first)
    pushed = git(origin.bare, "rev-parse", "refs/notes/trainops")
    forge.upsert_comment(str(origin.bare), 0, "trainops", "report for the first", sha=first)

    assert git(origin.bare, "rev-parse", "refs/notes/trainops") == pushed
    assert "report for the first" in notes_in_fresh_clone(tmp_path, origin.bare, first)


def test_two_services_noting_different_commits_at_once_keep_both(
    tmp_path: Path, origin: Origin
) -> None:
    forges = [LocalForge(tmp_path / "service-a"), LocalForge(tmp_path / "service-b")]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def report(forge: LocalForge, sha: str, who: str) -> None:
        try:
            start.wait()
            for stage in ("train", "evaluate", "gate"):
                forge.set_status(
                    str(origin.bare), sha, status(f"trainops/{stage}", CommitState.SUCCESS, who)
                )
            forge.upsert_comment(str(origin.bare), 0, "trainops", f"report by {who}", sha=sha)
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    threads = [
        threading.Thread(target=report, args=(forge, sha, who))
        for forge, sha, who in zip(forges, origin.shas, ("service-a", "service-b"), strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert not errors
    for sha, who, other in zip(origin.shas, ("service-a", "service-b"), ("b", "a"), strict=True):
        log = notes_in_fresh_clone(tmp_path, origin.bare, sha, name=f"reader-{who}")
        assert f"report by {who}" in log and f"service-{other}" not in log
        assert log.count("trainops/") == 3


class RacedForge(LocalForge):
    """Another service writes a note between our fetch and our push, once."""

    def __init__(self, work_dir: Path, rival: LocalForge, origin: Origin) -> None:
        super().__init__(work_dir)
        self.rival, self.origin = rival, origin
        self.raced = False

    def _write(self, clone: Path, sha: str, state: dict[str, Any], doing: str) -> None:
        if not self.raced:
            self.raced = True
            other = self.origin.shas[0]
            self.rival.upsert_comment(str(self.origin.bare), 0, "trainops", "rival", sha=other)
        super()._write(clone, sha, state, doing)


def test_a_rejected_push_is_fetched_reapplied_and_pushed_again(
    tmp_path: Path, origin: Origin, caplog: pytest.LogCaptureFixture
) -> None:
    rival = LocalForge(tmp_path / "rival")
    forge = RacedForge(tmp_path / "ours", rival, origin)
    caplog.set_level("INFO", logger="trainops.forges.local")

    forge.upsert_comment(str(origin.bare), 0, "trainops", "ours", sha=origin.shas[1])

    assert "push rejected" in caplog.text
    assert "rival" in notes_in_fresh_clone(tmp_path, origin.bare, origin.shas[0], "r0")
    assert "ours" in notes_in_fresh_clone(tmp_path, origin.bare, origin.shas[1], "r1")


@dataclass
class HookReceiver:
    """A tiny stand-in for the service's /webhooks/git: it keeps what the hook posts."""

    url: str
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def hook_receiver() -> Iterator[HookReceiver]:
    posts: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            posts.append((dict(self.headers.items()), body))
            answer = json.dumps({"status": "accepted"}).encode()
            self.send_response(202)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HookReceiver(f"http://127.0.0.1:{server.server_port}/webhooks/git", posts)
    finally:
        server.shutdown()
        server.server_close()


def test_the_notes_push_does_not_notify_the_service(
    tmp_path: Path, origin: Origin, hook_receiver: HookReceiver
) -> None:
    githook.install(origin.bare, hook_receiver.url, TOKEN)
    forge = LocalForge(tmp_path / "notes")

    forge.set_status(
        str(origin.bare), origin.shas[1], status("trainops", CommitState.PENDING, "queued")
    )

    # post-receive runs for any push, notes included; the hook posts branches and tags only
    assert hook_receiver.posts == []
    notes = git(origin.work, "ls-remote", str(origin.bare), "refs/notes/*")
    assert "refs/notes/trainops" in notes

    # The same hook still turns a branch push into an Event.
    commit_files(origin.work, {"train.py": "print('v2')\n"}, "v2")
    git(origin.work, "push", "-q", str(origin.bare), "main")
    assert len(hook_receiver.posts) == 1
    events = parse_githook(*hook_receiver.posts[-1], TOKEN)
    assert [event.ref for event in events] == ["refs/heads/main"]


def test_read_file_at_a_branch_a_sha_and_where_nothing_is(tmp_path: Path, origin: Origin) -> None:
    forge = LocalForge(tmp_path / "notes")
    repo = str(origin.bare)

    assert forge.read_file(repo, "main", "train.py") == b"print('hi')\n"
    assert forge.read_file(repo, origin.shas[0], "train.py") is None
    assert forge.read_file(repo, origin.shas[0], "data/params.yaml") == b"lr: 0.1\n"
    assert forge.read_file(repo, "main", "data") is None  # a directory is not a file
    assert forge.read_file(repo, "no-such-branch", "train.py") is None
    # A push after the first read is fetched.
    commit_files(origin.work, {"train.py": "print('v2')\n"}, "v2")
    git(origin.work, "push", "-q", repo, "main")
    assert forge.read_file(repo, "refs/heads/main", "train.py") == b"print('v2')\n"


def test_what_plain_git_cannot_do(tmp_path: Path, origin: Origin) -> None:
    forge = LocalForge(tmp_path / "notes")
    repo = str(origin.bare)

    with pytest.raises(ForgeError, match="no pull requests"):
        forge.open_pull_request(repo, head="promote/v2", base="main", title="t", body="b")
    with pytest.raises(ForgeError, match="needs a commit"):
        forge.upsert_comment(repo, 3, "trainops", "no commit known yet")
    with pytest.raises(ForgeError, match="no commit"):
        forge.set_status(repo, "0" * 40, status("trainops", CommitState.PENDING, "queued"))
    with pytest.raises(ForgeError, match="not a full commit id"):
        forge.set_status(repo, "main", status("trainops", CommitState.PENDING, "queued"))
    assert forge.permission(repo, "anyone") == "write"
    assert forge.name == "git"
