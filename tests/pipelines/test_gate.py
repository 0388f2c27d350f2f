"""The gate's verdict: thresholds, drops and the paired bootstrap against the baseline."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from trainops.pipelines.gate import (
    GateVerdict,
    evaluate_gate,
    paired_bootstrap,
    parse_predictions,
    read_predictions,
)
from trainops.pipelines.spec import BootstrapRule, GateRule

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


# -- the paired bootstrap on per-example predictions ----------------------------------

BOOT = BootstrapRule("eval/predictions.csv", margin=0.01, seed=0)


def predictions_csv(correct: np.ndarray, *, seed: int = 0, ids: range | None = None) -> str:
    """A predictions file with labels 0..9: right where ``correct``, off by one elsewhere."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=correct.size)
    predicted = np.where(correct, labels, (labels + 1) % 10)
    names = ids if ids is not None else range(correct.size)
    rows = [f"ex{i},{y},{p}" for i, y, p in zip(names, labels, predicted, strict=True)]
    return "id,label,predicted\n" + "\n".join(rows) + "\n"


def noisy(accuracy: float, n: int, seed: int) -> np.ndarray:
    """Correct with probability ``accuracy``, independently per example."""
    return np.random.default_rng(seed).random(n) < accuracy


def exactly(accuracy: float, n: int, seed: int) -> np.ndarray:
    """Exactly ``round(accuracy * n)`` correct examples, at random places."""
    correct = np.zeros(n, dtype=bool)
    correct[: round(accuracy * n)] = True
    return np.random.default_rng(seed).permutation(correct)


def gate_on(
    candidate: str | None, baseline: str | None, rule: GateRule | None = None
) -> GateVerdict:
    rule = rule or GateRule("accuracy", bootstrap=BOOT)
    assert rule.bootstrap is not None
    files = {"candidate": candidate, "baseline": baseline}
    predictions = read_predictions(
        [rule], lambda path: files["candidate"], lambda path: files["baseline"]
    )
    return evaluate_gate([rule], {}, None, predictions=predictions)


def test_a_clearly_worse_candidate_fails_with_its_interval() -> None:
    verdict = gate_on(
        predictions_csv(noisy(0.90, 1000, seed=1)), predictions_csv(noisy(0.95, 1000, seed=2))
    )
    assert not verdict.passed
    (result,) = verdict.results
    assert result.rule == "bootstrap" and result.bootstrap is not None
    found = result.bootstrap
    assert found.low <= found.delta <= found.high < -0.01
    assert -0.08 < found.delta < -0.03 and found.paired == 1000 and found.confidence == 0.95
    assert result.message == (
        f"accuracy Δ {found.delta:+.3f} (95% CI {found.low:+.3f} … {found.high:+.3f}) "
        "vs baseline: a significant drop beyond margin 0.01 (1000 paired examples)"
    )


def test_a_tiny_difference_within_noise_passes() -> None:
    verdict = gate_on(
        predictions_csv(exactly(0.948, 500, seed=3)), predictions_csv(exactly(0.950, 500, seed=4))
    )
    assert verdict.passed, verdict.results
    found = verdict.results[0].bootstrap
    assert found is not None and found.delta == pytest.approx(-0.002)
    assert found.low < -0.01 < 0 < found.high  # the interval is wide: no evidence either way
    assert verdict.results[0].message.endswith("no significant drop (500 paired examples)")


def test_a_better_candidate_passes() -> None:
    verdict = gate_on(
        predictions_csv(noisy(0.97, 1000, seed=5)), predictions_csv(noisy(0.90, 1000, seed=6))
    )
    assert verdict.passed
    found = verdict.results[0].bootstrap
    assert found is not None and 0 < found.low < found.delta < found.high
    assert "a significant improvement" in verdict.results[0].message


def test_a_significant_drop_within_the_margin_passes() -> None:
    base = np.ones(10_000, dtype=bool)
    cand = base.copy()
    cand[:50] = False  # exactly 0.5 % worse, on every example pair
    wide = GateRule("accuracy", bootstrap=replace(BOOT, margin=0.01))
    verdict = gate_on(predictions_csv(cand), predictions_csv(base), wide)
    assert verdict.passed
    assert "a significant drop, not significantly beyond margin 0.01" in verdict.results[0].message
    strict = GateRule("accuracy", bootstrap=replace(BOOT, margin=0.0))
    assert not gate_on(predictions_csv(cand), predictions_csv(base), strict).passed


def test_error_rate_regresses_upwards() -> None:
    rule = GateRule("error_rate", bootstrap=BOOT)
    worse = gate_on(
        predictions_csv(noisy(0.90, 1000, seed=1)),
        predictions_csv(noisy(0.95, 1000, seed=2)),
        rule,
    )
    assert not worse.passed
    found = worse.results[0].bootstrap
    assert found is not None and 0.01 < found.low <= found.delta <= found.high
    assert "a significant rise beyond margin 0.01" in worse.results[0].message
    better = gate_on(
        predictions_csv(noisy(0.95, 1000, seed=2)),
        predictions_csv(noisy(0.90, 1000, seed=1)),
        rule,
    )
    assert better.passed and "improvement" in better.results[0].message


def test_the_verdict_is_deterministic_for_a_seed() -> None:
    cand, base = noisy(0.93, 800, seed=7), noisy(0.95, 800, seed=8)
    first = gate_on(predictions_csv(cand), predictions_csv(base))
    again = gate_on(predictions_csv(cand), predictions_csv(base))
    assert first == again
    # Row order does not matter: examples are paired by id.
    rows = predictions_csv(cand).splitlines()
    shuffled = "\n".join([rows[0], *reversed(rows[1:])])
    assert gate_on(shuffled, predictions_csv(base)) == first
    other = GateRule("accuracy", bootstrap=replace(BOOT, seed=1))
    moved = gate_on(predictions_csv(cand), predictions_csv(base), other).results[0].bootstrap
    assert moved is not None and first.results[0].bootstrap is not None
    assert moved.delta == first.results[0].bootstrap.delta  # only the interval resamples


