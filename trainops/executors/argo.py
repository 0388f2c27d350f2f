"""Argo Workflows through the official ``kubernetes`` client: submit, watch, stop.

The only module that imports ``kubernetes``. It speaks ``CustomObjectsApi``
to ``argoproj.io/v1alpha1`` ``workflows`` (not the Argo SDK, see
REFERENCE §3) and hands back plain frozen dataclasses, so nothing above it
sees a client object:

- ``submit`` creates a workflow under its deterministic name; a 409 means
  it exists already (a retried POST, a redelivered event), so it is fetched
  and adopted when its ``trainops.io/run-key`` label matches ours.
- ``follow`` is the one list-then-watch loop per namespace and label
  selector: it lists, then watches from the list's ``resourceVersion``,
  keeps the version of every event (bookmarks included), lists again on
  410 Gone (an HTTP 410 or an ``ERROR`` event with code 410), and reconnects
  with jittered exponential backoff when the connection drops. It reads the
  stream itself (``_preload_content=False``): ``kubernetes.watch.Watch``
  changed its 410 and bookmark handling between releases.
- ``stop`` merge-patches ``spec.shutdown: Terminate`` (``Stop`` would run
  exit handlers); ``find`` re-finds in-flight workflows after a restart.

Node status comes from ``status.nodes`` or, when the controller compressed
it, ``status.compressedNodes`` (base64 of gzipped JSON). When the controller
offloaded it to its database (``status.offloadNodeStatusVersion``), the
Kubernetes API does not carry the nodes at all: ``WorkflowState.nodes`` is
empty and ``nodes_offloaded`` is true; only the workflow phase is known.

Every API failure becomes an ``ArgoError`` (an ``ExecutorError``) saying what
was being done, with the HTTP status, chained to the client's exception;
connection errors, 429 and 5xx are marked ``transient``.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import logging
import random
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import TYPE_CHECKING, Any

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from trainops.errors import ExecutorError
from trainops.models import StageStatus

if TYPE_CHECKING:
    from kubernetes.client import CustomObjectsApi

logger = logging.getLogger(__name__)

GROUP = "argoproj.io"
VERSION = "v1alpha1"
PLURAL = "workflows"
RUN_KEY_LABEL = "trainops.io/run-key"
COMPLETED_LABEL = "workflows.argoproj.io/completed"
TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "Error"})
IN_FLIGHT = "app.kubernetes.io/managed-by=trainops,workflows.argoproj.io/completed!=true"
"""The selector ``find`` uses after a restart: our workflows that have not completed."""

_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    urllib3.exceptions.HTTPError,
    HTTPException,
    OSError,
)
_CLOSE_ERRORS: tuple[type[BaseException], ...] = (
    AttributeError,
    ValueError,
    RuntimeError,
    *_CONNECTION_ERRORS,
)
_RETRY_CHILD = re.compile(r"\(\d+\)$")
_UNSCHEDULABLE = re.compile(r"(\d+/\d+ nodes are available:.*?)(?:\s*preemption:.*)?$", re.S)


class ArgoError(ExecutorError):
    """The Kubernetes API refused or could not be reached while talking to Argo."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False):
        super().__init__(message)
        self.status = status
        """The HTTP status the API answered, None when it was not reached."""
        self.transient = transient
        """Worth trying again later (connection errors, 429, 5xx)."""


@dataclass(frozen=True)
class NodeState:
    """One node of a workflow's ``status.nodes``: a DAG task, a retry or one pod."""

    stage: str
    """The node's ``displayName``: the DAG task's name; ``task(0)`` for a retry's pods."""
    phase: str
    message: str | None
    started_at: str | None
    finished_at: str | None
    outputs: dict[str, str] = field(default_factory=dict)
    """Output parameters by name (e.g. a metrics JSON)."""
    template: str | None = None
    node_type: str | None = None
    """``Pod``, ``Retry``, ``DAG``, ``Skipped``, ..."""
    node_id: str | None = None


