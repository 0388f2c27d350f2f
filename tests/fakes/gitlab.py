"""A stateful fake GitLab: the REST routes trainops uses, served over real HTTP.

Tests drive it through the real python-gitlab client (STYLE §11): point
``gitlab.Gitlab(url=fake.url)`` (or ``GitLabForge(fake.url, fake.token)``) at
it and assert on its state, not on calls. Objects come back complete enough
for python-gitlab, which raises ``AttributeError`` for a missing field.

Routes, under ``/api/v4``; ``:id`` is a numeric id or a url-encoded path
(``acme%2Fdigits``), every request needs ``PRIVATE-TOKEN: <token>`` (else 401)::

    GET  /user                                          the token's user (the bot)
    GET  /users?username=                               (paginated)
    GET  /projects/:id
    GET  /projects/:id/repository/files/:file_path/raw?ref=
    POST /projects/:id/statuses/:sha                    GitLab's state machine: 400 on
    GET  /projects/:id/repository/commits/:sha/statuses   pending→pending, running→running
    GET  /projects/:id/merge_requests?state=&source_branch=&target_branch=   (paginated)
    POST /projects/:id/merge_requests                   409 for a second open MR
    GET  /projects/:id/merge_requests/:iid
    PUT  /projects/:id/merge_requests/:iid
    GET  /projects/:id/merge_requests/:iid/notes?sort=&order_by=            (paginated)
    POST /projects/:id/merge_requests/:iid/notes        authored by the bot
    PUT  /projects/:id/merge_requests/:iid/notes/:note_id   403 unless the bot wrote it
    GET  /projects/:id/members/all/:user_id

Lists carry GitLab's pagination headers (``X-Page``, ``X-Per-Page``,
``X-Total``, ``X-Total-Pages``, ``X-Next-Page``, ``X-Prev-Page``, ``Link``),
built from the request's Host so python-gitlab follows them without warning.

``calls`` counts requests per route, keyed ``"METHOD /route/template"``
(``"POST /projects/:id/statuses/:sha"``); ``fail_next(pattern, ...)`` makes
the next matching requests (fnmatch on that key) answer an error instead.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

API = "/api/v4"
TOKEN = "glpat-fake-token"
BOT = "trainops-bot"
# https://docs.gitlab.com/api/commits/#set-the-pipeline-status-of-a-commit
STATUS_STATES = ("pending", "running", "success", "failed", "canceled", "skipped")
ACTIVE = ("created", "pending", "running")
# the state machine event GitLab fires to reach a state (shown in its 400s)
EVENTS = {"pending": "enqueue", "running": "run", "success": "succeed", "failed": "drop"}
EVENTS |= {"canceled": "cancel", "skipped": "skip"}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fake_sha(*parts: object) -> str:
    return hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()


@dataclass
class FakeUser:
    id: int
    username: str
    name: str

    def json(self, base: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "name": self.name,
            "state": "active",
            "locked": False,
            "avatar_url": None,
            "web_url": f"{base}/{self.username}",
        }


@dataclass
class FakeNote:
    id: int
    body: str
    author: FakeUser
    system: bool = False
    created_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)


@dataclass
class FakeMergeRequest:
    id: int
    iid: int
    project_id: int
    project_path: str
    source_branch: str
    target_branch: str
    sha: str
    title: str
    description: str
    author: FakeUser
    state: str = "opened"
    notes: list[FakeNote] = field(default_factory=list)
    """Live: what the merge request shows, oldest first."""
    created_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)


@dataclass
class FakeProject:
    id: int
    path_with_namespace: str
    default_branch: str = "main"
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    """ref (branch, tag or sha) → path → content."""
    merge_requests: dict[int, FakeMergeRequest] = field(default_factory=dict)
    members: dict[int, int] = field(default_factory=dict)
    """user id → access level."""
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """sha → commit statuses, oldest first."""


@dataclass
class _Failure:
    pattern: str
    status: int
    times: int
    headers: dict[str, str]
    applied: bool


@dataclass
class _Request:
    method: str
    args: dict[str, str]
    query: dict[str, str]
    body: dict[str, Any]
    base: str  # http://host:port, from the Host header
    path: str


class HttpError(Exception):
    def __init__(self, status: int, message: object, key: str = "message") -> None:
        super().__init__(status, message)
        self.status = status
        self.payload = {key: message}


Reply = tuple[int, Any, dict[str, str]]


class FakeGitLab:
    """A GitLab API on 127.0.0.1 with its state in memory; ``with FakeGitLab() as fake:``."""

    def __init__(self, token: str = TOKEN, *, bot: str = BOT, max_per_page: int = 100) -> None:
        self.token = token
        self.max_per_page = max_per_page
        self.calls: Counter[str] = Counter()
        self.log: list[str] = []
        """``"METHOD /raw/path?query"`` of every request, in order."""
        self.projects: dict[int, FakeProject] = {}
        self.users: dict[int, FakeUser] = {}
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._failures: list[_Failure] = []
        self._server: ThreadingHTTPServer | None = None
        self.bot = self.add_user(bot, name="trainops")
        self._routes = self._route_table()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> FakeGitLab:
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeGitLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """What ``gitlab.Gitlab(url=...)`` takes: no ``/api/v4``."""
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- state, for tests ------------------------------------------------------

    def add_user(self, username: str, *, name: str | None = None) -> FakeUser:
        with self._lock:
            for user in self.users.values():
                if user.username == username:
                    return user
            user = FakeUser(next(self._ids), username, name or username.title())
            self.users[user.id] = user
            return user

    def add_project(
        self,
        path: str,
        files: Mapping[str, str | bytes] | None = None,
        *,
        default_branch: str = "main",
    ) -> FakeProject:
        with self._lock:
            project = FakeProject(next(self._ids) + 100, path, default_branch)
            self.projects[project.id] = project
            self.add_member(path, self.bot.username, 40)
            if files:
                self.add_files(path, files, ref=default_branch)
            return project

    def add_files(self, project: str, files: Mapping[str, str | bytes], *, ref: str) -> None:
        with self._lock:
            tree = self.project(project).files.setdefault(ref, {})
            for name, content in files.items():
                tree[name] = content.encode() if isinstance(content, str) else content

    def add_member(self, project: str, username: str, access_level: int) -> FakeUser:
        with self._lock:
            user = self.add_user(username)
            self.project(project).members[user.id] = access_level
            return user

    def open_merge_request(
        self,
        project: str,
        *,
        iid: int | None = None,
        source: str = "feature",
        target: str | None = None,
        sha: str | None = None,
        title: str = "Change the model",
        description: str = "",
        author: str = "alice",
        files: Mapping[str, str | bytes] | None = None,
    ) -> FakeMergeRequest:
        """An open MR (``files`` are readable at ``source`` and ``sha``)."""
        with self._lock:
            proj = self.project(project)
            iid = iid or max(proj.merge_requests, default=0) + 1
            mr = FakeMergeRequest(
                id=next(self._ids) + 1000,
                iid=iid,
                project_id=proj.id,
                project_path=proj.path_with_namespace,
                source_branch=source,
                target_branch=target or proj.default_branch,
                sha=sha or fake_sha(project, source, iid),
                title=title,
                description=description,
                author=self.add_user(author),
            )
            proj.merge_requests[iid] = mr
            if files:
                self.add_files(project, files, ref=source)
                self.add_files(project, files, ref=mr.sha)
            return mr

    def add_note(
        self, project: str, iid: int, body: str, *, author: str = "alice", system: bool = False
    ) -> FakeNote:
        with self._lock:
            note = FakeNote(next(self._ids) + 10_000, body, self.add_user(author), system)
            self.project(project).merge_requests[iid].notes.append(note)
            return note

    def merge_request(self, project: str, iid: int) -> FakeMergeRequest:
        return self.project(project).merge_requests[iid]

    def statuses(self, project: str, sha: str) -> list[dict[str, Any]]:
        """The commit statuses set on ``sha``, oldest first (copies)."""
        with self._lock:
            return [dict(s) for s in self.project(project).statuses.get(sha, [])]

    def project(self, ref: str | int) -> FakeProject:
        """A project by numeric id or path (case-insensitive), KeyError if unknown."""
        with self._lock:
            text = str(ref)
            if text.isdigit() and int(text) in self.projects:
                return self.projects[int(text)]
            for project in self.projects.values():
                if project.path_with_namespace.lower() == text.lower():
                    return project
            raise KeyError(ref)

    def fail_next(
        self,
        pattern: str = "*",
        status: int = 503,
        *,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
        applied: bool = False,
    ) -> None:
        """The next ``times`` requests whose route key matches ``pattern`` answer ``status``.

        ``applied``: the request takes effect first, then the error is answered
        (a proxy timing out after the server did the work).
        """
        with self._lock:
            self._failures.append(_Failure(pattern, status, times, dict(headers or {}), applied))

    def count(self, pattern: str) -> int:
        """Requests so far whose route key matches ``pattern`` (fnmatch)."""
        with self._lock:
            return sum(n for key, n in self.calls.items() if fnmatch.fnmatchcase(key, pattern))

    # -- serving ---------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        """One request in, one answer out (status, body, headers)."""
        split = urlsplit(raw_path)
        base = f"http://{headers.get('Host', '127.0.0.1')}"
        with self._lock:
            self.log.append(f"{method} {raw_path}")
            key, handler, args = self._route(method, split.path)
            self.calls[key] += 1
            failure = self._take_failure(key)
            try:
                if failure and not failure.applied:
                    raise HttpError(failure.status, _reason(failure.status))
                if headers.get("PRIVATE-TOKEN") != self.token:
                    raise HttpError(401, "401 Unauthorized")
                if handler is None:
                    raise HttpError(404, "404 Not Found", key="error")
                request = _Request(
                    method, args, dict(parse_qsl(split.query)), _json(body), base, split.path
                )
                status, payload, extra = handler(request)
            except HttpError as exc:
                status, payload, extra = exc.status, exc.payload, {}
            if failure:
                status, payload = failure.status, {"message": _reason(failure.status)}
                extra = failure.headers
        if isinstance(payload, bytes):
            return status, payload, {"Content-Type": "text/plain; charset=utf-8", **extra}
        return status, json.dumps(payload).encode(), {"Content-Type": "application/json", **extra}

    def _take_failure(self, key: str) -> _Failure | None:
        for failure in self._failures:
            if fnmatch.fnmatchcase(key, failure.pattern):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    def _route(
        self, method: str, path: str
    ) -> tuple[str, Callable[[_Request], Reply] | None, dict[str, str]]:
        if not path.startswith(API + "/"):
            return f"{method} {path}", None, {}
        # split before decoding: ``acme%2Fdigits`` and ``src%2Ftrain.py`` are one segment
        parts = path[len(API) + 1 :].rstrip("/").split("/")
        for verb, template, handler in self._routes:
            names = template.strip("/").split("/")
            if verb != method or len(names) != len(parts):
                continue
            args: dict[str, str] = {}
            for name, part in zip(names, parts, strict=True):
                if name.startswith(":"):
                    args[name[1:]] = unquote(part)
                elif name != part:
                    break
            else:
                return f"{method} {template}", handler, args
        return f"{method} {path}", None, {}

    def _route_table(self) -> list[tuple[str, str, Callable[[_Request], Reply]]]:
        mr = "/projects/:id/merge_requests/:iid"
        return [
            ("GET", "/user", self._get_current_user),
            ("GET", "/users", self._list_users),
            ("GET", "/projects/:id", self._get_project),
            ("GET", "/projects/:id/repository/files/:file_path/raw", self._get_raw_file),
            ("POST", "/projects/:id/statuses/:sha", self._post_status),
            ("GET", "/projects/:id/repository/commits/:sha/statuses", self._list_statuses),
            ("GET", "/projects/:id/merge_requests", self._list_mrs),
            ("POST", "/projects/:id/merge_requests", self._post_mr),
            ("GET", mr, self._get_mr),
            ("PUT", mr, self._put_mr),
            ("GET", f"{mr}/notes", self._list_notes),
            ("POST", f"{mr}/notes", self._post_note),
            ("PUT", f"{mr}/notes/:note_id", self._put_note),
            ("GET", "/projects/:id/members/all/:user_id", self._get_member),
        ]

    # -- routes ----------------------------------------------------------------

    def _find_project(self, req: _Request) -> FakeProject:
        try:
            return self.project(req.args["id"])
        except KeyError:
            raise HttpError(404, "404 Project Not Found") from None

    def _find_mr(self, req: _Request) -> tuple[FakeProject, FakeMergeRequest]:
        project = self._find_project(req)
        mr = project.merge_requests.get(_int(req.args["iid"]))
        if mr is None:
            raise HttpError(404, "404 Not found")
        return project, mr

    def _get_current_user(self, req: _Request) -> Reply:
        user = self.bot.json(req.base)
        user |= {"email": f"{self.bot.username}@example.invalid", "bot": True, "is_admin": False}
        return 200, user, {}

    def _list_users(self, req: _Request) -> Reply:
        wanted = req.query.get("username", "").lower()
        users = [u for u in self.users.values() if not wanted or u.username.lower() == wanted]
        return self._page(req, [u.json(req.base) for u in users])

    def _get_project(self, req: _Request) -> Reply:
        return 200, self._project_json(self._find_project(req), req.base), {}

    def _get_raw_file(self, req: _Request) -> Reply:
        project = self._find_project(req)
        ref = req.query.get("ref") or project.default_branch
        content = project.files.get(ref, {}).get(req.args["file_path"])
        if content is None:
            raise HttpError(404, "404 File Not Found")
        return 200, content, {}

    def _post_status(self, req: _Request) -> Reply:
        project = self._find_project(req)
        state = req.body.get("state")
        if state not in STATUS_STATES:
            raise HttpError(400, "state does not have a valid value", key="error")
        description = req.body.get("description")
        if description is not None and len(description) > 255:
            raise HttpError(400, {"description": ["is too long (maximum is 255 characters)"]})
        name = req.body.get("name") or req.body.get("context") or "default"
        ref = req.body.get("ref") or project.default_branch
        sha = req.args["sha"]
        statuses = project.statuses.setdefault(sha, [])
        current = next(
            (
                s
                for s in reversed(statuses)
                if s["name"] == name and s["ref"] == ref and s["status"] in ACTIVE
            ),
            None,
        )
        # GitLab fires enqueue (and run) on an active status; the same state again is refused
        if current is not None and (
            (state == "pending" and current["status"] != "created")
            or (state == "running" and current["status"] == "running")
        ):
            event = EVENTS[state]
            raise HttpError(
                400,
                f"Cannot transition status via :{event} from :{current['status']} "
                f'(Reason(s): Status cannot transition via "{event}")',
            )
        if current is None:
            current = {
                "id": next(self._ids) + 100_000,
                "sha": sha,
                "ref": ref,
                "name": name,
                "created_at": now(),
                "started_at": None,
                "finished_at": None,
                "allow_failure": False,
                "coverage": req.body.get("coverage"),
                "pipeline_id": next(self._ids) + 200_000,
                "author": self.bot.json(req.base),
            }
            statuses.append(current)
        current |= {
            "status": state,
            "description": description,
            "target_url": req.body.get("target_url"),
        }
        if state == "running":
            current["started_at"] = now()
        elif state not in ("pending", "created"):
            current["finished_at"] = now()
        return 201, dict(current), {}

    def _list_statuses(self, req: _Request) -> Reply:
        project = self._find_project(req)
        return self._page(req, [dict(s) for s in project.statuses.get(req.args["sha"], [])])

    def _list_mrs(self, req: _Request) -> Reply:
        project = self._find_project(req)
        state = req.query.get("state", "all")
        found = [
            self._mr_json(mr, req.base)
            for mr in sorted(project.merge_requests.values(), key=lambda m: -m.iid)
            if state in ("all", mr.state)
            and req.query.get("source_branch", mr.source_branch) == mr.source_branch
            and req.query.get("target_branch", mr.target_branch) == mr.target_branch
        ]
        return self._page(req, found)

    def _post_mr(self, req: _Request) -> Reply:
        project = self._find_project(req)
        for required in ("source_branch", "target_branch", "title"):
            if not req.body.get(required):
                raise HttpError(400, f"{required} is missing", key="error")
        source, target = req.body["source_branch"], req.body["target_branch"]
        for other in project.merge_requests.values():
            if (other.source_branch, other.target_branch, other.state) == (
                source,
                target,
                "opened",
            ):
                raise HttpError(
                    409,
                    [
                        f"Another open merge request already exists for this source branch: "
                        f"!{other.iid}"
                    ],
                )
        mr = self.open_merge_request(
            project.path_with_namespace,
            source=source,
            target=target,
            title=req.body["title"],
            description=req.body.get("description") or "",
            author=self.bot.username,
        )
        return 201, self._mr_json(mr, req.base), {}

    def _get_mr(self, req: _Request) -> Reply:
        return 200, self._mr_json(self._find_mr(req)[1], req.base), {}

    def _put_mr(self, req: _Request) -> Reply:
        _, mr = self._find_mr(req)
        for name in ("title", "description", "target_branch"):
            if name in req.body:
                setattr(mr, name, req.body[name])
        event = req.body.get("state_event")
        if event == "close":
            mr.state = "closed"
        elif event == "reopen":
            mr.state = "opened"
        mr.updated_at = now()
        return 200, self._mr_json(mr, req.base), {}

    def _list_notes(self, req: _Request) -> Reply:
        _, mr = self._find_mr(req)
        order = req.query.get("order_by", "created_at")
        key = (lambda n: (n.updated_at, n.id)) if order == "updated_at" else (lambda n: n.id)
        notes = sorted(mr.notes, key=key, reverse=req.query.get("sort", "desc") == "desc")
        return self._page(req, [self._note_json(mr, n, req.base) for n in notes])

    def _post_note(self, req: _Request) -> Reply:
        project, mr = self._find_mr(req)
        body = req.body.get("body")
        if not body:
            raise HttpError(400, "body is missing", key="error")
        if len(body) > 1_000_000:
            raise HttpError(400, {"note": ["is too long (maximum is 1000000 characters)"]})
        note = self.add_note(project.path_with_namespace, mr.iid, body, author=self.bot.username)
        return 201, self._note_json(mr, note, req.base), {}

    def _put_note(self, req: _Request) -> Reply:
        _, mr = self._find_mr(req)
        note_id = _int(req.args["note_id"])
        note = next((n for n in mr.notes if n.id == note_id), None)
        if note is None:
            raise HttpError(404, "404 Not found")
        if note.author.id != self.bot.id or note.system:
            raise HttpError(403, "403 Forbidden")
        if not req.body.get("body"):
            raise HttpError(400, "body is missing", key="error")
        note.body = req.body["body"]
        note.updated_at = now()
        return 200, self._note_json(mr, note, req.base), {}

    def _get_member(self, req: _Request) -> Reply:
        project = self._find_project(req)
        user = self.users.get(_int(req.args["user_id"]))
        if user is None or user.id not in project.members:
            raise HttpError(404, "404 Not found")
        member = user.json(req.base) | {
            "access_level": project.members[user.id],
            "created_at": now(),
            "expires_at": None,
            "membership_state": "active",
        }
        return 200, member, {}

    # -- representations -------------------------------------------------------

    def _project_json(self, project: FakeProject, base: str) -> dict[str, Any]:
        namespace, _, name = project.path_with_namespace.rpartition("/")
        return {
            "id": project.id,
            "name": name,
            "path": name,
            "name_with_namespace": project.path_with_namespace.replace("/", " / "),
            "path_with_namespace": project.path_with_namespace,
            "description": "",
            "default_branch": project.default_branch,
            "visibility": "private",
            "web_url": f"{base}/{project.path_with_namespace}",
            "http_url_to_repo": f"{base}/{project.path_with_namespace}.git",
            "ssh_url_to_repo": f"git@127.0.0.1:{project.path_with_namespace}.git",
            "namespace": {"id": 1, "name": namespace, "path": namespace, "full_path": namespace},
            "archived": False,
            "created_at": now(),
            "last_activity_at": now(),
        }

    def _mr_json(self, mr: FakeMergeRequest, base: str) -> dict[str, Any]:
        web_url = f"{base}/{mr.project_path}/-/merge_requests/{mr.iid}"
        return {
            "id": mr.id,
            "iid": mr.iid,
            "project_id": mr.project_id,
            "title": mr.title,
            "description": mr.description,
            "state": mr.state,
            "created_at": mr.created_at,
            "updated_at": mr.updated_at,
            "merged_by": None,
            "merged_at": None,
            "closed_by": None,
            "closed_at": None,
            "target_branch": mr.target_branch,
            "source_branch": mr.source_branch,
            "source_project_id": mr.project_id,
            "target_project_id": mr.project_id,
            "user_notes_count": sum(not n.system for n in mr.notes),
            "upvotes": 0,
            "downvotes": 0,
            "author": mr.author.json(base),
            "assignee": None,
            "assignees": [],
            "reviewers": [],
            "labels": [],
            "draft": False,
            "work_in_progress": False,
            "milestone": None,
            "merge_when_pipeline_succeeds": False,
            "merge_status": "can_be_merged",
            "detailed_merge_status": "mergeable",
            "sha": mr.sha,
            "merge_commit_sha": None,
            "squash_commit_sha": None,
            "discussion_locked": None,
            "should_remove_source_branch": None,
            "force_remove_source_branch": False,
            "squash": False,
            "has_conflicts": False,
            "blocking_discussions_resolved": True,
            "references": {
                "short": f"!{mr.iid}",
                "relative": f"!{mr.iid}",
                "full": f"{mr.project_path}!{mr.iid}",
            },
            "web_url": web_url,
            "time_stats": {
                "time_estimate": 0,
                "total_time_spent": 0,
                "human_time_estimate": None,
                "human_total_time_spent": None,
            },
            "task_completion_status": {"count": 0, "completed_count": 0},
        }

    def _note_json(self, mr: FakeMergeRequest, note: FakeNote, base: str) -> dict[str, Any]:
        return {
            "id": note.id,
            "type": None,
            "body": note.body,
            "attachment": None,
            "author": note.author.json(base),
            "created_at": note.created_at,
            "updated_at": note.updated_at,
            "system": note.system,
            "noteable_id": mr.id,
            "noteable_type": "MergeRequest",
            "noteable_iid": mr.iid,
            "project_id": mr.project_id,
            "resolvable": False,
            "confidential": False,
            "internal": False,
            "imported": False,
            "imported_from": "none",
        }

    def _page(self, req: _Request, items: list[Any]) -> Reply:
        """One page of ``items`` with GitLab's offset-pagination headers."""
        per_page = min(max(_int(req.query.get("per_page", "20")), 1), self.max_per_page)
        pages = max(1, -(-len(items) // per_page))
        page = min(max(_int(req.query.get("page", "1")), 1), pages)

        def link(n: int) -> str:
            query = urlencode({**req.query, "page": n, "per_page": per_page})
            return f"{req.base}{quote(req.path, safe='/%')}?{query}"

        rels = {"first": 1, "last": pages}
        if page > 1:
            rels["prev"] = page - 1
        if page < pages:
            rels["next"] = page + 1
        headers = {
            "X-Page": str(page),
            "X-Per-Page": str(per_page),
            "X-Total": str(len(items)),
            "X-Total-Pages": str(pages),
            "X-Prev-Page": str(page - 1) if page > 1 else "",
            "X-Next-Page": str(page + 1) if page < pages else "",
            "Link": ", ".join(f'<{link(n)}>; rel="{rel}"' for rel, n in rels.items()),
        }
        return 200, items[(page - 1) * per_page : page * per_page], headers


class _Handler(BaseHTTPRequestHandler):
    owner: FakeGitLab
    protocol_version = "HTTP/1.1"  # keep-alive, as python-gitlab's session expects
    timeout = 30
    disable_nagle_algorithm = True  # headers and body go out in two writes

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, payload, headers = self.owner.handle(
            self.command, self.path, dict(self.headers.items()), body
        )
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        return None  # quiet tests


def _json(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        return dict(parse_qsl(body.decode()))  # form-encoded
    return data if isinstance(data, dict) else {}


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise HttpError(400, f"invalid number {text!r}", key="error") from None


def _reason(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)
