"""Inbound webhooks: verify a delivery, then turn it into normalized Events.

Sans-I/O (gidgethub's approach): each parser takes the request's headers, its
raw body and the configured secret, and returns values. The service owns
everything else: HTTP, body size limits, storage, answering 202. Verification
always comes before decoding, so an unauthenticated body is never parsed.

::

    parse("github", headers, body, secret)  → [Event]; [] when ignored (answer 202)
        WebhookRejected    → 401: signature or token missing or wrong
        MalformedDelivery  → 400: authenticated, but not JSON or a field is missing
        ValueError         an empty secret or an unknown forge: our bug, not theirs

Parsers are keyed like the settings (``TRAINOPS_<NAME>__WEBHOOK_SECRET``):
``github``, ``gitlab`` and ``githook``, a plain git server's post-receive hook
(see ``trainops.webhooks.githook``), whose Events say ``forge="git"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from trainops.models import Event
from trainops.webhooks._errors import MalformedDelivery, WebhookRejected
from trainops.webhooks.githook import parse_githook
from trainops.webhooks.github import parse_github
from trainops.webhooks.gitlab import parse_gitlab

Parser = Callable[[Mapping[str, str], bytes, str], list[Event]]
"""``(headers, raw body, secret) -> events``; the same shape for every forge."""


def _github(headers: Mapping[str, str], body: bytes, secret: str) -> list[Event]:
    event = parse_github(headers, body, secret)
    return [] if event is None else [event]


def _gitlab(headers: Mapping[str, str], body: bytes, secret: str) -> list[Event]:
    event = parse_gitlab(headers, body, secret)
    return [] if event is None else [event]


PARSERS: Mapping[str, Parser] = MappingProxyType(
    {"github": _github, "gitlab": _gitlab, "githook": parse_githook}
)
"""Source name → parser returning a list, so the service handles every source alike."""


def parse(forge: str, headers: Mapping[str, str], body: bytes, secret: str) -> list[Event]:
    """Verify and normalize one delivery for ``forge``; [] means "ignored"."""
    parser = PARSERS.get(forge)
    if parser is None:
        raise ValueError(f"parsing a webhook delivery: no parser for forge {forge!r}")
    return parser(headers, body, secret)


__all__ = [
    "PARSERS",
    "MalformedDelivery",
    "Parser",
    "WebhookRejected",
    "parse",
    "parse_githook",
    "parse_github",
    "parse_gitlab",
]
