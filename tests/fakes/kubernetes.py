"""A small Kubernetes API server for Argo ``Workflow`` objects, over real HTTP.

The real ``kubernetes`` client talks to it, so ``ArgoClient`` runs unchanged::

    with FakeKubernetes() as fake:
        api = fake.custom_objects_api()      # CustomObjectsApi on fake.url
        ArgoClient(api, "ml").submit(workflow)
        fake.set_phase("run-1a2b", "Running", nodes={"train": "Running"}, namespace="ml")
        assert fake.workflow("run-1a2b", "ml")["status"]["phase"] == "Running"

Routes, under ``/apis/argoproj.io/v1alpha1/namespaces/{ns}/workflows``:

- ``POST`` creates (201 with ``metadata.uid``, ``resourceVersion``,
  ``creationTimestamp``, ``generation``; ``generateName`` works); an existing
  name is 409 ``AlreadyExists`` with a ``Status`` body.
- ``GET`` lists, filtered by ``labelSelector`` (``k=v``, ``k==v``, ``k!=v``,
  ``k``, ``!k``, comma-separated), with the list's ``metadata.resourceVersion``.
- ``GET ?watch=true&resourceVersion=N`` streams newline-delimited JSON events
  (chunked, as the API server does): every ``ADDED``/``MODIFIED``/``DELETED``
  after N for the namespace and selector, then new ones as they happen, until
  ``timeoutSeconds`` (a ``BOOKMARK`` then, when ``allowWatchBookmarks``), until
  ``expire_watches()`` or until the server closes. A version older than the
  last ``expire_watches()`` answers an ``ERROR`` event with code 410, as the
  API server's watch cache does.
- ``GET|PATCH|DELETE .../workflows/{name}``: 404 ``NotFound`` when absent;
  ``PATCH`` takes ``application/merge-patch+json`` (RFC 7386) only.

Every change bumps one global ``resourceVersion`` and records an event.

State and knobs for tests: ``workflows`` (name → object, all namespaces),
``workflow(name, ns)``, ``set_phase(name, phase, nodes=..., ...)`` and
``edit(name, fn)`` (both emit ``MODIFIED``), ``bookmark()``,
``expire_watches()`` (ends open watches and forgets history: resuming from
an older version gets 410), ``gone_next_watch(times, as_event=False)``
(answer the next watches with HTTP 410, or a 200 stream holding one
``ERROR`` 410 event), ``fail_next("POST *", 503, times=1)`` (globs over
``METHOD path``), ``count(pattern)`` and ``requests`` (the log, query
included), ``lists``, ``watches_started``, ``open_watches``. ``lock`` is
re-entrant: hold it to make several changes that open watches will not see
one by one.
"""

from __future__ import annotations

import base64
import copy
import fnmatch
import gzip
import itertools
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes import client as k8s_client

GROUP = "argoproj.io"
VERSION = "v1alpha1"
PREFIX = f"/apis/{GROUP}/{VERSION}/namespaces/"
TERMINAL = {"Succeeded", "Failed", "Error"}
COMPLETED = "workflows.argoproj.io/completed"