@dataclass(frozen=True)
class WorkflowState:
    """What the API said about one workflow, reduced to what trainops reads."""

    name: str
    phase: str | None
    message: str | None
    nodes: tuple[NodeState, ...]
    labels: dict[str, str]
    resource_version: str | None = None
    shutdown: str | None = None
    """``spec.shutdown`` when someone asked it to stop (``Terminate``, ``Stop``)."""
    nodes_offloaded: bool = False
    """Node status lives in Argo's database, not here: ``nodes`` is empty, not known."""

    @property
    def terminal(self) -> bool:
        """Finished for good: a terminal phase, or the controller's completed label."""
        return self.phase in TERMINAL_PHASES or self.labels.get(COMPLETED_LABEL) == "true"

    @property
    def run_key(self) -> str | None:
        return self.labels.get(RUN_KEY_LABEL)

    def node(self, stage: str) -> NodeState | None:
        """The node of DAG task ``stage`` (not one of its retry pods), if it exists yet."""
        for node in self.nodes:
            if node.stage == stage:
                return node
        return None


Apply = Callable[[str, WorkflowState], None]
"""``apply(event, state)``; event is ``SYNC`` (from a list), ``ADDED``, ``MODIFIED``
or ``DELETED``."""


class ArgoClient:
    """Workflows in one namespace, through a ``CustomObjectsApi``."""

    def __init__(
        self,
        api: CustomObjectsApi,
        namespace: str,
        *,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.api: Any = api  # the client's own annotations say ``object`` for dicts
        self.namespace = namespace
        self.backoff_s = backoff_s
        """(first, ceiling) of the jittered exponential backoff between reconnects."""
        self.connect_timeout_s = connect_timeout_s

    @classmethod
    def from_config(cls, namespace: str, kubeconfig: Path | None = None) -> ArgoClient:
        """A client from ``kubeconfig`` when given, else in-cluster config (a service
        account), else the default kubeconfig (``$KUBECONFIG``, ``~/.kube/config``)."""
        configuration = k8s_client.Configuration()
        loader: Any = k8s_config  # untyped functions
        try:
            if kubeconfig is not None:
                loader.load_kube_config(
                    config_file=str(kubeconfig), client_configuration=configuration
                )
            else:
                try:
                    loader.load_incluster_config(client_configuration=configuration)
                except k8s_config.ConfigException:
                    loader.load_kube_config(client_configuration=configuration)
        except (k8s_config.ConfigException, OSError) as exc:
            where = str(kubeconfig) if kubeconfig else "in-cluster or default kubeconfig"
            raise ArgoError(f"loading kubernetes config ({where}): {exc}") from exc
        api = k8s_client.CustomObjectsApi(k8s_client.ApiClient(configuration))
        return cls(api, namespace)

    # -- single calls ---------------------------------------------------------

    def submit(self, workflow: Mapping[str, Any]) -> WorkflowState:
        """Create ``workflow``; when its name exists already, adopt that one if it
        carries the same run key, else raise: a name collision is never a rerun."""
        metadata = workflow.get("metadata") or {}
        name = metadata.get("name")
        doing = f"submitting workflow {name!r} in {self.namespace!r}"
        if not name:
            raise ArgoError(f"{doing}: the workflow has no metadata.name")
        namespace = metadata.get("namespace")
        if namespace not in (None, self.namespace):
            raise ArgoError(f"{doing}: the workflow is for namespace {namespace!r}")
        ours = (metadata.get("labels") or {}).get(RUN_KEY_LABEL)
        try:
            created = self.api.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, dict(workflow)
            )
        except ApiException as exc:
            if exc.status != 409:
                raise _api_error(doing, exc) from exc
            existing = self._get(name, doing)
            theirs = (existing.get("metadata", {}).get("labels") or {}).get(RUN_KEY_LABEL)
            if ours is None or theirs != ours:
                raise ArgoError(
                    f"{doing}: a workflow of that name exists for run key {theirs!r}, not {ours!r}",
                    status=409,
                ) from exc
            logger.info("workflow %s exists already for this run key; adopting it", name)
            return workflow_state(existing)
        except _CONNECTION_ERRORS as exc:
            raise _connection_error(doing, exc) from exc
        logger.info("submitted workflow %s in %s", name, self.namespace)
        return workflow_state(created)

    def get(self, name: str) -> WorkflowState:
        """The workflow's current state; ``ArgoError`` with status 404 when there is none."""
        return workflow_state(self._get(name, f"reading workflow {name!r} in {self.namespace!r}"))

    def stop(self, name: str) -> None:
        """Terminate the workflow (running pods killed, no exit handlers); gone is fine."""
        doing = f"stopping workflow {name!r} in {self.namespace!r}"
        try:
            self.api.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, {"spec": {"shutdown": "Terminate"}}
            )
        except ApiException as exc:
            if exc.status == 404:
                logger.info("workflow %s is gone already; nothing to stop", name)
                return
            raise _api_error(doing, exc) from exc
        except _CONNECTION_ERRORS as exc:
            raise _connection_error(doing, exc) from exc
        logger.info("asked workflow %s to terminate", name)

    def delete(self, name: str) -> None:
        """Delete the workflow object (and so its pods); gone already is fine."""
        doing = f"deleting workflow {name!r} in {self.namespace!r}"
        try:
            self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status != 404:
                raise _api_error(doing, exc) from exc
        except _CONNECTION_ERRORS as exc:
            raise _connection_error(doing, exc) from exc

    def find(self, label_selector: str = IN_FLIGHT) -> list[WorkflowState]:
        """Workflows matching ``label_selector``, by name; after a restart, the
        default finds ours that are still in flight."""
        items, _ = self._list(label_selector)
        return sorted((workflow_state(item) for item in items), key=lambda s: s.name)

    # -- the watch loop -------------------------------------------------------

    def follow(
        self,
        label_selector: str,
        apply: Apply,
        *,
        stop: threading.Event,
        timeout_s: int = 300,
    ) -> None:
        """Call ``apply`` for every workflow matching ``label_selector`` (``SYNC``)
        and then for every change (``ADDED``, ``MODIFIED``, ``DELETED``) until
        ``stop`` is set.

        After a 410 the full list is applied again as ``SYNC`` and workflows that
        vanished meanwhile as ``DELETED``, so ``apply`` must be idempotent. Each
        watch asks the server to end after ``timeout_s`` and resumes from the
        last ``resourceVersion``. Connection errors, 429 and 5xx are retried
        with backoff; any other refusal (403, 404) raises ``ArgoError``, and
        so does whatever ``apply`` raises. A workflow whose status cannot be
        read (bad ``compressedNodes``) is logged and left out. Setting ``stop``
        closes an open watch at once.
        """
        known: dict[str, WorkflowState] = {}
        current: list[Any] = []  # the open watch response, for the closer
        lock = threading.Lock()
        done = threading.Event()

        def closer() -> None:
            while not (stop.wait(0.1) or done.is_set()):
                pass
            with lock:
                for resp in current:
                    _shutdown(resp)

        watcher = threading.Thread(target=closer, name="argo-watch-closer", daemon=True)
        watcher.start()
        failures = 0
        rv: str | None = None
        try:
            while not stop.is_set():
                try:
                    if rv is None:
                        rv = self._relist(label_selector, apply, known)
                    rv = self._watch_once(
                        label_selector, rv, apply, known, timeout_s, current, lock, stop
                    )
                    failures = 0
                except ArgoError as exc:
                    if stop.is_set():
                        break
                    if not exc.transient:
                        raise
                    failures += 1
                    delay = _backoff(self.backoff_s, failures)
                    logger.warning("%s; trying again in %.1f s", exc, delay)
                    stop.wait(delay)
        finally:
            done.set()

    def _relist(self, selector: str, apply: Apply, known: dict[str, WorkflowState]) -> str:
        items, rv = self._list(selector)
        states = [s for s in map(_readable, items) if s is not None]
        present = {s.name for s in states}
        for name in sorted(set(known) - present):
            apply("DELETED", known.pop(name))
        for state in states:
            known[state.name] = state
            apply("SYNC", state)
        return rv

    def _watch_once(
        self,
        selector: str,
        rv: str,
        apply: Apply,
        known: dict[str, WorkflowState],
        timeout_s: int,
        current: list[Any],
        lock: threading.Lock,
        stop: threading.Event,
    ) -> str | None:
        """Watch from ``rv`` until the server ends the stream; the last version seen,
        or None when it is too old (410) and a fresh list is needed."""
        doing = f"watching workflows {selector!r} in {self.namespace!r}"
        try:
            resp = self.api.list_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                label_selector=selector,
                watch=True,
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout_s,
                _preload_content=False,
                _request_timeout=(self.connect_timeout_s, timeout_s + 30),
            )
        except ApiException as exc:
            if exc.status == 410:
                logger.info("%s: resourceVersion %s expired; listing again", doing, rv)
                return None
            raise _api_error(doing, exc) from exc
        except _CONNECTION_ERRORS as exc:
            raise _connection_error(doing, exc) from exc
        with lock:
            current.append(resp)
            if stop.is_set():  # set while connecting: the closer may have run already
                _shutdown(resp)
        try:
            for event in _events(resp, doing):
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        logger.info("%s: resourceVersion %s expired; listing again", doing, rv)
                        return None
                    raise ArgoError(
                        f"{doing}: {obj.get('message') or obj}",
                        status=obj.get("code"),
                        transient=_is_transient(obj.get("code")),
                    )
                rv = obj.get("metadata", {}).get("resourceVersion") or rv
                if kind == "BOOKMARK":
                    continue
                state = _readable(obj)
                if state is None:
                    continue
                if kind == "DELETED":
                    known.pop(state.name, None)
                else:
                    known[state.name] = state
                apply(str(kind), state)
        finally:
            with lock:
                current.remove(resp)
            resp.release_conn()
        return rv

    # -- helpers ---------------------------------------------------------------

    def _get(self, name: str, doing: str) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except ApiException as exc:
            raise _api_error(doing, exc) from exc
        except _CONNECTION_ERRORS as exc:
            raise _connection_error(doing, exc) from exc
        return obj

    def _list(self, selector: str) -> tuple[list[dict[str, Any]], str]:
        doing = f"listing workflows {selector!r} in {self.namespace!r}"
        try:
            page = self.api.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, label_selector=selector
            )
        except ApiException as exc:
            raise _api_error(doing, exc) from exc
        except _CONNECTION_ERRORS as exc:
            raise _connection_error(doing, exc) from exc
        items: list[dict[str, Any]] = page.get("items") or []
        return items, str(page.get("metadata", {}).get("resourceVersion") or "")


