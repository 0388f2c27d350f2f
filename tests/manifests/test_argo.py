"""Plan → Argo Workflow: golden files, Argo's schema made strict, names, safety.

Every rendered workflow is validated against Argo's published JSON Schema
(``../shared/argo/workflow-schema.json``), made strict in memory so unknown
fields are errors (``REFERENCE.md`` §4), and *without* the IntOrString /
Quantity leniency: our own output must use strings there.
"""

from __future__ import annotations

import copy
import importlib
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import MakeRepo, strictify
from trainops.config import ArgoSettings
from trainops.manifests.argo import (
    ArgoRenderError,
    RunLabels,
    metrics_parameters,
    render_workflow,
    template_name,
    template_names,
    to_yaml,
    workflow_name,
)
from trainops.models import Plan
from trainops.orchestrator import plan_target, resolve_target

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "argo"
EXAMPLE = ROOT / "examples" / "digits"
ARGO_SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "argo" / "workflow-schema.json"

REPO_URL = "https://git.example/acme/digits.git"
COMMIT = "72225e2f0c3b4a8e9d1f6a7b8c9d0e1f2a3b4c5d"
RUN_KEY = "github:acme/digits:pr-17:72225e2f0c3b4a8e9d1f6a7b8c9d0e1f2a3b4c5d"
RUN = RunLabels(
    run_id="r-20240101-0001", repo="acme/digits", merge_request=17, branch="feature/cnn_v2"
)
DEFAULTS = ArgoSettings(
    namespace="ml-ci",
    image="registry.example/acme/train:cu121",
    gpu_pools={"NVIDIA-A100-SXM4-80GB": "a100"},
    priority_class="trainops-gpu",
    pending_timeout_s=1800,
    secret_env={
        "MLFLOW_TRACKING_PASSWORD": "mlflow-credentials/password",
        "AWS_SECRET_ACCESS_KEY": "dvc-remote/secret-access-key",
        "AWS_ACCESS_KEY_ID": "dvc-remote/access-key-id",
    },
    labels={"team": "vision"},
)
RAW_DVC = "outs:\n- md5: {md5}.dir\n  size: 100\n  nfiles: 1\n  hash: md5\n  path: raw\n"
GPU_TYPE = "NVIDIA-A100-SXM4-80GB"

Errors = Callable[[dict[str, Any]], list[str]]


# -- the validator ----------------------------------------------------------------------


@cache
def _workflow_validator() -> Any:
    jsonschema = importlib.import_module("jsonschema")  # no stubs needed: used untyped

    defs = copy.deepcopy(json.loads(ARGO_SCHEMA.read_text())["definitions"])
    strictify(defs)  # unknown fields rejected; IntOrString/Quantity stay string-only
    root = {"$ref": "#/definitions/io.argoproj.workflow.v1alpha1.Workflow", "definitions": defs}
    return jsonschema.Draft7Validator(root)


@pytest.fixture(scope="session")
def schema_errors() -> Errors:
    if not ARGO_SCHEMA.is_file():
        pytest.skip(f"Argo schema not found at {ARGO_SCHEMA} (../shared is absent)")
    validator = _workflow_validator()

    def errors(workflow: dict[str, Any]) -> list[str]:
        found = validator.iter_errors(workflow)
        return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in found]

    return errors


# -- plans ------------------------------------------------------------------------------


def _example_files(trainops_yaml: str) -> dict[str, str]:
    files = {
        "trainops.yaml": trainops_yaml,
        "dvc.yaml": (EXAMPLE / "dvc.yaml").read_text(),
        "params.yaml": (EXAMPLE / "params.yaml").read_text(),
        "data/raw.dvc": RAW_DVC.format(md5="a" * 32),
        "data/.gitignore": "/raw\n",
    }
    for path in sorted((EXAMPLE / "src").glob("*.py")):
        files[f"src/{path.name}"] = path.read_text()
    return files


