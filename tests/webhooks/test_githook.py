"""The plain git server's post-receive hook: one Event per ref, and its refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.webhooks.signing import fixture_body, githook_headers
from trainops.models import EventKind
from trainops.webhooks import MalformedDelivery, WebhookRejected
from trainops.webhooks.githook import parse_githook

TOKEN = "digits-hook-token"
DELIVERY = "d9876665-6035-54fa-aa6e-0148b72ab7de"
BASE = "9ee6e3db6e356dd1137f3601513f60a4b9d738aa"
C2 = "f96f631228f8106257700572a63d1db5fe8f2cf2"
ZERO = "0" * 40
PUSH = fixture_body("githook", "push.branch-and-tag")


def fixture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(PUSH)
    return data


def deliver(data: dict[str, Any]) -> Any:
    return parse_githook(githook_headers(TOKEN), json.dumps(data).encode(), TOKEN)


def test_a_push_of_a_branch_and_a_tag_gives_two_events() -> None:
    branch, tag = parse_githook(githook_headers(TOKEN), PUSH, TOKEN)
    assert branch.delivery_id == f"{DELIVERY}:refs/heads/main"
    assert tag.delivery_id == f"{DELIVERY}:refs/tags/v1.0.0"
    assert (branch.kind, branch.branch, branch.before, branch.after) == (
        EventKind.PUSH,
        "main",
        BASE,
        C2,
    )
    assert branch.changed_paths == ("dvc.yaml", "evaluate.py", "params.yaml")
    assert (branch.head_message or "").startswith("Add an evaluation stage")
    assert (tag.kind, tag.tag, tag.before, tag.after) == (EventKind.TAG, "v1.0.0", ZERO, C2)
    assert tag.changed_paths is None and tag.head_message is None
    for event in (branch, tag):
        assert event.forge == "git" and event.author == "alice" and not event.deleted
        assert event.repo is not None
        assert event.repo.forge == "git"
        assert event.repo.full_name == "/srv/git/acme/digits.git"
        assert event.repo.clone_url == "ssh://git@git.acme.example/srv/git/acme/digits.git"
        assert event.repo.default_branch == "main" and event.repo.web_url is None


def test_a_deleted_ref() -> None:
    data = fixture()
    data["refs"] = [{"ref": "refs/heads/old", "before": BASE, "after": ZERO}]
    (event,) = deliver(data)
    assert event.deleted is True and event.changed_paths is None


def test_refs_outside_heads_and_tags_are_skipped() -> None:
    data = fixture()
    data["refs"].insert(0, {"ref": "refs/notes/commits", "before": ZERO, "after": C2})
    assert [e.ref for e in deliver(data)] == ["refs/heads/main", "refs/tags/v1.0.0"]


def test_an_empty_push_gives_no_events() -> None:
    assert deliver(fixture() | {"refs": []}) == []


def test_only_the_path_is_required_of_the_repo() -> None:
    data = fixture() | {"repo": {"path": "/srv/git/digits.git"}}
    data.pop("pusher")
    event = deliver(data)[0]
    assert event.repo.clone_url == "/srv/git/digits.git" and event.repo.default_branch is None
    assert event.author is None


def test_sha256_repositories_are_accepted() -> None:
    data = fixture()
    data["refs"] = [{"ref": "refs/heads/main", "before": "a" * 64, "after": "b" * 64}]
    assert deliver(data)[0].after == "b" * 64


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"delivery_id": ""}, "delivery_id must be a non-empty string"),
        ({"delivery_id": 7}, "delivery_id must be a non-empty string, got number"),
        ({"repo": "digits"}, "repo must be an object, got string"),
        ({"repo": {"name": "digits"}}, "repo.path must be a non-empty string, got missing"),
        ({"pusher": ["alice"]}, "pusher must be a string, got array"),
        ({"refs": None}, "refs must be a list of objects, got null"),
        ({"refs": ["refs/heads/main"]}, "refs must be a list of objects"),
        ({"refs": [{"ref": "refs/heads/main", "before": BASE}]}, r"refs\[0\].after must be"),
        (
            {"refs": [{"ref": "refs/heads/main", "before": BASE, "after": "HEAD"}]},
            r"refs\[0\].after must be a 40- or 64-digit",
        ),
        (
            {"refs": [{"ref": "refs/heads/main", "before": BASE, "after": C2.upper()}]},
            r"refs\[0\].after must be a 40- or 64-digit lowercase",
        ),
        (
            {"refs": [{"ref": "refs/heads/x", "before": BASE, "after": C2, "changed_paths": "a"}]},
            r"refs\[0\].changed_paths must be a list of strings",
        ),
    ],
)
def test_a_bad_field_is_named(change: dict[str, Any], named: str) -> None:
    with pytest.raises(MalformedDelivery, match=named):
        deliver(fixture() | change)


def test_a_missing_refs_list_is_malformed() -> None:
    data = fixture()
    del data["refs"]
    with pytest.raises(MalformedDelivery, match="refs must be a list of objects, got missing"):
        deliver(data)


@pytest.mark.parametrize("body", [b"", b"[]", b"{'single': 'quotes'}"], ids=repr)
def test_a_body_that_is_not_a_json_object_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedDelivery, match="decoding git hook delivery"):
        parse_githook(githook_headers(TOKEN), body, TOKEN)


def test_the_bearer_scheme_is_case_insensitive() -> None:
    headers = {"authorization": f"bearer {TOKEN}"}
    assert len(parse_githook(headers, PUSH, TOKEN)) == 2


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {TOKEN}x", "Bearer wrong", f"Basic {TOKEN}", "Bearer", "Bearer ", TOKEN, ""],
)
def test_a_wrong_token_is_rejected(authorization: str) -> None:
    with pytest.raises(WebhookRejected) as info:
        parse_githook({"Authorization": authorization}, PUSH, TOKEN)
    assert TOKEN not in str(info.value)


def test_a_missing_token_is_rejected() -> None:
    with pytest.raises(WebhookRejected):
        parse_githook({"Content-Type": "application/json"}, PUSH, TOKEN)


def test_an_empty_configured_token_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="secret is empty"):
        parse_githook(githook_headers(""), PUSH, "")
