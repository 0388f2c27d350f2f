"""GitHub webhook deliveries to Events, sans-I/O in the manner of gidgethub.

Headers and the raw body go in, an ``Event`` (or None: not an event we act on)
comes out; no web framework and no network. The signature is checked over the
exact bytes received before anything is decoded, so an unsigned body never
reaches the JSON parser.

Payload reference: https://docs.github.com/en/webhooks/webhook-events-and-payloads
Signatures: https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any

from trainops.models import Event, EventKind, MergeRequestRef, RepoRef
from trainops.webhooks._errors import MalformedDelivery, WebhookRejected
from trainops.webhooks._payload import (
    Fields,
    decode_object,
    is_zero_sha,
    lower_headers,
    paths_touched,
    ref_kind,
    require_secret,
    same_secret,
)

FORGE = "github"

MAX_LISTED_COMMITS = 20
"""A push payload lists at most 20 commits and gives no total, so a list this
long may be truncated and its paths are reported as unknown."""

_SIGNATURE_PREFIX = "sha256="


def parse_github(headers: Mapping[str, str], body: bytes, secret: str) -> Event | None:
    """Verify one delivery, then normalize it; None for events we ignore.

    Raises ``WebhookRejected`` for a missing or wrong ``X-Hub-Signature-256``
    and ``MalformedDelivery`` for a delivery that is signed but unreadable.
    """
    require_secret(secret, FORGE)
    lowered = lower_headers(headers)
    verify_signature(lowered.get("x-hub-signature-256"), body, secret)
    delivery_id = lowered.get("x-github-delivery", "").strip()
    if not delivery_id:
        raise MalformedDelivery("reading github delivery: X-GitHub-Delivery header is missing")
    name = lowered.get("x-github-event", "").strip()
    if not name:
        raise MalformedDelivery("reading github delivery: X-GitHub-Event header is missing")
    parser = _PARSERS.get(name)
    if parser is None:
        return None
    if lowered.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise MalformedDelivery(
            "reading github delivery: the body is form-encoded; "
            "set the hook's content type to application/json"
        )
    payload = decode_object(body, f"github {name} delivery {delivery_id}")
    return parser(payload, delivery_id)


def verify_signature(header: str | None, body: bytes, secret: str) -> None:
    """Check ``sha256=<hex>`` against HMAC-SHA256 of the raw body.

    The legacy SHA-1 ``X-Hub-Signature`` is not accepted as a substitute: a
    delivery without the SHA-256 header is rejected even if it carries one.
    """
    require_secret(secret, FORGE)
    if not header:
        raise WebhookRejected("verifying github delivery: X-Hub-Signature-256 header is missing")
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    if not same_secret(header.strip().lower(), _SIGNATURE_PREFIX + digest):
        raise WebhookRejected(
            "verifying github delivery: X-Hub-Signature-256 does not match the body"
        )


def from_payload(name: str, delivery_id: str, payload: Mapping[str, Any]) -> Event | None:
    """Normalize a payload whose origin is already established.

    For deliveries fetched back through the REST API (the reconciler), which
    arrive as decoded JSON with no signature to check.
    """
    parser = _PARSERS.get(name)
    if parser is None:
        return None
    return parser(Fields(payload, f"github {name} delivery {delivery_id}"), delivery_id)


def _repo(repository: Fields) -> RepoRef:
    return RepoRef(
        forge=FORGE,
        full_name=repository.text("full_name", nonempty=True),
        clone_url=repository.text("clone_url", nonempty=True),
        default_branch=repository.opt_text("default_branch"),
        web_url=repository.opt_text("html_url"),
    )


def _login(user: Fields | None) -> str | None:
    return None if user is None else user.opt_text("login")


# https://docs.github.com/en/webhooks/webhook-events-and-payloads#push
def _push(payload: Fields, delivery_id: str) -> Event | None:
    ref = payload.text("ref")
    kind = ref_kind(ref)
    if kind is None:
        return None
    before, after = payload.text("before"), payload.text("after")
    deleted = payload.flag("deleted") or is_zero_sha(after)
    created = payload.flag("created") or is_zero_sha(before)
    commits = payload.objs("commits")
    # A new branch's commit list is relative to a base GitHub picks, and a long
    # list is cut at 20; in both cases "every touched path" is not known.
    listed_all = not created and len(commits) < MAX_LISTED_COMMITS
    head = payload.opt_obj("head_commit")
    pusher = payload.opt_obj("pusher")  # its "name" is the login of whoever pushed
    return Event(
        forge=FORGE,
        delivery_id=delivery_id,
        kind=kind,
        repo=_repo(payload.obj("repository")),
        ref=ref,
        before=before,
        after=after,
        deleted=deleted,
        author=_login(payload.opt_obj("sender")) or (pusher.opt_text("name") if pusher else None),
        changed_paths=paths_touched(commits)
        if kind is EventKind.PUSH and not deleted and listed_all
        else None,
        head_message=head.opt_text("message") if head else None,
    )


# https://docs.github.com/en/webhooks/webhook-events-and-payloads#pull_request
def _pull_request(payload: Fields, delivery_id: str) -> Event:
    pr = payload.obj("pull_request")
    action = payload.text("action", nonempty=True)
    if action == "closed" and pr.flag("merged"):
        action = "merged"
    number = pr.number("number")
    head, base = pr.obj("head"), pr.obj("base")
    head_repo = head.opt_obj("repo")  # null once a fork has been deleted
    base_name = base.obj("repo").text("full_name", nonempty=True)
    change = MergeRequestRef(
        number=number,
        action=action,
        title=pr.text("title"),
        url=pr.text("html_url"),
        source_branch=head.text("ref"),
        target_branch=base.text("ref"),
        head_sha=head.text("sha", nonempty=True),
        is_fork=head_repo is None or head_repo.text("full_name") != base_name,
        source_clone_url=head_repo.opt_text("clone_url") if head_repo else None,
        draft=pr.flag("draft"),
    )
    return Event(
        forge=FORGE,
        delivery_id=delivery_id,
        kind=EventKind.MERGE_REQUEST,
        repo=_repo(payload.obj("repository")),
        action=action,
        # GitHub serves every PR head from the base repository, forks included.
        ref=f"refs/pull/{number}/head",
        before=payload.opt_text("before"),  # only on synchronize: the previous head
        after=change.head_sha,
        merge_request=change,
        # The PR's author, so that author and author_association describe one person.
        author=_login(pr.opt_obj("user")) or _login(payload.opt_obj("sender")),
        author_association=pr.opt_text("author_association"),
    )


# https://docs.github.com/en/webhooks/webhook-events-and-payloads#issue_comment
def _issue_comment(payload: Fields, delivery_id: str) -> Event | None:
    issue = payload.obj("issue")
    link = issue.opt_obj("pull_request")  # the only sign that the issue is a PR
    if link is None:
        return None
    action = payload.text("action", nonempty=True)
    comment = payload.obj("comment")
    number = issue.number("number")
    change = MergeRequestRef(
        number=number,
        action=action,
        title=issue.text("title"),
        url=link.opt_text("html_url") or issue.text("html_url"),
        # Branches and head are not in this payload; the worker looks the PR up.
        source_branch="",
        target_branch="",
        head_sha="",
        is_fork=True,  # unknown here, so untrusted until the worker has looked
        draft=issue.flag("draft"),
    )
    return Event(
        forge=FORGE,
        delivery_id=delivery_id,
        kind=EventKind.COMMENT,
        repo=_repo(payload.obj("repository")),
        action=action,
        ref=f"refs/pull/{number}/head",
        merge_request=change,
        comment=comment.text("body"),
        author=_login(comment.opt_obj("user")) or _login(payload.opt_obj("sender")),
        author_association=comment.opt_text("author_association"),
    )


# https://docs.github.com/en/webhooks/webhook-events-and-payloads#ping
def _ping(payload: Fields, delivery_id: str) -> Event:
    repository = payload.opt_obj("repository")  # absent for organization hooks
    return Event(
        forge=FORGE,
        delivery_id=delivery_id,
        kind=EventKind.PING,
        repo=_repo(repository) if repository else None,
        author=_login(payload.opt_obj("sender")),
    )


_PARSERS: Mapping[str, Callable[[Fields, str], Event | None]] = {
    "push": _push,
    "pull_request": _pull_request,
    "issue_comment": _issue_comment,
    "ping": _ping,
}