def _readable(obj: Mapping[str, Any]) -> WorkflowState | None:
    try:
        return workflow_state(obj)
    except ArgoError as exc:
        logger.warning("%s; leaving it out", exc)
        return None


def _events(resp: Any, doing: str) -> Iterator[dict[str, Any]]:
    """The watch stream's events, one JSON object per line."""
    try:
        for line in resp:
            if not line.strip():
                continue
            try:
                event: dict[str, Any] = json.loads(line)
            except ValueError as exc:  # a line cut short by a dropped connection
                raise ArgoError(f"{doing}: unreadable event", transient=True) from exc
            yield event
    except _CONNECTION_ERRORS as exc:
        raise _connection_error(doing, exc) from exc


def _shutdown(resp: Any) -> None:
    """Unblock a thread reading ``resp`` (a urllib3 response) from another thread."""
    try:
        resp.shutdown()  # urllib3 >= 2.3: shuts the socket down, so recv() returns
        return
    except _CLOSE_ERRORS:
        logger.debug("shutting the watch stream down", exc_info=True)
    try:
        resp.close()
    except _CLOSE_ERRORS:
        logger.debug("closing the watch stream", exc_info=True)


def _backoff(bounds: tuple[float, float], failures: int) -> float:
    first, ceiling = bounds
    return random.uniform(first / 2, min(ceiling, first * 2 ** (failures - 1)))


