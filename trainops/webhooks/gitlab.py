"""GitLab webhook deliveries to Events, sans-I/O like the GitHub parser.

GitLab does not sign bodies: it sends the hook's secret token as is, in
``X-Gitlab-Token``, and that is compared in constant time before the body is
decoded.

Payload reference: https://docs.gitlab.com/user/project/integrations/webhook_events/
Headers: https://docs.gitlab.com/user/project/integrations/webhooks/#delivery-headers
"""

from __future__ import annotations

import hashlib
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

FORGE = "gitlab"

# GitLab's merge request verbs, in the words GitHub (and so the worker) uses.
# Other verbs (approved, unapproved, ...) pass through unchanged.
_MR_ACTIONS = {"open": "opened", "reopen": "reopened", "merge": "merged", "close": "closed"}
_NOTE_ACTIONS = {"create": "created", "update": "edited"}


def parse_gitlab(headers: Mapping[str, str], body: bytes, secret: str) -> Event | None:
    """Verify one delivery, then normalize it; None for events we ignore.

    Raises ``WebhookRejected`` for a missing or wrong ``X-Gitlab-Token`` and
    ``MalformedDelivery`` for an authenticated delivery that cannot be read.
    """
    require_secret(secret, FORGE)
    lowered = lower_headers(headers)
    token = lowered.get("x-gitlab-token")
    if token is None:
        raise WebhookRejected("verifying gitlab delivery: X-Gitlab-Token header is missing")
    if not same_secret(token, secret):
        raise WebhookRejected("verifying gitlab delivery: X-Gitlab-Token does not match")
    delivery_id = delivery_key(lowered, body)
    name = lowered.get("x-gitlab-event", "").strip()
    if not name:
        raise MalformedDelivery("reading gitlab delivery: X-Gitlab-Event header is missing")
    parser = _PARSERS.get(name)
    if parser is None:
        return None
    return parser(decode_object(body, f"gitlab {name} delivery {delivery_id}"), delivery_id)


def delivery_key(headers: Mapping[str, str], body: bytes) -> str:
    """The de-duplication key of a delivery (headers already lower-cased).

    ``Idempotency-Key`` (GitLab 17.4+) stays the same across retries and
    resends. Older GitLab sends ``X-Gitlab-Webhook-UUID``, one per request.
    ``X-Gitlab-Event-UUID`` alone is no key: every hook fired while handling
    an event shares it (our own MR comment or promotion push comes back with
    the triggering event's value), so as a last resort it is combined with a
    digest of the body, which differs between those events.
    """
    for name in ("idempotency-key", "x-gitlab-webhook-uuid"):
        value = headers.get(name, "").strip()
        if value:
            return value
    event_uuid = headers.get("x-gitlab-event-uuid", "").strip()
    if event_uuid:
        return f"{event_uuid}:{hashlib.sha256(body).hexdigest()[:16]}"
    raise MalformedDelivery(
        "reading gitlab delivery: no Idempotency-Key, X-Gitlab-Webhook-UUID "
        "or X-Gitlab-Event-UUID header to identify it"
    )


def from_payload(name: str, delivery_id: str, payload: Mapping[str, Any]) -> Event | None:
    """Normalize a payload whose origin is already established (no token to check)."""
    parser = _PARSERS.get(name)
    if parser is None:
        return None
    return parser(Fields(payload, f"gitlab {name} delivery {delivery_id}"), delivery_id)


def _repo(project: Fields) -> RepoRef:
    return RepoRef(
        forge=FORGE,
        full_name=project.text("path_with_namespace", nonempty=True),
        clone_url=project.text("git_http_url", nonempty=True),
        default_branch=project.opt_text("default_branch"),
        web_url=project.opt_text("web_url"),
    )


def _username(user: Fields | None) -> str | None:
    return None if user is None else user.opt_text("username")


