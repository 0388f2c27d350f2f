"""Deliveries from a plain git server's ``post-receive`` hook, to Events.

A bare git server has no webhooks of its own, so its ``post-receive`` hook
POSTs one JSON document per ``git push`` with ``Authorization: Bearer <token>``.
One push may move several refs; each becomes its own Event, keyed
``<delivery_id>:<ref>`` so that a re-sent document is a no-op for each ref.

Body (``application/json``)::

    {
      "delivery_id": "7f1c6a3e-...",       required; one per push, reused on re-send
      "repo": {
        "name": "digits",                  optional; for people
        "path": "/srv/git/digits.git",     required; becomes RepoRef.full_name
        "url": "ssh://git.example/digits", optional clone URL (default: path)
        "default_branch": "main",          optional
        "web_url": "https://..."           optional
      },
      "pusher": "alice",                   optional ($USER / the ssh key's owner)
      "refs": [                            required, as post-receive reads them on stdin
        {
          "ref": "refs/heads/main",
          "before": "<40 or 64 hex>",      all zeros: the ref was created
          "after": "<40 or 64 hex>",       all zeros: the ref was deleted
          "message": "...",                optional; subject and body of ``after``
          "changed_paths": ["train.py"]    optional; ``git diff --name-only before after``
        }
      ]
    }

Refs other than ``refs/heads/*`` and ``refs/tags/*`` are skipped. A sketch of
the hook (any language will do)::

    #!/usr/bin/env python3
    import json, os, subprocess, sys, urllib.request, uuid
    refs = [dict(zip(("before", "after", "ref"), line.split())) for line in sys.stdin]
    body = {"delivery_id": str(uuid.uuid4()), "pusher": os.environ.get("USER"),
            "repo": {"path": os.getcwd(), "url": "ssh://git.example/digits.git"},
            "refs": refs}
    urllib.request.urlopen(urllib.request.Request(
        "https://trainops.example/webhooks/git", json.dumps(body).encode(),
        {"Content-Type": "application/json",
         "Authorization": "Bearer " + os.environ["TRAINOPS_HOOK_TOKEN"]}), timeout=10)
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from trainops.models import Event, EventKind, RepoRef
from trainops.webhooks._errors import MalformedDelivery, WebhookRejected
from trainops.webhooks._payload import (
    Fields,
    decode_object,
    is_zero_sha,
    lower_headers,
    ref_kind,
    require_secret,
    same_secret,
)

FORGE = "git"

_OBJECT_ID = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")  # SHA-1 or SHA-256 repositories


def parse_githook(headers: Mapping[str, str], body: bytes, token: str) -> list[Event]:
    """Verify one hook delivery and return an Event per branch or tag it moved.

    Raises ``WebhookRejected`` for a missing or wrong bearer token and
    ``MalformedDelivery`` (naming the field) for a body not in the format above.
    """
    require_secret(token, "git hook")
    scheme, _, credentials = lower_headers(headers).get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise WebhookRejected("verifying git hook delivery: no Authorization: Bearer token")
    if not same_secret(credentials.strip(), token):
        raise WebhookRejected("verifying git hook delivery: the bearer token does not match")
    payload = decode_object(body, "git hook delivery")
    delivery_id = payload.text("delivery_id", nonempty=True)
    repo = _repo(payload.obj("repo"))
    pusher = payload.opt_text("pusher")
    events = []
    for update in payload.objs("refs", required=True):
        event = _ref_event(update, delivery_id, repo, pusher)
        if event is not None:
            events.append(event)
    return events


def _repo(repo: Fields) -> RepoRef:
    repo.opt_text("name")  # only type-checked: it is for people
    path = repo.text("path", nonempty=True)
    return RepoRef(
        forge=FORGE,
        full_name=path,
        clone_url=repo.opt_text("url") or path,
        default_branch=repo.opt_text("default_branch"),
        web_url=repo.opt_text("web_url"),
    )


def _object_id(update: Fields, key: str) -> str:
    value = update.text(key)
    if not _OBJECT_ID.fullmatch(value):
        raise MalformedDelivery(
            f"reading git hook delivery: {update.name(key)} must be a 40- or "
            "64-digit lowercase hex object id"
        )
    return value


def _ref_event(update: Fields, delivery_id: str, repo: RepoRef, pusher: str | None) -> Event | None:
    ref = update.text("ref", nonempty=True)
    before, after = _object_id(update, "before"), _object_id(update, "after")
    message = update.opt_text("message")
    paths = update.opt_texts("changed_paths")
    kind = ref_kind(ref)
    if kind is None:
        return None
    deleted = is_zero_sha(after)
    return Event(
        forge=FORGE,
        delivery_id=f"{delivery_id}:{ref}",
        kind=kind,
        repo=repo,
        ref=ref,
        before=before,
        after=after,
        deleted=deleted,
        author=pusher,
        # The hook computed these itself, so they are taken as complete.
        changed_paths=paths if kind is EventKind.PUSH and not deleted else None,
        head_message=message,
    )
