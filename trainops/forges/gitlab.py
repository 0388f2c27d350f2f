"""GitLab (gitlab.com or self-managed) as a ``Forge``, on python-gitlab.

The only module that imports ``gitlab``; its objects (lazy, fetching on
attribute access) never leave it. Every call goes through ``_call``, the one
place where library exceptions become ``ForgeError`` and where 5xx, 429 and
connection errors are retried with backoff, honouring ``Retry-After`` and
``RateLimit-Reset``. python-gitlab's own retries stay off (it would sleep
on 429 itself, unlogged and uncapped), so the retry unit is a whole
operation: a retried ``upsert_comment`` looks for its note again and never
posts a second one.

Tokens: personal or project access tokens, sent as ``PRIVATE-TOKEN`` by the
library and never logged or put in messages by this module.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, overload

import gitlab
from gitlab.exceptions import GitlabError
from gitlab.v4.objects import Project

from trainops.config import ForgeSettings
from trainops.errors import ForgeError, ForgeNotConfigured
from trainops.models import CommitState, CommitStatus, PullRequestRef

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_URL = "https://gitlab.com"
MAX_DESCRIPTION = 255
"""GitLab refuses longer commit status descriptions."""

# https://docs.gitlab.com/api/commits/#set-the-pipeline-status-of-a-commit (``state``)
STATES: Mapping[CommitState, str] = {
    CommitState.PENDING: "pending",
    CommitState.RUNNING: "running",
    CommitState.SUCCESS: "success",
    CommitState.FAILURE: "failed",
    CommitState.ERROR: "failed",
}

# https://docs.gitlab.com/user/permissions/#roles (access_level values)
MAINTAINER, DEVELOPER, GUEST = 40, 30, 10

# GitLab answers 400 when a status is set to the state it already has.
_SAME_STATE = re.compile(r"Cannot transition status via :\w+ from :(\w+)")
# Passed to every call: python-gitlab must not retry 429s itself (see the module docstring).
_ONCE: dict[str, Any] = {"obey_rate_limit": False}


def marker(key: str) -> str:
    """The hidden first line that marks trainops' comment for ``key``."""
    return f"<!-- trainops:{key} -->"


def access(level: int) -> str:
    """A GitLab access level in the words of ``Forge.permission``."""
    if level >= MAINTAINER:  # maintainer, owner
        return "admin"
    if level >= DEVELOPER:
        return "write"
    if level >= GUEST:  # guest, planner, reporter
        return "read"
    return "none"  # no access, minimal access


