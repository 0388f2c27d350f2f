"""GitHub: our acme/digits fixtures, edge cases of the payload, and every refusal."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.webhooks.signing import fixture_body, github_headers, github_signature
from trainops.models import EventKind
from trainops.webhooks import MalformedDelivery, WebhookRejected
from trainops.webhooks.github import parse_github

SECRET = "digits-hook-secret"
BASE = "9ee6e3db6e356dd1137f3601513f60a4b9d738aa"
C2 = "f96f631228f8106257700572a63d1db5fe8f2cf2"
FORK_HEAD = "c4082788ddb5b389000d75a71f081ba8b291c9d9"


def deliver(body: bytes, event: str, delivery: str = "gh-1", **extra: str) -> Any:
    headers = github_headers(body, SECRET, event, delivery) | extra
    return parse_github(headers, body, SECRET)


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(fixture_body("github", name))
    return data


def encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


# -- our fixtures ---------------------------------------------------------------


def test_push_to_main_with_two_commits() -> None:
    event = deliver(fixture_body("github", "push.branch"), "push", "74f4fd39")
    assert event.forge == "github" and event.delivery_id == "74f4fd39"
    assert event.kind == EventKind.PUSH and event.branch == "main"
    assert (event.ref, event.before, event.after) == ("refs/heads/main", BASE, C2)
    assert event.deleted is False and event.merge_request is None
    assert event.changed_paths == ("dvc.yaml", "evaluate.py", "params.yaml")
    assert event.head_message.startswith("Add an evaluation stage")
    assert event.author == "alice" and event.author_association is None
    repo = event.repo
    assert (repo.forge, repo.full_name, repo.default_branch) == ("github", "acme/digits", "main")
    assert repo.clone_url == "https://github.com/acme/digits.git"
    assert repo.web_url == "https://github.com/acme/digits"


def test_pull_request_opened_from_a_fork() -> None:
    event = deliver(fixture_body("github", "pull_request.opened"), "pull_request")
    assert event.kind == EventKind.MERGE_REQUEST and event.action == "opened"
    assert event.after == FORK_HEAD and event.ref == "refs/pull/7/head" and event.before is None
    assert event.author == "bob" and event.author_association == "CONTRIBUTOR"
    assert event.repo.full_name == "acme/digits"  # the base repository
    mr = event.merge_request
    assert (mr.number, mr.action, mr.title) == (7, "opened", "Wider hidden layer")
    assert mr.url == "https://github.com/acme/digits/pull/7"
    assert (mr.source_branch, mr.target_branch, mr.head_sha) == ("wider-net", "main", FORK_HEAD)
    assert mr.is_fork is True and mr.draft is False
    assert mr.source_clone_url == "https://github.com/bob/digits.git"


def test_comment_on_the_pull_request() -> None:
    event = deliver(fixture_body("github", "issue_comment.created"), "issue_comment")
    assert event.kind == EventKind.COMMENT and event.action == "created"
    assert event.comment == "/trainops run"
    assert event.author == "alice" and event.author_association == "MEMBER"
    assert event.merge_request.number == 7 and event.merge_request.head_sha == ""
    assert event.merge_request.url == "https://github.com/acme/digits/pull/7"
    assert event.after is None and event.ref == "refs/pull/7/head"


def test_ping() -> None:
    event = deliver(fixture_body("github", "ping.repository"), "ping")
    assert event.kind == EventKind.PING and event.repo.full_name == "acme/digits"


# -- payload edge cases ---------------------------------------------------------


def test_a_merged_pull_request_is_reported_as_merged() -> None:
    data = fixture("pull_request.opened")
    data["action"] = "closed"
    data["pull_request"].update(state="closed", merged=True)
    event = deliver(encode(data), "pull_request")
    assert event.action == "merged" and event.merge_request.action == "merged"


def test_other_pull_request_actions_are_passed_on() -> None:
    data = fixture("pull_request.opened")
    data["action"] = "edited"
    assert deliver(encode(data), "pull_request").action == "edited"


def test_a_deleted_fork_counts_as_a_fork() -> None:
    data = fixture("pull_request.opened")
    data["pull_request"]["head"]["repo"] = None
    mr = deliver(encode(data), "pull_request").merge_request
    assert mr.is_fork is True and mr.source_clone_url is None


def test_a_branch_of_the_same_repository_is_not_a_fork() -> None:
    data = fixture("pull_request.opened")
    data["pull_request"]["head"]["repo"] = data["repository"]
    assert deliver(encode(data), "pull_request").merge_request.is_fork is False


def test_twenty_commits_may_be_a_truncated_list() -> None:
    data = fixture("push.branch")
    commit = data["commits"][0]
    data["commits"] = [commit] * 19
    assert deliver(encode(data), "push").changed_paths == ("params.yaml",)
    data["commits"] = [commit] * 20
    assert deliver(encode(data), "push").changed_paths is None


def test_a_push_to_another_ref_namespace_is_ignored() -> None:
    data = fixture("push.branch")
    data["ref"] = "refs/notes/commits"
    assert deliver(encode(data), "push") is None


def test_a_comment_on_a_plain_issue_is_ignored() -> None:
    data = fixture("issue_comment.created")
    del data["issue"]["pull_request"]
    assert deliver(encode(data), "issue_comment") is None


def test_an_unknown_event_kind_is_ignored_without_reading_the_body() -> None:
    assert deliver(b"not even json", "workflow_run") is None


def test_header_names_are_case_insensitive() -> None:
    body = fixture_body("github", "push.branch")
    headers = {k.lower(): v for k, v in github_headers(body, SECRET, "push", "d").items()}
    for names in (headers, {k.upper(): v for k, v in headers.items()}):
        event = parse_github(names, body, SECRET)
        assert event is not None and event.after == C2


# -- refusals -------------------------------------------------------------------

PUSH = fixture_body("github", "push.branch")


def headers_with(signature: str | None) -> dict[str, str]:
    headers = github_headers(PUSH, SECRET, "push", "d")
    del headers["X-Hub-Signature-256"]
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return headers


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(github_signature(PUSH, "another-secret"), id="wrong-secret"),
        pytest.param(github_signature(PUSH + b" ", SECRET), id="other-body"),
        pytest.param(github_signature(PUSH, SECRET).removeprefix("sha256="), id="no-prefix"),
        pytest.param("sha1=" + "0" * 40, id="sha1"),
        pytest.param("sha256=", id="empty-digest"),
        pytest.param("sha256=é" + "0" * 63, id="non-ascii"),
        pytest.param("", id="empty"),
        pytest.param(None, id="missing"),
    ],
)
def test_a_bad_or_missing_signature_is_rejected(signature: str | None) -> None:
    with pytest.raises(WebhookRejected) as info:
        parse_github(headers_with(signature), PUSH, SECRET)
    assert SECRET not in str(info.value)


def test_the_legacy_sha1_header_alone_is_rejected() -> None:
    headers = headers_with(None) | {"X-Hub-Signature": "sha1=" + "0" * 40}
    with pytest.raises(WebhookRejected, match="X-Hub-Signature-256"):
        parse_github(headers, PUSH, SECRET)


def test_the_signature_is_checked_before_anything_else() -> None:
    headers = {"X-Hub-Signature-256": github_signature(b"{}", "wrong")}  # no delivery, no event
    with pytest.raises(WebhookRejected):
        parse_github(headers, b"{}", SECRET)


def test_an_empty_secret_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="secret is empty"):
        parse_github(github_headers(PUSH, "", "push", "d"), PUSH, "")


@pytest.mark.parametrize("header", ["X-GitHub-Delivery", "X-GitHub-Event"])
def test_a_missing_required_header_is_malformed(header: str) -> None:
    headers = github_headers(PUSH, SECRET, "push", "d")
    del headers[header]
    with pytest.raises(MalformedDelivery, match=header):
        parse_github(headers, PUSH, SECRET)


@pytest.mark.parametrize(
    "body", [b"{not json", b"\xff\xfe\x00", b"[1, 2]", b'"push"', b""], ids=repr
)
def test_a_body_that_is_not_a_json_object_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedDelivery, match="decoding github push delivery"):
        deliver(body, "push")


def test_a_form_encoded_body_is_malformed_with_a_hint() -> None:
    body = b"payload=%7B%7D"
    with pytest.raises(MalformedDelivery, match="application/json"):
        deliver(body, "push", **{"Content-Type": "application/x-www-form-urlencoded"})


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("pull_request", "head", "sha"), None, "pull_request.head.sha must be a non-empty string"),
        (("pull_request", "number"), "7", "pull_request.number must be an integer, got string"),
        (("pull_request", "head"), [], "pull_request.head must be an object, got array"),
        (("repository",), None, "repository must be an object, got null"),
    ],
)
def test_a_missing_or_mistyped_field_is_named(
    path: tuple[str, ...], value: object, named: str
) -> None:
    data = fixture("pull_request.opened")
    *parents, last = path
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    with pytest.raises(MalformedDelivery, match=named):
        deliver(encode(data), "pull_request")
