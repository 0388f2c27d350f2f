"""The gate's verdict: thresholds and drops against the baseline, with reasons."""

from __future__ import annotations

from trainops.pipelines.gate import evaluate_gate
from trainops.pipelines.spec import GateRule

RULES = (
    GateRule("accuracy", min=0.9, max_drop=0.01),
    GateRule("loss", max=0.5, max_drop=0.1, relative=True, required=False),
)


def test_passes_with_reasons() -> None:
    verdict = evaluate_gate(
        RULES, {"accuracy": 0.95, "loss": 0.3}, {"accuracy": 0.955, "loss": 0.3}
    )
    assert verdict.passed
    assert [r.rule for r in verdict.results] == ["min", "max_drop", "max", "max_drop"]
    assert "within max_drop 0.01" in verdict.results[1].message


def test_fails_on_threshold_and_on_drop() -> None:
    verdict = evaluate_gate(RULES, {"accuracy": 0.89}, {"accuracy": 0.95})
    assert not verdict.passed
    assert [r.message for r in verdict.failures] == [
        "accuracy 0.89 < min 0.9",
        "accuracy dropped 0.06 from baseline 0.95, beyond max_drop 0.01",
    ]
    assert verdict.results[-1].passed  # loss missing but not required


def test_relative_drop_and_missing_baseline() -> None:
    rules = (GateRule("auc", max_drop=0.02, relative=True),)
    assert evaluate_gate(rules, {"auc": 0.79}, {"auc": 0.8}).passed  # 1.25 % drop
    assert not evaluate_gate(rules, {"auc": 0.78}, {"auc": 0.8}).passed  # 2.5 % drop
    first = evaluate_gate(rules, {"auc": 0.5}, None)
    assert first.passed and "no baseline" in first.results[0].message


def test_a_required_metric_that_is_missing_fails() -> None:
    verdict = evaluate_gate((GateRule("accuracy", min=0.5),), {}, None)
    assert (
        not verdict.passed and verdict.failures[0].message == "accuracy is missing from the metrics"
    )