def _is_transient(status: int | None) -> bool:
    return status is not None and (status == 429 or status >= 500)


def _api_error(doing: str, exc: ApiException) -> ArgoError:
    status = exc.status
    detail = exc.reason or ""
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        body = {}
    if isinstance(body, dict) and body.get("message"):
        detail = f"{detail}: {str(body['message'])[:300]}" if detail else str(body["message"])
    return ArgoError(
        f"{doing}: HTTP {status} {detail}".rstrip(),
        status=status,
        transient=_is_transient(status),
    )


def _connection_error(doing: str, exc: BaseException) -> ArgoError:
    reason = getattr(exc, "reason", None) or exc
    return ArgoError(f"{doing}: cannot reach the Kubernetes API: {reason}", transient=True)


# -- reading a workflow -------------------------------------------------------


def workflow_state(obj: Mapping[str, Any]) -> WorkflowState:
    """A ``WorkflowState`` from a Workflow object as the API returns it."""
    metadata = obj.get("metadata") or {}
    status = obj.get("status") or {}
    offloaded = bool(status.get("offloadNodeStatusVersion")) and not (
        status.get("nodes") or status.get("compressedNodes")
    )
    return WorkflowState(
        name=str(metadata.get("name", "")),
        phase=status.get("phase") or None,
        message=status.get("message") or None,
        nodes=() if offloaded else _nodes(status, str(metadata.get("name", ""))),
        labels={str(k): str(v) for k, v in (metadata.get("labels") or {}).items()},
        resource_version=metadata.get("resourceVersion"),
        shutdown=(obj.get("spec") or {}).get("shutdown"),
        nodes_offloaded=offloaded,
    )


