"""GitLab: our acme/digits fixtures, edge cases of the payload, and every refusal."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from tests.webhooks.signing import fixture_body, gitlab_headers
from trainops.models import Event, EventKind
from trainops.webhooks import MalformedDelivery, WebhookRejected
from trainops.webhooks.gitlab import parse_gitlab

TOKEN = "digits-gitlab-token"
BASE = "9ee6e3db6e356dd1137f3601513f60a4b9d738aa"
C2 = "f96f631228f8106257700572a63d1db5fe8f2cf2"
MR_HEAD = "815610fe6b437489d4ad9061739afb54257eb545"
ZERO = "0" * 40


def deliver(body: bytes, event: str, delivery: str = "gl-1") -> Any:
    return parse_gitlab(gitlab_headers(TOKEN, event, delivery), body, TOKEN)


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(fixture_body("gitlab", name))
    return data


def encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


# -- our fixtures ---------------------------------------------------------------


def test_push_to_main_with_two_commits() -> None:
    event = deliver(fixture_body("gitlab", "push_hook.branch"), "Push Hook", "f26e3860")
    assert event.forge == "gitlab" and event.delivery_id == "f26e3860"
    assert event.kind == EventKind.PUSH and event.branch == "main"
    assert (event.ref, event.before, event.after) == ("refs/heads/main", BASE, C2)
    assert event.changed_paths == ("dvc.yaml", "evaluate.py", "params.yaml")
    assert event.head_message.startswith("Add an evaluation stage")
    assert event.author == "alice" and event.deleted is False
    repo = event.repo
    assert (repo.forge, repo.full_name, repo.default_branch) == ("gitlab", "acme/digits", "main")
    assert repo.clone_url == "https://gitlab.example.com/acme/digits.git"
    assert repo.web_url == "https://gitlab.example.com/acme/digits"


def test_merge_request_opened() -> None:
    event = deliver(fixture_body("gitlab", "merge_request_hook.open"), "Merge Request Hook")
    assert event.kind == EventKind.MERGE_REQUEST and event.action == "opened"
    assert event.after == MR_HEAD and event.ref == "refs/merge-requests/3/head"
    assert event.author == "carol" and event.author_association is None
    mr = event.merge_request
    assert (mr.number, mr.action, mr.title) == (3, "opened", "Use batch size 256")
    assert mr.url == "https://gitlab.example.com/acme/digits/-/merge_requests/3"
    assert (mr.source_branch, mr.target_branch, mr.head_sha) == ("bigger-batch", "main", MR_HEAD)
    assert mr.is_fork is False and mr.draft is False
    assert mr.source_clone_url == "https://gitlab.example.com/acme/digits.git"


def test_comment_on_the_merge_request() -> None:
    event = deliver(fixture_body("gitlab", "note_hook.merge_request"), "Note Hook")
    assert event.kind == EventKind.COMMENT and event.action == "created"
    assert event.comment == "/trainops run" and event.author == "alice"
    assert event.merge_request.number == 3 and event.merge_request.head_sha == MR_HEAD
    assert event.merge_request.url == "https://gitlab.example.com/acme/digits/-/merge_requests/3"
    assert event.after == MR_HEAD


# -- payload edge cases ---------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "action"),
    [
        ("open", "opened"),
        ("reopen", "reopened"),
        ("close", "closed"),
        ("merge", "merged"),
        ("update", "update"),
        ("approved", "approved"),
    ],
)
def test_merge_request_verbs_are_normalized(verb: str, action: str) -> None:
    data = fixture("merge_request_hook.open")
    data["object_attributes"]["action"] = verb
    event = deliver(encode(data), "Merge Request Hook")
    assert event.action == action and event.merge_request.action == action


def test_an_update_with_oldrev_brings_new_commits() -> None:
    data = fixture("merge_request_hook.open")
    data["object_attributes"].update(action="update", oldrev=C2)
    event = deliver(encode(data), "Merge Request Hook")
    assert event.action == "synchronize" and event.before == C2 and event.after == MR_HEAD


def test_a_merge_request_from_another_project_is_a_fork() -> None:
    data = fixture("merge_request_hook.open")
    data["object_attributes"]["source_project_id"] = 77
    data["object_attributes"]["source"]["git_http_url"] = (
        "https://gitlab.example.com/bob/digits.git"
    )
    mr = deliver(encode(data), "Merge Request Hook").merge_request
    assert mr.is_fork is True and mr.source_clone_url == "https://gitlab.example.com/bob/digits.git"


def test_a_deleted_branch() -> None:
    data = fixture("push_hook.branch")
    data.update(after=ZERO, checkout_sha=None, commits=[], total_commits_count=0)
    event = deliver(encode(data), "Push Hook")
    assert event.deleted is True and event.after == ZERO and event.changed_paths is None


def test_an_annotated_tag_runs_the_commit_it_points_at() -> None:
    data = fixture("push_hook.branch")
    data.update(ref="refs/tags/v1.0.0", before=ZERO, after="1" * 40, commits=[])
    data["total_commits_count"] = 0
    event = deliver(encode(data), "Tag Push Hook")
    assert event.kind == EventKind.TAG and event.tag == "v1.0.0" and event.after == C2


def test_commits_beyond_those_listed_make_the_paths_unknown() -> None:
    data = fixture("push_hook.branch")
    data["total_commits_count"] = 3
    assert deliver(encode(data), "Push Hook").changed_paths is None


def test_comments_on_other_things_are_ignored() -> None:
    data = fixture("note_hook.merge_request")
    data["object_attributes"]["noteable_type"] = "Issue"
    assert deliver(encode(data), "Note Hook") is None


@pytest.mark.parametrize("kind", ["System Hook", "Pipeline Hook", "Job Hook"])
def test_other_hooks_are_ignored_without_reading_the_body(kind: str) -> None:
    assert deliver(b"not json", kind) is None


# -- the delivery id ------------------------------------------------------------


PUSH = fixture_body("gitlab", "push_hook.branch")


def first_event(headers: dict[str, str], body: bytes) -> Event:
    event = parse_gitlab(headers, body, TOKEN)
    assert event is not None
    return event


def headers_without(*names: str) -> dict[str, str]:
    headers = gitlab_headers(TOKEN, "Push Hook", "idem-1")
    for name in names:
        del headers[name]
    return headers


def test_the_idempotency_key_comes_first() -> None:
    assert first_event(headers_without(), PUSH).delivery_id == "idem-1"


def test_older_gitlab_is_keyed_by_the_webhook_uuid() -> None:
    headers = headers_without("Idempotency-Key")
    event = first_event(headers, PUSH)
    assert event.delivery_id == headers["X-Gitlab-Webhook-UUID"]


def test_the_event_uuid_alone_is_combined_with_the_body() -> None:
    """Hooks fired while handling one event share its UUID; their bodies differ."""
    headers = headers_without("Idempotency-Key", "X-Gitlab-Webhook-UUID")
    first = first_event(headers, PUSH)
    assert first.delivery_id.startswith(headers["X-Gitlab-Event-UUID"] + ":")
    assert first.delivery_id.endswith(hashlib.sha256(PUSH).hexdigest()[:16])
    other = fixture("push_hook.branch") | {"ref": "refs/heads/promote/v2"}
    assert first_event(headers, encode(other)).delivery_id != first.delivery_id
    assert first_event(headers, PUSH).delivery_id == first.delivery_id


def test_no_id_at_all_is_malformed() -> None:
    headers = headers_without("Idempotency-Key", "X-Gitlab-Webhook-UUID", "X-Gitlab-Event-UUID")
    with pytest.raises(MalformedDelivery, match="Idempotency-Key"):
        parse_gitlab(headers, PUSH, TOKEN)


# -- refusals -------------------------------------------------------------------


@pytest.mark.parametrize("token", ["wrong", "", TOKEN + " ", TOKEN[:-1], "jetón"])
def test_a_wrong_token_is_rejected(token: str) -> None:
    headers = gitlab_headers(token, "Push Hook", "d")
    with pytest.raises(WebhookRejected, match="does not match") as info:
        parse_gitlab(headers, PUSH, TOKEN)
    assert TOKEN not in str(info.value)


def test_a_missing_token_is_rejected() -> None:
    with pytest.raises(WebhookRejected, match="missing"):
        parse_gitlab(headers_without("X-Gitlab-Token"), PUSH, TOKEN)


def test_an_empty_configured_token_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="secret is empty"):
        parse_gitlab(gitlab_headers("", "Push Hook", "d"), PUSH, "")


def test_the_token_is_checked_before_anything_else() -> None:
    with pytest.raises(WebhookRejected):
        parse_gitlab({"X-Gitlab-Token": "wrong"}, b"garbage", TOKEN)


def test_a_missing_event_header_is_malformed() -> None:
    with pytest.raises(MalformedDelivery, match="X-Gitlab-Event"):
        parse_gitlab(headers_without("X-Gitlab-Event"), PUSH, TOKEN)


@pytest.mark.parametrize("body", [b"{", b"null", b"\xff"], ids=repr)
def test_a_body_that_is_not_a_json_object_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedDelivery, match="decoding gitlab Push Hook delivery"):
        deliver(body, "Push Hook")


def test_a_missing_field_is_named() -> None:
    data = fixture("merge_request_hook.open")
    del data["object_attributes"]["iid"]
    with pytest.raises(MalformedDelivery, match="object_attributes.iid must be an integer"):
        deliver(encode(data), "Merge Request Hook")
