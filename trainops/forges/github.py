"""GitHub and GitHub Enterprise through PyGithub: the only module that imports ``github``.

``GitHubForge`` speaks our ``Forge`` protocol. Library objects (lazy, they
fetch on attribute access) never leave this module, and every
``GithubException`` or connection error becomes a ``ForgeError`` in one
place, ``GitHubForge._call``, which also retries what is worth retrying.

Two ways to authenticate (``from_settings`` picks):

- a personal or fine-grained token (``github.token``);
- a GitHub App (``github.app_id`` + ``github.private_key``): per repository
  owner, the App's installation is looked up once and its installation token
  used; PyGithub renews the token before it expires.

Retries are ours, not PyGithub's (``retry=None``): 5xx, 429, and 403 that is
a rate limit (a secondary-limit message or ``x-ratelimit-remaining: 0``) are
tried again up to ``Pacing.retries`` times, waiting ``Retry-After`` or until
``x-ratelimit-reset`` when GitHub says, else exponentially with jitter. A
wait longer than ``Pacing.max_wait_s`` is not waited: the transient
``ForgeError`` goes up at once and the caller keeps the report for later.
Whole operations are retried, not single requests: every operation looks
before it writes (the comment by its marker, the pull request by its head),
so a write that succeeded but whose answer was lost is found, not repeated.

REST reference: https://docs.github.com/en/rest (anchors at each call).
"""

from __future__ import annotations

import base64
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from github import Auth, Github, GithubException, GithubIntegration
from github.GithubObject import NotSet
from github.PullRequest import PullRequest
from github.Repository import Repository

from trainops.config import ForgeSettings
from trainops.errors import ForgeError, ForgeNotConfigured
from trainops.models import CommitState, CommitStatus, PullRequestRef

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_API_URL = "https://api.github.com"
MAX_DESCRIPTION = 140
"""GitHub refuses commit status descriptions longer than this."""
MAX_COMMENT = 65_536
"""GitHub refuses issue comments longer than this (characters)."""
TRUNCATED = "\n\n… (truncated: the comment exceeded GitHub's size limit)"

# Our states → GitHub's: it has no "running"; a running stage is "pending".
_STATES: dict[CommitState, str] = {
    CommitState.PENDING: "pending",
    CommitState.RUNNING: "pending",
    CommitState.SUCCESS: "success",
    CommitState.FAILURE: "failure",
    CommitState.ERROR: "error",
}
# GitHub's legacy ``permission`` field already folds maintain → write and
# triage → read; mapped again in case the role name comes through.
_PERMISSIONS: dict[str, str] = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "triage": "read",
    "read": "read",
}
_KEY = re.compile(r"[\w.:/-]+")
_SECONDARY_LIMIT = (
    "you have exceeded a secondary rate limit",
    "please retry your request again later.",
    "please wait a few minutes before you try again.",
)


