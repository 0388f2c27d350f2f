"""Deliveries built the way each forge sends them, for webhook and service tests.

``github_headers`` signs like GitHub (HMAC-SHA256 of the exact body), so a
test that changes the body after signing gets a rejection, as it should.
Header names are written in the forges' own mixed case on purpose: parsers
must not depend on it.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "webhooks"
"""Our own payloads: ``<forge>/<event>.<action>.json`` for acme/digits."""

GITLAB_EVENTS = {
    "push_hook": "Push Hook",
    "tag_push_hook": "Tag Push Hook",
    "merge_request_hook": "Merge Request Hook",
    "note_hook": "Note Hook",
}
"""File-name prefix → the ``X-Gitlab-Event`` value that comes with it."""


def fixture_body(forge: str, name: str) -> bytes:
    """The raw bytes of ``tests/data/webhooks/<forge>/<name>.json``."""
    return (FIXTURES / forge / f"{name}.json").read_bytes()


def github_signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_headers(body: bytes, secret: str, event: str, delivery: str) -> dict[str, str]:
    """Headers of a GitHub delivery of ``body``, signed with ``secret``."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/trainops-test",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Hook-ID": "6001",
        "X-Hub-Signature-256": github_signature(body, secret),
    }


def gitlab_headers(token: str, event: str, delivery: str) -> dict[str, str]:
    """Headers of a GitLab 17.4+ delivery; ``delivery`` is its Idempotency-Key.

    The other two UUIDs differ from it, so a parser keying on the wrong one is caught.
    """
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitLab/17.6.0",
        "X-Gitlab-Event": event,
        "X-Gitlab-Instance": "https://gitlab.example.com",
        "X-Gitlab-Token": token,
        "X-Gitlab-Event-UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"event/{delivery}")),
        "X-Gitlab-Webhook-UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"webhook/{delivery}")),
        "Idempotency-Key": delivery,
    }


def githook_headers(token: str) -> dict[str, str]:
    """Headers of a post-receive hook delivery (the delivery id is in the body)."""
    return {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
