"""Spec + commit → Plan: the DAG every executor consumes, with a cache key per stage.

``snapshot`` does the I/O (git object ids, DVC md5s from ``.dvc`` files,
parameter files) once; ``build_plan`` is a pure function of the Spec and
that snapshot, so the same commit always gives the same Plan.

A stage's cache key hashes what determines its outputs: the command, its
working directory and environment, the image, the values of the parameters
it reads, and for each dependency its content id: the git blob or tree id,
the DVC md5 of tracked data, or — for another stage's output — that stage's
own cache key. Keys therefore chain: a change reaches exactly the stages
downstream of it.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from trainops.errors import Problem, SpecError
from trainops.git import GitRepo
from trainops.models import Plan, PlannedStage
from trainops.pipelines.spec import ParamRef, Spec, StageSpec, overlaps

CACHE_KEY_VERSION = "trainops-stage-v1"


@dataclass(frozen=True)
class CommitSnapshot:
    """What a Plan needs to know about the content of one commit."""

    object_ids: Mapping[str, str]
    """Git-tracked dependency path → blob/tree id."""
    dvc_outs: Mapping[str, str]
    """DVC-tracked path (from a committed ``.dvc`` file) → its md5."""
    params: Mapping[str, Mapping[str, Any] | None]
    """Parameter file → its parsed content (None: absent at the commit)."""


def snapshot(repo: GitRepo, commit: str, spec: Spec) -> CommitSnapshot:
    """Read, in a few git calls, everything ``build_plan`` needs from ``commit``."""
    deps = {d for s in spec.stages for d in s.deps}
    object_ids = repo.object_ids(commit, deps)
    dvc_files = [p for p in repo.list_files(commit) if p.endswith(".dvc")]
    param_files = {ref.file for s in spec.stages for ref in s.params}
    contents = repo.read_files(commit, [*dvc_files, *param_files])
    dvc_outs: dict[str, str] = {}
    for path in dvc_files:
        dvc_outs.update(_dvc_file_outs(path, contents.get(path)))
    params = {f: _parse_params(f, contents.get(f)) for f in param_files}
    return CommitSnapshot(object_ids, dvc_outs, params)


def _dvc_file_outs(path: str, content: bytes | None) -> dict[str, str]:
    import yaml  # here: a memoized plan needs no YAML at all

    try:
        data = yaml.load(content or b"", Loader=_fast_loader()) or {}
    except yaml.YAMLError as exc:
        raise SpecError([Problem(path, None, f"invalid .dvc file: {exc}")]) from exc
    base = posixpath.dirname(path)
    outs: dict[str, str] = {}
    for out in data.get("outs") or [] if isinstance(data, dict) else []:
        if isinstance(out, dict) and "path" in out:
            digest = out.get("md5") or out.get("etag") or out.get("checksum") or ""
            outs[posixpath.normpath(posixpath.join(base, str(out["path"])))] = str(digest)
    return outs


def _parse_params(file: str, content: bytes | None) -> Mapping[str, Any] | None:
    import yaml

    if content is None:
        return None
    try:
        if file.endswith(".toml"):
            data: Any = tomllib.loads(content.decode())
        elif file.endswith(".json"):
            data = json.loads(content)
        else:
            data = yaml.load(content, Loader=_fast_loader())
    except (ValueError, yaml.YAMLError) as exc:
        raise SpecError([Problem(file, None, f"cannot parse parameters: {exc}")]) from exc
    return data if isinstance(data, dict) else {}


def _fast_loader() -> Any:
    """libyaml's safe loader where PyYAML was built with it (10x faster)."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def build_plan(
    spec: Spec, snap: CommitSnapshot, *, repo: str, commit: str, ref: str | None
) -> Plan:
    """The executable DAG of ``spec`` at ``commit``; pure and deterministic."""
    problems: list[Problem] = []
    keys: dict[str, str] = {}
    planned: list[PlannedStage] = []
    for stage in spec.stages:  # topological order: upstream keys are known
        params = _resolve_params(stage, snap, problems)
        inputs = _key_inputs(stage, spec, snap, keys, params, problems)
        key = _digest(inputs)
        keys[stage.name] = key
        planned.append(
            PlannedStage(
                name=stage.name,
                cmd=stage.cmd,
                wdir=stage.wdir,
                needs=stage.needs,
                deps=stage.deps,
                outs=stage.outs,
                metrics=stage.metrics,
                params=params,
                env=dict(stage.env),
                gpus=stage.gpus,
                gpu_type=stage.gpu_type,
                resources=stage.resources,
                timeout_s=stage.timeout_s,
                retries=stage.retries,
                cache=stage.cache,
                cache_key=key,
                key_inputs=inputs,
            )
        )
    if problems:
        raise SpecError(problems)
    return Plan(
        pipeline=spec.name,
        repo=repo,
        commit=commit,
        ref=ref,
        image=spec.image,
        data_pull=_data_targets(spec, snap),
        stages=tuple(planned),
        spec_digest=spec_digest(spec),
    )


