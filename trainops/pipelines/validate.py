"""Raw → valid: merge trainops.yaml with dvc.yaml's stages and check the whole.

DVC says cmd, deps, outs, params and metrics; trainops.yaml adds only what
DVC cannot say. Every problem is reported at once, each with file and line.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ValidationError

from trainops.errors import Problem, SpecError
from trainops.models import Resources
from trainops.pipelines import raw
from trainops.pipelines.spec import (
    BOOTSTRAP_METRICS,
    DEFAULT_PARAMS,
    TRAINOPS_FILE,
    BootstrapRule,
    GateRule,
    ParamRef,
    PromoteSpec,
    Spec,
    StageSpec,
    TriggerSpec,
    inside,
    overlaps,
)
from trainops.pipelines.yamlsource import YamlDocument


def validate_raw(doc: YamlDocument, model: type[BaseModel]) -> BaseModel:
    """Validate ``doc`` against a raw model; SpecError listing every problem with its line."""
    if not isinstance(doc.data, dict):
        raise SpecError([doc.problem((), "the file must be a mapping of keys (e.g. `version: 1`)")])
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        raise SpecError(_problems(doc, exc)) from exc


def _problems(doc: YamlDocument, exc: ValidationError) -> list[Problem]:
    grouped: dict[tuple[str | int, ...], list[str]] = {}
    for err in exc.errors():
        loc = tuple(err["loc"])
        # pydantic appends union/validator tags ('str', 'list[str]') to loc; keep the
        # part that exists in the document (or, for a missing key, its parent + key).
        real: tuple[str | int, ...] = ()
        for part in loc:
            if (*real, part) in doc.lines or err["type"] in ("missing", "extra_forbidden"):
                real = (*real, part)
            else:
                break
        grouped.setdefault(real, []).append(_message(err, real))
    problems = []
    for path, messages in grouped.items():
        unique = list(dict.fromkeys(messages))
        reason = unique[0] if len(unique) == 1 else " or ".join(unique)
        where = ".".join(str(p) for p in path)
        text = f"{where}: {reason}" if where else reason
        problems.append(doc.problem(path, text))
    return problems


_ALL_KEYS = sorted(
    {
        name
        for model in (
            raw.RawPipeline,
            raw.RawStage,
            raw.RawData,
            raw.RawGateRule,
            raw.RawBootstrap,
            raw.RawPromote,
        )
        for name in model.model_fields
    }
    | {"cpu", "memory", "name", "path"}
)


def _message(err: Any, path: tuple[str | int, ...]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else "?"
        close = difflib.get_close_matches(key, _ALL_KEYS, n=1, cutoff=0.7)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key{hint}"
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _norm(base: str, wdir: str, path: str) -> str | None:
    """Repo-relative POSIX path, or None if it escapes the repository or is absolute."""
    if posixpath.isabs(path) or path.startswith("~"):
        return None
    joined = posixpath.normpath(posixpath.join(base, wdir, path))
    if joined == ".." or joined.startswith("../"):
        return None
    return joined


def _cmd(value: str | list[str]) -> str:
    return value if isinstance(value, str) else " && ".join(value)


@dataclass
class _Collect:
    problems: list[Problem] = field(default_factory=list)

    def add(self, doc: YamlDocument, path: tuple[str | int, ...], reason: str) -> None:
        self.problems.append(doc.problem(path, reason))


def _paths(
    out: _Collect,
    doc: YamlDocument,
    at: tuple[str | int, ...],
    base: str,
    wdir: str,
    items: Sequence[str],
) -> tuple[str, ...]:
    result = []
    for i, item in enumerate(items):
        norm = _norm(base, wdir, item)
        if norm is None:
            out.add(doc, (*at, i), f"path {item!r} must be relative and inside the repository")
        else:
            result.append(norm)
    return tuple(result)


def _params(
    base: str, wdir: str, items: Sequence[str | dict[str, list[str] | None]]
) -> tuple[ParamRef, ...]:
    refs: list[ParamRef] = []
    default = posixpath.normpath(posixpath.join(base, wdir, DEFAULT_PARAMS))
    for item in items:
        if isinstance(item, str):
            refs.append(ParamRef(default, item))
            continue
        for file, keys in item.items():
            path = posixpath.normpath(posixpath.join(base, wdir, file))
            refs.extend(ParamRef(path, k) for k in keys) if keys else refs.append(
                ParamRef(path, None)
            )
    return tuple(refs)


def _file_outs(items: Sequence[str | dict[str, Any]]) -> list[str]:
    """dvc.yaml writes an out as a path or as ``{path: {options}}``."""
    names: list[str] = []
    for item in items:
        names.extend([item] if isinstance(item, str) else list(item))
    return names


def _dvc_stages(doc: YamlDocument, out: _Collect) -> list[StageSpec]:
    base = posixpath.dirname(doc.file)
    data = doc.data if isinstance(doc.data, dict) else {}
    for name, body in (data.get("stages") or {}).items():
        if isinstance(body, dict) and ({"foreach", "matrix", "do"} & set(body)):
            out.add(
                doc,
                ("stages", name),
                f"stage {name!r}: dvc.yaml foreach/matrix stages "
                "are not supported yet; write the stages out, or list them in trainops.yaml",
            )
    if out.problems:
        return []
    parsed = validate_raw(doc, raw.RawDvcFile)
    assert isinstance(parsed, raw.RawDvcFile)
    stages = []
    for name, st in parsed.stages.items():
        at = ("stages", name)
        cmd = _cmd(st.cmd)
        if "${" in cmd:
            out.add(
                doc,
                (*at, "cmd"),
                f"stage {name!r}: dvc.yaml templating (${{...}}) is not "
                "supported yet; write the value into the command",
            )
        if st.frozen:
            out.add(
                doc,
                (*at, "frozen"),
                f"stage {name!r} is frozen; trainops runs every "
                "stage from its inputs, so unfreeze it (`dvc unfreeze`) or remove it",
            )
        wdir = st.wdir or "."
        stages.append(
            StageSpec(
                name=name,
                cmd=cmd,
                wdir=_norm(base, wdir, ".") or ".",
                needs=(),
                deps=_paths(out, doc, (*at, "deps"), base, wdir, st.deps),
                outs=_paths(out, doc, (*at, "outs"), base, wdir, _file_outs(st.outs)),
                metrics=_paths(out, doc, (*at, "metrics"), base, wdir, _file_outs(st.metrics)),
                params=_params(base, wdir, st.params),
                cache=not st.always_changed,
                source=doc.file,
                line=doc.line_of(at),
            )
        )
    return stages


_DVC_OWNED = ("cmd", "wdir", "deps", "outs", "params", "metrics")


def _overlay(
    doc: YamlDocument, out: _Collect, name: str, st: raw.RawStage, base: StageSpec | None
) -> StageSpec | None:
    at = ("stages", name)
    if base is not None:
        owned = [k for k in _DVC_OWNED if k in st.model_fields_set]
        if owned:
            out.add(
                doc,
                (*at, owned[0]),
                f"stage {name!r} comes from {base.source}; set "
                f"{', '.join(owned)} there (trainops.yaml adds only GPUs, resources, env, "
                "timeout, retries, needs, cache)",
            )
            return None
    elif st.cmd is None:
        out.add(doc, at, f"stage {name!r} has no cmd (and no stage of that name in dvc.yaml)")
        return None
    resources = Resources(
        cpu=st.resources.cpu if st.resources else None,
        memory=st.resources.memory if st.resources else None,
    )
    common: dict[str, Any] = {
        "gpus": st.gpus,
        "gpu_type": st.gpu_type,
        "resources": resources,
        "env": {k: _env_value(v) for k, v in st.env.items()},
        "timeout_s": raw.parse_duration(st.timeout) if st.timeout is not None else None,
        "retries": st.retries,
        "cache": st.cache and (base.cache if base else True),
        "needs": tuple(st.needs),
    }
    if base is not None:
        return replace(base, **common)
    wdir = st.wdir or "."
    norm_wdir = _norm("", wdir, ".")
    if norm_wdir is None:
        out.add(doc, (*at, "wdir"), f"wdir {wdir!r} must be relative and inside the repository")
        norm_wdir = "."
    assert st.cmd is not None
    return StageSpec(
        name=name,
        cmd=_cmd(st.cmd),
        wdir=norm_wdir,
        deps=_paths(out, doc, (*at, "deps"), "", wdir, st.deps),
        outs=_paths(out, doc, (*at, "outs"), "", wdir, st.outs),
        metrics=_paths(out, doc, (*at, "metrics"), "", wdir, st.metrics),
        params=_params("", wdir, st.params),
        source=doc.file,
        line=doc.line_of(at),
        **common,
    )


def _env_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_spec(
    trainops: YamlDocument | None, dvc: YamlDocument | None, *, default_name: str
) -> Spec:
    """Merge and check the pipeline files; SpecError with every problem found."""
    out = _Collect()
    pipeline: raw.RawPipeline | None = None
    if trainops is not None:
        parsed = validate_raw(trainops, raw.RawPipeline)
        assert isinstance(parsed, raw.RawPipeline)
        pipeline = parsed
    stages: dict[str, StageSpec] = {}
    if dvc is not None:
        stages = {s.name: s for s in _dvc_stages(dvc, out)}
    if pipeline is not None and trainops is not None:
        for name, st in pipeline.stages.items():
            merged = _overlay(trainops, out, name, st, stages.get(name))
            if merged is not None:
                stages[name] = merged
    if out.problems:
        raise SpecError(out.problems)
    if not stages:
        file = trainops.file if trainops else (dvc.file if dvc else TRAINOPS_FILE)
        raise SpecError([Problem(file, None, "the pipeline declares no stages")])
    docs = {d.file: d for d in (trainops, dvc) if d is not None}
    ordered = _check_stages(list(stages.values()), docs, out)
    name = (pipeline.name if pipeline and pipeline.name else None) or _safe_name(default_name)
    spec = Spec(
        name=name,
        image=pipeline.image if pipeline else None,
        data_pull=_data_pull(pipeline, trainops, out),
        stages=tuple(ordered),
        gate=_gate(pipeline, trainops, ordered, out),
        promote=_promote(pipeline, trainops, ordered, out),
        sources=tuple(docs),
        triggers=_triggers(pipeline),
    )
    if out.problems:
        raise SpecError(out.problems)
    return spec


def _safe_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:40].strip("-")
    return name or "pipeline"


def _check_stages(
    stages: list[StageSpec], docs: Mapping[str, YamlDocument], out: _Collect
) -> list[StageSpec]:
    """Names, needs, overlapping outputs and cycles; returns stages in a topological order."""

    def problem(stage: StageSpec, reason: str, *sub: str | int) -> None:
        doc = docs[stage.source]
        out.add(doc, ("stages", stage.name, *sub), reason)

    names = {s.name for s in stages}
    producers: list[tuple[str, StageSpec]] = []
    for stage in stages:
        if not re.match(raw.STAGE_PATTERN, stage.name):
            problem(stage, f"stage name {stage.name!r}: use letters, digits, '_', '.', '-'")
        if "{{" in stage.cmd:
            problem(
                stage,
                f"stage {stage.name!r}: '{{{{' is not allowed in cmd (Argo would "
                "substitute it); use an environment variable",
                "cmd",
            )
        for need in stage.needs:
            if need not in names:
                problem(stage, f"stage {stage.name!r} needs unknown stage {need!r}", "needs")
        for path in stage.produces:
            for other_path, other in producers:
                if overlaps(path, other_path) and other.name != stage.name:
                    problem(
                        stage,
                        f"output {path!r} of stage {stage.name!r} overlaps output "
                        f"{other_path!r} of stage {other.name!r}",
                        "outs",
                    )
            producers.append((path, stage))
    if out.problems:
        return stages
    resolved = []
    for stage in stages:
        implied = {
            other.name
            for dep in stage.deps
            for path, other in producers
            if other.name != stage.name and overlaps(dep, path)
        }
        needs = tuple(sorted(set(stage.needs) | implied))
        resolved.append(replace(stage, needs=needs))
    return _toposort(resolved, docs, out)


def _toposort(
    stages: list[StageSpec], docs: Mapping[str, YamlDocument], out: _Collect
) -> list[StageSpec]:
    """Each step takes the first declared stage whose needs are placed; a cycle is a
    located problem."""
    by_name = {s.name: s for s in stages}
    done: list[StageSpec] = []
    placed: set[str] = set()
    remaining = list(stages)
    while remaining:
        ready = next((s for s in remaining if set(s.needs) <= placed), None)
        if ready is None:
            cycle = _find_cycle(by_name, {s.name for s in remaining})
            first = by_name[cycle[0]]
            out.add(
                docs[first.source],
                ("stages", first.name),
                "stages form a cycle: " + " → ".join([*cycle, cycle[0]]),
            )
            return stages
        done.append(ready)
        placed.add(ready.name)
        remaining.remove(ready)
    return done


def _find_cycle(by_name: Mapping[str, StageSpec], names: set[str]) -> list[str]:
    path: list[str] = []
    node = min(names)
    while node not in path:
        path.append(node)
        node = next(n for n in by_name[node].needs if n in names)
    return path[path.index(node) :]


def _data_pull(
    pipeline: raw.RawPipeline | None, doc: YamlDocument | None, out: _Collect
) -> tuple[str, ...] | None:
    if pipeline is None or doc is None or pipeline.data is None or pipeline.data.pull is None:
        return None
    return _paths(out, doc, ("data", "pull"), "", ".", pipeline.data.pull)


def _triggers(pipeline: raw.RawPipeline | None) -> TriggerSpec:
    t = pipeline.triggers if pipeline else None
    if t is None:
        return TriggerSpec()
    return TriggerSpec(
        branches=tuple(t.branches) if t.branches is not None else None,
        merge_requests=t.merge_requests,
        tags=t.tags,
        paths=tuple(t.paths) if t.paths is not None else None,
    )


def _gate(
    pipeline: raw.RawPipeline | None,
    doc: YamlDocument | None,
    stages: Sequence[StageSpec],
    out: _Collect,
) -> tuple[GateRule, ...]:
    if pipeline is None or doc is None:
        return ()
    rules = []
    for metric, rule in pipeline.gate.items():
        drop: float | None = None
        relative = False
        if isinstance(rule.max_drop, str):
            drop, relative = float(rule.max_drop.strip().rstrip("%")) / 100, True
        elif rule.max_drop is not None:
            drop = float(rule.max_drop)
        boot = _bootstrap(metric, rule.bootstrap, doc, stages, out)
        rules.append(GateRule(metric, rule.min, rule.max, drop, relative, rule.required, boot))
    return tuple(rules)


def _bootstrap(
    metric: str,
    b: raw.RawBootstrap | None,
    doc: YamlDocument,
    stages: Sequence[StageSpec],
    out: _Collect,
) -> BootstrapRule | None:
    """The bootstrap rule of gate metric ``metric``: a per-example score, on a file a
    stage writes."""
    if b is None:
        return None
    at = ("gate", metric, "bootstrap")
    ok = True
    if metric not in BOOTSTRAP_METRICS:
        out.add(
            doc,
            at,
            f"gate.{metric}.bootstrap: a bootstrap rule needs a per-example metric; "
            f"{metric!r} is not one of {', '.join(BOOTSTRAP_METRICS)}",
        )
        ok = False
    if len({b.id, b.label, b.predicted}) < 3:
        out.add(
            doc,
            at,
            f"gate.{metric}.bootstrap: id, label and predicted must name three different "
            f"columns (got {b.id!r}, {b.label!r}, {b.predicted!r})",
        )
        ok = False
    path = _norm("", ".", b.predictions)
    produced = [p for s in stages for p in s.produces]
    if path is None or not any(inside(path, p) for p in produced):
        out.add(
            doc,
            (*at, "predictions"),
            f"predictions file {b.predictions!r} is not an output of any stage; "
            "list it under a stage's outs or metrics",
        )
        ok = False
    if not ok or path is None:
        return None
    return BootstrapRule(
        predictions=path,
        id=b.id,
        label=b.label,
        predicted=b.predicted,
        margin=b.margin,
        confidence=b.confidence,
        resamples=b.resamples,
        seed=b.seed,
    )


def _promote(
    pipeline: raw.RawPipeline | None,
    doc: YamlDocument | None,
    stages: Sequence[StageSpec],
    out: _Collect,
) -> PromoteSpec | None:
    if pipeline is None or doc is None or pipeline.promote is None:
        return None
    p = pipeline.promote
    path = _norm("", ".", p.model.path)
    produced = [o for s in stages for o in s.outs]
    if path is None or not any(inside(path, o) for o in produced):
        out.add(
            doc,
            ("promote", "model", "path"),
            f"model path {p.model.path!r} is not an "
            "output of any stage; list it under a stage's outs",
        )
        return None
    return PromoteSpec(p.model.name, path, p.deploy, tuple(p.environments))