# https://docs.gitlab.com/user/project/integrations/webhook_events/#push-events
# https://docs.gitlab.com/user/project/integrations/webhook_events/#tag-events
def _ref_update(payload: Fields, delivery_id: str) -> Event | None:
    ref = payload.text("ref")
    kind = ref_kind(ref)
    if kind is None:
        return None
    before, after = payload.text("before"), payload.text("after")
    deleted = is_zero_sha(after)
    # For an annotated tag ``after`` names the tag object; checkout_sha is the
    # commit it points at, which is what a run needs. Null on deletion.
    commit = after if deleted else (payload.opt_text("checkout_sha") or after)
    commits = payload.objs("commits")
    total = payload.opt_number("total_commits_count")
    # GitLab lists at most 20 commits and says how many there were; a new
    # branch's list is relative to a base GitLab picks.
    listed_all = not is_zero_sha(before) and (total is None or total <= len(commits))
    head = next((c for c in commits if c.opt_text("id") == commit), None)
    return Event(
        forge=FORGE,
        delivery_id=delivery_id,
        kind=kind,
        repo=_repo(payload.obj("project")),
        ref=ref,
        before=before,
        after=commit,
        deleted=deleted,
        author=payload.opt_text("user_username"),  # the published tag example lacks it
        changed_paths=paths_touched(commits)
        if kind is EventKind.PUSH and not deleted and listed_all
        else None,
        head_message=head.opt_text("message") if head else None,
    )


def _change(mr: Fields, action: str, url: str) -> MergeRequestRef:
    """The MR as both hooks describe it (``object_attributes`` or ``merge_request``)."""
    last_commit = mr.opt_obj("last_commit")
    source = mr.opt_obj("source")
    return MergeRequestRef(
        number=mr.number("iid"),
        action=action,
        title=mr.text("title"),
        url=url,
        source_branch=mr.text("source_branch"),
        target_branch=mr.text("target_branch"),
        head_sha=(last_commit.opt_text("id") if last_commit else None) or "",
        is_fork=mr.number("source_project_id") != mr.number("target_project_id"),
        source_clone_url=source.opt_text("git_http_url") if source else None,
        # ``work_in_progress`` is the older name; captures before 13.x lack ``draft``.
        draft=mr.flag("draft") or mr.flag("work_in_progress"),
    )


# https://docs.gitlab.com/user/project/integrations/webhook_events/#merge-request-events
def _merge_request(payload: Fields, delivery_id: str) -> Event:
    attrs = payload.obj("object_attributes")
    verb = attrs.text("action", nonempty=True)
    # An update that carries ``oldrev`` moved the source branch: new commits.
    # Other updates (title, draft, labels) keep GitLab's word.
    action = (
        "synchronize" if verb == "update" and attrs.has("oldrev") else _MR_ACTIONS.get(verb, verb)
    )
    change = _change(attrs, action, attrs.text("url"))
    return Event(
        forge=FORGE,
        delivery_id=delivery_id,
        kind=EventKind.MERGE_REQUEST,
        repo=_repo(payload.obj("project")),
        action=action,
        # GitLab serves every MR head from the target project, forks included.
        ref=f"refs/merge-requests/{change.number}/head",
        before=attrs.opt_text("oldrev"),
        after=change.head_sha or None,
        merge_request=change,
        author=_username(payload.opt_obj("user")),
    )


# https://docs.gitlab.com/user/project/integrations/webhook_events/#comment-on-a-merge-request
def _note(payload: Fields, delivery_id: str) -> Event | None:
    attrs = payload.obj("object_attributes")
    if attrs.opt_text("noteable_type") != "MergeRequest":
        return None  # comments on commits, issues and snippets trigger nothing
    verb = attrs.opt_text("action") or "create"  # older GitLab sends no action
    action = _NOTE_ACTIONS.get(verb, verb)
    mr = payload.obj("merge_request")
    # The note hook's MR object may lack its URL; the note's URL is the MR's plus #note_<id>.
    url = mr.opt_text("url") or attrs.text("url").partition("#")[0]
    change = _change(mr, action, url)
    return Event(
        forge=FORGE,
        delivery_id=delivery_id,
        kind=EventKind.COMMENT,
        repo=_repo(payload.obj("project")),
        action=action,
        ref=f"refs/merge-requests/{change.number}/head",
        after=change.head_sha or None,
        merge_request=change,
        comment=attrs.text("note"),
        author=_username(payload.opt_obj("user")),
    )


_PARSERS: Mapping[str, Callable[[Fields, str], Event | None]] = {
    "Push Hook": _ref_update,
    "Tag Push Hook": _ref_update,
    "Merge Request Hook": _merge_request,
    "Note Hook": _note,
    # "System Hook" (https://docs.gitlab.com/administration/system_hooks/) is left
    # out on purpose: it repeats project events instance-wide, and project hooks
    # are our source, so it is ignored like any unknown kind.
}
