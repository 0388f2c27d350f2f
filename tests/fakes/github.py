"""A small stateful GitHub REST API, served over real HTTP for the real PyGithub.

Serves under ``/api/v3`` like GitHub Enterprise, so ``Github(base_url=fake.url)``
works unchanged, and builds every URL in its answers from the request's
``Host`` header (PyGithub follows ``url`` fields and checks their host and port).
State lives in memory, behind one lock; tests read it directly::

    with FakeGitHub(token="t0ken") as fake:
        fake.add_repo("acme/digits", files={"trainops.yaml": b"version: 1\\n"})
        pr = fake.open_pull_request("acme/digits", number=7, head="feat")
        forge = GitHubForge(fake.url, token="t0ken", pacing=FAST)
        forge.upsert_comment("acme/digits", 7, "report", "hello")
        assert len(pr.comments) == 1 and pr.comments[0].body.endswith("hello")

Routes (method, path under /api/v3), just what trainops' PyGithub calls use:

- ``GET /repos/{o}/{r}``
- ``GET /repos/{o}/{r}/contents/{path}?ref=`` (files over 1 MB come without
  content, as on GitHub) and ``GET /repos/{o}/{r}/git/blobs/{sha}``
- ``GET /repos/{o}/{r}/commits/{ref}``, ``.../commits/{ref}/statuses``,
  ``.../commits/{ref}/status``; ``POST /repos/{o}/{r}/statuses/{sha}``
- ``GET /repos/{o}/{r}/issues/{n}``; ``GET|POST /repos/{o}/{r}/issues/{n}/comments``
  (paginated with ``Link``); ``PATCH /repos/{o}/{r}/issues/comments/{id}``
- ``GET|POST /repos/{o}/{r}/pulls`` (``state``, ``head=owner:branch``, ``base``);
  ``GET|PATCH /repos/{o}/{r}/pulls/{n}``
- ``GET /repos/{o}/{r}/collaborators/{user}/permission``
- GitHub App: ``GET /repos/{o}/{r}/installation`` and
  ``POST /app/installations/{id}/access_tokens`` (an RS256 JWT checked with the
  App's public key); the installation token then works for that owner's repos.

Authorization: ``token X`` or ``Bearer X`` with a known token, else 401 "Bad
credentials". Lenient where GitHub is strict but tests would only suffer:
any sha takes a status, any head branch can be opened as a pull request.

Knobs: ``fail_next("POST /repos/acme/digits/statuses/*", 503, times=2)``
answers the next matching requests with an error (globs over ``METHOD path``,
path without /api/v3 and query); ``count(pattern)`` counts requests seen,
failed ones included; ``requests`` is the whole log.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import itertools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt

PREFIX = "/api/v3"
LARGE_FILE = 1024 * 1024
"""Bigger files come from the contents API without content (``encoding: none``)."""
SECONDARY_LIMIT = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)
ROLES = ("admin", "maintain", "write", "triage", "read", "none")
_LEGACY = {"maintain": "write", "triage": "read"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _git_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HTTPError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message, **extra}
        self.body.setdefault("documentation_url", "https://docs.github.com/rest")


# -- state ----------------------------------------------------------------------


@dataclass
class FakeComment:
    id: int
    body: str
    user: str
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    edits: int = 0
    """How many times it was PATCHed."""


@dataclass
class FakePullRequest:
    repo: str
    number: int
    head: str
    head_sha: str
    base: str
    title: str
    body: str
    user: str = "octocat"
    state: str = "open"
    draft: bool = False
    comments: list[FakeComment] = field(default_factory=list)
    """The issue comments, oldest first: the live list the fake serves."""
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)

    def comment_bodies(self) -> list[str]:
        return [c.body for c in self.comments]


@dataclass
class FakeRepo:
    full_name: str
    id: int
    default_branch: str = "main"
    refs: dict[str, dict[str, bytes]] = field(default_factory=dict)
    """Files per ref (branch name or sha): ``{"main": {"trainops.yaml": b"..."}}``."""
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Commit statuses per sha, newest last."""
    permissions: dict[str, str] = field(default_factory=dict)
    """Collaborator → role (admin, maintain, write, triage, read, none)."""
    pulls: dict[int, FakePullRequest] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return self.full_name.split("/")[0]

    @property
    def name(self) -> str:
        return self.full_name.split("/")[1]


