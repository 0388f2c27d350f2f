"""A forge in a directory and the service over real HTTP, for the service tests.

``forge`` is a working repository with a small shell pipeline and a bare
clone of it that plays the forge's repository: deliveries name that bare
repo as their clone URL and its real commits as their shas. ``service``
starts the real app (uvicorn in a thread on a free port, SQLite store in
``tmp_path``, the real worker and local runner) and stops it afterwards.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.conftest import MakeRepo, commit_files, git
from tests.webhooks.signing import fixture_body, githook_headers, github_headers, gitlab_headers
from trainops.config import Settings
from trainops.service.serve import BackgroundServer

GITHUB_SECRET = "gh-secret-for-tests"
GITLAB_TOKEN = "gl-token-for-tests"
GITHOOK_TOKEN = "hook-token-for-tests"

PIPELINE = """\
version: 1
name: digits
stages:
  prepare:
    cmd: {prepare}
    outs: [prepared.txt]
  evaluate:
    cmd: cp value.json metrics.json
    deps: [prepared.txt, value.json]
    metrics: [metrics.json]
"""
QUICK = "echo preparing the data && echo prepared > prepared.txt"
SLOW = "sleep 30 && echo prepared > prepared.txt"


def pipeline(prepare: str = QUICK) -> str:
    return PIPELINE.format(prepare=prepare)


class Forge:
    """A working repository and the bare repository it pushes to (the forge's copy)."""

    def __init__(self, work: Path, bare: Path) -> None:
        self.work = work
        self.bare = bare

    @property
    def clone_url(self) -> str:
        return str(self.bare)

    def head(self, branch: str = "main") -> str:
        return git(self.work, "rev-parse", branch)

    def commit(
        self, files: Mapping[str, str], message: str = "change", branch: str = "main"
    ) -> str:
        """Commit ``files`` on ``branch`` (created from main if new) and push it to the forge."""
        git(self.work, "checkout", "-q", "-B", branch, branch if self._has(branch) else "main")
        sha = commit_files(self.work, files, message)
        git(self.work, "push", "-q", str(self.bare), f"{branch}:{branch}")
        git(self.work, "checkout", "-q", "main")
        return sha

    def _has(self, branch: str) -> bool:
        return bool(git(self.work, "branch", "--list", branch))


@pytest.fixture
def forge(make_repo: MakeRepo, tmp_path: Path) -> Forge:
    work = make_repo({"trainops.yaml": pipeline(), "value.json": '{"score": 0.75}\n'}, "digits")
    bare = tmp_path / "forge" / "acme" / "digits.git"
    bare.parent.mkdir(parents=True)
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    return Forge(work, bare)


# -- deliveries ------------------------------------------------------------------------


def _load(forge_name: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(fixture_body(forge_name, name))
    return data


def _encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, indent=2).encode()


def github_push(
    forge: Forge, sha: str, *, message: str = "Tune the learning rate", branch: str = "main"
) -> bytes:
    """``github/push.branch.json`` moved to ``sha`` in the forge's bare repository."""
    d = _load("github", "push.branch")
    d["ref"] = f"refs/heads/{branch}"
    d["after"] = sha
    d["repository"]["clone_url"] = forge.clone_url
    d["repository"]["default_branch"] = "main"
    for commit in (d["head_commit"], d["commits"][-1]):
        commit["id"] = sha
        commit["message"] = message
    return _encode(d)


def github_pull_request(
    forge: Forge, sha: str, *, fork: bool = False, branch: str = "wider-net"
) -> bytes:
    """``github/pull_request.opened.json`` (a fork's PR); ``fork=False`` makes it same-repo."""
    d = _load("github", "pull_request.opened")
    d["repository"]["clone_url"] = forge.clone_url
    d["repository"]["default_branch"] = "main"
    pr = d["pull_request"]
    pr["base"]["repo"]["clone_url"] = forge.clone_url
    pr["head"]["sha"] = sha
    pr["head"]["ref"] = branch
    if not fork:
        pr["head"]["repo"] = copy.deepcopy(pr["base"]["repo"])
        pr["head"]["user"] = copy.deepcopy(pr["base"]["user"])
        pr["head"]["label"] = f"acme:{branch}"
    return _encode(d)


def gitlab_push(forge: Forge, sha: str, *, message: str = "Tune the learning rate") -> bytes:
    """``gitlab/push_hook.branch.json`` moved to ``sha`` in the forge's bare repository."""
    d = _load("gitlab", "push_hook.branch")
    d["after"] = d["checkout_sha"] = sha
    d["project"]["git_http_url"] = forge.clone_url
    d["project"]["default_branch"] = "main"
    d["repository"]["git_http_url"] = forge.clone_url
    d["commits"][-1]["id"] = sha
    d["commits"][-1]["message"] = message
    return _encode(d)


def gitlab_merge_request(forge: Forge, sha: str, *, branch: str = "bigger-batch") -> bytes:
    """``gitlab/merge_request_hook.open.json`` with its head at ``sha``."""
    d = _load("gitlab", "merge_request_hook.open")
    d["project"]["git_http_url"] = forge.clone_url
    d["project"]["default_branch"] = "main"
    attrs = d["object_attributes"]
    attrs["source_branch"] = branch
    attrs["last_commit"]["id"] = sha
    for side in ("source", "target"):
        attrs[side]["git_http_url"] = forge.clone_url
    return _encode(d)


def githook_push(forge: Forge, sha: str, *, delivery: str | None = None) -> bytes:
    """What the post-receive hook of the forge's bare repository posts for a push to main."""
    d = _load("githook", "push.branch-and-tag")
    d["delivery_id"] = delivery or str(uuid.uuid4())
    d["repo"] = {"name": "digits", "path": forge.clone_url, "default_branch": "main"}
    d["refs"] = [{"ref": "refs/heads/main", "before": "0" * 40, "after": sha}]
    return _encode(d)


# -- the service -----------------------------------------------------------------------

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


FINAL = {"succeeded", "failed", "errored", "cancelled", "superseded"}


class Service:
    """The running service and an HTTP client for it."""

    def __init__(self, server: BackgroundServer) -> None:
        self.server = server
        self.settings = server.settings
        self.http = httpx.Client(base_url=server.url, timeout=10)

    def close(self) -> None:
        self.http.close()
        self.server.stop()

    # deliveries

    def github(
        self,
        body: bytes,
        event: str = "push",
        *,
        delivery: str | None = None,
        secret: str = GITHUB_SECRET,
    ) -> httpx.Response:
        headers = github_headers(body, secret, event, delivery or str(uuid.uuid4()))
        return self.http.post("/webhooks/github", content=body, headers=headers)

    def gitlab(
        self,
        body: bytes,
        event: str = "Push Hook",
        *,
        delivery: str | None = None,
        token: str = GITLAB_TOKEN,
    ) -> httpx.Response:
        headers = gitlab_headers(token, event, delivery or str(uuid.uuid4()))
        return self.http.post("/webhooks/gitlab", content=body, headers=headers)

    def githook(self, body: bytes, *, token: str = GITHOOK_TOKEN) -> httpx.Response:
        return self.http.post("/webhooks/git", content=body, headers=githook_headers(token))

    # the API

    def get(self, path: str) -> Any:
        response = self.http.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.get("/api/events?limit=500")
        return events

    def runs(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.get("/api/runs?limit=500")
        return runs

    def run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.get(f"/api/runs/{run_id}")
        return run

    def event_done(self, event_id: int, timeout: float = 15) -> dict[str, Any]:
        """The event once the worker has decided what it means."""

        def done() -> dict[str, Any] | None:
            found = [e for e in self.events() if e["id"] == event_id]
            return (
                found[0] if found and found[0]["status"] not in ("received", "processing") else None
            )

        return wait_for(done, timeout, f"event {event_id} to be processed")

    def run_for(self, commit: str, timeout: float = 15, **match: Any) -> dict[str, Any]:
        """The one run at ``commit`` (matching ``match``), once it exists."""

        def found() -> dict[str, Any] | None:
            runs = [
                r
                for r in self.runs()
                if r["commit"] == commit and all(r[k] == v for k, v in match.items())
            ]
            assert len(runs) <= 1, runs
            return runs[0] if runs else None

        return wait_for(found, timeout, f"a run at {commit[:12]} {match or ''}")

    def wait_status(self, run_id: str, statuses: set[str], timeout: float = 20) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            run = self.run(run_id)
            return run if run["status"] in statuses else None

        return wait_for(reached, timeout, f"run {run_id} to be {' or '.join(sorted(statuses))}")

    def wait_final(self, run_id: str, timeout: float = 20) -> dict[str, Any]:
        return self.wait_status(run_id, FINAL, timeout)


StartService = Callable[..., Service]


def make_settings(
    home: Path, *, forges: tuple[str, ...] = ("github", "gitlab", "githook"), **service: Any
) -> Settings:
    secrets = {"github": GITHUB_SECRET, "gitlab": GITLAB_TOKEN, "githook": GITHOOK_TOKEN}
    sections: dict[str, Any] = {name: {"webhook_secret": secrets[name]} for name in forges}
    sections["service"] = {"port": 0, "poll_s": 0.05, "lease_s": 5, **service}
    sections["tracking"] = {"enabled": False}
    sections["runner"] = {"kill_grace_s": 1}
    return Settings.load(environ={}, home=home, **sections)


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[StartService]:
    """``start_service(max_body_bytes=..., forges=(...))`` → a running Service, stopped after."""
    started: list[Service] = []

    def start(**options: Any) -> Service:
        settings = make_settings(tmp_path / "home", **options)
        service = Service(BackgroundServer(settings).start())
        started.append(service)
        return service

    yield start
    for service in reversed(started):
        service.close()


@pytest.fixture
def service(start_service: StartService) -> Service:
    return start_service()