Obj = dict[str, Any]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str, name: str | None = None) -> Obj:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if name is not None:
        body["details"] = {"name": name, "group": GROUP, "kind": "workflows"}
    return body


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def matches(selector: str | None, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy a label selector (equality-based terms only)."""
    for term in (selector or "").split(","):
        term = term.strip()
        if not term:
            continue
        if "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class _Event:
    rv: int
    type: str
    namespace: str
    obj: Obj


class _Gone(Exception):
    pass


class FakeKubernetes:
    """Workflows in memory behind one re-entrant lock, served on 127.0.0.1."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._changed = threading.Condition(self.lock)
        self._store: dict[tuple[str, str], Obj] = {}
        self._events: list[_Event] = []
        self._rv = itertools.count(1)
        self.resource_version = 0
        self._compacted = 0
        self._generation = 0  # bumped by expire_watches: open streams end
        self._bookmarks = 0  # bumped by bookmark: open streams send one
        self._closing = False
        self._gone: list[bool] = []  # as_event flags for the next watches
        self._failures: list[tuple[str, int]] = []
        self.requests: list[tuple[str, str]] = []
        self.open_watches = 0
        self.lists = 0  # LIST requests answered (not watches)
        self.watches_started = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> FakeKubernetes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def custom_objects_api(self) -> Any:
        """A real ``CustomObjectsApi`` pointed at this server, without retries."""
        configuration = k8s_client.Configuration(host=self.url)
        configuration.retries = 0
        return k8s_client.CustomObjectsApi(k8s_client.ApiClient(configuration))

    # -- state for tests -------------------------------------------------------------

    @property
    def workflows(self) -> dict[str, Obj]:
        """A snapshot, name → object, across namespaces."""
        with self.lock:
            return {name: copy.deepcopy(obj) for (_, name), obj in self._store.items()}

    def workflow(self, name: str, namespace: str | None = None) -> Obj:
        with self.lock:
            return copy.deepcopy(self._store[self._key(name, namespace)])

    def count(self, pattern: str) -> int:
        """Requests seen whose ``METHOD path?query`` matches the glob ``pattern``."""
        with self.lock:
            return sum(fnmatch.fnmatchcase(f"{m} {p}", pattern) for m, p in self.requests)

    def fail_next(self, pattern: str, status: int, *, times: int = 1) -> None:
        """Answer the next ``times`` requests matching ``METHOD path`` with ``status``."""
        with self.lock:
            self._failures.extend([(pattern, status)] * times)

    def gone_next_watch(self, *, times: int = 1, as_event: bool = False) -> None:
        """Answer the next watches with 410 Gone: HTTP 410, or an ERROR event."""
        with self.lock:
            self._gone.extend([as_event] * times)

    def expire_watches(self) -> None:
        """End every open watch and forget history up to now: a watch resumed from
        an older resourceVersion gets an ERROR 410 event and must list again."""
        with self._changed:
            self._compacted = self.resource_version
            self._events.clear()
            self._generation += 1
            self._changed.notify_all()

    def bookmark(self) -> None:
        """Send a BOOKMARK at the current resourceVersion to every open watch."""
        with self._changed:
            self._bookmarks += 1
            self._changed.notify_all()

    def edit(self, name: str, fn: Callable[[Obj], None], namespace: str | None = None) -> Obj:
        """Change a workflow in place with ``fn`` (as Argo's controller would)."""
        with self._changed:
            key = self._key(name, namespace)
            obj = self._store[key]
            fn(obj)
            self._emit("MODIFIED", key[0], obj)
            return copy.deepcopy(obj)

    def set_phase(
        self,
        name: str,
        phase: str,
        nodes: Mapping[str, str | Mapping[str, Any]] | None = None,
        *,
        message: str | None = None,
        namespace: str | None = None,
        compressed: bool = False,
    ) -> Obj:
        """Set ``status.phase`` and some nodes, by DAG task name: ``{"train":
        "Running"}`` or ``{"train": {"phase": "Pending", "message": "..."}}``
        (any node field: ``outputs``, ``type``, ...). Nodes not named keep their
        state. A terminal phase adds the ``completed`` label, as Argo does.
        ``compressed`` stores the nodes as ``status.compressedNodes``."""

        def change(obj: Obj) -> None:
            wf = obj["metadata"]["name"]
            status = obj.setdefault("status", {})
            status["phase"] = phase
            status.setdefault("startedAt", _now())
            if message is not None:
                status["message"] = message
            current = status.pop("nodes", None) or _decompress(status.pop("compressedNodes", ""))
            for task, spec in (nodes or {}).items():
                fields: Mapping[str, Any] = {"phase": spec} if isinstance(spec, str) else spec
                node_id = f"{wf}-{uuid.uuid5(uuid.NAMESPACE_DNS, wf + '/' + task).int % 10**10}"
                node = current.setdefault(
                    node_id,
                    {
                        "id": node_id,
                        "name": f"{wf}.{task}",
                        "displayName": task,
                        "templateName": task,
                        "type": "Pod",
                        "startedAt": _now(),
                    },
                )
                node.update(fields)
                if node.get("phase") in TERMINAL | {"Skipped", "Omitted"}:
                    node.setdefault("finishedAt", _now())
            if compressed:
                raw = gzip.compress(json.dumps(current).encode())
                status["compressedNodes"] = base64.b64encode(raw).decode()
            else:
                status["nodes"] = current
            if phase in TERMINAL:
                status.setdefault("finishedAt", _now())
                obj["metadata"].setdefault("labels", {})[COMPLETED] = "true"
            obj["metadata"].setdefault("labels", {})["workflows.argoproj.io/phase"] = phase

        return self.edit(name, change, namespace)

    # -- internals -------------------------------------------------------------

    def _key(self, name: str, namespace: str | None) -> tuple[str, str]:
        if namespace is not None:
            return namespace, name
        found = [key for key in self._store if key[1] == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} workflows named {name!r}")
        return found[0]

    def _emit(self, kind: str, namespace: str, obj: Obj) -> None:
        rv = next(self._rv)
        self.resource_version = rv
        obj["metadata"]["resourceVersion"] = str(rv)
        self._events.append(_Event(rv, kind, namespace, copy.deepcopy(obj)))
        self._changed.notify_all()

    def _take_failure(self, method: str, path: str) -> int | None:
        with self.lock:
            for i, (pattern, status) in enumerate(self._failures):
                if fnmatch.fnmatchcase(f"{method} {path}", pattern):
                    del self._failures[i]
                    return status
        return None

    # -- the API ------------------------------------------------------------------------

    def create(self, namespace: str, body: Obj) -> tuple[int, Obj]:
        if body.get("kind") != "Workflow" or body.get("apiVersion") != f"{GROUP}/{VERSION}":
            return 400, _status(400, "BadRequest", "not an argoproj.io/v1alpha1 Workflow")
        obj = copy.deepcopy(body)
        metadata = obj.setdefault("metadata", {})
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + secrets.token_hex(3)[:5]
        name = metadata.get("name")
        if not name:
            return 422, _status(422, "Invalid", "metadata.name: Required value")
        if metadata.get("namespace", namespace) != namespace:
            return 400, _status(400, "BadRequest", "the namespace does not match the path")
        with self._changed:
            if (namespace, name) in self._store:
                message = f'workflows.{GROUP} "{name}" already exists'
                return 409, _status(409, "AlreadyExists", message, name)
            metadata.update(
                namespace=namespace,
                uid=str(uuid.uuid4()),
                creationTimestamp=_now(),
                generation=1,
            )
            self._store[(namespace, name)] = obj
            self._emit("ADDED", namespace, obj)
            return 201, copy.deepcopy(obj)

    def _watch(self, namespace: str, query: Mapping[str, str]) -> Generator[Obj, None, None]:
        """The events one watch request streams; raises ``_Gone`` at once for an HTTP 410."""
        selector = query.get("labelSelector")
        bookmarks = query.get("allowWatchBookmarks") == "true"
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        out: list[Obj] = []
        with self._changed:
            self.watches_started += 1
            if self._gone:
                if not self._gone.pop(0):
                    raise _Gone
                out.append(_error(410, "too old resource version (forced)"))
            since = int(query.get("resourceVersion") or 0)
            if not out and 0 < since < self._compacted:
                out.append(_error(410, f"too old resource version: {since} ({self._compacted})"))
            if out:
                self._changed.notify_all()
            elif since == 0:  # no version: the current objects first, as ADDED
                for (ns, _), obj in sorted(self._store.items()):
                    if ns == namespace and matches(selector, _labels(obj)):
                        out.append({"type": "ADDED", "object": copy.deepcopy(obj)})
                since = self.resource_version
            generation, marks = self._generation, self._bookmarks
            self.open_watches += 1
        return self._stream(namespace, selector, bookmarks, deadline, since, out, generation, marks)

    def _stream(
        self,
        namespace: str,
        selector: str | None,
        bookmarks: bool,
        deadline: float,
        since: int,
        out: list[Obj],
        generation: int,
        marks: int,
    ) -> Generator[Obj, None, None]:
        try:
            yield from out
            if out and out[-1]["type"] == "ERROR":
                return
            while True:
                out = []
                with self._changed:
                    while True:
                        if self._closing or self._generation != generation:
                            return
                        fresh = [e for e in self._events if e.rv > since]
                        if fresh or marks != self._bookmarks:
                            break
                        left = deadline - time.monotonic()
                        if left <= 0:
                            if bookmarks:
                                yield _bookmark(self.resource_version)
                            return
                        self._changed.wait(min(left, 0.5))
                    for event in fresh:
                        since = event.rv
                        if event.namespace == namespace and matches(selector, _labels(event.obj)):
                            out.append({"type": event.type, "object": copy.deepcopy(event.obj)})
                    if marks != self._bookmarks:
                        marks = self._bookmarks
                        since = self.resource_version
                        if bookmarks:
                            out.append(_bookmark(since))
                yield from out
        finally:
            with self.lock:
                self.open_watches -= 1

    def patch(self, namespace: str, name: str, body: Any) -> tuple[int, Obj]:
        with self._changed:
            obj = self._store.get((namespace, name))
            if obj is None:
                return 404, _not_found(name)
            patched = _merge_patch(obj, body)
            patched["metadata"] = {**patched.get("metadata", {}), "name": name}
            patched["metadata"]["generation"] = obj["metadata"].get("generation", 1) + (
                patched.get("spec") != obj.get("spec")
            )
            self._store[(namespace, name)] = patched
            self._emit("MODIFIED", namespace, patched)
            return 200, copy.deepcopy(patched)

    def delete(self, namespace: str, name: str) -> tuple[int, Obj]:
        with self._changed:
            obj = self._store.pop((namespace, name), None)
            if obj is None:
                return 404, _not_found(name)
            self._emit("DELETED", namespace, obj)
            return 200, copy.deepcopy(obj)

    def list(self, namespace: str, selector: str | None) -> Obj:
        with self.lock:
            self.lists += 1
            items = [
                copy.deepcopy(obj)
                for (ns, _), obj in sorted(self._store.items())
                if ns == namespace and matches(selector, _labels(obj))
            ]
            return {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "WorkflowList",
                "metadata": {"resourceVersion": str(self.resource_version)},
                "items": items,
            }

    def get(self, namespace: str, name: str) -> tuple[int, Obj]:
        with self.lock:
            obj = self._store.get((namespace, name))
            if obj is None:
                return 404, _not_found(name)
            return 200, copy.deepcopy(obj)


def _labels(obj: Obj) -> dict[str, str]:
    labels: dict[str, str] = obj.get("metadata", {}).get("labels") or {}
    return labels


def _not_found(name: str) -> Obj:
    return _status(404, "NotFound", f'workflows.{GROUP} "{name}" not found', name)


def _bookmark(rv: int) -> Obj:
    return {
        "type": "BOOKMARK",
        "object": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Workflow",
            "metadata": {"resourceVersion": str(rv)},
        },
    }


