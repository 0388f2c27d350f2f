"""trainops.yaml and dvc.yaml → Spec: strict, every problem located by file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainops.errors import SpecError
from trainops.pipelines.loader import load_spec
from trainops.pipelines.schema import SCHEMA_FILE, schema, schema_json
from trainops.pipelines.spec import BootstrapRule, Spec

DATA = Path(__file__).resolve().parents[1] / "data" / "pipelines"


def spec_of(files: dict[str, str], name: str = "repo") -> Spec:
    def read(paths: object) -> dict[str, bytes | None]:
        return {p: files[p].encode() if p in files else None for p in paths}  # type: ignore[attr-defined]

    return load_spec(read, default_name=name)


def problems_of(files: dict[str, str]) -> list[str]:
    with pytest.raises(SpecError) as info:
        spec_of(files)
    return [str(p) for p in info.value.problems]


def test_full_file_parses_into_frozen_values() -> None:
    spec = spec_of({"trainops.yaml": (DATA / "full.trainops.yaml").read_text()})
    assert spec.name == "digits"
    assert [s.name for s in spec.stages] == ["prepare", "train", "evaluate"]
    train = spec.stage("train")
    assert train.cmd == "python train.py --epochs 10 && echo trained"
    assert train.needs == ("prepare",)  # implied: data/prepared is prepare's output
    assert train.gpus == 1 and train.gpu_type == "NVIDIA-GeForce-RTX-3090"
    assert train.resources.cpu == 4 and train.resources.memory == "16Gi"
    assert dict(train.env) == {"SEED": "7", "FAST": "true"}
    assert train.timeout_s == 5400 and train.retries == 1
    assert spec.stage("evaluate").needs == ("train",)
    assert spec.data_pull == ("data/raw",)
    accuracy, f1 = spec.gate
    assert (accuracy.min, accuracy.max_drop, accuracy.relative) == (0.90, 0.005, False)
    assert (f1.max_drop, f1.relative, f1.required) == (0.02, True, False)
    assert spec.promote is not None and spec.promote.environments == ("staging", "prod")


def test_unknown_key_names_line_and_suggests() -> None:
    text = "version: 1\nstages:\n  train:\n    cmd: x\n    retrys: 2\n"
    assert problems_of({"trainops.yaml": text}) == [
        "trainops.yaml:5: stages.train.retrys: unknown key; did you mean 'retries'?"
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = "version: 1\nstages:\n  train:\n    cmd: x\n    gpus: many\n    timeout: soon\n"
    found = problems_of({"trainops.yaml": text})
    assert len(found) == 2
    assert found[0].startswith("trainops.yaml:5: stages.train.gpus:")
    assert found[1].startswith("trainops.yaml:6: stages.train.timeout: 'soon' is not a duration")


def test_wrong_version_and_missing_version() -> None:
    assert problems_of({"trainops.yaml": "version: 2\nstages: {a: {cmd: x}}\n"})[0].startswith(
        "trainops.yaml:1: version:"
    )
    assert problems_of({"trainops.yaml": "stages: {a: {cmd: x}}\n"}) == [
        "trainops.yaml:1: version: required key is missing"
    ]


def test_yaml_syntax_error_has_a_line() -> None:
    text = "version: 1\nstages:\n  train:\n    cmd: [unclosed\n"
    (found,) = problems_of({"trainops.yaml": text})
    assert found.startswith("trainops.yaml:") and "invalid YAML" in found


def test_duplicate_keys_are_rejected() -> None:
    text = "version: 1\nstages:\n  a: {cmd: x}\n  a: {cmd: y}\n"
    assert problems_of({"trainops.yaml": text}) == ["trainops.yaml:4: duplicate key 'a'"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("  a: {outs: [m]}\n", "stage 'a' has no cmd"),
        ("  a: {cmd: x, deps: [../secret]}\n", "must be relative and inside the repository"),
        ("  a: {cmd: x, outs: [/abs]}\n", "must be relative and inside the repository"),
        ("  a: {cmd: 'echo {{workflow.name}}'}\n", "'{{' is not allowed in cmd"),
        ("  a: {cmd: x, needs: [b]}\n", "needs unknown stage 'b'"),
        ("  a: {cmd: x, outs: [m]}\n  b: {cmd: y, outs: [m/sub]}\n", "overlaps output 'm'"),
        ("  a: {cmd: x, env: {'1BAD': v}}\n", "not a valid environment variable name"),
        ("  a: {cmd: x, resources: {memory: lots}}\n", "resources.memory"),
        ("  a: {cmd: x, gpus: -1}\n", "greater than or equal to 0"),
    ],
)
def test_stage_problems(body: str, expected: str) -> None:
    found = problems_of({"trainops.yaml": "version: 1\nstages:\n" + body})
    assert any(expected in p for p in found), found
    assert all(p.startswith("trainops.yaml:3") or p.startswith("trainops.yaml:4") for p in found)


def test_cycle_is_named() -> None:
    text = (
        "version: 1\nstages:\n"
        "  a: {cmd: x, deps: [b.out], outs: [a.out]}\n"
        "  b: {cmd: y, deps: [a.out], outs: [b.out]}\n"
    )
    (found,) = problems_of({"trainops.yaml": text})
    assert found == "trainops.yaml:3: stages form a cycle: a → b → a"


def test_promote_path_must_be_an_output() -> None:
    text = (
        "version: 1\nstages:\n  a: {cmd: x, outs: [model]}\n"
        "promote:\n  model: {name: m, path: elsewhere}\n"
    )
    assert problems_of({"trainops.yaml": text}) == [
        "trainops.yaml:5: model path 'elsewhere' is not an output of any stage; "
        "list it under a stage's outs"
    ]
    ok = spec_of({"trainops.yaml": text.replace("elsewhere", "model/weights.pt")})
    assert ok.promote is not None and ok.promote.model_path == "model/weights.pt"


def test_dvc_stages_are_imported_and_extended() -> None:
    trainops = "version: 1\nstages:\n  train:\n    gpus: 2\n    timeout: 30m\n"
    spec = spec_of({"trainops.yaml": trainops, "dvc.yaml": (DATA / "dvc.yaml").read_text()})
    assert [s.name for s in spec.stages] == ["prepare", "train", "evaluate"]
    train = spec.stage("train")
    assert (train.cmd, train.gpus, train.timeout_s) == ("python src/train.py", 2, 1800)
    assert train.source == "dvc.yaml"
    assert spec.stage("evaluate").metrics == ("metrics.json",)
    assert spec.stage("evaluate").needs == ("prepare", "train")
    assert [(p.file, p.key) for p in spec.stage("train").params] == [("params.yaml", "train")]


def test_dvc_only_repo_runs_as_it_is() -> None:
    spec = spec_of({"dvc.yaml": (DATA / "dvc.yaml").read_text()}, name="My_Repo")
    assert spec.name == "my-repo"
    assert all(s.gpus == 0 for s in spec.stages)
    assert spec.gate == () and spec.promote is None


def test_trainops_may_not_redefine_what_dvc_says() -> None:
    trainops = "version: 1\nstages:\n  train:\n    cmd: other\n"
    found = problems_of({"trainops.yaml": trainops, "dvc.yaml": (DATA / "dvc.yaml").read_text()})
    assert found == [
        "trainops.yaml:4: stage 'train' comes from dvc.yaml; set cmd there (trainops.yaml adds "
        "only GPUs, resources, env, timeout, retries, needs, cache)"
    ]


def test_dvc_yaml_can_be_moved_or_ignored() -> None:
    dvc = (DATA / "dvc.yaml").read_text()
    moved = spec_of({"trainops.yaml": "version: 1\ndvc_yaml: ml/dvc.yaml\n", "ml/dvc.yaml": dvc})
    assert moved.stage("train").deps == ("ml/src/train.py", "ml/data/prepared")
    assert moved.stage("train").wdir == "ml"
    ignored = "version: 1\ndvc_yaml: false\nstages: {solo: {cmd: x}}\n"
    assert [s.name for s in spec_of({"trainops.yaml": ignored, "dvc.yaml": dvc}).stages] == ["solo"]


def test_dvc_templating_and_foreach_are_refused_clearly() -> None:
    foreach = "stages:\n  build:\n    foreach: [a, b]\n    do:\n      cmd: echo ${item}\n"
    assert problems_of({"dvc.yaml": foreach}) == [
        "dvc.yaml:2: stage 'build': dvc.yaml foreach/matrix stages are not supported yet; "
        "write the stages out, or list them in trainops.yaml"
    ]
    templ = "stages:\n  a:\n    cmd: echo ${x}\n"
    assert "templating" in problems_of({"dvc.yaml": templ})[0]


def test_dvc_always_changed_disables_cache() -> None:
    spec = spec_of({"dvc.yaml": "stages:\n  a:\n    cmd: date\n    always_changed: true\n"})
    assert spec.stage("a").cache is False


def test_no_pipeline_file() -> None:
    assert "no trainops.yaml or dvc.yaml" in problems_of({})[0]


def test_committed_schema_is_in_sync() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == schema(), (
        "trainops/pipelines/trainops.schema.json is stale: regenerate it with "
        "`trainops schema > trainops/pipelines/trainops.schema.json`"
    )
    assert SCHEMA_FILE.read_text() == schema_json()


def test_schema_accepts_the_full_example_and_rejects_typos() -> None:
    import jsonschema
    import yaml

    validator = jsonschema.Draft202012Validator(schema())
    good = yaml.safe_load((DATA / "full.trainops.yaml").read_text())
    assert list(validator.iter_errors(good)) == []
    bad = {**good, "stagez": {}}
    assert any("stagez" in e.message for e in validator.iter_errors(bad))


BOOTSTRAP_PIPELINE = (
    "version: 1\nstages:\n"
    "  evaluate: {cmd: x, outs: [eval], metrics: [metrics.json]}\n"
    "gate:\n"
    "  accuracy:\n"
    "    min: 0.8\n"
    "    bootstrap:\n"
    "      predictions: eval/predictions.csv\n"
)


def test_bootstrap_rule_with_defaults_and_in_full() -> None:
    spec = spec_of({"trainops.yaml": BOOTSTRAP_PIPELINE})
    (rule,) = spec.gate
    assert rule.min == 0.8
    assert rule.bootstrap == BootstrapRule("eval/predictions.csv")
    assert (rule.bootstrap.id, rule.bootstrap.label, rule.bootstrap.predicted) == (
        "id",
        "label",
        "predicted",
    )
    assert (rule.bootstrap.margin, rule.bootstrap.confidence) == (0.0, 0.95)
    assert (rule.bootstrap.resamples, rule.bootstrap.seed) == (2000, 0)
    full = (
        "version: 1\nstages:\n"
        "  evaluate: {cmd: x, wdir: ml, metrics: [metrics.json, preds.csv]}\n"
        "gate:\n"
        "  error_rate:\n"
        "    bootstrap: {predictions: ./ml/preds.csv, label: y, predicted: y_hat, id: key,\n"
        "                margin: 0.01, confidence: 0.99, resamples: 5000, seed: 3}\n"
    )
    (rule,) = spec_of({"trainops.yaml": full}).gate
    assert rule.metric == "error_rate"
    assert rule.bootstrap == BootstrapRule(
        "ml/preds.csv", "key", "y", "y_hat", margin=0.01, confidence=0.99, resamples=5000, seed=3
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("      confidence: 1.0\n", "trainops.yaml:9: gate.accuracy.bootstrap.confidence: "),
        ("      confidence: 0.5\n", "trainops.yaml:9: gate.accuracy.bootstrap.confidence: "),
        ("      resamples: 99\n", "trainops.yaml:9: gate.accuracy.bootstrap.resamples: "),
        ("      resamples: 100001\n", "trainops.yaml:9: gate.accuracy.bootstrap.resamples: "),
        ("      margin: -0.01\n", "trainops.yaml:9: gate.accuracy.bootstrap.margin: "),
        ("      predictons: x\n", "did you mean 'predictions'?"),
    ],
)
def test_bootstrap_rule_problems_are_located(line: str, expected: str) -> None:
    (found,) = problems_of({"trainops.yaml": BOOTSTRAP_PIPELINE + line})
    assert found.startswith(expected) or expected in found, found


def test_bootstrap_predictions_must_be_a_stage_output() -> None:
    text = BOOTSTRAP_PIPELINE.replace("eval/predictions.csv", "elsewhere/predictions.csv")
    assert problems_of({"trainops.yaml": text}) == [
        "trainops.yaml:8: predictions file 'elsewhere/predictions.csv' is not an output of "
        "any stage; list it under a stage's outs or metrics"
    ]
    escaping = BOOTSTRAP_PIPELINE.replace("eval/predictions.csv", "../predictions.csv")
    assert problems_of({"trainops.yaml": escaping})[0].startswith("trainops.yaml:8: ")
    metrics_file = BOOTSTRAP_PIPELINE.replace("eval/predictions.csv", "metrics.json")
    assert spec_of({"trainops.yaml": metrics_file}).gate[0].bootstrap is not None


def test_bootstrap_needs_a_per_example_metric_and_distinct_columns() -> None:
    text = BOOTSTRAP_PIPELINE.replace("  accuracy:", "  f1:")
    assert problems_of({"trainops.yaml": text}) == [
        "trainops.yaml:7: gate.f1.bootstrap: a bootstrap rule needs a per-example metric; "
        "'f1' is not one of accuracy, error_rate"
    ]
    same = BOOTSTRAP_PIPELINE + "      predicted: label\n"
    assert "three different columns" in problems_of({"trainops.yaml": same})[0]