def _pinned(plan: Plan) -> Plan:
    """The plan with a stable repo URL and commit, as golden files need."""
    return replace(plan, repo=REPO_URL, commit=COMMIT, ref="refs/heads/feature/cnn_v2")


_PLANS: dict[str, Plan] = {}


def _plan(make_repo: MakeRepo, files: dict[str, str], name: str) -> Plan:
    """Planned from a real repository once per session (pinned plans do not depend on it)."""
    if name not in _PLANS:
        repo = make_repo(files, name=name)
        _PLANS[name] = _pinned(plan_target(resolve_target(repo, None))[1])
    return _PLANS[name]


def digits_plan(make_repo: MakeRepo) -> Plan:
    return _plan(make_repo, _example_files((EXAMPLE / "trainops.yaml").read_text()), "digits")


def digits_gpu_plan(make_repo: MakeRepo) -> Plan:
    text = (EXAMPLE / "trainops.yaml").read_text()
    gpu = text.replace(
        "gpus: 0            # set to 1 on a GPU host", f"gpus: 1\n    gpu_type: {GPU_TYPE}"
    )
    gpu = gpu.replace("retries: 0", "retries: 2")
    assert gpu != text
    return _plan(make_repo, _example_files(gpu), "digits-gpu")


def fifty_stage_yaml() -> str:
    """25 chained stages, then 25 fanned out from them; some on GPUs, names with ``_``."""
    lines = ["version: 1", "name: big-pipeline", "image: registry.example/acme/train:cu121"]
    lines += ["data:", "  pull: [data/raw]", "stages:"]
    for i in range(50):
        name = f"stage_{i:02d}"
        if i == 0:
            deps = ["data/raw"]
        elif i < 25:
            deps = [f"out/s{i - 1:02d}"]
        else:
            deps = [f"out/s{(i - 25) // 3:02d}", f"out/s{24 - (i - 25) % 5:02d}"]
        lines += [
            f"  {name}:",
            f"    cmd: python step.py {i}",
            f"    deps: [step.py, {', '.join(deps)}]",
        ]
        lines += [f"    outs: [out/s{i:02d}]"]
        if i % 10 == 9:
            lines += [f"    metrics: [metrics/s{i:02d}.json]"]
        if i % 7 == 3:
            lines += [
                "    gpus: 2",
                f"    gpu_type: {GPU_TYPE}",
                "    retries: 1",
                "    timeout: 2h",
            ]
        if i % 6 == 1:
            lines += ["    resources: {cpu: 0.5, memory: 1Gi}", "    env: {SEED: '7', MODE: fast}"]
    return "\n".join(lines) + "\n"


def fifty_plan(make_repo: MakeRepo) -> Plan:
    files = {
        "trainops.yaml": fifty_stage_yaml(),
        "step.py": "print('step')\n",
        "data/raw.dvc": RAW_DVC.format(md5="b" * 32),
        "data/.gitignore": "/raw\n",
    }
    return _plan(make_repo, files, "fifty")


CASES: dict[str, Callable[[MakeRepo], Plan]] = {
    "digits": digits_plan,
    "digits-gpu": digits_gpu_plan,
    "fifty-stages": fifty_plan,
}


def render(plan: Plan, defaults: ArgoSettings = DEFAULTS) -> dict[str, Any]:
    return render_workflow(plan, defaults, run=RUN, run_key=RUN_KEY)


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield f"{path}[{i}]", value
            yield from walk(value, f"{path}[{i}]")


def stage_templates(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in workflow["spec"]["templates"] if "container" in t]


# -- golden files and the schema --------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_and_strictly_valid(
    case: str,
    make_repo: MakeRepo,
    golden: Callable[[Path, str], None],
    schema_errors: Errors,
) -> None:
    workflow = render(CASES[case](make_repo))
    text = to_yaml(workflow)
    golden(GOLDEN / case / "workflow.yaml", text)
    assert yaml.safe_load(text) == workflow
    assert schema_errors(workflow) == []


