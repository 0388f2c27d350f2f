"""ArgoClient against a fake Kubernetes API server, through the real client."""

from __future__ import annotations

import base64
import gzip
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client

from tests.fakes.kubernetes import FakeKubernetes
from trainops.errors import ExecutorError
from trainops.executors.argo import (
    IN_FLIGHT,
    ArgoClient,
    ArgoError,
    WorkflowState,
    pending_reason,
    stage_statuses,
    workflow_state,
)
from trainops.models import StageStatus

NS = "ml"
SELECTOR = "app.kubernetes.io/managed-by=trainops"
GPU_PENDING = (
    "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu. "
    "preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
)


def workflow(name: str = "digits-1a2b3c", run_key: str = "key-1") -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"app.kubernetes.io/managed-by": "trainops", "trainops.io/run-key": run_key},
        },
        "spec": {
            "entrypoint": "main",
            "templates": [
                {
                    "name": "main",
                    "dag": {
                        "tasks": [
                            {"name": "dvc-pull", "template": "dvc-pull"},
                            {"name": "train", "template": "train", "depends": "dvc-pull"},
                        ]
                    },
                },
                {"name": "dvc-pull", "container": {"image": "busybox", "command": ["true"]}},
                {"name": "train", "container": {"image": "busybox", "command": ["true"]}},
            ],
        },
    }


@pytest.fixture
def fake() -> Iterator[FakeKubernetes]:
    with FakeKubernetes() as server:
        yield server


@pytest.fixture
def argo(fake: FakeKubernetes) -> ArgoClient:
    return ArgoClient(fake.custom_objects_api(), NS, backoff_s=(0.05, 0.2))


class Recorder:
    """Collects what ``follow`` applies, from the watch thread."""

    def __init__(self) -> None:
        self.events: list[tuple[str, WorkflowState]] = []
        self.cond = threading.Condition()

    def __call__(self, kind: str, state: WorkflowState) -> None:
        with self.cond:
            self.events.append((kind, state))
            self.cond.notify_all()

    def wait_for(self, check: Callable[[list[tuple[str, WorkflowState]]], bool]) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: check(self.events), timeout=5), self.events

    def phases(self, name: str) -> list[str | None]:
        with self.cond:
            return [s.phase for _, s in self.events if s.name == name]


@pytest.fixture
def following(argo: ArgoClient) -> Iterator[tuple[Recorder, threading.Event]]:
    recorder, stop = Recorder(), threading.Event()
    thread = threading.Thread(
        target=argo.follow, args=(SELECTOR, recorder), kwargs={"stop": stop, "timeout_s": 30}
    )
    thread.start()
    yield recorder, stop
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive(), "follow did not return after stop was set"


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.01)


# -- submit -----------------------------------------------------------------------


def test_submit_creates_the_workflow_once(fake: FakeKubernetes, argo: ArgoClient) -> None:
    state = argo.submit(workflow())

    assert state.name == "digits-1a2b3c" and state.run_key == "key-1" and not state.terminal
    stored = fake.workflow("digits-1a2b3c", NS)
    assert stored["metadata"]["uid"] and stored["metadata"]["resourceVersion"]
    assert fake.count("POST *") == 1


def test_a_second_submit_adopts_the_existing_workflow(
    fake: FakeKubernetes, argo: ArgoClient
) -> None:
    first = argo.submit(workflow())
    fake.set_phase("digits-1a2b3c", "Running", {"dvc-pull": "Running"})

    again = argo.submit(workflow())

    assert again.name == first.name and again.phase == "Running"
    assert list(fake.workflows) == ["digits-1a2b3c"]
    assert fake.count("POST *") == 2 and fake.count("GET */workflows/digits-1a2b3c") == 1


def test_a_name_taken_by_another_run_key_is_an_error(argo: ArgoClient) -> None:
    argo.submit(workflow(run_key="key-1"))

    with pytest.raises(ExecutorError, match=r"exists for run key 'key-1', not 'key-2'"):
        argo.submit(workflow(run_key="key-2"))


def test_api_refusals_say_what_was_being_done(fake: FakeKubernetes, argo: ArgoClient) -> None:
    fake.fail_next("POST *", 403)

    with pytest.raises(ArgoError) as caught:
        argo.submit(workflow())

    assert str(caught.value).startswith("submitting workflow 'digits-1a2b3c' in 'ml': HTTP 403")
    assert "injected failure" in str(caught.value)
    assert caught.value.status == 403 and not caught.value.transient
    assert isinstance(caught.value.__cause__, k8s_client.ApiException)


