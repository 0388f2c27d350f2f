"""The serving manifests: golden files, quoting, KServe's CRD schema, overrides, injection.

Every manifest rendered here is also validated against the ``v1beta1``
schema of KServe's CRD (``../shared/kserve``), made strict in memory so an
unknown field is an error (``REFERENCE.md`` §4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainops.manifests.serving import (
    ManifestError,
    ServingSpec,
    canonical_quantity,
    dump_yaml,
    label_value,
    render_inference_service,
    render_kustomization,
    resource_name,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "serving"
STORAGE = "s3://mlflow-artifacts/4/5e0c7a9f1b2d4c3e8a6f0d1c2b3a4e5f/artifacts/model"

CPU = ServingSpec(
    model="digits",
    version="7",
    environment="staging",
    namespace="ml-staging",
    storage_uri=STORAGE,
    commit="0123456789abcdef0123456789abcdef01234567",
    run_id="r-20240101-0001",
    mlflow_run_id="5e0c7a9f1b2d4c3e8a6f0d1c2b3a4e5f",
)
GPU = replace(
    CPU,
    model="Digits_CNN",
    version="12",
    environment="prod",
    namespace="ml-prod",
    gpus=1,
    cpu="4",
    memory="16Gi",
    service_account="models-s3-reader",
    deployment_mode="Knative",
)
SHORT_SHA = replace(CPU, version="1", commit="7222500", run_id="1e10", mlflow_run_id=None)
CASES = {"cpu": CPU, "gpu": GPU, "short-sha": SHORT_SHA}


def _string_scalar_styles(text: str) -> list[tuple[str, str | None]]:
    """(value, style) of every scalar that YAML would read as a string, keys included."""
    found = []
    for event in yaml.parse(text):
        if isinstance(event, yaml.ScalarEvent):
            found.append((event.value, event.style))
    return found


# -- golden files ---------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(
    case: str,
    golden: Callable[[Path, str], None],
    crd_errors: Callable[[dict[str, Any]], list[str]],
) -> None:
    text = render_inference_service(CASES[case])
    golden(GOLDEN / case / "inferenceservice.yaml", text)

    manifest = yaml.safe_load(text)
    assert crd_errors(manifest) == []
    # every scalar, keys included, is double-quoted: Go YAML then reads strings as strings
    styles = _string_scalar_styles(text)
    assert styles and all(style == '"' for _, style in styles), styles


def test_the_strict_schema_rejects_unknown_fields(
    crd_errors: Callable[[dict[str, Any]], list[str]],
) -> None:
    """The check the goldens rely on: a typo such as ``modle`` is reported."""
    manifest = yaml.safe_load(render_inference_service(CPU))
    manifest["spec"]["predictor"]["modle"] = manifest["spec"]["predictor"].pop("model")
    assert any("modle" in error for error in crd_errors(manifest))


def test_short_sha_and_version_stay_strings() -> None:
    text = render_inference_service(SHORT_SHA)
    assert '"trainops.io/commit": "7222500"' in text
    assert '"trainops.io/mlflow-model": "digits/1"' in text
    assert '"trainops.io/model-version": "1"' in text
    assert '"trainops.io/run": "1e10"' in text
    annotations = yaml.safe_load(text)["metadata"]["annotations"]
    assert annotations["trainops.io/commit"] == "7222500"
    assert annotations["trainops.io/run"] == "1e10"
    assert "trainops.io/mlflow-run" not in annotations


def test_gpu_limits_and_mlflow_model() -> None:
    manifest = yaml.safe_load(render_inference_service(GPU))
    assert manifest["metadata"]["name"] == "digits-cnn"
    assert manifest["metadata"]["annotations"]["trainops.io/mlflow-model"] == "Digits_CNN/12"
    predictor = manifest["spec"]["predictor"]
    assert predictor["serviceAccountName"] == "models-s3-reader"
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "mlflow"}
    assert model["protocolVersion"] == "v2"
    assert model["storageUri"] == STORAGE
    assert model["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert "nvidia.com/gpu" not in model["resources"]["requests"]

    cpu_only = yaml.safe_load(render_inference_service(CPU))
    assert "nvidia.com/gpu" not in cpu_only["spec"]["predictor"]["model"]["resources"]["limits"]
    assert "serviceAccountName" not in cpu_only["spec"]["predictor"]


def test_quantities_are_canonicalised(crd_errors: Callable[[dict[str, Any]], list[str]]) -> None:
    spec = replace(CPU, cpu="1.5", memory="2048Mi", gpus=2)
    manifest = yaml.safe_load(render_inference_service(spec))
    limits = manifest["spec"]["predictor"]["model"]["resources"]["limits"]
    assert limits == {"cpu": "1500m", "memory": "2Gi", "nvidia.com/gpu": "2"}
    assert crd_errors(manifest) == []


def test_kustomizations(golden: Callable[[Path, str], None]) -> None:
    model = render_kustomization(["inferenceservice.yaml"])
    environment = render_kustomization(["digits", "beta-model", "digits"])
    golden(GOLDEN / "kustomization" / "model" / "kustomization.yaml", model)
    golden(GOLDEN / "kustomization" / "environment" / "kustomization.yaml", environment)
    assert yaml.safe_load(environment)["resources"] == ["beta-model", "digits"]
    assert all(style == '"' for _, style in _string_scalar_styles(environment))
    for bad in (["/etc/passwd"], ["../other"], ["a\nb"], [""], "digits"):
        with pytest.raises(ManifestError, match="not"):
            render_kustomization(bad)


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "models:/digits/7",
        "models:/m-5e0c7a9f1b2d4c3e",
        "runs:/5e0c7a/model",
        "mlflow-artifacts:/4/abc/artifacts/model",
        "/mnt/models",
        "s3://",
    ],
)
def test_non_concrete_storage_uri_is_refused(uri: str) -> None:
    with pytest.raises(
        ManifestError, match=r"spec\.predictor\.model\.storageUri: .*not a concrete"
    ):
        render_inference_service(replace(CPU, storage_uri=uri))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"namespace": "ML_Staging"}, r"metadata\.namespace: 'ML_Staging' is not a DNS label"),
        ({"deployment_mode": "Sideways"}, r"deploymentMode: 'Sideways' is not one of"),
        ({"cpu": "two"}, r"'two' is not a Kubernetes quantity"),
        ({"memory": "-1Gi"}, r"cannot be negative"),
        ({"gpus": -1}, r"gpus: -1 is not a whole number"),
        ({"gpus": True}, r"gpus: True is not a whole number"),
    ],
)
def test_invalid_specs_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        render_inference_service(replace(CPU, **change))


# -- injection ---------------------------------------------------------------------------

HOSTILE = [
    'digits"\n  evil: "yes',
    "digits'}\nspec: {}\n#",
    "{{ 7 * 7 }}{% raw %}",
    "a: b\n- c\n---\nkind: Secret",
    "tab\there \\ back\\slash \\u0041 \x85nel \u2028ls",
    "emoji 😀 and 𝔘nicode",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_values_cannot_break_the_yaml(
    hostile: str, crd_errors: Callable[[dict[str, Any]], list[str]]
) -> None:
    spec = replace(CPU, model=f"digits {hostile}", commit=hostile, run_id=hostile)

    text = render_inference_service(spec)

    documents = list(yaml.safe_load_all(text))
    assert len(documents) == 1
    manifest = documents[0]
    annotations = manifest["metadata"]["annotations"]
    assert annotations["trainops.io/commit"] == hostile
    assert annotations["trainops.io/run"] == hostile
    assert annotations["trainops.io/mlflow-model"] == f"digits {hostile}/7"
    assert list(manifest) == ["apiVersion", "kind", "metadata", "spec"]
    assert manifest["metadata"]["name"] == resource_name(spec.model)
    assert crd_errors(manifest) == []
    assert all(style == '"' for _, style in _string_scalar_styles(text))


# -- templates a team supplies ----------------------------------------------------------

CUSTOM = """\
apiVersion: "serving.kserve.io/v1beta1"
kind: "InferenceService"
metadata:
  name: {{ name | tojson }}
  namespace: {{ namespace | tojson }}
  labels: {{ dict(labels, team="vision") | tojson }}
  annotations: {{ annotations | tojson }}