class GitLabForge:
    """The ``Forge`` for one GitLab instance, reached with one access token."""

    name = "gitlab"
    max_backoff_s = 60.0
    """No single wait is longer, whatever ``Retry-After`` says."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float = 10.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/").removesuffix("/api/v4")
        self._retries = retries
        self._backoff_s = backoff_s
        self._sleep = sleep
        self._gl = gitlab.Gitlab(
            url=self.url,
            private_token=token,
            timeout=timeout_s,
            retry_transient_errors=False,
            user_agent="trainops",
        )
        # python-gitlab's exceptions carry no headers; keep the last response's
        # per thread so the retry loop can read Retry-After.
        self._last = threading.local()
        self._gl.session.hooks["response"].append(self._remember)
        self._user_id: int | None = None

    @classmethod
    def from_settings(cls, settings: ForgeSettings) -> GitLabForge:
        if not settings.token:
            raise ForgeNotConfigured(
                "gitlab: no access token configured (set TRAINOPS_GITLAB__TOKEN)"
            )
        return cls(
            settings.api_url or DEFAULT_URL,
            settings.token.reveal(),
            timeout_s=settings.timeout_s,
            retries=settings.retries,
        )

    def __repr__(self) -> str:
        return f"GitLabForge({self.url!r})"

    # -- Forge ----------------------------------------------------------------

    def read_file(self, repo: str, ref: str, path: str) -> bytes | None:
        project = self._project(repo)
        # https://docs.gitlab.com/api/repository_files/#get-raw-file-from-repository
        return self._call(
            f"reading {path!r} at {ref!r} in {repo}",
            lambda: bytes(project.files.raw(file_path=path, ref=ref, **_ONCE)),
            missing_ok=True,
        )

    def set_status(self, repo: str, sha: str, status: CommitStatus) -> None:
        state = STATES[status.state]
        data = {"state": state, "name": status.context, "description": _clip(status.description)}
        if status.url:
            data["target_url"] = status.url
        commit = self._project(repo).commits.get(sha, lazy=True)

        def create() -> None:
            # https://docs.gitlab.com/api/commits/#set-the-pipeline-status-of-a-commit
            commit.statuses.create(data, **_ONCE)

        self._call(
            f"setting status {status.context!r} to {state} on {repo}@{sha[:12]}",
            create,
            same_state=state,
        )

    def upsert_comment(
        self, repo: str, number: int, key: str, body: str, *, sha: str | None = None
    ) -> str:
        head = marker(key)
        text = body if body.startswith(head + "\n") else f"{head}\n{body}"
        mr = self._project(repo).mergerequests.get(number, lazy=True)

        def upsert() -> str:
            me = self._me()
            # https://docs.gitlab.com/api/notes/#list-all-merge-request-notes
            notes = mr.notes.list(
                iterator=True, per_page=100, sort="asc", order_by="created_at", **_ONCE
            )
            for note in notes:
                if note.system or note.author["id"] != me:
                    continue
                if note.body.split("\n", 1)[0].strip() != head:
                    continue
                if note.body.rstrip() != text.rstrip():
                    # https://docs.gitlab.com/api/notes/#modify-existing-merge-request-note
                    mr.notes.update(note.id, {"body": text}, **_ONCE)
                return str(note.id)
            # https://docs.gitlab.com/api/notes/#create-new-merge-request-note
            return str(mr.notes.create({"body": text}, **_ONCE).id)

        return self._call(f"updating the {key!r} comment on {repo}!{number}", upsert)

    def open_pull_request(
        self, repo: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequestRef:
        project = self._project(repo)

        def open_or_reuse() -> PullRequestRef:
            # https://docs.gitlab.com/api/merge_requests/#list-project-merge-requests
            for mr in project.mergerequests.list(
                state="opened", source_branch=head, target_branch=base, get_all=True, **_ONCE
            ):
                changes = {
                    k: v
                    for k, v in (("title", title), ("description", body))
                    if getattr(mr, k) != v
                }
                if changes:
                    # https://docs.gitlab.com/api/merge_requests/#update-mr
                    project.mergerequests.update(mr.iid, changes, **_ONCE)
                return PullRequestRef(number=int(mr.iid), url=str(mr.web_url), created=False)
            # https://docs.gitlab.com/api/merge_requests/#create-mr
            new = project.mergerequests.create(
                {"source_branch": head, "target_branch": base, "title": title, "description": body},
                **_ONCE,
            )
            return PullRequestRef(number=int(new.iid), url=str(new.web_url), created=True)

        return self._call(f"opening a merge request {head} → {base} in {repo}", open_or_reuse)

    def permission(self, repo: str, user: str) -> str:
        project = self._project(repo)

        def user_id() -> int | None:
            # https://docs.gitlab.com/api/users/#list-users (exact match on username)
            found = self._gl.users.list(username=user, get_all=False, **_ONCE)
            exact = [u for u in found if str(u.username).lower() == user.lower()]
            return int(exact[0].id) if exact else None

        uid = self._call(f"looking up user {user!r}", user_id)
        if uid is None:
            return "none"
        # https://docs.gitlab.com/api/members/#get-a-member-of-a-group-or-project-including-inherited-and-invited-members
        level = self._call(
            f"reading {user!r}'s access to {repo}",
            lambda: int(project.members_all.get(uid, **_ONCE).access_level),
            missing_ok=True,
        )
        return "none" if level is None else access(level)

    # -- plumbing -------------------------------------------------------------

    def _project(self, repo: str) -> Project:
        """A lazy project: no request until one of its managers is used."""
        # https://docs.gitlab.com/api/projects/#get-a-single-project (path or id)
        return self._gl.projects.get(repo, lazy=True)

    def _me(self) -> int:
        """The id of the token's user (a project token's bot), fetched once."""
        if self._user_id is None:
            # https://docs.gitlab.com/api/users/ (GET /user: the token's own user)
            user = self._gl.http_get("/user", **_ONCE)
            if not isinstance(user, dict) or "id" not in user:
                raise ForgeError(f"asking {self.url} who the token belongs to: no user id")
            self._user_id = int(user["id"])
        return self._user_id

    def _remember(self, response: Any, *args: Any, **kwargs: Any) -> None:
        self._last.headers = response.headers

    @overload
    def _call(self, doing: str, action: Callable[[], None], *, same_state: str) -> None: ...

    @overload
    def _call(self, doing: str, action: Callable[[], T]) -> T: ...

    @overload
    def _call(
        self, doing: str, action: Callable[[], T], *, missing_ok: Literal[True]
    ) -> T | None: ...

    def _call(
        self,
        doing: str,
        action: Callable[[], T],
        *,
        missing_ok: bool = False,
        same_state: str | None = None,
    ) -> T | None:
        """Run ``action`` (one whole operation), retrying what is transient.

        The one place where python-gitlab's exceptions become ``ForgeError``.
        ``missing_ok``: a 404 (other than for the project) gives None.
        ``same_state``: GitLab's 400 for a status already in that state is success.
        """
        attempt = 0
        while True:
            self._last.headers = {}
            try:
                return action()
            except GitlabError as exc:
                code = exc.response_code
                message = _brief(exc.error_message).removeprefix(f"{code} ")  # "404 Not found"
                if missing_ok and code == 404 and "Project Not Found" not in message:
                    return None
                found = _SAME_STATE.search(message)
                if same_state and code == 400 and found and found.group(1) == same_state:
                    return None
                transient = code is not None and (code >= 500 or code == 429)
                error = ForgeError(
                    f"{doing}: HTTP {code} {message}", status=code, transient=transient
                )
                if not transient or attempt >= self._retries:
                    raise error from exc
            except OSError as exc:  # requests' errors: refused, reset, timed out
                error = ForgeError(
                    f"{doing}: {type(exc).__name__} reaching {self.url}", transient=True
                )
                if attempt >= self._retries:
                    raise error from exc
            delay = self._delay(attempt, self._last.headers)
            log.warning("gitlab: %s; retrying in %.1f s", error, delay)
            self._sleep(delay)
            attempt += 1

    def _delay(self, attempt: int, headers: Mapping[str, str]) -> float:
        """Seconds before retry ``attempt + 1``: what the server asked, else backoff."""
        hinted = _retry_after(headers)
        if hinted is None:
            step = self._backoff_s * 2**attempt
            hinted = random.uniform(step / 2, step)  # jitter: retries from many workers spread
        return min(max(hinted, 0.0), self.max_backoff_s)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` (seconds or an HTTP date) or ``RateLimit-Reset`` (epoch), in seconds."""
    value = headers.get("Retry-After")
    if value:
        try:
            return float(value)
        except ValueError:
            try:
                return email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                pass
    reset = headers.get("RateLimit-Reset")
    if reset:
        try:
            return float(reset) - time.time()
        except ValueError:
            pass
    return None


def _clip(text: str, limit: int = MAX_DESCRIPTION) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _brief(message: object, limit: int = 300) -> str:
    """GitLab's error message (a string, a list or a dict of field errors), kept short."""
    text = message if isinstance(message, str) else str(message)
    return _clip(" ".join(text.split()), limit)
