"""One Plan, two backends, one stage graph: the local runner and Argo agree on what
runs after what."""

from __future__ import annotations

import threading
import time

from tests.conftest import MakeRepo
from trainops.config import ArgoSettings, Settings
from trainops.gpu_runners.runner import LocalRunner
from trainops.manifests.argo import ENTRYPOINT, RunLabels, render_workflow, template_names
from trainops.models import StageResult
from trainops.orchestrator import plan_target, resolve_target
from trainops.protocols import SilentObserver

PIPELINE = """\
version: 1
name: graph
stages:
  get_data: {cmd: 'echo a > a.txt', deps: [seed.txt], outs: [a.txt]}
  features: {cmd: 'cat a.txt > f.txt', deps: [a.txt], outs: [f.txt]}
  labels: {cmd: 'cat a.txt > l.txt', deps: [a.txt], outs: [l.txt]}
  train: {cmd: 'cat f.txt l.txt > m.txt', deps: [f.txt, l.txt], outs: [m.txt]}
  report: {cmd: 'echo r', deps: [seed.txt], needs: [train]}
"""


class Order(SilentObserver):
    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.lock = threading.Lock()

    def stage_started(self, stage: str, attempt: int, gpus: tuple[str, ...]) -> None:
        with self.lock:
            self.started[stage] = time.monotonic()

    def stage_finished(self, result: StageResult) -> None:
        with self.lock:
            self.finished[result.name] = time.monotonic()


def test_local_and_argo_share_the_graph(settings: Settings, make_repo: MakeRepo) -> None:
    repo = make_repo({"trainops.yaml": PIPELINE, "seed.txt": "1\n"})
    _spec, plan = plan_target(resolve_target(repo, None))
    expected = {s.name: set(s.needs) for s in plan.stages}
    assert expected["train"] == {"features", "labels"} and expected["report"] == {"train"}

    defaults = ArgoSettings(image="registry.example/train:1")
    workflow = render_workflow(plan, defaults, run=RunLabels("r", "repo"), run_key="k")
    names = template_names((s.name for s in plan.stages), (ENTRYPOINT,))
    back = {v: k for k, v in names.items()}
    dag = next(t for t in workflow["spec"]["templates"] if t["name"] == ENTRYPOINT)["dag"]
    argo = {
        back[t["name"]]: {back[d] for d in t.get("depends", "").split(" && ") if d}
        for t in dag["tasks"]
    }
    assert argo == expected

    order = Order()
    runner = LocalRunner(settings)
    result = runner.execute(
        plan, run_id="graph", use_cache=False, observer=order, cancel=threading.Event()
    )
    assert result.status.value == "succeeded"
    for stage, needs in expected.items():
        for need in needs:
            assert order.started[stage] >= order.finished[need]