def spec_digest(spec: Spec) -> str:
    return _digest(asdict(spec))


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def param_name(ref: ParamRef, key: str) -> str:
    """``train.epochs`` for params.yaml at the root, ``file:key`` otherwise."""
    return key if ref.file == "params.yaml" else f"{ref.file}:{key}"


def _resolve_params(
    stage: StageSpec, snap: CommitSnapshot, problems: list[Problem]
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for ref in stage.params:
        content = snap.params.get(ref.file)
        if content is None:
            problems.append(
                Problem(
                    stage.source,
                    stage.line,
                    f"stage {stage.name!r} reads "
                    f"parameters from {ref.file!r}, which is not in the commit",
                )
            )
            continue
        if ref.key is None:
            values.update({param_name(ref, k): v for k, v in _flatten(content).items()})
            continue
        node: Any = content
        for part in ref.key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                problems.append(
                    Problem(
                        stage.source,
                        stage.line,
                        f"stage {stage.name!r} reads "
                        f"parameter {ref.key!r}, which {ref.file} does not have",
                    )
                )
                break
            node = node[part]
        else:
            if isinstance(node, Mapping):
                values.update(
                    {param_name(ref, k): v for k, v in _flatten(node, f"{ref.key}.").items()}
                )
            else:
                values[param_name(ref, ref.key)] = node
    return values


def _flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _key_inputs(
    stage: StageSpec,
    spec: Spec,
    snap: CommitSnapshot,
    keys: Mapping[str, str],
    params: Mapping[str, Any],
    problems: list[Problem],
) -> dict[str, str]:
    inputs = {
        "version": CACHE_KEY_VERSION,
        "cmd": stage.cmd,
        "wdir": stage.wdir,
        "image": spec.image or "",
        "outs": "\n".join(stage.outs),
        "metrics": "\n".join(stage.metrics),
    }
    inputs.update({f"env:{k}": v for k, v in sorted(stage.env.items())})
    inputs.update(
        {f"param:{k}": json.dumps(v, sort_keys=True, default=str) for k, v in params.items()}
    )
    for dep in stage.deps:
        parts = [
            f"stage:{other.name}:{keys[other.name]}"
            for other in spec.stages
            if other.name in stage.needs and any(overlaps(dep, o) for o in other.produces)
        ]
        parts += [f"dvc:{p}:{md5}" for p, md5 in sorted(snap.dvc_outs.items()) if overlaps(dep, p)]
        if dep in snap.object_ids:
            parts.append(f"git:{snap.object_ids[dep]}")
        if not parts:
            problems.append(
                Problem(
                    stage.source,
                    stage.line,
                    f"stage {stage.name!r} depends on "
                    f"{dep!r}, which is not in git, not tracked by DVC and not "
                    "an output of another stage",
                )
            )
        inputs[f"dep:{dep}"] = " ".join(parts)
    return inputs


def _data_targets(spec: Spec, snap: CommitSnapshot) -> tuple[str, ...]:
    if spec.data_pull is not None:
        return spec.data_pull
    deps = [d for s in spec.stages for d in s.deps]
    return tuple(sorted(p for p in snap.dvc_outs if any(overlaps(p, d) for d in deps)))
