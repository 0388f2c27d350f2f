"""The KServe ``InferenceService`` for a registered MLflow model, and kustomizations.

Reference: https://kserve.github.io/website/latest/reference/api/ (``v1beta1``),
and ``REFERENCE.md`` §5–6. The manifest comes from a Jinja2 template the
deployment repository or the config may override (``templates_dir``), so:

1. the environment is sandboxed, with ``StrictUndefined``;
2. every ``{{ ... }}`` must go through ``| tojson`` (enforced: other output is
   refused), so a model name or commit holding quotes, newlines or ``{{``
   stays one string;
3. the text is parsed back and checked against the ``ServingSpec``
   (``ManifestError`` lists every problem, with its field path);
4. it is re-dumped by ``dump_yaml``: block style, every string
   double-quoted, because Go YAML (kubectl, kustomize, Argo CD, Flux) reads
   a bare ``7222500`` or ``72225e2`` commit as a number.

Keys are quoted as well: one rule, and Go YAML 1.1 readers take bare keys such
as ``on`` or ``y`` (possible label or annotation names) for booleans.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from hashlib import sha256
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from jinja2 import (
    ChoiceLoader,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    TemplateError,
    Undefined,
)
from jinja2.sandbox import SandboxedEnvironment

from trainops.errors import TrainopsError

__all__ = [
    "ManifestError",
    "ServingSpec",
    "canonical_quantity",
    "dump_yaml",
    "label_value",
    "render_inference_service",
    "render_kustomization",
    "resource_name",
]

INFERENCE_SERVICE_TEMPLATE = "inferenceservice.yaml.j2"
API_VERSION = "serving.kserve.io/v1beta1"
GPU_RESOURCE = "nvidia.com/gpu"
DEPLOYMENT_MODES = frozenset({"Standard", "Knative", "RawDeployment", "Serverless"})
"""KServe 0.15 renamed RawDeployment → Standard and Serverless → Knative; both spellings work."""
STORAGE_SCHEMES = frozenset(
    {"s3", "gs", "pvc", "file", "https", "http", "hdfs", "webhdfs", "oci", "hf"}
)
"""URI schemes KServe's storage initializer reads; ``models:/`` and ``runs:/`` are MLflow's."""


class ManifestError(TrainopsError):
    """A manifest cannot be rendered, or what was rendered is not a valid manifest."""


@dataclass(frozen=True)
class ServingSpec:
    """What to serve where: one registered model version in one environment."""

    model: str
    """Registered model name; the InferenceService is named ``resource_name(model)``."""
    version: str
    environment: str
    namespace: str
    storage_uri: str
    """Concrete model location (``ModelVersionRef.download_uri``), never ``models:/``."""
    commit: str
    run_id: str
    mlflow_run_id: str | None = None
    gpus: int = 0
    cpu: str = "1"
    memory: str = "2Gi"
    service_account: str | None = None
    """Service account holding the storage credentials (e.g. an S3 reader)."""
    deployment_mode: str = "Standard"


# -- names and quantities ----------------------------------------------------------

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


def resource_name(model: str) -> str:
    """The InferenceService name for a registered model name.

    KServe names Services and Deployments after it, so it must be a DNS label:
    at most 63 characters of ``[a-z0-9-]``, starting with a letter (RFC 1035,
    which also satisfies RFC 1123). MLflow allows almost anything in model names
    (``Digits_CNN v2``), so other characters become ``-``, a leading digit gets
    ``m-``, and a name cut to fit ends in 8 hex digits of its hash so two long
    names that share a prefix stay apart.
    """
    name = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    if not name[:1].isalpha():
        name = f"m-{name}".rstrip("-")
    if len(name) > 63:
        digest = sha256(model.encode()).hexdigest()[:8]
        name = f"{name[:54].rstrip('-')}-{digest}"
    return name


def label_value(text: str) -> str:
    """``text`` as a Kubernetes label value: ≤ 63 of ``[A-Za-z0-9_.-]``, alphanumeric ends."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)
    value = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)
    return re.sub(r"[^A-Za-z0-9]+$", "", value[:63])