def test_golden_files_are_checked_without_the_schema(make_repo: MakeRepo) -> None:
    """A fresh clone without ../shared still compares the rendering with the golden file."""
    path = GOLDEN / "digits" / "workflow.yaml"
    assert to_yaml(render(digits_plan(make_repo))) == path.read_text()


def test_a_typo_field_is_rejected_by_the_strict_validator(
    make_repo: MakeRepo, schema_errors: Errors
) -> None:
    workflow = render(digits_gpu_plan(make_repo))
    train = next(t for t in workflow["spec"]["templates"] if t["name"] == "train")
    train["retryStrateg"] = train.pop("retryStrategy")
    train["container"]["resource"] = train["container"].pop("resources")
    errors = schema_errors(workflow)
    assert any("retryStrateg" in e for e in errors), errors
    assert any("'resource'" in e for e in errors), errors


def test_integers_where_the_schema_wants_strings_are_rejected(
    make_repo: MakeRepo, schema_errors: Errors
) -> None:
    workflow = render(digits_gpu_plan(make_repo))
    train = next(t for t in workflow["spec"]["templates"] if t["name"] == "train")
    train["container"]["resources"]["limits"]["nvidia.com/gpu"] = 1
    assert any("is not of type 'string'" in e for e in schema_errors(workflow))


# -- the shape ------------------------------------------------------------------------


def test_the_dag_mirrors_the_plan(make_repo: MakeRepo) -> None:
    plan = digits_plan(make_repo)
    workflow = render(plan)
    spec = workflow["spec"]
    assert spec["entrypoint"] == "main"
    tasks = {t["name"]: t for t in spec["templates"][0]["dag"]["tasks"]}
    assert set(tasks) == {s.name for s in plan.stages}
    assert tasks["evaluate"]["depends"] == "prepare && train"
    assert "depends" not in tasks["prepare"]
    assert spec["arguments"]["parameters"] == [{"name": "commit", "value": COMMIT}]
    assert spec["podGC"] == {"strategy": "OnPodSuccess"}
    assert spec["ttlStrategy"] == {"secondsAfterCompletion": 86400}
    assert spec["serviceAccountName"] == "trainops-workflow"


def test_each_stage_checks_out_the_commit_pulls_data_and_passes_artifacts(
    make_repo: MakeRepo,
) -> None:
    workflow = render(digits_plan(make_repo))
    by_name = {t["name"]: t for t in stage_templates(workflow)}
    for template in by_name.values():
        src = template["inputs"]["artifacts"][0]
        assert src["path"] == "/src"
        assert src["git"] == {"repo": REPO_URL, "revision": "{{workflow.parameters.commit}}"}
        assert template["container"]["workingDir"] == "/src"
        assert template["container"]["command"] == ["sh", "-c"]
    assert by_name["prepare"]["container"]["args"] == [
        "dvc pull data/raw || exit\npython src/prepare.py"
    ]
    assert by_name["train"]["container"]["args"] == ["python src/train.py"]
    evaluate = by_name["evaluate"]
    assert evaluate["inputs"]["artifacts"][1:] == [
        {
            "name": "data-prepared",
            "path": "/src/data/prepared",
            "from": "{{tasks.prepare.outputs.artifacts.data-prepared}}",
        },
        {"name": "model", "path": "/src/model", "from": "{{tasks.train.outputs.artifacts.model}}"},
    ]
    assert evaluate["outputs"]["parameters"] == [
        {"name": "metrics", "valueFrom": {"path": "/src/metrics.json", "default": "{}"}}
    ]
    assert [a["path"] for a in evaluate["outputs"]["artifacts"]] == [
        "/src/predictions.csv",
        "/src/metrics.json",
    ]