def _error(code: int, message: str) -> Obj:
    return {"type": "ERROR", "object": _status(code, "Expired", message)}


def _decompress(data: str) -> dict[str, Any]:
    if not data:
        return {}
    nodes: dict[str, Any] = json.loads(gzip.decompress(base64.b64decode(data)))
    return nodes


def _handler(fake: FakeKubernetes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, code: int, body: Obj) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"null")

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            with fake.lock:
                fake.requests.append((method, self.path))
            body = self._body() if method in ("POST", "PATCH") else None
            failure = fake._take_failure(method, url.path)
            if failure is not None:
                self._send(failure, _status(failure, "InternalError", "injected failure"))
                return
            if not url.path.startswith(PREFIX):
                self._send(404, _status(404, "NotFound", "the server could not find it"))
                return
            parts = url.path[len(PREFIX) :].split("/")
            if len(parts) not in (2, 3) or parts[1] != "workflows":
                self._send(404, _status(404, "NotFound", "the server could not find it"))
                return
            namespace, name = parts[0], (parts[2] if len(parts) == 3 else None)
            if name is None and method == "POST":
                self._send(*fake.create(namespace, body or {}))
            elif name is None and method == "GET" and query.get("watch") in ("true", "1"):
                self._stream(namespace, query)
            elif name is None and method == "GET":
                self._send(200, fake.list(namespace, query.get("labelSelector")))
            elif name is not None and method == "GET":
                self._send(*fake.get(namespace, name))
            elif name is not None and method == "PATCH":
                kind = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                if kind != "application/merge-patch+json":
                    message = f"the fake takes merge patches only, not {kind!r}"
                    self._send(415, _status(415, "UnsupportedMediaType", message))
                else:
                    self._send(*fake.patch(namespace, name, body))
            elif name is not None and method == "DELETE":
                self._send(*fake.delete(namespace, name))
            else:
                self._send(405, _status(405, "MethodNotAllowed", f"{method} not allowed"))

        def _stream(self, namespace: str, query: Mapping[str, str]) -> None:
            try:
                events = fake._watch(namespace, query)
            except _Gone:
                self._send(410, _status(410, "Expired", "too old resource version (forced)"))
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.close_connection = True
            try:
                for event in events:
                    self._chunk(event)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                events.close()

        def _chunk(self, event: Obj) -> None:
            data = json.dumps(event).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def do_GET(self) -> None:  # noqa: N802
            self._route("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._route("POST")

        def do_PATCH(self) -> None:  # noqa: N802
            self._route("PATCH")

        def do_DELETE(self) -> None:  # noqa: N802
            self._route("DELETE")

    return Handler
