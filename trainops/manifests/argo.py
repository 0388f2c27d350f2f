"""A ``Plan`` as an Argo Workflows ``Workflow``: plain dicts from pure builders.

Reference: https://argo-workflows.readthedocs.io/en/latest/fields/ (v4.1), and
``REFERENCE.md`` §2. No Jinja2 here: Argo's own ``{{...}}`` placeholders would
collide with it. Every builder returns a new plain dict; :func:`to_yaml`
serialises the result once, and ``trainops render --backend argo`` prints
exactly that text.

Shape of a rendered workflow::

    Workflow  trainops-<pipeline>-<sha7>-<key6>   (from the run key: a retried
    │                                             POST gets 409, never a 2nd run)
    ├── metadata: namespace, labels (managed-by, run-key, run-id, pipeline,
    │             repo, commit, merge-request, branch), annotations (repo, repo URL,
    │             ref, branch, the whole run key)
    └── spec: entrypoint main, serviceAccountName, podGC OnPodSuccess (failed pods
        │     keep their logs), ttlStrategy, arguments.parameters[commit]
        ├── main: a DAG, one task per stage, ``depends`` from the stage's ``needs``
        └── one container template per stage

Design choices:

- **The exact commit.** Every stage template has a ``git`` input artifact
  ``src`` (``repo: plan.repo``, ``revision: {{workflow.parameters.commit}}``,
  the full sha) at ``/src``; the container runs in ``/src/<wdir>``.
- **The command.** ``command: [sh, -c]`` and ``args: [script]``, one list item:
  ``dvc pull <targets> || exit`` (the ``data.pull`` targets the stage's deps
  touch; run from ``/src``), a newline, then the stage's own command as DVC runs
  it. ``|| exit`` rather than ``&&``, so a command of the form ``a || b`` cannot
  swallow a failed pull. User strings go only there (and into env values), and
  a ``{{`` anywhere in a user string is refused (:class:`ArgoRenderError`):
  Argo substitutes ``{{`` everywhere and has no escape.
- **Outputs to dependants: artifacts, no volumes.** Each ``outs``/``metrics``
  path of a stage is an output artifact, stored in the cluster's default
  artifact repository (S3, GCS or MinIO, configured in Argo, not here). A
  dependant gets the upstream outputs its deps overlap as input artifacts at
  the same path under ``/src`` (``from: {{tasks.<t>.outputs.artifacts.<a>}}``).
  No PersistentVolumeClaim at all, so a ReadWriteOnce volume written by a CPU
  pod on one node cannot strand a GPU pod on another (Multi-Attach,
  unschedulable), and nothing leaks when a run fails.
- **Metrics.** Each metrics file is also an output *parameter* with
  ``valueFrom: {path: /src/<file>, default: "{}"}`` (the default keeps a
  skipped or failed node readable, Argo ≥ 4.0.7). One file: the parameter is
  ``metrics``; more: ``metrics-<file>`` (see :func:`metrics_parameters`).
- **GPUs.** ``limits["nvidia.com/gpu"]`` (a string), a ``nodeSelector`` on
  ``nvidia.com/gpu.product`` when the stage names a ``gpu_type``, the
  ``nvidia.com/gpu`` toleration, a ``Memory`` emptyDir on ``/dev/shm``, the
  pool's semaphore (``synchronization.semaphores``, a list since v4.0) when
  ``gpu_pools`` maps the type, and ``priorityClassName`` — on GPU templates
  only, where preemption matters.
- **Strings where the schema says IntOrString/Quantity**: cpu and memory
  (requests = limits), the GPU count, ``retryStrategy.limit`` and template
  ``activeDeadlineSeconds``. The output validates against Argo's schema with
  no leniency.
- **Unschedulable pods.** Template ``pendingTimeout`` (Argo v4.1, enforced by
  the controller) from ``pending_timeout_s``: a GPU pod nobody can place fails
  instead of waiting forever. The executor also watches pending reasons and
  reports them. Running time is bounded by ``activeDeadlineSeconds``.
- **Retries**: ``retryPolicy: OnError`` (eviction, node loss), not a failed exit.
- **Secrets only by reference**: ``secret_env`` becomes ``secretKeyRef`` env
  entries; a forge token is refused, a literal env value never carries one.
- **Names.** :func:`template_name` is the one sanitiser for template, task,
  artifact and parameter names; :func:`workflow_name` makes the RFC 1123 name.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from trainops.config import ArgoSettings
from trainops.errors import TrainopsError
from trainops.models import Plan, PlannedStage

__all__ = [
    "ArgoRenderError",
    "RunLabels",
    "artifact_names",
    "metrics_parameters",
    "render_workflow",
    "template_name",
    "template_names",
    "to_yaml",
    "workflow_name",
]

API_VERSION = "argoproj.io/v1alpha1"
ENTRYPOINT = "main"
SRC = "/src"
SRC_ARTIFACT = "src"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
MANAGED_BY = "trainops"
LABEL = "trainops.io/"
MAX_TEMPLATE_NAME = 128
MAX_WORKFLOW_NAME = 63
FORGE_TOKENS = frozenset(
    {"GITHUB_TOKEN", "GH_TOKEN", "GITLAB_TOKEN", "GL_TOKEN", "CI_JOB_TOKEN", "FORGE_TOKEN"}
)
"""Env names of code-host tokens: a stage never gets one, not even by reference."""

_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9-]+")
_INVALID_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


class ArgoRenderError(TrainopsError):
    """A plan cannot become a valid, safe Workflow (no image, ``{{`` in a command…)."""


@dataclass(frozen=True)
class RunLabels:
    """Who and what a run is, for labels the executor finds workflows by."""

    run_id: str
    repo: str
    merge_request: int | None = None
    branch: str | None = None


# -- names ------------------------------------------------------------------------------


def _short_hash(text: str, length: int = 6) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def template_name(stage: str) -> str:
    """``stage`` as an Argo template/task/artifact name: ``[a-zA-Z0-9][-a-zA-Z0-9]*``, ≤ 128.

    Why: Argo's template and task names allow no ``_`` (nor ``.``, ``/``),
    while DVC stage names and paths often have them (Metaflow hit the same
    wall). Each run of other characters becomes one ``-`` (``dvc_pull`` →
    ``dvc-pull``, ``data/prepared`` → ``data-prepared``); a name that had to
    be cut to 128 gets a short hash of the original. Distinct inputs can map
    to one name, so a plan's names go through :func:`template_names`, which
    keeps this map and disambiguates collisions.
    """
    name = _INVALID_NAME_CHARS.sub("-", stage).lstrip("-")
    if not name:
        return f"x-{_short_hash(stage)}"
    if len(name) > MAX_TEMPLATE_NAME:
        name = f"{name[: MAX_TEMPLATE_NAME - 7]}-{_short_hash(stage)}"
    return name


def template_names(names: Iterable[str], reserved: Iterable[str] = ()) -> dict[str, str]:
    """A stable, collision-free map of original names → :func:`template_name`.

    A name that is already valid keeps itself; one that changed, and now
    meets another (or a ``reserved`` name such as ``main``), gets ``-<hash6>``
    of its original. Independent of order.
    """
    originals = list(dict.fromkeys(names))
    plain = {n: template_name(n) for n in originals}
    taken = set(reserved) | {n for n in originals if plain[n] == n}
    counts: dict[str, int] = {}
    for name in originals:
        counts[plain[name]] = counts.get(plain[name], 0) + 1
    mapping: dict[str, str] = {}
    for name in originals:
        candidate = plain[name]
        unchanged = candidate == name and name not in set(reserved)
        if not unchanged and (candidate in taken or counts[candidate] > 1):
            stem = candidate[: MAX_TEMPLATE_NAME - 7].rstrip("-") or "x"
            candidate = f"{stem}-{_short_hash(name)}"
        mapping[name] = candidate
    return mapping


def _dns_label(text: str) -> str:
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", text.lower())).strip("-")


def workflow_name(plan: Plan, run_key: str) -> str:
    """``trainops-<pipeline>-<sha7>-<key6>``: lowercase RFC 1123, ≤ 63, from the run key.

    The same run key always names the same Workflow, so a retried create gets
    409 and the executor adopts the existing run instead of starting a second.
    """
    sha = _dns_label(plan.commit)[:7] or "nosha"
    key = _short_hash(run_key)
    room = MAX_WORKFLOW_NAME - len("trainops---") - len(sha) - len(key)
    pipeline = _dns_label(plan.pipeline)[:room].strip("-") or "pipeline"
    return f"trainops-{pipeline}-{sha}-{key}"


def _label_value(text: str) -> str:
    """A Kubernetes label value: ≤ 63 of ``[A-Za-z0-9_.-]``, alphanumeric at both ends."""
    value = _INVALID_LABEL_CHARS.sub("-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)


def artifact_names(plan: Plan) -> dict[str, str]:
    """Every output path of the plan (outs and metrics) → its artifact name, plan-wide unique."""
    paths = [p for s in plan.stages for p in (*s.outs, *s.metrics)]
    return template_names(paths, reserved=(SRC_ARTIFACT,))


def metrics_parameters(stage: PlannedStage) -> dict[str, str]:
    """Output parameter name → metrics file: ``metrics`` for one file, ``metrics-<file>`` else."""
    if len(stage.metrics) == 1:
        return {"metrics": stage.metrics[0]}
    names = template_names(stage.metrics)
    return {f"metrics-{names[path]}": path for path in stage.metrics}


# -- checks -----------------------------------------------------------------------------


def _literal(text: str, what: str) -> str:
    """``text`` unchanged, or an error if Argo would substitute part of it."""
    if "{{" in text:
        raise ArgoRenderError(
            f"{what} contains '{{{{', which Argo would substitute (there is no escape): {text!r}"
        )
    return text


def _src_path(path: str) -> str:
    return SRC if path in ("", ".") else f"{SRC}/{path.strip('/')}"


def _overlaps(a: str, b: str) -> bool:
    def inside(p: str, parent: str) -> bool:
        return parent == "." or p == parent or p.startswith(parent.rstrip("/") + "/")

    return inside(a, b) or inside(b, a)


def _cpu(cores: float) -> str:
    if float(cores).is_integer():
        return str(int(cores))
    return f"{round(cores * 1000)}m"


# -- builders ---------------------------------------------------------------------------


def _script(stage: PlannedStage, pulls: tuple[str, ...]) -> str:
    """``sh -c`` text: pull the DVC data the stage reads, then the stage's own command."""
    cmd = _literal(stage.cmd, f"the command of stage {stage.name!r}")
    targets = [t for t in pulls if any(_overlaps(dep, t) for dep in stage.deps)]
    if not targets:
        return cmd
    pull = "dvc pull " + " ".join(shlex.quote(_literal(t, "a data.pull target")) for t in targets)
    if stage.wdir not in ("", "."):
        pull = f"(cd {SRC} && {pull})"
    return f"{pull} || exit\n{cmd}"


def _env(stage: PlannedStage, defaults: ArgoSettings) -> list[dict[str, Any]]:
    """Stage env as literals, credentials as ``secretKeyRef`` only.

    Reference: https://argo-workflows.readthedocs.io/en/latest/fields/#envvar
    """
    env: list[dict[str, Any]] = []
    for name, value in stage.env.items():
        if name in defaults.secret_env:
            raise ArgoRenderError(
                f"stage {stage.name!r} sets env {name!r}, which is a secret reference in the "
                "settings; remove it from the pipeline"
            )
        if name.upper() in FORGE_TOKENS:
            raise ArgoRenderError(f"stage {stage.name!r} sets env {name!r}: no forge tokens")
        env.append({"name": _literal(name, "an env name"), "value": _literal(value, name)})
    for name, ref in sorted(defaults.secret_env.items()):
        if name.upper() in FORGE_TOKENS:
            raise ArgoRenderError(f"secret_env {name!r} is a forge token; stages never get one")
        secret, sep, key = ref.partition("/")
        if not (sep and secret and key) or not _ENV_NAME.fullmatch(name):
            raise ArgoRenderError(f"secret_env {name!r}: expected 'secret-name/key', got {ref!r}")
        env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    return env


def _resources(stage: PlannedStage) -> dict[str, Any]:
    """Requests = limits, every quantity a string (the schema's ``Quantity``)."""
    limits: dict[str, str] = {}
    if stage.resources.cpu is not None:
        limits["cpu"] = _cpu(stage.resources.cpu)
    if stage.resources.memory is not None:
        limits["memory"] = _literal(str(stage.resources.memory), "a memory quantity")
    if stage.gpus > 0:
        limits[GPU_RESOURCE] = str(stage.gpus)
    if not limits:
        return {}
    return {"requests": dict(limits), "limits": limits}


def stage_container(
    stage: PlannedStage, image: str, pulls: tuple[str, ...], defaults: ArgoSettings
) -> dict[str, Any]:
    """The stage's container.

    Reference: https://argo-workflows.readthedocs.io/en/latest/fields/#container
    """
    container: dict[str, Any] = {
        "image": image,
        "command": ["sh", "-c"],
        "args": [_script(stage, pulls)],
        "workingDir": _src_path(_literal(stage.wdir, "a stage wdir")),
    }
    env = _env(stage, defaults)
    if env:
        container["env"] = env
    resources = _resources(stage)
    if resources:
        container["resources"] = resources
    if stage.gpus > 0:
        container["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    return container


def stage_template(
    plan: Plan,
    stage: PlannedStage,
    *,
    names: Mapping[str, str],
    artifacts: Mapping[str, str],
    image: str,
    defaults: ArgoSettings,
) -> dict[str, Any]:
    """One stage as a container template: source at the commit, inputs, outputs, GPU placement.

    Reference: https://argo-workflows.readthedocs.io/en/latest/fields/#template
    """
    inputs: list[dict[str, Any]] = [
        {
            "name": SRC_ARTIFACT,
            "path": SRC,
            "git": {"repo": plan.repo, "revision": "{{workflow.parameters.commit}}"},
        }
    ]
    for upstream in stage.needs:
        producer = plan.stage(upstream)
        for path in (*producer.outs, *producer.metrics):
            if any(_overlaps(dep, path) for dep in stage.deps):
                inputs.append(
                    {
                        "name": artifacts[path],
                        "path": _src_path(path),
                        "from": (
                            f"{{{{tasks.{names[upstream]}.outputs.artifacts.{artifacts[path]}}}}}"
                        ),
                    }
                )
    template: dict[str, Any] = {"name": names[stage.name], "inputs": {"artifacts": inputs}}

    outputs: dict[str, Any] = {}
    out_paths = list(dict.fromkeys((*stage.outs, *stage.metrics)))
    if out_paths:
        outputs["artifacts"] = [
            {"name": artifacts[p], "path": _src_path(_literal(p, "an output path"))}
            for p in out_paths
        ]
    if stage.metrics:
        outputs["parameters"] = [
            {"name": name, "valueFrom": {"path": _src_path(path), "default": "{}"}}
            for name, path in metrics_parameters(stage).items()
        ]
    if outputs:
        template["outputs"] = outputs

    if stage.gpus > 0:
        if stage.gpu_type:
            gpu_type = _literal(stage.gpu_type, "a gpu_type")
            template["nodeSelector"] = {GPU_PRODUCT_LABEL: gpu_type}
        template["tolerations"] = [
            {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
        ]
        if stage.gpu_type and stage.gpu_type in defaults.gpu_pools:
            template["synchronization"] = {
                "semaphores": [
                    {
                        "configMapKeyRef": {
                            "name": defaults.gpu_pool_configmap,
                            "key": defaults.gpu_pools[stage.gpu_type],
                        }
                    }
                ]
            }
        if defaults.priority_class:
            template["priorityClassName"] = defaults.priority_class
        template["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    if stage.retries > 0:
        template["retryStrategy"] = {"limit": str(stage.retries), "retryPolicy": "OnError"}
    if stage.timeout_s is not None:
        template["activeDeadlineSeconds"] = str(max(1, int(-(-stage.timeout_s // 1))))
    if defaults.pending_timeout_s > 0:
        template["pendingTimeout"] = f"{int(defaults.pending_timeout_s)}s"
    template["container"] = stage_container(stage, image, plan.data_pull, defaults)
    return template


def dag_task(stage: PlannedStage, names: Mapping[str, str]) -> dict[str, Any]:
    """One DAG task; ``depends`` is the ``&&`` of the stage's ``needs`` (all must succeed).

    Reference: https://argo-workflows.readthedocs.io/en/latest/fields/#dagtask
    """
    task: dict[str, Any] = {"name": names[stage.name], "template": names[stage.name]}
    if stage.needs:
        task["depends"] = " && ".join(names[n] for n in stage.needs)
    return task


def _metadata(
    plan: Plan, defaults: ArgoSettings, run: RunLabels, run_key: str, name: str
) -> dict[str, Any]:
    labels: dict[str, str] = dict(defaults.labels)
    labels.update(
        {
            "app.kubernetes.io/managed-by": MANAGED_BY,
            f"{LABEL}run-key": _label_value(run_key),
            f"{LABEL}run-id": _label_value(run.run_id),
            f"{LABEL}repo": _label_value(run.repo),
            f"{LABEL}pipeline": _label_value(plan.pipeline),
            f"{LABEL}commit": _label_value(plan.commit[:40]),
        }
    )
    if run.merge_request is not None:
        labels[f"{LABEL}merge-request"] = str(run.merge_request)
    if run.branch:
        labels[f"{LABEL}branch"] = _label_value(run.branch)
    annotations = {
        f"{LABEL}repo": run.repo,
        f"{LABEL}repo-url": plan.repo,
        f"{LABEL}run-key": run_key,
    }
    if plan.ref:
        annotations[f"{LABEL}ref"] = plan.ref
    if run.branch:
        annotations[f"{LABEL}branch"] = run.branch
    return {
        "name": name,
        "namespace": defaults.namespace,
        "labels": {k: v for k, v in labels.items() if v},
        "annotations": annotations,
    }


def render_workflow(
    plan: Plan, defaults: ArgoSettings, *, run: RunLabels, run_key: str
) -> dict[str, Any]:
    """The whole Workflow for ``plan`` as plain dicts (pure: no cluster, no I/O).

    Reference: https://argo-workflows.readthedocs.io/en/latest/fields/#workflow
    Raises :class:`ArgoRenderError` when the plan cannot run safely on Argo.
    """
    image = plan.image or defaults.image
    if not image:
        raise ArgoRenderError(
            f"pipeline {plan.pipeline!r} names no image and argo.image is not set"
        )
    _literal(image, "the image")
    _literal(plan.repo, "the repository URL")
    _literal(plan.commit, "the commit")
    if not plan.stages:
        raise ArgoRenderError(f"pipeline {plan.pipeline!r} has no stages")
    names = template_names((s.name for s in plan.stages), reserved=(ENTRYPOINT,))
    artifacts = artifact_names(plan)
    name = workflow_name(plan, run_key)
    templates = [
        {"name": ENTRYPOINT, "dag": {"tasks": [dag_task(s, names) for s in plan.stages]}},
        *(
            stage_template(
                plan, s, names=names, artifacts=artifacts, image=image, defaults=defaults
            )
            for s in plan.stages
        ),
    ]
    spec: dict[str, Any] = {"entrypoint": ENTRYPOINT}
    if defaults.service_account:
        spec["serviceAccountName"] = defaults.service_account
    spec["podGC"] = {"strategy": "OnPodSuccess"}
    spec["ttlStrategy"] = {"secondsAfterCompletion": int(defaults.ttl_after_completion_s)}
    spec["arguments"] = {"parameters": [{"name": "commit", "value": plan.commit}]}
    spec["templates"] = templates
    return {
        "apiVersion": API_VERSION,
        "kind": "Workflow",
        "metadata": _metadata(plan, defaults, run, run_key, name),
        "spec": spec,
    }


# -- serialisation ----------------------------------------------------------------------

_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9 _./:=+&-]*")
_YAML_WORDS = frozenset(
    ["y", "n", "yes", "no", "on", "off", "true", "false", "null"]
)  # YAML 1.1 booleans and null (Go readers), compared lowercased
_UNPRINTABLE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")
"""What JSON leaves raw but YAML reads as a break or refuses (JSON escapes < 0x20 itself)."""
_PRINTABLE = re.compile(r"[\t\n\x20-\x7e\u00a0-\ud7ff\ue000-\ufffd]*")


def _scalar(value: Any) -> str:
    """One scalar: plain only when no YAML 1.1 or 1.2 reader can misread it, else JSON-quoted.

    A string starting with a digit is always quoted: Go YAML reads a short sha
    such as ``72225e2`` as a float. JSON's escapes are all valid YAML escapes.
    """
    if isinstance(value, str):
        if (
            _PLAIN.fullmatch(value)
            and value.lower() not in _YAML_WORDS
            and not value.endswith((" ", ":"))
            and ": " not in value
        ):
            return value
        quoted = json.dumps(value, ensure_ascii=False)
        return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    raise TypeError(f"cannot serialise {type(value).__name__} in a workflow")


def _literal_block(value: str) -> bool:
    """Multi-line text shown as ``|-`` when it reads back byte for byte."""
    return (
        "\n" in value
        and not value.endswith("\n")
        and not value.startswith((" ", "\t", "\n"))
        and "\r" not in value
        and all(line == line.rstrip() for line in value.split("\n"))
        and _PRINTABLE.fullmatch(value) is not None
        and _UNPRINTABLE.search(value) is None
    )


def _emit(node: Any, indent: str, out: list[str], first: str) -> None:
    """Append the lines of ``node``; ``first`` prefixes its first line (``- `` in lists)."""
    if isinstance(node, Mapping):
        if not node:
            out.append(f"{first}{{}}")
            return
        lead = first
        for key, value in node.items():
            _entry(f"{lead}{_scalar(str(key))}:", value, indent, out)
            lead = indent
    elif isinstance(node, list | tuple):
        if not node:
            out.append(f"{first}[]")
            return
        lead = first
        for item in node:
            _emit(item, indent + "  ", out, f"{lead}- ")
            lead = indent
    elif isinstance(node, str) and _literal_block(node):
        out.append(f"{first}|-")
        out.extend(f"{indent}  {line}" if line else "" for line in node.split("\n"))
    else:
        out.append(f"{first}{_scalar(node)}")


def _entry(head: str, value: Any, indent: str, out: list[str]) -> None:
    if isinstance(value, Mapping) and value:
        out.append(head)
        _emit(value, indent + "  ", out, indent + "  ")
    elif isinstance(value, list | tuple) and value:
        out.append(head)
        _emit(value, indent, out, indent)
    else:
        _emit(value, indent, out, head + " ")


def to_yaml(workflow: Mapping[str, Any]) -> str:
    """The one serialisation of a rendered workflow: block YAML, keys in build order.

    A small emitter for plain dicts, lists and scalars (PyYAML's representer
    costs 20 ms for a 50-stage workflow): strings are plain only when every
    YAML reader agrees they are strings, else JSON-quoted; multi-line scripts
    are literal blocks. Tests check that ``yaml.safe_load`` gives the dict back.
    """
    out: list[str] = []
    _emit(workflow, "", out, "")
    return "\n".join(out) + "\n"
