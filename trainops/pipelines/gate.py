"""The gate: a run's metrics against thresholds and against the baseline, one reason per rule.

Pure: metrics and the baseline's metrics in, a verdict out. The baseline is
the last successful run on the target branch (looked up by the caller, never
re-run). Without one, ``max_drop`` rules pass and say there was nothing to
compare with, so the very first run of a pipeline can pass its gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trainops.pipelines.spec import GateRule


@dataclass(frozen=True)
class RuleResult:
    metric: str
    rule: str  # required | min | max | max_drop
    passed: bool
    message: str


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    results: tuple[RuleResult, ...]

    @property
    def failures(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if not r.passed)


def evaluate_gate(
    rules: Sequence[GateRule],
    metrics: Mapping[str, float],
    baseline: Mapping[str, float] | None,
) -> GateVerdict:
    results: list[RuleResult] = []
    for rule in rules:
        results.extend(_check(rule, metrics, baseline))
    return GateVerdict(all(r.passed for r in results), tuple(results))


def _check(
    rule: GateRule, metrics: Mapping[str, float], baseline: Mapping[str, float] | None
) -> list[RuleResult]:
    name = rule.metric
    value = metrics.get(name)
    if value is None:
        if rule.required:
            return [RuleResult(name, "required", False, f"{name} is missing from the metrics")]
        return [RuleResult(name, "required", True, f"{name} is missing (not required)")]
    out = []
    if rule.min is not None:
        ok = value >= rule.min
        sign = "≥" if ok else "<"
        out.append(RuleResult(name, "min", ok, f"{name} {value:.4g} {sign} min {rule.min:.4g}"))
    if rule.max is not None:
        ok = value <= rule.max
        sign = "≤" if ok else ">"
        out.append(RuleResult(name, "max", ok, f"{name} {value:.4g} {sign} max {rule.max:.4g}"))
    if rule.max_drop is not None:
        out.append(_drop(rule, value, None if baseline is None else baseline.get(name)))
    return out


def _drop(rule: GateRule, value: float, base: float | None) -> RuleResult:
    name = rule.metric
    assert rule.max_drop is not None
    if base is None:
        return RuleResult(name, "max_drop", True, f"{name}: no baseline to compare with yet")
    drop = base - value
    allowed = rule.max_drop * abs(base) if rule.relative else rule.max_drop
    shown = f"{rule.max_drop:.2%}" if rule.relative else f"{rule.max_drop:.4g}"
    ok = drop <= allowed + 1e-12
    if drop <= 0:
        return RuleResult(name, "max_drop", True, f"{name} {value:.4g} ≥ baseline {base:.4g}")
    verdict = "within" if ok else "beyond"
    return RuleResult(
        name,
        "max_drop",
        ok,
        f"{name} dropped {drop:.4g} from baseline {base:.4g}, {verdict} max_drop {shown}",
    )
