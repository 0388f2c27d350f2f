"""The whole loop with the Argo backend against a fake Kubernetes API (real client):
one workflow per run however often the event arrives, node phases drive the stages
(through a 410 in the watch), and a superseding push stops the older workflow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.kubernetes import FakeKubernetes
from tests.service.conftest import (
    SLOW,
    Forge,
    Service,
    githook_push,
    make_settings,
    pipeline,
    wait_for,
)
from trainops.config import Settings
from trainops.executors.argo import ArgoClient
from trainops.executors.backend import ArgoExecutor
from trainops.protocols import Executor
from trainops.service.serve import BackgroundServer

NAMESPACE = "ml"


@pytest.fixture
def cluster() -> Iterator[FakeKubernetes]:
    with FakeKubernetes() as fake:
        yield fake


@pytest.fixture
def service(tmp_path: Path, cluster: FakeKubernetes) -> Iterator[Service]:
    settings = make_settings(tmp_path / "home")
    settings.executor = "argo"
    settings.argo.namespace = NAMESPACE
    settings.argo.image = "registry.example/acme/train:cu121"

    def executor(s: Settings) -> Executor:
        return ArgoExecutor(s, ArgoClient(cluster.custom_objects_api(), NAMESPACE))

    running = Service(BackgroundServer(settings, executor_factory=executor).start())
    yield running
    running.close()


def workflows(cluster: FakeKubernetes) -> dict[str, Any]:
    return dict(cluster.workflows)


def the_workflow(cluster: FakeKubernetes, commit: str) -> str:
    def find() -> str | None:
        for name, obj in workflows(cluster).items():
            labels = obj["metadata"]["labels"]
            if labels.get("trainops.io/commit") == commit:
                return str(name[1] if isinstance(name, tuple) else name)
        return None

    return wait_for(find, 15, f"the workflow of {commit[:12]}")


def test_one_workflow_whose_nodes_drive_the_run(
    service: Service, forge: Forge, cluster: FakeKubernetes
) -> None:
    sha = forge.commit({"value.json": '{"score": 0.75}\n'}, "on the cluster")
    service.githook(githook_push(forge, sha, delivery="d-1"))
    service.githook(githook_push(forge, sha, delivery="d-2"))  # the same push again
    name = the_workflow(cluster, sha)
    run = service.run_for(sha)
    cluster.set_phase(name, "Running", nodes={"prepare": "Running"}, namespace=NAMESPACE)
    wait_for(
        lambda: service.run(run["id"])["stages"][0]["status"] == "running" or None,
        15,
        "prepare running",
    )
    cluster.gone_next_watch()  # the watch must survive a 410 and re-list
    cluster.expire_watches()
    pending = {
        "phase": "Pending",
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    }
    cluster.set_phase(
        name,
        "Running",
        nodes={"prepare": "Succeeded", "evaluate": pending},
        namespace=NAMESPACE,
    )
    wait_for(
        lambda: "Insufficient nvidia.com/gpu" in str(service.run(run["id"])["stages"]) or None,
        15,
        "the pending reason",
    )
    metrics = {"parameters": [{"name": "metrics", "value": json.dumps({"score": 0.75})}]}
    cluster.set_phase(
        name,
        "Succeeded",
        nodes={"evaluate": {"phase": "Succeeded", "outputs": metrics}},
        namespace=NAMESPACE,
    )
    final = service.wait_final(run["id"])
    assert final["status"] == "succeeded"
    assert final["metrics"] == {"score": 0.75}
    assert [s["status"] for s in service.run(run["id"])["stages"]] == ["succeeded"] * 2
    assert len(workflows(cluster)) == 1
    assert len(service.runs()) == 1
    assert cluster.count("POST *") == 1


def test_a_superseding_push_stops_the_older_workflow(
    service: Service, forge: Forge, cluster: FakeKubernetes
) -> None:
    first = forge.commit({"trainops.yaml": pipeline(SLOW)}, "slow")
    service.githook(githook_push(forge, first))
    old = the_workflow(cluster, first)
    cluster.set_phase(old, "Running", nodes={"prepare": "Running"}, namespace=NAMESPACE)
    old_run = service.wait_status(service.run_for(first)["id"], {"running"})
    second = forge.commit({"trainops.yaml": pipeline()}, "quick")
    service.githook(githook_push(forge, second))
    wait_for(
        lambda: cluster.workflow(old, NAMESPACE)["spec"].get("shutdown") == "Terminate" or None,
        15,
        "the older workflow stopped",
    )
    stopped = {"phase": "Failed", "message": "Stopped with strategy 'Terminate'"}
    cluster.set_phase(old, "Failed", nodes={"prepare": stopped}, namespace=NAMESPACE)
    assert service.wait_final(old_run["id"])["status"] == "superseded"
    new = the_workflow(cluster, second)
    assert new != old