@dataclass(frozen=True)
class Pacing:
    """How hard we press GitHub: spacing between requests and retries with backoff.

    The defaults follow GitHub's advice (at least a second between writes,
    https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api);
    tests pass tiny or zero delays and a recording ``sleep``.
    """

    retries: int = 4
    """Attempts after the first for 5xx, 429, rate-limit 403 and connection errors."""
    backoff_s: float = 1.0
    """First backoff; doubled each attempt, jittered within its upper half."""
    max_wait_s: float = 60.0
    """Longest single wait; a server asking for longer gets a transient ForgeError now."""
    write_interval_s: float = 1.0
    """Least time between two mutating requests (PyGithub enforces it)."""
    request_interval_s: float = 0.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int, asked_s: float | None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None: give up now."""
        if attempt >= self.retries:
            return None
        if asked_s is not None:
            return asked_s if asked_s <= self.max_wait_s else None
        ceiling = min(self.backoff_s * 2**attempt, self.max_wait_s)
        return random.uniform(ceiling / 2, ceiling)


class GitHubForge:
    """The ``Forge`` for github.com and GitHub Enterprise (``base_url`` ending in /api/v3)."""

    name = "github"

    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        *,
        token: str | None = None,
        app_id: str | None = None,
        private_key: str | None = None,
        timeout_s: float = 10.0,
        pacing: Pacing | None = None,
    ) -> None:
        if app_id and private_key:
            # A PEM pasted into an environment variable often arrives with literal "\n".
            pem = private_key if "\n" in private_key else private_key.replace("\\n", "\n")
            self._app: Auth.AppAuth | None = Auth.AppAuth(app_id, pem)
        elif app_id or private_key:
            raise ForgeNotConfigured("github: a GitHub App needs both app_id and private_key")
        elif token:
            self._app = None
        else:
            raise ForgeNotConfigured("github: set a token, or an App's app_id and private_key")
        self._base_url = base_url.rstrip("/")
        self._timeout = max(1, math.ceil(timeout_s))  # PyGithub insists on an int
        self._pacing = pacing or Pacing()
        self._lock = threading.Lock()
        self._clients: dict[str, Github] = {}  # per repository owner (App) or "" (token)
        self._integration: GithubIntegration | None = None
        if token and self._app is None:
            self._clients[""] = self._client(Auth.Token(token))

    @classmethod
    def from_settings(cls, settings: ForgeSettings, *, pacing: Pacing | None = None) -> GitHubForge:
        """The one factory: App auth when ``app_id`` and ``private_key`` are set, else the token."""
        return cls(
            settings.api_url or DEFAULT_API_URL,
            token=settings.token.reveal() if settings.token else None,
            app_id=settings.app_id,
            private_key=settings.private_key.reveal() if settings.private_key else None,
            timeout_s=settings.timeout_s,
            pacing=pacing or Pacing(retries=settings.retries),
        )

    def __repr__(self) -> str:
        how = f"app {self._app.app_id}" if self._app else "token"  # never the secret
        return f"GitHubForge({self._base_url!r}, {how})"

    # -- the Forge protocol -----------------------------------------------------

    def read_file(self, repo: str, ref: str, path: str) -> bytes | None:
        handle = self._repo(repo)
        path = path.lstrip("/")

        def read() -> bytes | None:
            try:
                # https://docs.github.com/en/rest/repos/contents#get-repository-content
                found = handle.get_contents(path, ref=ref)
            except GithubException as exc:
                if exc.status == 404:  # no such file, ref or repository (GitHub won't say which)
                    return None
                raise
            if isinstance(found, list) or found.type != "file":
                return None  # a directory, symlink or submodule
            if found.encoding == "base64":
                return found.decoded_content
            # Over 1 MB the contents API leaves the content out ("encoding": "none").
            # https://docs.github.com/en/rest/git/blobs#get-a-blob
            blob = handle.get_git_blob(found.sha)
            return base64.b64decode(blob.content)

        return self._call(f"reading {path} at {ref[:12]} in {repo}", read)

    def set_status(self, repo: str, sha: str, status: CommitStatus) -> None:
        handle = self._repo(repo)
        description = status.description
        if status.state is CommitState.RUNNING and "running" not in description.lower():
            description = f"running: {description}" if description else "running"
        if len(description) > MAX_DESCRIPTION:
            description = description[: MAX_DESCRIPTION - 1] + "…"

        def create() -> None:
            # https://docs.github.com/en/rest/commits/statuses#create-a-commit-status
            handle.get_commit(sha).create_status(
                state=_STATES[status.state],
                target_url=status.url or NotSet,
                description=description,
                context=status.context,
            )

        self._call(f"setting status {status.context} on {repo}@{sha[:7]}", create)

    def upsert_comment(
        self, repo: str, number: int, key: str, body: str, *, sha: str | None = None
    ) -> str:
        if not _KEY.fullmatch(key):
            raise ValueError(f"comment key {key!r}: use letters, digits and . _ : / - only")
        handle = self._repo(repo)
        marker = f"<!-- trainops:{key} -->"
        text = f"{marker}\n{body}"
        if len(text) > MAX_COMMENT:
            text = text[: MAX_COMMENT - len(TRUNCATED)] + TRUNCATED

        def upsert() -> str:
            issue = handle.get_issue(number)  # lazy: no request
            # https://docs.github.com/en/rest/issues/comments#list-issue-comments
            for comment in issue.get_comments():
                # Ours starts with the marker; a comment quoting it further down is not ours.
                if not (comment.body or "").startswith(marker):
                    continue
                if comment.body != text:
                    # https://docs.github.com/en/rest/issues/comments#update-an-issue-comment
                    comment.edit(text)
                return str(comment.id)
            # https://docs.github.com/en/rest/issues/comments#create-an-issue-comment
            return str(issue.create_comment(text).id)

        return self._call(f"updating the {key} comment on {repo}#{number}", upsert)

    def open_pull_request(
        self, repo: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequestRef:
        handle = self._repo(repo)
        owner = repo.split("/", 1)[0]

        def find() -> PullRequest | None:
            # https://docs.github.com/en/rest/pulls/pulls#list-pull-requests
            for pr in handle.get_pulls(state="open", head=f"{owner}:{head}", base=base):
                return pr
            return None

        def reuse(pr: PullRequest) -> PullRequestRef:
            if pr.title != title or pr.body != body:
                # https://docs.github.com/en/rest/pulls/pulls#update-a-pull-request
                pr.edit(title=title, body=body)
            return PullRequestRef(number=pr.number, url=pr.html_url, created=False)

        def open_or_reuse() -> PullRequestRef:
            existing = find()
            if existing is not None:
                return reuse(existing)
            try:
                # https://docs.github.com/en/rest/pulls/pulls#create-a-pull-request
                pr = handle.create_pull(base=base, head=head, title=title, body=body)
            except GithubException as exc:
                # 422 "A pull request already exists": someone opened it meanwhile.
                if exc.status != 422 or (existing := find()) is None:
                    raise
                return reuse(existing)
            return PullRequestRef(number=pr.number, url=pr.html_url, created=True)

        return self._call(f"opening a pull request {head} → {base} in {repo}", open_or_reuse)

    def permission(self, repo: str, user: str) -> str:
        handle = self._repo(repo)

        def ask() -> str:
            try:
                # https://docs.github.com/en/rest/collaborators/collaborators#get-repository-permissions-for-a-user
                level = handle.get_collaborator_permission(user)
            except GithubException as exc:
                if exc.status == 404:  # not a user, or not one GitHub shows us
                    return "none"
                raise
            return _PERMISSIONS.get(level, "none")

        return self._call(f"reading {user}'s permission on {repo}", ask)

    # -- clients ----------------------------------------------------------------

    def _client(self, auth: Auth.Auth) -> Github:
        return Github(
            base_url=self._base_url,
            auth=auth,
            timeout=self._timeout,
            user_agent="trainops",
            per_page=100,
            retry=None,  # we retry (see _call), honouring Retry-After
            seconds_between_requests=self._pacing.request_interval_s or None,
            seconds_between_writes=self._pacing.write_interval_s or None,
            lazy=True,  # handles cost no request until something is read from them
        )

    def _repo(self, full_name: str) -> Repository:
        owner, _, name = full_name.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"{full_name!r} is not a GitHub repository name (owner/name)")
        with self._lock:
            client = self._clients.get("" if self._app is None else owner)
        if client is None:
            client = self._call(
                f"finding the GitHub App installation for {full_name}",
                lambda: self._installation_client(owner, name),
            )
        # https://docs.github.com/en/rest/repos/repos#get-a-repository (lazy: no request)
        return client.get_repo(full_name)

    def _installation_client(self, owner: str, name: str) -> Github:
        app_auth = self._app
        assert app_auth is not None
        with self._lock:
            if self._integration is None:
                self._integration = GithubIntegration(
                    base_url=self._base_url,
                    auth=app_auth,
                    timeout=self._timeout,
                    user_agent="trainops",
                    retry=None,
                    seconds_between_requests=self._pacing.request_interval_s or None,
                    seconds_between_writes=self._pacing.write_interval_s or None,
                )
            integration = self._integration
        # https://docs.github.com/en/rest/apps/apps#get-a-repository-installation-for-the-authenticated-app
        installation = integration.get_repo_installation(owner, name)
        # Tokens: https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app
        client = self._client(app_auth.get_installation_auth(installation.id))
        with self._lock:
            return self._clients.setdefault(owner, client)

    # -- errors and retries: the one place --------------------------------------

    def _call(self, doing: str, operation: Callable[[], T]) -> T:
        """Run ``operation``, retrying transient failures; raise ForgeError for the rest."""
        attempt = 0
        while True:
            try:
                return operation()
            except GithubException as exc:
                transient = _transient(exc)
                error = ForgeError(
                    f"{doing}: HTTP {exc.status} {_reason(exc)}",
                    status=exc.status,
                    transient=transient,
                )
                wait = self._pacing.delay(attempt, _asked_wait(exc.headers)) if transient else None
                if wait is None:
                    raise error from exc
                self._before_retry(doing, f"HTTP {exc.status}", wait, attempt)
            except OSError as exc:  # requests' errors: refused, reset, timed out
                wait = self._pacing.delay(attempt, None)
                if wait is None:
                    raise ForgeError(f"{doing}: {exc}", transient=True) from exc
                self._before_retry(doing, type(exc).__name__, wait, attempt)
            attempt += 1

    def _before_retry(self, doing: str, why: str, wait: float, attempt: int) -> None:
        logger.warning(
            "%s: %s, trying again in %.1f s (retry %d of %d)",
            doing,
            why,
            wait,
            attempt + 1,
            self._pacing.retries,
        )
        self._pacing.sleep(wait)


def _transient(exc: GithubException) -> bool:
    """5xx, 429 and rate-limit 403s are worth trying again; other 4xx are not."""
    if exc.status >= 500 or exc.status == 429:
        return True
    if exc.status != 403:
        return False
    headers = _lower(exc.headers)
    message = (_message(exc) or "").lower()
    return (
        headers.get("x-ratelimit-remaining") == "0"
        or "retry-after" in headers
        or message.startswith("api rate limit exceeded")
        or any(part in message for part in _SECONDARY_LIMIT)
    )


def _asked_wait(raw: Mapping[str, object] | None) -> float | None:
    """Seconds GitHub asked us to wait: ``Retry-After``, else until ``x-ratelimit-reset``."""
    headers = _lower(raw)
    try:
        if "retry-after" in headers:
            return max(0.0, float(headers["retry-after"]))
        if headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in headers:
            return max(0.0, float(headers["x-ratelimit-reset"]) - time.time())
    except ValueError:  # an HTTP date or garbage: fall back to our own backoff
        return None
    return None


def _lower(headers: Mapping[str, object] | None) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (headers or {}).items()}


def _message(exc: GithubException) -> str | None:
    data = exc.data
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return exc.message


def _reason(exc: GithubException) -> str:
    """GitHub's message and, for a 422, what it found invalid; never a request body."""
    reason = _message(exc) or "(no message)"
    details = exc.data.get("errors") if isinstance(exc.data, dict) else None
    if isinstance(details, list):
        said = [
            str(d.get("message") or f"{d.get('field')} {d.get('code')}")
            for d in details
            if isinstance(d, dict)
        ]
        if said:
            reason = f"{reason} ({'; '.join(said)})"
    return reason[:300]