def test_paired_bootstrap_directly() -> None:
    assert paired_bootstrap([1.0] * 50, [1.0] * 50, confidence=0.9, resamples=100, seed=0) == (
        0.0,
        0.0,
        0.0,
    )
    rng = np.random.default_rng(0)
    a = (rng.random(400) < 0.8).astype(float)
    b = (rng.random(400) < 0.85).astype(float)
    delta, low, high = paired_bootstrap(list(a), list(b), confidence=0.95, resamples=4000, seed=1)
    assert delta == pytest.approx(float((a - b).mean())) and low < delta < high
    # Continuous scores take the index-resampling path: the same distribution.
    jitter = np.arange(400) * 1e-9
    d2, low2, high2 = paired_bootstrap(
        list(a + jitter), list(b), confidence=0.95, resamples=4000, seed=1
    )
    assert d2 == pytest.approx(delta, abs=1e-6)
    assert low2 == pytest.approx(low, abs=0.01) and high2 == pytest.approx(high, abs=0.01)
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1.0], [1.0, 0.0], confidence=0.95, resamples=100, seed=0)
    with pytest.raises(ValueError, match="no paired examples"):
        paired_bootstrap([], [], confidence=0.95, resamples=100, seed=0)


def test_nothing_to_compare_passes_and_says_why() -> None:
    cand = predictions_csv(noisy(0.5, 200, seed=1))
    none = gate_on(cand, None)
    assert none.passed
    assert none.results[0].message == "accuracy: no baseline predictions to compare with"
    broken = gate_on(cand, "id,label\n1,2\n")
    assert broken.passed and "no baseline predictions" in broken.results[0].message
    assert "no column 'predicted'" in broken.results[0].message
    elsewhere = predictions_csv(noisy(0.9, 200, seed=2), ids=range(1000, 1200))
    disjoint = gate_on(cand, elsewhere)
    assert disjoint.passed and disjoint.results[0].message == (
        "accuracy: no paired examples (this run's 200 ids and the baseline's 200 have none "
        "in common)"
    )
    few = gate_on(cand, predictions_csv(noisy(0.9, 200, seed=2), ids=range(180, 380)))
    assert few.passed
    assert few.results[0].message == "accuracy: too few paired examples to judge (20 < 30)"
    some = gate_on(cand, predictions_csv(noisy(0.5, 200, seed=2), ids=range(100, 300)))
    assert "(100 paired examples, 200 unpaired ignored)" in some.results[0].message


def test_the_candidate_must_have_written_its_predictions() -> None:
    base = predictions_csv(noisy(0.9, 100, seed=1))
    missing = gate_on(None, base)
    assert not missing.passed
    assert missing.results[0].message == (
        "accuracy: this run wrote no predictions (eval/predictions.csv)"
    )
    optional = GateRule("accuracy", required=False, bootstrap=BOOT)
    assert gate_on(None, base, optional).passed
    # Without any predictions passed in at all, the rule cannot pass.
    alone = evaluate_gate([GateRule("accuracy", bootstrap=BOOT)], {"accuracy": 0.9}, None)
    assert not alone.passed and [r.rule for r in alone.results] == ["bootstrap"]
    broken = gate_on("id,label,predicted\nx,1\n", base, optional)
    assert not broken.passed
    assert broken.results[0].message.startswith(
        "accuracy: cannot read predictions eval/predictions.csv: line 2"
    )


def test_thresholds_and_bootstrap_together() -> None:
    rule = GateRule("accuracy", min=0.8, bootstrap=BOOT)
    cand, base = noisy(0.9, 300, seed=1), noisy(0.9, 300, seed=2)
    predictions = read_predictions(
        [rule], lambda p: predictions_csv(cand), lambda p: predictions_csv(base)
    )
    verdict = evaluate_gate([rule], {"accuracy": 0.9}, {"accuracy": 0.9}, predictions=predictions)
    assert verdict.passed and [r.rule for r in verdict.results] == ["min", "bootstrap"]
    missing = evaluate_gate([rule], {}, None, predictions=predictions)
    assert [r.rule for r in missing.failures] == ["required"]
    no_baseline = read_predictions([rule], lambda p: predictions_csv(cand), None)
    assert no_baseline["accuracy"].baseline is None


def test_parse_predictions() -> None:
    text = "\ufeffid, y ,yhat,score\na,1,1,0.3\nb,cat,dog,0.1\n\nc,2,2.0,0.9\n"
    assert parse_predictions(text, id="id", label="y", predicted="yhat") == {
        "a": 1.0,
        "b": 0.0,
        "c": 1.0,  # compared as numbers
    }
    quoted = 'id,label,predicted\n"x,1",a,a\n'
    assert parse_predictions(quoted) == {"x,1": 1.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the predictions file is empty; it needs a header row naming the columns"),
        (
            "id,truth,predicted\n1,2,2\n",
            "the predictions file has no column 'label' (its columns: 'id', 'truth', 'predicted')",
        ),
        ("id,label,predicted\n1,2\n", "line 2 of the predictions file has 2 field(s)"),
        ("id,label,predicted\n,2,2\n", "line 2 of the predictions file has an empty 'id'"),
        ("id,label,predicted\n1,2,2\n1,3,3\n", "line 3 of the predictions file repeats id '1'"),
    ],
)
def test_parse_errors_are_clear(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_predictions(text)