def test_an_unreachable_api_is_a_transient_executor_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    configuration = k8s_client.Configuration(host=f"http://127.0.0.1:{port}")
    configuration.retries = 0
    argo = ArgoClient(k8s_client.CustomObjectsApi(k8s_client.ApiClient(configuration)), NS)

    with pytest.raises(ExecutorError) as caught:
        argo.submit(workflow())

    assert isinstance(caught.value, ArgoError) and caught.value.transient
    assert "submitting workflow 'digits-1a2b3c' in 'ml': cannot reach" in str(caught.value)
    assert caught.value.__cause__ is not None


def test_from_config_reads_a_kubeconfig(fake: FakeKubernetes, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        f"clusters: [{{name: fake, cluster: {{server: '{fake.url}'}}}}]\n"
        "users: [{name: ci, user: {token: t0ken}}]\n"
        "contexts: [{name: fake, context: {cluster: fake, user: ci}}]\n"
    )

    ArgoClient.from_config(NS, kubeconfig).submit(workflow())

    assert list(fake.workflows) == ["digits-1a2b3c"]


def test_from_config_without_a_usable_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ArgoError, match="loading kubernetes config"):
        ArgoClient.from_config(NS, tmp_path / "missing")


def test_get_of_a_missing_workflow_is_a_404(argo: ArgoClient) -> None:
    with pytest.raises(ArgoError, match="reading workflow 'nope' in 'ml': HTTP 404") as caught:
        argo.get("nope")
    assert caught.value.status == 404


# -- stop, find --------------------------------------------------------------------


def test_stop_patches_shutdown_terminate(fake: FakeKubernetes, argo: ArgoClient) -> None:
    argo.submit(workflow())

    argo.stop("digits-1a2b3c")
    argo.stop("gone-already")  # 404 is fine

    assert fake.workflow("digits-1a2b3c", NS)["spec"]["shutdown"] == "Terminate"
    assert fake.workflow("digits-1a2b3c", NS)["spec"]["entrypoint"] == "main"
    assert argo.get("digits-1a2b3c").shutdown == "Terminate"
    assert fake.count("PATCH *") == 2


