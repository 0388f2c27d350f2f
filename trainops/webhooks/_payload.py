"""Shared plumbing of the parsers: headers, secrets, JSON and typed field access.

Forge payloads are big and loosely typed. Each parser reads only the fields it
needs through ``Fields``, so a missing or mistyped field becomes a
``MalformedDelivery`` naming it (a 400 the sender can act on) rather than a
``KeyError`` deep inside a parser (a 500 that says nothing).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Mapping
from typing import Any

from trainops.models import EventKind
from trainops.webhooks._errors import MalformedDelivery

BRANCH_PREFIX = "refs/heads/"
TAG_PREFIX = "refs/tags/"


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """HTTP header names are case-insensitive; callers may pass any mapping."""
    return {name.lower(): value for name, value in headers.items()}


def require_secret(secret: str, forge: str) -> None:
    """Refuse to verify against nothing: an empty secret would accept anyone.

    This is a ValueError, not a rejection, because it is our configuration
    that is wrong, not the delivery; the service refuses to start such a forge.
    """
    if not secret:
        raise ValueError(f"verifying {forge} deliveries: the configured secret is empty")


def same_secret(received: str, expected: str) -> bool:
    """Constant-time comparison, so response timing does not leak the secret.

    Compared as bytes because ``hmac.compare_digest`` refuses non-ASCII
    strings, and a header may hold anything a client sends.
    """
    return hmac.compare_digest(
        received.encode("utf-8", "replace"), expected.encode("utf-8", "replace")
    )


def decode_object(body: bytes, what: str) -> Fields:
    """The body as a JSON object; anything else is malformed."""
    try:
        data = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise MalformedDelivery(f"decoding {what}: the body is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise MalformedDelivery(
            f"decoding {what}: the body is a JSON {_type_name(data)}, not an object"
        )
    return Fields(data, what)


def ref_kind(ref: str) -> EventKind | None:
    """A branch or a tag; other refs (notes, pull heads, ...) trigger nothing."""
    if ref.startswith(BRANCH_PREFIX) and len(ref) > len(BRANCH_PREFIX):
        return EventKind.PUSH
    if ref.startswith(TAG_PREFIX) and len(ref) > len(TAG_PREFIX):
        return EventKind.TAG
    return None


def is_zero_sha(sha: str) -> bool:
    """git's null object id: the ref did not exist before, or no longer exists."""
    return bool(sha) and set(sha) == {"0"}


def paths_touched(commits: Iterable[Fields]) -> tuple[str, ...]:
    """Sorted union of ``added``, ``modified`` and ``removed`` (GitHub and GitLab alike)."""
    paths: set[str] = set()
    for commit in commits:
        for key in ("added", "modified", "removed"):
            paths.update(commit.texts(key))
    return tuple(sorted(paths))


_JSON_TYPES = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "number",
    float: "number",
}


def _type_name(value: object) -> str:
    """The JSON name of a decoded value's type, as the sender wrote it."""
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


class Fields:
    """A JSON object and where it sits in the payload, for precise messages.

    Required getters raise ``MalformedDelivery`` naming the dotted path; the
    ``opt_`` getters give None for an absent or null field but still refuse a
    value of the wrong type.
    """

    def __init__(self, data: Mapping[str, Any], what: str, path: str = "") -> None:
        self._data = data
        self._what = what
        self._path = path

    def name(self, key: str) -> str:
        """The dotted path of ``key`` in the payload, as messages show it."""
        return f"{self._path}.{key}" if self._path else key

    def _bad(self, key: str, expected: str) -> MalformedDelivery:
        value = self._data.get(key)
        got = "missing" if key not in self._data else _type_name(value)
        return MalformedDelivery(
            f"reading {self._what}: {self.name(key)} must be {expected}, got {got}"
        )

    def has(self, key: str) -> bool:
        return self._data.get(key) is not None

    def text(self, key: str, *, nonempty: bool = False) -> str:
        value = self._data.get(key)
        if not isinstance(value, str) or (nonempty and not value):
            raise self._bad(key, "a non-empty string" if nonempty else "a string")
        return value

    def opt_text(self, key: str) -> str | None:
        value = self._data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def number(self, key: str) -> int:
        value = self._data.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._bad(key, "an integer")
        return value

    def opt_number(self, key: str) -> int | None:
        return None if self._data.get(key) is None else self.number(key)

    def flag(self, key: str) -> bool:
        """A boolean; absent or null reads as False (older payloads omit flags)."""
        value = self._data.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self._bad(key, "a boolean")
        return value

    def obj(self, key: str) -> Fields:
        value = self._data.get(key)
        if not isinstance(value, dict):
            raise self._bad(key, "an object")
        return Fields(value, self._what, self.name(key))

    def opt_obj(self, key: str) -> Fields | None:
        return None if self._data.get(key) is None else self.obj(key)

    def objs(self, key: str, *, required: bool = False) -> list[Fields]:
        """A list of objects; unless required, absent or null reads as an empty list."""
        value = self._data.get(key)
        if value is None and not required:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self._bad(key, "a list of objects")
        name = self.name(key)
        return [Fields(v, self._what, f"{name}[{i}]") for i, v in enumerate(value)]

    def texts(self, key: str) -> tuple[str, ...]:
        """A list of strings; absent or null reads as empty."""
        value = self.opt_texts(key)
        return () if value is None else value

    def opt_texts(self, key: str) -> tuple[str, ...] | None:
        value = self._data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings")
        return tuple(value)