spec:
  predictor:
    serviceAccountName: {{ service_account | tojson }}
    minReplicas: 2
    model:
      modelFormat: {name: "mlflow", version: "2"}
      protocolVersion: "v2"
      storageUri: {{ storage_uri | tojson }}
      resources: {{ resources | tojson }}
"""


def _templates(tmp_path: Path, text: str) -> Path:
    (tmp_path / "inferenceservice.yaml.j2").write_text(text)
    return tmp_path


def test_template_override(
    tmp_path: Path, crd_errors: Callable[[dict[str, Any]], list[str]]
) -> None:
    text = render_inference_service(GPU, templates_dir=_templates(tmp_path, CUSTOM))

    manifest = yaml.safe_load(text)
    assert manifest["spec"]["predictor"]["minReplicas"] == 2  # numbers stay numbers
    assert '"minReplicas": 2\n' in text
    assert manifest["spec"]["predictor"]["model"]["modelFormat"]["version"] == "2"
    assert manifest["metadata"]["labels"]["team"] == "vision"
    assert crd_errors(manifest) == []
    unquoted = [value for value, style in _string_scalar_styles(text) if style != '"']
    assert unquoted == ["2"]  # minReplicas, an integer


def test_a_directory_without_the_template_falls_back(tmp_path: Path) -> None:
    assert render_inference_service(CPU, templates_dir=tmp_path) == render_inference_service(CPU)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("name: {{ name }}\n", r"'digits' does not go through '\| tojson'"),
        ("name: {{ nmae | tojson }}\n", r"inferenceservice\.yaml\.j2.*'nmae' is undefined"),
        ("name: {{ name | tojson\n", r"inferenceservice\.yaml\.j2, line \d"),
        ("name: {{ name.__class__ | tojson }}", r"__class__.* is unsafe"),
        ("name: {{ range(3) | tojson }}", r"'\| tojson' cannot write range"),
        ("a: [\n", r"rendered invalid YAML"),
        ("- 1\n", r"the document is a list, not a mapping"),
    ],
)
def test_broken_templates_are_refused(tmp_path: Path, template: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message) as info:
        render_inference_service(CPU, templates_dir=_templates(tmp_path, template))
    assert str(tmp_path) in str(info.value)  # says which template


def test_a_template_that_drops_or_changes_values_is_refused(tmp_path: Path) -> None:
    custom = (
        CUSTOM.replace('protocolVersion: "v2"', 'protocolVersion: "v1"')
        .replace("{{ storage_uri | tojson }}", '"models:/digits/7"')
        .replace("  annotations: {{ annotations | tojson }}\n", "")
        .replace("    serviceAccountName: {{ service_account | tojson }}\n", "")
        .replace('{{ dict(labels, team="vision") | tojson }}', '{"bad label": "x y"}')
    )
    with pytest.raises(ManifestError) as info:
        render_inference_service(GPU, templates_dir=_templates(tmp_path, custom))
    message = str(info.value)
    assert "rendered an invalid InferenceService" in message
    assert "spec.predictor.model.protocolVersion: 'v1' is not 'v2'" in message
    assert "spec.predictor.model.storageUri: 'models:/digits/7' is not a concrete URI" in message
    assert "metadata.annotations: missing" in message
    assert "metadata.labels: key 'bad label' is not a label name" in message
    assert "spec.predictor.serviceAccountName: missing" in message


def test_a_template_with_wrong_gpu_limits_is_refused(tmp_path: Path) -> None:
    custom = CUSTOM.replace(
        "{{ resources | tojson }}", '{limits: {cpu: "1.0", "nvidia.com/gpu": 1}}'
    )
    with pytest.raises(ManifestError) as info:
        render_inference_service(GPU, templates_dir=_templates(tmp_path, custom))
    message = str(info.value)
    assert "resources.limits.cpu: '1.0' is not canonical; write '1'" in message
    assert "resources.limits.nvidia.com/gpu: 1 is not a string" in message


# -- helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("digits", "digits"),
        ("Digits_CNN v2", "digits-cnn-v2"),
        ("123-model", "m-123-model"),
        ("__", "m"),
        ("é", "m"),
    ],
)
def test_resource_name(model: str, name: str) -> None:
    assert resource_name(model) == name


def test_long_resource_names_are_cut_and_kept_apart() -> None:
    a, b = resource_name("x" * 70 + "a"), resource_name("x" * 70 + "b")
    assert len(a) == len(b) == 63 and a != b
    assert a.startswith("x" * 54 + "-")


@pytest.mark.parametrize(
    ("text", "value"),
    [("staging", "staging"), ("-Prod env!-", "Prod-env"), ("x" * 62 + "-y", "x" * 62), ("", "")],
)
def test_label_value(text: str, value: str) -> None:
    assert label_value(text) == value


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("1", "1"),
        ("1.5", "1500m"),
        ("0.5", "500m"),
        ("1000m", "1"),
        ("250m", "250m"),
        ("2Gi", "2Gi"),
        ("2048Mi", "2Gi"),
        ("1536Mi", "1536Mi"),
        ("0.5Gi", "512Mi"),
        ("1000M", "1G"),
        ("1024", "1024"),
        ("1e3", "1e3"),
        ("12e2", "1200"),
        ("0", "0"),
        ("0.0000000001", "1n"),
    ],
)
def test_canonical_quantity(text: str, canonical: str) -> None:
    assert canonical_quantity(text) == canonical


def test_dump_yaml_quotes_strings_and_keeps_other_types() -> None:
    data = {"sha": "72225e2", "on": "yes", "n": 3, "f": 1.5, "b": True, "z": None, "l": ["1", 2]}
    text = dump_yaml(data)
    assert yaml.safe_load(text) == data
    assert '"sha": "72225e2"' in text and '"on": "yes"' in text
    assert '\n"n": 3\n' in text and '"b": true' in text and '"z": null' in text
    assert '  - "1"\n  - 2\n' in text
    long = "word " * 40
    assert dump_yaml({"k": long}).count("\n") == 1  # never folded