def test_find_returns_only_workflows_still_in_flight(
    fake: FakeKubernetes, argo: ArgoClient
) -> None:
    for name in ("done-1", "running-2", "pending-3"):
        argo.submit(workflow(name, run_key=name))
    fake.set_phase("done-1", "Succeeded")
    fake.set_phase("running-2", "Running")
    other = workflow("not-ours")
    other["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "someone-else"}
    argo.submit(other)

    found = argo.find(IN_FLIGHT)

    assert [s.name for s in found] == ["pending-3", "running-2"]
    assert argo.get("done-1").terminal


def test_delete_removes_the_workflow(fake: FakeKubernetes, argo: ArgoClient) -> None:
    argo.submit(workflow())
    argo.delete("digits-1a2b3c")
    argo.delete("digits-1a2b3c")
    assert fake.workflows == {}


# -- follow ----------------------------------------------------------------------------


def test_follow_sees_node_phases_in_order(
    fake: FakeKubernetes, argo: ArgoClient, following: tuple[Recorder, threading.Event]
) -> None:
    recorder, _ = following
    wait_until(lambda: fake.open_watches == 1)
    argo.submit(workflow())
    recorder.wait_for(lambda ev: any(k == "ADDED" for k, _ in ev))

    fake.set_phase("digits-1a2b3c", "Running", {"dvc-pull": "Running"})
    fake.set_phase("digits-1a2b3c", "Running", {"dvc-pull": "Succeeded", "train": "Running"})
    fake.bookmark()
    fake.set_phase("digits-1a2b3c", "Succeeded", {"train": "Succeeded"})
    recorder.wait_for(lambda ev: ev[-1][1].terminal)

    assert [k for k, _ in recorder.events] == ["ADDED", "MODIFIED", "MODIFIED", "MODIFIED"]
    trains = [s.node("train") for _, s in recorder.events]
    assert [n.phase if n else None for n in trains] == [None, None, "Running", "Succeeded"]
    assert recorder.phases("digits-1a2b3c") == [None, "Running", "Running", "Succeeded"]


def test_follow_lists_first_then_applies_deletions(fake: FakeKubernetes, argo: ArgoClient) -> None:
    argo.submit(workflow())
    recorder, stop = Recorder(), threading.Event()
    thread = threading.Thread(target=argo.follow, args=(SELECTOR, recorder), kwargs={"stop": stop})
    thread.start()
    try:
        recorder.wait_for(lambda ev: [k for k, _ in ev] == ["SYNC"])
        wait_until(lambda: fake.open_watches == 1)
        argo.delete("digits-1a2b3c")
        recorder.wait_for(lambda ev: ev[-1][0] == "DELETED")
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()


@pytest.mark.parametrize("as_event", [False, True], ids=["http-410", "error-event-410"])
def test_follow_relists_after_410_and_loses_nothing(
    fake: FakeKubernetes,
    argo: ArgoClient,
    following: tuple[Recorder, threading.Event],
    as_event: bool,
) -> None:
    recorder, _ = following
    argo.submit(workflow())
    recorder.wait_for(lambda ev: len(ev) == 1)
    lists_before = fake.lists

    with fake.lock:  # changes the open watch never streams, then history is gone
        fake.set_phase("digits-1a2b3c", "Running", {"train": "Running"})
        fake.set_phase("digits-1a2b3c", "Failed", {"train": {"phase": "Failed", "message": "x"}})
        fake.gone_next_watch(as_event=as_event)
        fake.expire_watches()
    recorder.wait_for(lambda ev: ev[-1][1].terminal)

    kind, final = recorder.events[-1]
    assert kind == "SYNC" and final.phase == "Failed"
    assert final.node("train") is not None and final.node("train").phase == "Failed"  # type: ignore[union-attr]
    assert fake.lists == lists_before + 1

    fake.set_phase("digits-1a2b3c", "Failed", {"evaluate": "Omitted"})  # the new watch works
    recorder.wait_for(lambda ev: ev[-1][0] == "MODIFIED")


def test_follow_relists_when_resuming_from_a_compacted_version(
    fake: FakeKubernetes, argo: ArgoClient, following: tuple[Recorder, threading.Event]
) -> None:
    recorder, _ = following
    argo.submit(workflow())
    recorder.wait_for(lambda ev: len(ev) == 1)

    with fake.lock:
        fake.set_phase("digits-1a2b3c", "Succeeded", {"train": "Succeeded"})
        fake.expire_watches()  # the reconnect at the old version gets an ERROR 410 event
    recorder.wait_for(lambda ev: ev[-1][1].terminal)
    assert recorder.events[-1][0] == "SYNC"


def test_follow_reconnects_after_server_errors(
    fake: FakeKubernetes, argo: ArgoClient, following: tuple[Recorder, threading.Event]
) -> None:
    recorder, _ = following
    recorder.wait_for(lambda ev: True)
    wait_until(lambda: fake.open_watches == 1)
    fake.fail_next("GET *", 503, times=2)

    fake.expire_watches()  # the stream ends; the next two tries get 503
    argo.submit(workflow())
    recorder.wait_for(lambda ev: any(s.name == "digits-1a2b3c" for _, s in ev))
    assert fake.count("GET *watch=*") >= 3


def test_follow_raises_on_a_permanent_refusal(fake: FakeKubernetes, argo: ArgoClient) -> None:
    fake.fail_next("GET *", 403)
    with pytest.raises(ArgoError, match=r"listing workflows .* in 'ml': HTTP 403"):
        argo.follow(SELECTOR, Recorder(), stop=threading.Event())


def test_stop_ends_an_open_watch_at_once(fake: FakeKubernetes, argo: ArgoClient) -> None:
    stop = threading.Event()
    thread = threading.Thread(
        target=argo.follow, args=(SELECTOR, Recorder()), kwargs={"stop": stop, "timeout_s": 300}
    )
    thread.start()
    wait_until(lambda: fake.open_watches == 1)
    started = time.monotonic()
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive() and time.monotonic() - started < 2


# -- reading nodes -------------------------------------------------------------------------


NAMES = {"dvc-pull": "dvc_pull", "train": "train", "evaluate": "evaluate", "gate": "gate"}


def test_stage_statuses_map_node_phases(fake: FakeKubernetes, argo: ArgoClient) -> None:
    argo.submit(workflow())
    fake.set_phase(
        "digits-1a2b3c",
        "Running",
        {
            "dvc-pull": "Succeeded",
            "train": {"phase": "Pending", "message": GPU_PENDING},
            "evaluate": {"phase": "Failed", "message": "Error (exit code 1)"},
            "gate": {"phase": "Skipped", "message": "when 'false' evaluated false"},
            "helper": "Error",
        },
    )

    statuses = stage_statuses(argo.get("digits-1a2b3c"), NAMES)

    assert statuses == {
        "dvc_pull": (StageStatus.SUCCEEDED, None),
        "train": (None, "pending: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
        "evaluate": (StageStatus.FAILED, "Error (exit code 1)"),
        "gate": (StageStatus.SKIPPED, "when 'false' evaluated false"),
    }
    assert stage_statuses(argo.get("digits-1a2b3c"), {"helper": "h"}) == {
        "h": (StageStatus.ERRORED, None)
    }


def test_a_terminated_workflow_reports_cancelled_stages(
    fake: FakeKubernetes, argo: ArgoClient
) -> None:
    argo.submit(workflow())
    argo.stop("digits-1a2b3c")
    fake.set_phase(
        "digits-1a2b3c",
        "Failed",
        {
            "dvc-pull": "Succeeded",
            "train": {"phase": "Failed", "message": "Stopped with strategy 'Terminate'"},
        },
    )

    statuses = stage_statuses(argo.get("digits-1a2b3c"), NAMES)

    assert statuses["dvc_pull"][0] is StageStatus.SUCCEEDED
    assert statuses["train"][0] is StageStatus.CANCELLED
    assert statuses["evaluate"][0] is StageStatus.CANCELLED


def test_pending_reason_surfaces_scheduling_problems(
    fake: FakeKubernetes, argo: ArgoClient
) -> None:
    argo.submit(workflow())
    affinity = "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    fake.set_phase(
        "digits-1a2b3c",
        "Running",
        {
            "train": {"phase": "Pending", "message": GPU_PENDING},
            "evaluate": {"phase": "Pending", "message": f"Unschedulable: {affinity}"},
            "dvc-pull": "Running",
        },
    )
    state = argo.get("digits-1a2b3c")

    assert pending_reason(state, "train") == (
        "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    )
    assert pending_reason(state, "evaluate") == affinity
    assert pending_reason(state, "dvc-pull") is None
    assert pending_reason(state, "nope") is None


def test_retry_pods_fold_into_their_task(fake: FakeKubernetes, argo: ArgoClient) -> None:
    argo.submit(workflow())
    fake.set_phase(
        "digits-1a2b3c",
        "Running",
        {
            "train": {"phase": "Running", "type": "Retry"},
            "train(0)": {"phase": "Failed", "message": "pod deleted", "templateName": "train"},
            "train(1)": {"phase": "Pending", "message": GPU_PENDING, "templateName": "train"},
        },
    )
    state = argo.get("digits-1a2b3c")

    assert stage_statuses(state, NAMES)["train"] == (
        None,
        "pending: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    )


def test_compressed_nodes_and_outputs_are_read(fake: FakeKubernetes, argo: ArgoClient) -> None:
    argo.submit(workflow())
    metrics = json.dumps({"accuracy": 0.97})
    fake.set_phase(
        "digits-1a2b3c",
        "Succeeded",
        {
            "train": {
                "phase": "Succeeded",
                "outputs": {"parameters": [{"name": "metrics", "value": metrics}]},
            }
        },
        compressed=True,
    )
    raw = fake.workflow("digits-1a2b3c", NS)
    assert "nodes" not in raw["status"] and raw["status"]["compressedNodes"]

    state = argo.get("digits-1a2b3c")

    node = state.node("train")
    assert node is not None and node.phase == "Succeeded" and node.outputs == {"metrics": metrics}
    assert state.terminal and not state.nodes_offloaded


def test_offloaded_nodes_are_unknown_not_empty() -> None:
    state = workflow_state(
        {
            "metadata": {"name": "w", "labels": {}},
            "status": {"phase": "Running", "offloadNodeStatusVersion": "fnv:123"},
        }
    )
    assert state.nodes == () and state.nodes_offloaded


def test_follow_leaves_out_an_unreadable_workflow(
    fake: FakeKubernetes, argo: ArgoClient, following: tuple[Recorder, threading.Event]
) -> None:
    recorder, _ = following
    wait_until(lambda: fake.open_watches == 1)
    argo.submit(workflow("broken", run_key="b"))
    fake.edit("broken", lambda obj: obj.update(status={"compressedNodes": "bm90IGd6aXA="}))
    argo.submit(workflow("fine", run_key="f"))

    recorder.wait_for(lambda ev: ev[-1][1].name == "fine")
    assert [(k, s.name) for k, s in recorder.events] == [("ADDED", "broken"), ("ADDED", "fine")]


def test_bad_compressed_nodes_are_an_executor_error() -> None:
    junk = base64.b64encode(gzip.compress(b"{")).decode()
    with pytest.raises(ExecutorError, match="reading workflow 'w': bad compressedNodes"):
        workflow_state({"metadata": {"name": "w"}, "status": {"compressedNodes": junk}})
