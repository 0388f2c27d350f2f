"""Render a 50-stage Plan to an Argo Workflow: trainops' pure builders against hera.

Both sides build the same DAG (25 chained stages, 25 fanned out from them, the
same task names and dependencies) in the same process and serialise it to
YAML; trainops' manifest additionally carries what hera's here does not (git
and output artifacts, env, GPU placement), so the comparison favours hera.

    .venv/bin/python benchmarks/bench_render.py               # 30 rounds
    .venv/bin/python benchmarks/bench_render.py --repeat 100

Prints medians (min) in ms and the goals with PASS/MISS; exit status 0 either way.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import yaml

from trainops.config import ArgoSettings
from trainops.manifests.argo import RunLabels, render_workflow, to_yaml
from trainops.models import Plan, PlannedStage, Resources

IMAGE = "registry.example/acme/train:cu121"
GPU_TYPE = "NVIDIA-A100-SXM4-80GB"
N = 50


def _deps(i: int) -> tuple[str, ...]:
    if i == 0:
        return ("data/raw",)
    if i < 25:
        return (f"out/s{i - 1:02d}",)
    return (f"out/s{(i - 25) // 3:02d}", f"out/s{24 - (i - 25) % 5:02d}")


def _producer(path: str) -> str:
    return f"stage_{int(path.removeprefix('out/s')):02d}"


def fifty_stage_plan() -> Plan:
    stages = []
    for i in range(N):
        deps = _deps(i)
        gpu = i % 7 == 3
        stages.append(
            PlannedStage(
                name=f"stage_{i:02d}",
                cmd=f"python step.py {i}",
                wdir=".",
                needs=tuple(dict.fromkeys(_producer(d) for d in deps if d.startswith("out/"))),
                deps=("step.py", *deps),
                outs=(f"out/s{i:02d}",),
                metrics=(f"metrics/s{i:02d}.json",) if i % 10 == 9 else (),
                params={},
                env={"SEED": "7"} if i % 6 == 1 else {},
                gpus=2 if gpu else 0,
                gpu_type=GPU_TYPE if gpu else None,
                resources=Resources(cpu=0.5, memory="1Gi") if i % 6 == 1 else Resources(),
                timeout_s=7200.0 if gpu else None,
                retries=1 if gpu else 0,
                cache=True,
                cache_key=f"{i:064x}",
            )
        )
    return Plan(
        pipeline="big-pipeline",
        repo="https://git.example/acme/big.git",
        commit="72225e2f0c3b4a8e9d1f6a7b8c9d0e1f2a3b4c5d",
        ref="refs/heads/main",
        image=IMAGE,
        data_pull=("data/raw",),
        stages=tuple(stages),
        spec_digest="0" * 64,
    )


DEFAULTS = ArgoSettings(
    gpu_pools={GPU_TYPE: "a100"},
    priority_class="trainops-gpu",
    secret_env={"AWS_SECRET_ACCESS_KEY": "dvc-remote/secret-access-key"},
)
RUN = RunLabels(run_id="r-1", repo="acme/big", merge_request=17)


def trainops_render(plan: Plan) -> str:
    return to_yaml(render_workflow(plan, DEFAULTS, run=RUN, run_key="github:acme/big:pr-17"))


def hera_render(plan: Plan) -> str:
    from hera.workflows import DAG, Container, Workflow

    names = {s.name: s.name.replace("_", "-") for s in plan.stages}
    with Workflow(name="trainops-big-pipeline", namespace="ml-ci", entrypoint="main") as w:
        containers = {
            s.name: Container(
                name=names[s.name],
                image=IMAGE,
                command=["sh", "-c"],
                args=[s.cmd],
                working_dir="/src",
            )
            for s in plan.stages
        }
        with DAG(name="main"):
            tasks: dict[str, Any] = {}
            for s in plan.stages:
                task = containers[s.name](name=names[s.name])
                for need in s.needs:
                    tasks[need] >> task
                tasks[s.name] = task
    text: str = w.to_yaml()
    return text


def timed(fn: Callable[[Plan], str], plan: Plan, repeat: int) -> list[float]:
    fn(plan)  # warm-up: imports, caches
    samples = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn(plan)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    plan = fifty_stage_plan()
    import hera

    print(
        f"python {platform.python_version()}, hera {hera.__version__}, "
        f"PyYAML {yaml.__version__} (libyaml: {yaml.__with_libyaml__}), {args.repeat} rounds"
    )
    ours = timed(trainops_render, plan, args.repeat)
    build = timed(
        lambda p: str(len(render_workflow(p, DEFAULTS, run=RUN, run_key="k"))), plan, args.repeat
    )
    theirs = timed(hera_render, plan, args.repeat)
    m_ours, m_build, m_theirs = (statistics.median(x) for x in (ours, build, theirs))
    print(f"{'case':<44} {'median ms':>10} {'min ms':>8}")
    rows = [
        ("trainops render_workflow + to_yaml", m_ours, min(ours)),
        ("  of which render_workflow (dicts)", m_build, min(build)),
        ("hera Workflow/DAG/Container + to_yaml", m_theirs, min(theirs)),
    ]
    for label, median, low in rows:
        print(f"{label:<44} {median:>10.2f} {low:>8.2f}")
    ratio = m_ours / m_theirs
    print(f"output size: trainops {len(trainops_render(plan))} B, hera {len(hera_render(plan))} B")
    print(f"goal ≤ 50 ms: {m_ours:.1f} ms — {'PASS' if m_ours <= 50 else 'MISS'}")
    print(f"goal ≤ 0.5x hera: {ratio:.2f}x — {'PASS' if ratio <= 0.5 else 'MISS'}")


if __name__ == "__main__":
    main()