def test_a_gpu_stage_gets_placement_pool_and_string_quantities(make_repo: MakeRepo) -> None:
    workflow = render(digits_gpu_plan(make_repo))
    train = next(t for t in stage_templates(workflow) if t["name"] == "train")
    limits = train["container"]["resources"]["limits"]
    assert limits == {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"}
    assert train["container"]["resources"]["requests"] == limits
    assert train["nodeSelector"] == {"nvidia.com/gpu.product": GPU_TYPE}
    assert train["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert train["synchronization"] == {
        "semaphores": [{"configMapKeyRef": {"name": "trainops-gpu-pools", "key": "a100"}}]
    }
    assert train["priorityClassName"] == "trainops-gpu"
    assert train["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    assert train["container"]["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert train["retryStrategy"] == {"limit": "2", "retryPolicy": "OnError"}
    assert train["activeDeadlineSeconds"] == "600"
    assert train["pendingTimeout"] == "1800s"
    prepare = next(t for t in stage_templates(workflow) if t["name"] == "prepare")
    assert not {"nodeSelector", "synchronization", "tolerations", "volumes"} & set(prepare)


def test_no_template_has_a_volume_claim(make_repo: MakeRepo) -> None:
    for case in CASES.values():
        workflow = render(case(make_repo))
        assert "volumeClaimTemplates" not in workflow["spec"]
        for _, value in walk(workflow):
            if isinstance(value, dict):
                assert "persistentVolumeClaim" not in value
                assert "volumeClaimTemplates" not in value


def test_fifty_stages_fan_out_and_sanitise_names(make_repo: MakeRepo) -> None:
    plan = fifty_plan(make_repo)
    workflow = render(plan)
    tasks = workflow["spec"]["templates"][0]["dag"]["tasks"]
    assert len(tasks) == 50 and len(workflow["spec"]["templates"]) == 51
    assert all("_" not in t["name"] for t in tasks)
    by_name = {t["name"]: t for t in tasks}
    assert by_name["stage-30"]["depends"] == "stage-01 && stage-24"
    assert workflow["metadata"]["name"] == workflow_name(plan, RUN_KEY)
    assert workflow["metadata"]["name"].startswith("trainops-big-pipeline-72225e2-")


# -- names ----------------------------------------------------------------------------


def test_template_names_have_no_underscores_and_stay_stable() -> None:
    assert template_name("dvc_pull") == "dvc-pull"
    assert template_name("data/prepared") == "data-prepared"
    assert template_name("__x") == "x"
    long = template_name("a_" * 100)
    assert len(long) <= 128 and long == template_name("a_" * 100)
    mapping = template_names(["dvc-pull", "dvc_pull", "dvc.pull", "main"], reserved=("main",))
    assert mapping["dvc-pull"] == "dvc-pull"
    assert len(set(mapping.values())) == 4
    assert mapping["main"] != "main"
    assert all("_" not in v and len(v) <= 128 for v in mapping.values())
    assert mapping == template_names(["main", "dvc.pull", "dvc_pull", "dvc-pull"], ("main",))


def test_workflow_names_are_rfc1123_bounded_and_deterministic(make_repo: MakeRepo) -> None:
    plan = replace(digits_plan(make_repo), pipeline="My_Very_" + "Long" * 30 + "_Pipeline")
    name = workflow_name(plan, RUN_KEY)
    assert len(name) <= 63
    assert name == name.lower() and "_" not in name
    assert name[0].isalnum() and name[-1].isalnum()
    assert name == workflow_name(plan, RUN_KEY)
    assert name != workflow_name(plan, RUN_KEY + ":attempt-2")
    assert workflow_name(digits_plan(make_repo), RUN_KEY).startswith("trainops-digits-72225e2-")


def test_labels_are_valid_label_values(make_repo: MakeRepo) -> None:
    workflow = render(digits_plan(make_repo))
    labels = workflow["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "trainops"
    assert labels["trainops.io/merge-request"] == "17"
    assert labels["trainops.io/commit"] == COMMIT
    assert labels["team"] == "vision"
    for value in labels.values():
        assert len(value) <= 63 and all(c.isalnum() or c in "_.-" for c in value)
    assert workflow["metadata"]["annotations"]["trainops.io/run-key"] == RUN_KEY


# -- safety ---------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["cmd", "env"])
def test_placeholders_in_user_strings_are_refused(make_repo: MakeRepo, field: str) -> None:
    plan = digits_plan(make_repo)
    stage = plan.stages[0]
    if field == "cmd":
        stage = replace(stage, cmd="echo {{workflow.name}}")
    else:
        stage = replace(stage, env={"X": "{{workflow.serviceAccountName}}"})
    with pytest.raises(ArgoRenderError, match=r"\{\{"):
        render(replace(plan, stages=(stage, *plan.stages[1:])))


def test_secrets_are_only_references(make_repo: MakeRepo) -> None:
    workflow = render(digits_plan(make_repo))
    text = to_yaml(workflow)
    for ref in DEFAULTS.secret_env.values():
        secret, key = ref.split("/")
        literal = [v for p, v in walk(workflow) if p.endswith(".value") and v in (ref, key)]
        assert literal == []
    for template in stage_templates(workflow):
        env = {e["name"]: e for e in template["container"]["env"]}
        for name, ref in DEFAULTS.secret_env.items():
            secret, key = ref.split("/")
            assert env[name] == {
                "name": name,
                "valueFrom": {"secretKeyRef": {"name": secret, "key": key}},
            }
    assert "TOKEN" not in text


def test_forge_tokens_and_malformed_secret_refs_are_refused(make_repo: MakeRepo) -> None:
    plan = digits_plan(make_repo)
    with pytest.raises(ArgoRenderError, match="forge token"):
        render(plan, replace(DEFAULTS, secret_env={"GITHUB_TOKEN": "forge/token"}))
    with pytest.raises(ArgoRenderError, match="secret-name/key"):
        render(plan, replace(DEFAULTS, secret_env={"X": "no-key"}))


def test_an_image_is_required(make_repo: MakeRepo) -> None:
    plan = digits_plan(make_repo)
    assert plan.image is None
    with pytest.raises(ArgoRenderError, match="image"):
        render(plan, replace(DEFAULTS, image=None))


def test_several_metrics_files_get_one_parameter_each(make_repo: MakeRepo) -> None:
    stage = digits_plan(make_repo).stage("evaluate")
    two = replace(stage, metrics=("metrics.json", "eval/metrics_test.json"))
    assert metrics_parameters(two) == {
        "metrics-metrics-json": "metrics.json",
        "metrics-eval-metrics-test-json": "eval/metrics_test.json",
    }


def test_ambiguous_strings_are_quoted_for_go_yaml() -> None:
    text = to_yaml({"a": "72225e2", "b": "1", "c": "on", "d": "plain", "e": "a\nb"})
    assert text == 'a: "72225e2"\nb: "1"\nc: "on"\nd: plain\ne: |-\n  a\n  b\n'


TRICKY = [
    *("😀 x", "\x7f", "\x85a", "é", "a\u2028b", "\ufeffx", "- x", "#x", "x #y", "a: b", "a:"),
    *("? x", "@x", "`x", "%x", "!x", "*x", "&x", "|x", ">x", "'x", '"x', "x\n\ty", "\ta", ""),
    *(" ", "~", "Null", "NO", "y", "0x1F", "1e3", ".5", ".inf", "-.inf", "+1", "1:20", "<<"),
    *("2001-12-14", "=", "x\r\ny", "\\x", "a\\nb", "x\n\n  y", "  lead\n x", "trail \nx"),
    "{{workflow.name}}",
]


@pytest.mark.parametrize("text", TRICKY)
def test_to_yaml_reads_back_exactly(text: str) -> None:
    node = {"k": text, "l": [text, {"m": text}, [], {}], text or "e": [[1, None, True]]}
    assert yaml.safe_load(to_yaml(node)) == node
