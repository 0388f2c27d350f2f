"""The uniform entry point the service calls: every forge gives a list of Events."""

from __future__ import annotations

import pytest

from tests.webhooks.signing import fixture_body, githook_headers, github_headers, gitlab_headers
from trainops.webhooks import PARSERS, parse

SECRET = "s3cret"


def test_every_forge_has_a_parser() -> None:
    assert set(PARSERS) == {"github", "gitlab", "githook"}


def test_each_forge_gives_a_list() -> None:
    body = fixture_body("github", "push.branch")
    assert len(parse("github", github_headers(body, SECRET, "push", "a"), body, SECRET)) == 1
    body = fixture_body("gitlab", "push_hook.branch")
    assert len(parse("gitlab", gitlab_headers(SECRET, "Push Hook", "b"), body, SECRET)) == 1
    body = fixture_body("githook", "push.branch-and-tag")
    assert len(parse("githook", githook_headers(SECRET), body, SECRET)) == 2


def test_an_ignored_delivery_is_an_empty_list() -> None:
    body = b"{}"
    assert parse("github", github_headers(body, SECRET, "star", "a"), body, SECRET) == []
    assert parse("gitlab", gitlab_headers(SECRET, "Wiki Page Hook", "b"), body, SECRET) == []


def test_an_unknown_forge_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="no parser for forge 'bitbucket'"):
        parse("bitbucket", {}, b"{}", SECRET)


def test_the_fixtures_tell_one_story() -> None:
    """Service tests rely on the three forges' fixtures naming the same repo and commits."""
    github = parse(
        "github",
        github_headers(fixture_body("github", "push.branch"), SECRET, "push", "a"),
        fixture_body("github", "push.branch"),
        SECRET,
    )[0]
    gitlab = parse(
        "gitlab",
        gitlab_headers(SECRET, "Push Hook", "b"),
        fixture_body("gitlab", "push_hook.branch"),
        SECRET,
    )[0]
    git = parse(
        "githook", githook_headers(SECRET), fixture_body("githook", "push.branch-and-tag"), SECRET
    )[0]
    for event in (gitlab, git):
        assert (event.ref, event.before, event.after) == (github.ref, github.before, github.after)
        assert event.changed_paths == github.changed_paths
        assert event.head_message == github.head_message
    pr = parse(
        "github",
        github_headers(fixture_body("github", "pull_request.opened"), SECRET, "pull_request", "c"),
        fixture_body("github", "pull_request.opened"),
        SECRET,
    )[0]
    assert pr.merge_request is not None and pr.merge_request.target_branch == github.branch