_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>[eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?"
)
_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12}
_DECIMAL_SUFFIXES |= {"P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}


def canonical_quantity(text: str) -> str:
    """``text`` in the form the Kubernetes API server writes back (``1.5`` → ``1500m``).

    The API server stores canonical quantities, so a manifest holding another
    spelling (``0.5``, ``2048Mi``) differs from the live object and Argo CD
    reports drift forever. Rules of apimachinery's ``Quantity``: the suffix
    family is kept (binary ``Ki``…, decimal ``m``/``k``/…, exponent ``eN``),
    the largest unit that keeps an integer is chosen, values are rounded up
    to nano units, and binary values below 1024 or not whole are written
    decimally.
    """
    match = _QUANTITY.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ManifestError(f"{text!r} is not a Kubernetes quantity (e.g. '500m', '2', '4Gi')")
    suffix = match["suffix"] or ""
    try:
        number = Decimal(match["number"])
        if suffix in _BINARY_SUFFIXES:
            value = number * 2 ** _BINARY_SUFFIXES[suffix]
        elif suffix in _DECIMAL_SUFFIXES:
            value = number.scaleb(_DECIMAL_SUFFIXES[suffix])
        else:
            value = number.scaleb(int(suffix[1:]))
    except InvalidOperation as exc:
        raise ManifestError(f"{text!r} is not a Kubernetes quantity") from exc
    if value < 0:
        raise ManifestError(f"{text!r}: a resource quantity cannot be negative")
    nanos = int(value.scaleb(9).to_integral_value(ROUND_CEILING))
    if nanos == 0:
        return "0"
    if suffix in _BINARY_SUFFIXES and nanos % 10**9 == 0 and nanos >= 1024 * 10**9:
        whole, power = nanos // 10**9, 0
        while whole % 1024 == 0 and power < 60:
            whole, power = whole // 1024, power + 10
        unit = {v: k for k, v in _BINARY_SUFFIXES.items()}.get(power, "")
        return f"{whole}{unit}"
    exponent = -9
    while nanos % 1000 == 0 and exponent < 18:
        nanos, exponent = nanos // 1000, exponent + 3
    if suffix[:1] in ("e", "E"):
        return f"{nanos}e{exponent}" if exponent else str(nanos)
    unit = {v: k for k, v in _DECIMAL_SUFFIXES.items()}[exponent]
    return f"{nanos}{unit}"


# -- YAML out ------------------------------------------------------------------------


class _QuotingDumper(yaml.SafeDumper):
    """Block style, lists indented under their key, no anchors, every ``str`` in ``"``."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _quoted_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"')


_QuotingDumper.add_representer(str, _quoted_str)
_QuotingDumper.add_representer(tuple, yaml.SafeDumper.represent_list)


def dump_yaml(data: Any) -> str:
    """``data`` as block-style YAML where every string, keys included, is double-quoted.

    Numbers, booleans and null stay plain, so they keep their type; key order
    is kept; no line is folded.
    """
    return yaml.dump(
        data,
        Dumper=_QuotingDumper,
        default_flow_style=False,
        sort_keys=False,
        allow_unicode=True,
        width=2**31 - 1,
    )


# -- templates -----------------------------------------------------------------------


class _Json(str):
    """Text produced by the ``tojson`` filter: the only output templates may emit."""


_SURROGATE_PAIR = re.compile(r"(?<!\\)((?:\\\\)*)\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")


def _tojson(value: Any) -> _Json:
    """``value`` as JSON that YAML reads back unchanged.

    Unlike Jinja's own filter: no HTML escapes (this is not HTML), keys
    sorted, and characters beyond U+FFFF written as YAML's ``\\UXXXXXXXX``,
    because PyYAML reads JSON's surrogate pairs as two broken characters.
    """

    def join(match: re.Match[str]) -> str:
        high, low = int(match[2], 16), int(match[3], 16)
        return f"{match[1]}\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08X}"

    if isinstance(value, Undefined):
        value._fail_with_undefined_error()  # raises: an unknown name or an unsafe attribute
    try:
        text = json.dumps(value, ensure_ascii=True, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"'| tojson' cannot write {type(value).__name__}: {exc}") from exc
    return _Json(_SURROGATE_PAIR.sub(join, text))


def _only_json(value: Any) -> Any:
    if isinstance(value, _Json):
        return value
    raise ManifestError(f"template output {str(value)[:40]!r} does not go through '| tojson'")


def _environment(templates_dir: Path | None) -> SandboxedEnvironment:
    loaders: list[Any] = []
    if templates_dir is not None:
        loaders.append(FileSystemLoader(str(templates_dir)))
    loaders.append(PackageLoader("trainops.manifests", "templates"))
    env = SandboxedEnvironment(
        loader=ChoiceLoader(loaders),
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_only_json,
    )
    env.filters["tojson"] = _tojson
    return env


def _context(spec: ServingSpec) -> dict[str, Any]:
    if isinstance(spec.gpus, bool) or not isinstance(spec.gpus, int) or spec.gpus < 0:
        raise ManifestError(f"gpus: {spec.gpus!r} is not a whole number of GPUs")
    requests = {"cpu": canonical_quantity(spec.cpu), "memory": canonical_quantity(spec.memory)}
    limits = dict(requests)
    if spec.gpus:
        limits[GPU_RESOURCE] = str(spec.gpus)
    name = resource_name(spec.model)
    annotations = {
        "serving.kserve.io/deploymentMode": spec.deployment_mode,
        "trainops.io/mlflow-model": f"{spec.model}/{spec.version}",
        "trainops.io/commit": spec.commit,
        "trainops.io/run": spec.run_id,
    }
    if spec.mlflow_run_id is not None:
        annotations["trainops.io/mlflow-run"] = spec.mlflow_run_id
    return {
        "name": name,
        "namespace": spec.namespace,
        "labels": {
            "app.kubernetes.io/name": name,
            "app.kubernetes.io/managed-by": "trainops",
            "trainops.io/environment": label_value(spec.environment),
            "trainops.io/model-version": label_value(spec.version),
        },
        "annotations": annotations,
        "storage_uri": spec.storage_uri,
        "resources": {"requests": requests, "limits": limits},
        "service_account": spec.service_account,
        "spec": asdict(spec),
    }


def render_inference_service(spec: ServingSpec, *, templates_dir: Path | None = None) -> str:
    """The ``inferenceservice.yaml`` for ``spec``: rendered, checked, every string quoted.

    ``templates_dir`` holds a team's own ``inferenceservice.yaml.j2``; without
    one there, the packaged template is used.
    """
    subject = f"{spec.model}/{spec.version} in {spec.environment}"
    origin = INFERENCE_SERVICE_TEMPLATE
    try:
        template = _environment(templates_dir).get_template(INFERENCE_SERVICE_TEMPLATE)
        origin = template.filename or origin
        text = template.render(_context(spec))
    except TemplateError as exc:
        origin = getattr(exc, "filename", None) or origin
        line = getattr(exc, "lineno", None)
        at = f"{origin}, line {line}" if line else origin
        raise ManifestError(f"rendering {at} for {subject}: {exc}") from exc
    except ManifestError as exc:
        raise ManifestError(f"rendering {origin} for {subject}: {exc}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{origin} for {subject} rendered invalid YAML: {exc}") from exc
    problems = _problems(document, spec)
    if problems:
        raise ManifestError(
            f"{origin} for {subject} rendered an invalid InferenceService:\n  - "
            + "\n  - ".join(problems)
        )
    return dump_yaml(document)


def render_kustomization(resources: Sequence[str]) -> str:
    """A ``kustomization.yaml`` listing ``resources`` (relative paths), sorted and unique.

    Sorted so that the file only changes when the set does: the deployment
    repository gets no commit for a reordering.
    """
    if isinstance(resources, str):
        raise ManifestError("kustomization resources must be a list of paths, not one string")
    for entry in resources:
        path = PurePosixPath(entry) if isinstance(entry, str) else None
        if (
            path is None
            or not entry.strip()
            or path.is_absolute()
            or ".." in path.parts
            or any(c in entry for c in "\n\r\0\\")
        ):
            raise ManifestError(f"kustomization resource {entry!r} is not a relative path")
    return dump_yaml(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": sorted(set(resources)),
        }
    )


# -- checks ----------------------------------------------------------------------------

_MISSING = object()


def _at(document: Any, path: str) -> Any:
    node = document
    for key in path.split("|"):
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _problems(document: Any, spec: ServingSpec) -> list[str]:
    """Everything wrong with a rendered InferenceService, as ``field: reason``."""
    if not isinstance(document, dict):
        return [f"the document is a {type(document).__name__}, not a mapping"]
    problems: list[str] = []

    def expect(path: str, check: Callable[[Any], bool], reason: str) -> Any:
        value = _at(document, path)
        shown = path.replace("|", ".")
        if value is _MISSING:
            problems.append(f"{shown}: missing")
        elif not check(value):
            problems.append(f"{shown}: {value!r} {reason}")
        return value

    def equals(wanted: Any) -> Callable[[Any], bool]:
        return lambda value: bool(value == wanted)

    expect("apiVersion", equals(API_VERSION), f"is not {API_VERSION!r}")
    expect("kind", equals("InferenceService"), "is not 'InferenceService'")
    name = resource_name(spec.model)
    expect("metadata|name", equals(name), f"is not {name!r} (the sanitised model name)")
    expect("metadata|namespace", equals(spec.namespace), f"is not {spec.namespace!r}")
    if isinstance(spec.namespace, str) and not _DNS_LABEL.fullmatch(spec.namespace):
        problems.append(f"metadata.namespace: {spec.namespace!r} is not a DNS label (RFC 1123)")
    problems += _metadata_problems(_at(document, "metadata"), spec)
    model = "spec|predictor|model|"
    expect(model + "modelFormat|name", equals("mlflow"), "is not 'mlflow'")
    expect(model + "protocolVersion", equals("v2"), "is not 'v2' (MLServer's MLflow runtime)")
    expect(
        model + "storageUri",
        _concrete_uri,
        "is not a concrete URI KServe can read "
        f"({', '.join(sorted(STORAGE_SCHEMES))}; not models:/ or runs:/)",
    )
    expect(model + "storageUri", equals(spec.storage_uri), f"is not {spec.storage_uri!r}")
    if spec.service_account is not None:
        expect(
            "spec|predictor|serviceAccountName",
            equals(spec.service_account),
            f"is not {spec.service_account!r}",
        )
    resources = expect(model + "resources", lambda r: isinstance(r, dict), "is not a mapping")
    if isinstance(resources, dict):
        problems += _resource_problems(resources, spec)
    return problems


def _concrete_uri(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    scheme, sep, rest = value.partition("://")
    return bool(sep) and scheme in STORAGE_SCHEMES and bool(rest.strip("/"))


def _metadata_problems(metadata: Any, spec: ServingSpec) -> list[str]:
    if not isinstance(metadata, dict):
        return []
    problems: list[str] = []
    labels = metadata.get("labels", {})
    if not isinstance(labels, dict):
        problems.append("metadata.labels: not a mapping")
        labels = {}
    for key, value in labels.items():
        if not _label_key(key):
            problems.append(f"metadata.labels: key {key!r} is not a label name")
        if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
            problems.append(
                f"metadata.labels.{key}: {value!r} is not a label value "
                "(≤ 63 of [A-Za-z0-9_.-], alphanumeric at both ends)"
            )
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        return [*problems, "metadata.annotations: missing or not a mapping"]
    for key, value in annotations.items():
        if not isinstance(value, str):
            problems.append(f"metadata.annotations.{key}: {value!r} is not a string")
    wanted = {
        "serving.kserve.io/deploymentMode": spec.deployment_mode,
        "trainops.io/mlflow-model": f"{spec.model}/{spec.version}",
        "trainops.io/commit": spec.commit,
        "trainops.io/run": spec.run_id,
    }
    for key, value in wanted.items():
        if annotations.get(key) != value:
            problems.append(
                f"metadata.annotations.{key}: {annotations.get(key)!r} is not {value!r}"
            )
    mode = annotations.get("serving.kserve.io/deploymentMode")
    if mode not in DEPLOYMENT_MODES:
        problems.append(
            f"metadata.annotations.serving.kserve.io/deploymentMode: {mode!r} is not one of "
            f"{', '.join(sorted(DEPLOYMENT_MODES))}"
        )
    return problems


def _label_key(key: Any) -> bool:
    if not isinstance(key, str):
        return False
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return bool(name) and bool(_LABEL_VALUE.fullmatch(name))


def _resource_problems(resources: dict[Any, Any], spec: ServingSpec) -> list[str]:
    problems: list[str] = []
    where = "spec.predictor.model.resources"
    for part, quantities in resources.items():
        if part not in ("requests", "limits", "claims"):
            problems.append(f"{where}: unknown key {part!r}")
            continue
        if part == "claims" or not isinstance(quantities, dict):
            continue
        for resource, quantity in quantities.items():
            if not isinstance(quantity, str):
                problems.append(f"{where}.{part}.{resource}: {quantity!r} is not a string")
                continue
            try:
                canonical = canonical_quantity(quantity)
            except ManifestError as exc:
                problems.append(f"{where}.{part}.{resource}: {exc}")
                continue
            if canonical != quantity:
                problems.append(
                    f"{where}.{part}.{resource}: {quantity!r} is not canonical; write {canonical!r}"
                )
    limits = resources.get("limits")
    gpus = limits.get(GPU_RESOURCE) if isinstance(limits, dict) else None
    wanted = str(spec.gpus) if spec.gpus else None
    if gpus != wanted:
        problems.append(f"{where}.limits.{GPU_RESOURCE}: {gpus!r} is not {wanted!r}")
    return problems