def _nodes(status: Mapping[str, Any], workflow: str) -> tuple[NodeState, ...]:
    raw = status.get("nodes")
    if not raw and status.get("compressedNodes"):
        try:
            raw = json.loads(gzip.decompress(base64.b64decode(status["compressedNodes"])))
        except (binascii.Error, OSError, ValueError) as exc:
            raise ArgoError(f"reading workflow {workflow!r}: bad compressedNodes") from exc
    if not isinstance(raw, dict):
        return ()
    nodes = []
    for node_id, node in raw.items():
        params = (node.get("outputs") or {}).get("parameters") or []
        nodes.append(
            NodeState(
                stage=str(node.get("displayName") or node.get("name") or node_id),
                phase=str(node.get("phase") or "Pending"),
                message=node.get("message") or None,
                started_at=node.get("startedAt") or None,
                finished_at=node.get("finishedAt") or None,
                outputs={
                    str(p["name"]): str(p["value"])
                    for p in params
                    if "name" in p and p.get("value") is not None
                },
                template=node.get("templateName") or None,
                node_type=node.get("type") or None,
                node_id=str(node_id),
            )
        )
    nodes.sort(key=lambda n: (n.started_at or "~", n.stage))
    return tuple(nodes)


_FINISHED = {
    "Succeeded": StageStatus.SUCCEEDED,
    "Failed": StageStatus.FAILED,
    "Error": StageStatus.ERRORED,
    "Skipped": StageStatus.SKIPPED,
    "Omitted": StageStatus.SKIPPED,
}


def stage_statuses(
    state: WorkflowState, names: Mapping[str, str]
) -> dict[str, tuple[StageStatus | None, str | None]]:
    """Our stages' statuses from the workflow's nodes: ``{stage: (status, reason)}``.

    ``names`` maps Argo task (or template) names to stage names (``dvc-pull`` →
    ``dvc_pull``). A status of None means not finished; its reason says why
    (``running``, ``pending: 0/3 nodes are available: ...``). A failed node
    stopped by ``shutdown: Terminate`` is ``CANCELLED``. Stages with no node
    are absent while the workflow runs, and ``SKIPPED`` once it has ended.
    Retry pods (``train(1)``) are folded into their task's node.
    """
    result: dict[str, tuple[StageStatus | None, str | None]] = {}
    for node in state.nodes:
        if _RETRY_CHILD.search(node.stage) or node.stage == state.name:
            continue
        stage = names.get(node.stage)
        if stage is None and node.template is not None and node.stage not in names:
            stage = names.get(node.template)
        if stage is None:
            continue
        status = _FINISHED.get(node.phase)
        if status is StageStatus.FAILED and _stopped(node, state):
            status = StageStatus.CANCELLED
        reason: str | None
        if status is None:
            pending = pending_reason(state, node.stage)
            reason = f"pending: {pending}" if pending else node.phase.lower()
        else:
            reason = node.message
        if stage in result and result[stage][0] is not None and status is None:
            continue
        result[stage] = (status, reason)
    if state.terminal:
        how = "stopped" if state.shutdown else (state.phase or "ended").lower()
        for name in names.values():
            if name not in result or result[name][0] is None:
                result[name] = (
                    StageStatus.CANCELLED if state.shutdown else StageStatus.SKIPPED,
                    f"workflow {how} before it finished"
                    if name in result
                    else f"not run: workflow {how}",
                )
    return result


def _stopped(node: NodeState, state: WorkflowState) -> bool:
    message = node.message or ""
    return "Stopped with strategy" in message or (
        state.shutdown is not None and "terminated" in message.lower()
    )


def pending_reason(state: WorkflowState, stage: str) -> str | None:
    """Why DAG task ``stage`` (Argo's task name) waits, when a pending node says so:
    ``0/3 nodes are available: 3 Insufficient nvidia.com/gpu.``, a node selector
    nothing matches, a semaphore. None when it is not pending or says nothing."""
    candidates = [
        n
        for n in state.nodes
        if n.phase == "Pending"
        and n.message
        and (n.stage == stage or (n.stage.startswith(stage + "(") and _RETRY_CHILD.search(n.stage)))
    ]
    # the newest pod of a retried task says more than the retry node
    for node in sorted(candidates, key=lambda n: n.stage != stage):
        message = (node.message or "").strip()
        if message.startswith("Unschedulable:"):
            message = message.removeprefix("Unschedulable:").strip()
        match = _UNSCHEDULABLE.search(message)
        return match.group(1).strip() if match else message
    return None