@dataclass
class FakeApp:
    app_id: str
    public_key: str
    slug: str
    installations: dict[str, int] = field(default_factory=dict)
    """Owner → installation id."""


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    """Without /api/v3 and without the query."""
    query: str
    status: int


@dataclass
class _Failure:
    pattern: str
    status: int
    times: int
    headers: dict[str, str]
    message: str


@dataclass
class _Hook:
    pattern: str
    action: Callable[[], object]
    times: int


# -- the server -----------------------------------------------------------------


class FakeGitHub:
    """GitHub's REST API for one token (or a GitHub App), in memory."""

    def __init__(self, token: str = "fake-token", *, user: str = "trainops-bot") -> None:
        self.token = token
        self.user = user
        """The login the token acts as: the author of comments and statuses."""
        self.repos: dict[str, FakeRepo] = {}
        self.apps: dict[str, FakeApp] = {}
        self.requests: list[Seen] = []
        self.lock = threading.RLock()
        self._tokens: dict[str, tuple[str, str | None]] = {token: (user, None)}
        self._failures: list[_Failure] = []
        self._hooks: list[_Hook] = []
        self._ids = itertools.count(1000)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> FakeGitHub:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the fake first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The API base to give PyGithub (``base_url``) or ``GitHubForge``."""
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    @property
    def html_root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # state, for tests

    def add_repo(
        self,
        full_name: str,
        files: dict[str, bytes | str] | None = None,
        *,
        default_branch: str = "main",
        refs: dict[str, dict[str, bytes | str]] | None = None,
        permissions: dict[str, str] | None = None,
    ) -> FakeRepo:
        """A repository; ``files`` are on the default branch, ``refs`` name other refs."""
        with self.lock:
            repo = FakeRepo(full_name, next(self._ids), default_branch)
            repo.refs[default_branch] = _encode(files or {})
            for ref, tree in (refs or {}).items():
                repo.refs[ref] = _encode(tree)
            for login, role in (permissions or {}).items():
                self._check_role(role)
                repo.permissions[login] = role
            self.repos[full_name] = repo
            return repo

    def set_files(self, full_name: str, ref: str, files: dict[str, bytes | str]) -> None:
        """Replace the files at ``ref`` (a branch or a sha)."""
        with self.lock:
            self.repos[full_name].refs[ref] = _encode(files)

    def set_permission(self, full_name: str, user: str, role: str) -> None:
        self._check_role(role)
        with self.lock:
            self.repos[full_name].permissions[user] = role

    def open_pull_request(
        self,
        full_name: str,
        *,
        number: int | None = None,
        head: str = "feature",
        head_sha: str | None = None,
        base: str | None = None,
        title: str = "A change",
        body: str = "",
        user: str = "octocat",
        files: dict[str, bytes | str] | None = None,
    ) -> FakePullRequest:
        """An open pull request; ``files`` are put at ``head`` and ``head_sha``."""
        with self.lock:
            repo = self.repos[full_name]
            number = number or max([0, *repo.pulls]) + 1
            sha = head_sha or hashlib.sha1(f"{full_name}:{head}:{number}".encode()).hexdigest()
            pr = FakePullRequest(
                full_name, number, head, sha, base or repo.default_branch, title, body, user
            )
            repo.pulls[number] = pr
            if files is not None:
                repo.refs[head] = repo.refs[sha] = _encode(files)
            return pr

    def pull_request(self, full_name: str, number: int) -> FakePullRequest:
        return self.repos[full_name].pulls[number]

    def add_comment(self, full_name: str, number: int, body: str, *, user: str) -> FakeComment:
        """A comment by someone else (``user``)."""
        with self.lock:
            comment = FakeComment(next(self._ids), body, user)
            self.repos[full_name].pulls[number].comments.append(comment)
            return comment

    def statuses(
        self, full_name: str, sha: str, context: str | None = None
    ) -> list[dict[str, Any]]:
        """The statuses set on ``sha`` (of ``context``, if given), oldest first."""
        with self.lock:
            found = self.repos[full_name].statuses.get(sha, [])
            return [dict(s) for s in found if context is None or s["context"] == context]

    def latest_statuses(self, full_name: str, sha: str) -> dict[str, dict[str, Any]]:
        """Context → its newest status, like GitHub's combined status."""
        return {s["context"]: s for s in self.statuses(full_name, sha)}

    def add_app(self, app_id: str, public_key_pem: str, *, slug: str = "trainops") -> FakeApp:
        """A GitHub App whose JWTs are checked with ``public_key_pem``."""
        with self.lock:
            app = FakeApp(str(app_id), public_key_pem, slug)
            self.apps[app.app_id] = app
            return app

    def install(self, app_id: str, owner: str, installation_id: int) -> None:
        with self.lock:
            self.apps[str(app_id)].installations[owner] = installation_id

    # knobs

    def fail_next(
        self,
        pattern: str,
        status: int = 503,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests matching ``pattern`` with ``status``.

        ``pattern`` globs ``"METHOD /path"`` (no /api/v3, no query), e.g.
        ``"POST /repos/acme/digits/statuses/*"`` or ``"* /repos/acme/digits/*"``.
        A 403 without ``message`` says it is a secondary rate limit.
        """
        if message is None:
            message = SECONDARY_LIMIT if status == 403 else HTTPStatus(status).phrase
        with self.lock:
            self._failures.append(_Failure(pattern, status, times, dict(headers or {}), message))

    def before_next(self, pattern: str, action: Callable[[], object], *, times: int = 1) -> None:
        """Run ``action`` (under the fake's lock) before the next ``times`` matching requests.

        For races: ``before_next("POST /repos/acme/digits/pulls", open_it_elsewhere)``.
        """
        with self.lock:
            self._hooks.append(_Hook(pattern, action, times))

    def count(self, pattern: str = "*") -> int:
        """Requests seen whose ``"METHOD /path"`` matches ``pattern``, failed ones included."""
        with self.lock:
            return sum(fnmatch.fnmatchcase(f"{s.method} {s.path}", pattern) for s in self.requests)

    # request handling (called by the handler thread)

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        parts = urlsplit(target)
        path = unquote(parts.path)
        host = headers.get("host", f"127.0.0.1:{self.port}")
        with self.lock:
            status, extra, payload = self._answer(method, path, parts.query, host, headers, body)
            shown = path.removeprefix(PREFIX) or "/"
            self.requests.append(Seen(method, shown, parts.query, status))
            return status, extra, payload

    def _answer(
        self, method: str, path: str, query: str, host: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        if not path.startswith(PREFIX + "/"):
            return 404, {}, {"message": "Not Found"}
        route = path.removeprefix(PREFIX)
        for hook in self._hooks:
            if hook.times > 0 and fnmatch.fnmatchcase(f"{method} {route}", hook.pattern):
                hook.times -= 1
                hook.action()
        for failure in self._failures:
            if failure.times > 0 and fnmatch.fnmatchcase(f"{method} {route}", failure.pattern):
                failure.times -= 1
                return failure.status, failure.headers, {"message": failure.message}
        request = _Request(self, method, route, parse_qs(query), host, headers, body)
        try:
            return request.dispatch()
        except HTTPError as exc:
            return exc.status, {}, exc.body

    def _check_role(self, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"{role!r} is not one of {ROLES}")

    def _issue_token(self, owner: str, app: FakeApp) -> str:
        token = f"ghs_{next(self._ids)}{owner}"
        self._tokens[token] = (f"{app.slug}[bot]", owner)
        return token

    def _new_id(self) -> int:
        return next(self._ids)


def _encode(files: dict[str, bytes | str]) -> dict[str, bytes]:
    return {p.strip("/"): c.encode() if isinstance(c, str) else c for p, c in files.items()}


class _Request:
    """One request: authorization, routing and GitHub-shaped JSON."""

    def __init__(
        self,
        fake: FakeGitHub,
        method: str,
        route: str,
        query: dict[str, list[str]],
        host: str,
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        self.fake = fake
        self.method = method
        self.route = route
        self.query = {k: v[-1] for k, v in query.items()}
        self.api = f"http://{host}{PREFIX}"
        self.web = f"http://{host}"
        self.headers = headers
        self.body = body
        self.link: str | None = None

    # routing

    ROUTES: list[tuple[str, re.Pattern[str], str]] = [
        (m, re.compile(p), h)
        for m, p, h in [
            ("POST", r"/app/installations/(?P<iid>\d+)/access_tokens", "access_token"),
            ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/installation", "installation"),
            ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)", "get_repo"),
            ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/contents/(?P<path>.*)", "contents"),
            ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/git/blobs/(?P<sha>\w+)", "blob"),
            ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/commits/(?P<ref>.+)/statuses", "statuses"),
            ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/commits/(?P<ref>.+)/status", "combined"),
            ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/commits/(?P<ref>.+)", "commit"),
            ("POST", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/statuses/(?P<sha>.+)", "create_status"),
            ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues/(?P<n>\d+)", "issue"),
            ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues/(?P<n>\d+)/comments", "comments"),
            ("POST", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues/(?P<n>\d+)/comments", "comment"),
            ("PATCH", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues/comments/(?P<id>\d+)", "edit"),
            ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/pulls", "pulls"),
            ("POST", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/pulls", "create_pull"),
            ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/pulls/(?P<n>\d+)", "pull"),
            ("PATCH", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/pulls/(?P<n>\d+)", "edit_pull"),
            (
                "GET",
                r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/collaborators/(?P<user>[^/]+)/permission",
                "permission",
            ),
        ]
    ]

    def dispatch(self) -> tuple[int, dict[str, str], Any]:
        for method, pattern, name in self.ROUTES:
            match = pattern.fullmatch(self.route)
            if match is None:
                continue
            if method != self.method:
                continue
            args = match.groupdict()
            if name in ("access_token", "installation"):
                app = self._app()
                status, payload = getattr(self, name)(app, **args)
            else:
                owner = self._identity()
                repo = self._repo(args.pop("o"), args.pop("r"), owner)
                status, payload = getattr(self, name)(repo, **args)
            headers = {"Link": self.link} if self.link else {}
            return status, headers, payload
        raise HTTPError(404, "Not Found")

    # authorization

    def _credential(self) -> str:
        value = self.headers.get("authorization", "")
        scheme, _, credential = value.partition(" ")
        if scheme.lower() not in ("token", "bearer") or not credential:
            raise HTTPError(401, "Requires authentication")
        return credential

    def _identity(self) -> str | None:
        """The acting login; returns the owner an installation token is limited to."""
        known = self.fake._tokens.get(self._credential())
        if known is None:
            raise HTTPError(401, "Bad credentials")
        self.login, scope = known
        return scope

    def _app(self) -> FakeApp:
        token = self._credential()
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
            app = self.fake.apps[str(claims["iss"])]
            jwt.decode(token, app.public_key, algorithms=["RS256"])
        except (jwt.PyJWTError, KeyError) as exc:
            raise HTTPError(401, "A JSON web token could not be decoded") from exc
        return app

    def _repo(self, owner: str, name: str, scope: str | None) -> FakeRepo:
        repo = self.fake.repos.get(f"{owner}/{name}")
        if repo is None or (scope is not None and scope != owner):
            raise HTTPError(404, "Not Found")
        return repo

    def _input(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body or b"{}")
        except ValueError as exc:
            raise HTTPError(400, "Problems parsing JSON") from exc
        if not isinstance(data, dict):
            raise HTTPError(400, "Problems parsing JSON")
        return data

    # JSON shapes

    def user_json(self, login: str) -> dict[str, Any]:
        bot = login.endswith("[bot]")
        uid = int(hashlib.sha1(login.encode()).hexdigest()[:6], 16)
        return {
            "login": login,
            "id": uid,
            "node_id": f"U_{uid}",
            "type": "Bot" if bot else "User",
            "site_admin": False,
            "url": f"{self.api}/users/{login}",
            "html_url": f"{self.web}/{login}",
            "avatar_url": f"{self.web}/avatars/{login}",
        }

    def repo_json(self, repo: FakeRepo) -> dict[str, Any]:
        return {
            "id": repo.id,
            "node_id": f"R_{repo.id}",
            "name": repo.name,
            "full_name": repo.full_name,
            "owner": self.user_json(repo.owner),
            "private": False,
            "fork": False,
            "archived": False,
            "default_branch": repo.default_branch,
            "description": None,
            "url": f"{self.api}/repos/{repo.full_name}",
            "html_url": f"{self.web}/{repo.full_name}",
            "clone_url": f"{self.web}/{repo.full_name}.git",
            "statuses_url": f"{self.api}/repos/{repo.full_name}/statuses/{{sha}}",
            "pulls_url": f"{self.api}/repos/{repo.full_name}/pulls{{/number}}",
        }

    def comment_json(self, repo: FakeRepo, number: int, comment: FakeComment) -> dict[str, Any]:
        return {
            "id": comment.id,
            "node_id": f"IC_{comment.id}",
            "url": f"{self.api}/repos/{repo.full_name}/issues/comments/{comment.id}",
            "html_url": f"{self.web}/{repo.full_name}/pull/{number}#issuecomment-{comment.id}",
            "issue_url": f"{self.api}/repos/{repo.full_name}/issues/{number}",
            "body": comment.body,
            "user": self.user_json(comment.user),
            "author_association": "NONE",
            "created_at": comment.created_at,
            "updated_at": comment.updated_at,
        }

    def pull_json(self, repo: FakeRepo, pr: FakePullRequest) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}"

        def part(ref: str, sha: str) -> dict[str, Any]:
            return {
                "label": f"{repo.owner}:{ref}",
                "ref": ref,
                "sha": sha,
                "user": self.user_json(repo.owner),
                "repo": self.repo_json(repo),
            }

        return {
            "id": repo.id * 10_000 + pr.number,
            "node_id": f"PR_{repo.id}_{pr.number}",
            "number": pr.number,
            "url": f"{api}/pulls/{pr.number}",
            "html_url": f"{self.web}/{repo.full_name}/pull/{pr.number}",
            "diff_url": f"{self.web}/{repo.full_name}/pull/{pr.number}.diff",
            "patch_url": f"{self.web}/{repo.full_name}/pull/{pr.number}.patch",
            "issue_url": f"{api}/issues/{pr.number}",
            "comments_url": f"{api}/issues/{pr.number}/comments",
            "statuses_url": f"{api}/statuses/{pr.head_sha}",
            "state": pr.state,
            "locked": False,
            "title": pr.title,
            "body": pr.body,
            "user": self.user_json(pr.user),
            "draft": pr.draft,
            "merged": False,
            "mergeable": None,
            "created_at": pr.created_at,
            "updated_at": pr.updated_at,
            "closed_at": None,
            "merged_at": None,
            "head": part(pr.head, pr.head_sha),
            "base": part(pr.base, self._ref_sha(repo, pr.base)),
        }

    def status_json(self, repo: FakeRepo, status: dict[str, Any]) -> dict[str, Any]:
        return {
            **{k: status[k] for k in ("id", "state", "description", "target_url", "context")},
            "node_id": f"SC_{status['id']}",
            "url": f"{self.api}/repos/{repo.full_name}/statuses/{status['sha']}",
            "avatar_url": None,
            "creator": self.user_json(status["creator"]),
            "created_at": status["created_at"],
            "updated_at": status["created_at"],
        }

    def _ref_sha(self, repo: FakeRepo, ref: str) -> str:
        return hashlib.sha1(f"{repo.full_name}@{ref}".encode()).hexdigest()

    def _page(self, items: list[Any]) -> list[Any]:
        per_page = int(self.query.get("per_page", "30"))
        page = int(self.query.get("page", "1"))
        last = max(1, -(-len(items) // per_page))
        if page < last:
            params = {**self.query, "per_page": str(per_page)}

            def link(n: int) -> str:
                query = "&".join(f"{k}={v}" for k, v in {**params, "page": str(n)}.items())
                return f"<{self.api}{self.route}?{query}>"

            self.link = f'{link(page + 1)}; rel="next", {link(last)}; rel="last"'
        return items[(page - 1) * per_page : page * per_page]

    def _pull(self, repo: FakeRepo, n: str) -> FakePullRequest:
        pr = repo.pulls.get(int(n))
        if pr is None:
            raise HTTPError(404, "Not Found")
        return pr

    # handlers: each returns (status, payload)

    def get_repo(self, repo: FakeRepo) -> tuple[int, Any]:
        return 200, self.repo_json(repo)

    def contents(self, repo: FakeRepo, path: str) -> tuple[int, Any]:
        ref = self.query.get("ref", repo.default_branch)
        tree = repo.refs.get(ref)
        if tree is None:
            raise HTTPError(404, f"No commit found for the ref {ref}")
        path = path.strip("/")
        base = f"{self.api}/repos/{repo.full_name}"
        if path in tree:
            content = tree[path]
            large = len(content) > LARGE_FILE
            return 200, {
                "type": "file",
                "encoding": "none" if large else "base64",
                "content": "" if large else base64.encodebytes(content).decode(),
                "size": len(content),
                "name": path.rsplit("/", 1)[-1],
                "path": path,
                "sha": _git_sha(content),
                "url": f"{base}/contents/{path}?ref={ref}",
                "git_url": f"{base}/git/blobs/{_git_sha(content)}",
                "html_url": f"{self.web}/{repo.full_name}/blob/{ref}/{path}",
                "download_url": f"{self.web}/raw/{repo.full_name}/{ref}/{path}",
            }
        prefix = f"{path}/" if path else ""
        children = sorted({p[len(prefix) :].split("/")[0] for p in tree if p.startswith(prefix)})
        if not children:
            raise HTTPError(404, "Not Found")
        entries = []
        for child in children:
            full = f"{prefix}{child}"
            kind = "file" if full in tree else "dir"
            entries.append(
                {
                    "type": kind,
                    "name": child,
                    "path": full,
                    "sha": _git_sha(tree[full]) if kind == "file" else _git_sha(full.encode()),
                    "size": len(tree[full]) if kind == "file" else 0,
                    "url": f"{base}/contents/{full}?ref={ref}",
                }
            )
        return 200, entries

    def blob(self, repo: FakeRepo, sha: str) -> tuple[int, Any]:
        for tree in repo.refs.values():
            for content in tree.values():
                if _git_sha(content) == sha:
                    return 200, {
                        "sha": sha,
                        "node_id": f"B_{sha}",
                        "size": len(content),
                        "url": f"{self.api}/repos/{repo.full_name}/git/blobs/{sha}",
                        "content": base64.encodebytes(content).decode(),
                        "encoding": "base64",
                    }
        raise HTTPError(404, "Not Found")

    def commit(self, repo: FakeRepo, ref: str) -> tuple[int, Any]:
        sha = ref if re.fullmatch(r"[0-9a-f]{7,40}", ref) else self._ref_sha(repo, ref)
        return 200, {
            "sha": sha,
            "node_id": f"C_{sha}",
            "url": f"{self.api}/repos/{repo.full_name}/commits/{sha}",
            "html_url": f"{self.web}/{repo.full_name}/commit/{sha}",
            "comments_url": f"{self.api}/repos/{repo.full_name}/commits/{sha}/comments",
            "commit": {"message": "a commit", "url": f"{self.api}/repos/{repo.full_name}/git"},
            "author": None,
            "committer": None,
            "parents": [],
            "files": [],
        }

    def create_status(self, repo: FakeRepo, sha: str) -> tuple[int, Any]:
        data = self._input()
        state = data.get("state")
        if state not in ("pending", "success", "failure", "error"):
            raise HTTPError(
                422, "Validation Failed", errors=[{"field": "state", "code": "invalid"}]
            )
        description = data.get("description") or None
        if description is not None and len(description) > 140:
            raise HTTPError(
                422,
                "Validation Failed",
                errors=[{"message": "description is too long (maximum is 140 characters)"}],
            )
        status = {
            "id": self.fake._new_id(),
            "sha": sha,
            "state": state,
            "description": description,
            "target_url": data.get("target_url") or None,
            "context": data.get("context") or "default",
            "creator": self.login,
            "created_at": _now(),
        }
        repo.statuses.setdefault(sha, []).append(status)
        return 201, self.status_json(repo, status)

    def statuses(self, repo: FakeRepo, ref: str) -> tuple[int, Any]:
        found = [self.status_json(repo, s) for s in reversed(repo.statuses.get(ref, []))]
        return 200, self._page(found)

    def combined(self, repo: FakeRepo, ref: str) -> tuple[int, Any]:
        latest: dict[str, dict[str, Any]] = {}
        for status in repo.statuses.get(ref, []):
            latest[status["context"]] = status
        states = {s["state"] for s in latest.values()}
        if states & {"failure", "error"}:
            state = "failure"
        elif not states or "pending" in states:
            state = "pending"
        else:
            state = "success"
        return 200, {
            "state": state,
            "sha": ref,
            "total_count": len(latest),
            "statuses": [self.status_json(repo, s) for s in latest.values()],
            "repository": self.repo_json(repo),
            "commit_url": f"{self.api}/repos/{repo.full_name}/commits/{ref}",
            "url": f"{self.api}/repos/{repo.full_name}/commits/{ref}/status",
        }

    def issue(self, repo: FakeRepo, n: str) -> tuple[int, Any]:
        pr = self._pull(repo, n)
        api = f"{self.api}/repos/{repo.full_name}"
        return 200, {
            "id": repo.id * 10_000 + pr.number,
            "node_id": f"I_{repo.id}_{pr.number}",
            "number": pr.number,
            "url": f"{api}/issues/{pr.number}",
            "html_url": f"{self.web}/{repo.full_name}/pull/{pr.number}",
            "comments_url": f"{api}/issues/{pr.number}/comments",
            "repository_url": api,
            "title": pr.title,
            "body": pr.body,
            "state": pr.state,
            "user": self.user_json(pr.user),
            "comments": len(pr.comments),
            "labels": [],
            "assignees": [],
            "locked": False,
            "created_at": pr.created_at,
            "updated_at": pr.updated_at,
            "closed_at": None,
            "pull_request": {"url": f"{api}/pulls/{pr.number}"},
        }

    def comments(self, repo: FakeRepo, n: str) -> tuple[int, Any]:
        pr = self._pull(repo, n)
        return 200, self._page([self.comment_json(repo, pr.number, c) for c in pr.comments])

    def comment(self, repo: FakeRepo, n: str) -> tuple[int, Any]:
        pr = self._pull(repo, n)
        body = self._input().get("body")
        if not isinstance(body, str) or not body:
            raise HTTPError(422, "Validation Failed", errors=[{"field": "body", "code": "missing"}])
        if len(body) > 65_536:
            raise HTTPError(422, "Validation Failed", errors=[{"message": "body is too long"}])
        comment = FakeComment(self.fake._new_id(), body, self.login)
        pr.comments.append(comment)
        return 201, self.comment_json(repo, pr.number, comment)

    def edit(self, repo: FakeRepo, id: str) -> tuple[int, Any]:
        body = self._input().get("body")
        for pr in repo.pulls.values():
            for comment in pr.comments:
                if comment.id == int(id):
                    if not isinstance(body, str) or len(body) > 65_536:
                        raise HTTPError(422, "Validation Failed")
                    comment.body = body
                    comment.updated_at = _now()
                    comment.edits += 1
                    return 200, self.comment_json(repo, pr.number, comment)
        raise HTTPError(404, "Not Found")

    def pulls(self, repo: FakeRepo) -> tuple[int, Any]:
        state = self.query.get("state", "open")
        head = self.query.get("head")
        base = self.query.get("base")
        found = [
            self.pull_json(repo, pr)
            for pr in sorted(repo.pulls.values(), key=lambda p: -p.number)
            if state in ("all", pr.state)
            and (head is None or head == f"{repo.owner}:{pr.head}")
            and (base is None or base == pr.base)
        ]
        return 200, self._page(found)

    def create_pull(self, repo: FakeRepo) -> tuple[int, Any]:
        data = self._input()
        head = str(data.get("head") or "").split(":")[-1]
        base = str(data.get("base") or "")
        title = data.get("title")
        for key, value in (("head", head), ("base", base), ("title", title)):
            if not value:
                missing = [{"resource": "PullRequest", "field": key, "code": "missing_field"}]
                raise HTTPError(422, "Validation Failed", errors=missing)
        for pr in repo.pulls.values():
            if pr.state == "open" and pr.head == head and pr.base == base:
                message = f"A pull request already exists for {repo.owner}:{head}."
                raise HTTPError(
                    422,
                    "Validation Failed",
                    errors=[{"resource": "PullRequest", "code": "custom", "message": message}],
                )
        pr = self.fake.open_pull_request(
            repo.full_name,
            head=head,
            base=base,
            title=str(title),
            body=str(data.get("body") or ""),
            user=self.login,
        )
        pr.draft = bool(data.get("draft", False))
        return 201, self.pull_json(repo, pr)

    def pull(self, repo: FakeRepo, n: str) -> tuple[int, Any]:
        return 200, self.pull_json(repo, self._pull(repo, n))

    def edit_pull(self, repo: FakeRepo, n: str) -> tuple[int, Any]:
        pr = self._pull(repo, n)
        data = self._input()
        for key in ("title", "body", "state", "base"):
            if key in data:
                setattr(pr, key, data[key])
        pr.updated_at = _now()
        return 200, self.pull_json(repo, pr)

    def permission(self, repo: FakeRepo, user: str) -> tuple[int, Any]:
        role = repo.permissions.get(user)
        if role is None:
            raise HTTPError(404, "Not Found")
        return 200, {
            "permission": _LEGACY.get(role, role),
            "role_name": role,
            "user": self.user_json(user),
        }

    def installation(self, app: FakeApp, o: str, r: str) -> tuple[int, Any]:
        iid = app.installations.get(o)
        if iid is None or f"{o}/{r}" not in self.fake.repos:
            raise HTTPError(404, "Not Found")
        return 200, {
            "id": iid,
            "app_id": int(app.app_id),
            "app_slug": app.slug,
            "target_type": "Organization",
            "account": self.user_json(o),
            "repository_selection": "all",
            "access_tokens_url": f"{self.api}/app/installations/{iid}/access_tokens",
            "repositories_url": f"{self.api}/installation/repositories",
            "html_url": f"{self.web}/organizations/{o}/settings/installations/{iid}",
            "permissions": {"statuses": "write", "pull_requests": "write", "contents": "read"},
            "events": [],
            "created_at": _now(),
            "updated_at": _now(),
        }

    def access_token(self, app: FakeApp, iid: str) -> tuple[int, Any]:
        owner = next((o for o, i in app.installations.items() if i == int(iid)), None)
        if owner is None:
            raise HTTPError(404, "Not Found")
        return 201, {
            "token": self.fake._issue_token(owner, app),
            "expires_at": "2099-01-01T00:00:00Z",
            "permissions": {"statuses": "write", "pull_requests": "write", "contents": "read"},
            "repository_selection": "all",
        }


class _Handler(BaseHTTPRequestHandler):
    fake: FakeGitHub
    protocol_version = "HTTP/1.1"  # keep-alive, as PyGithub's requests session expects
    disable_nagle_algorithm = True  # headers and body go out in two writes

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, payload = self.fake.handle(self.command, self.path, headers, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        return None
