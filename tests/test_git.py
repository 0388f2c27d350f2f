"""Plain git helpers: one-call ref resolution, credentials kept out of argv."""

from __future__ import annotations

import base64

import pytest

from tests.conftest import MakeRepo, commit_files, git
from trainops.errors import GitError
from trainops.git import GitRepo, auth_env


def test_open_at_resolves_branch_sha_and_tag(make_repo: MakeRepo) -> None:
    repo = make_repo({"a.txt": "1"})
    sha = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "v1")
    assert GitRepo.open_at(repo / ".", "HEAD")[1:] == (sha, "main")
    assert GitRepo.open_at(repo, "main")[1:] == (sha, "main")
    assert GitRepo.open_at(repo, sha)[1:] == (sha, None)
    assert GitRepo.open_at(repo, "v1")[1:] == (sha, None)
    commit_files(repo, {"a.txt": "2"})
    assert GitRepo.open_at(repo, "HEAD~1")[1] == sha


@pytest.mark.parametrize("ref", ["nope", "--output=/tmp/x", "HEAD~5"])
def test_bad_refs_are_clear_errors(make_repo: MakeRepo, ref: str) -> None:
    repo = make_repo({"a.txt": "1"})
    with pytest.raises(GitError, match="not a ref|no such commit"):
        GitRepo.open_at(repo, ref)


def test_auth_env_sends_a_basic_header() -> None:
    env = auth_env("s3cret", "oauth2")
    assert env["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    encoded = env["GIT_CONFIG_VALUE_0"].removeprefix("Authorization: Basic ")
    assert base64.b64decode(encoded).decode() == "oauth2:s3cret"
