"""The gate: a run's metrics against thresholds and against the baseline, one reason per rule.

Pure: metrics and the baseline's metrics in, a verdict out. The baseline is
the last successful run on the target branch (looked up by the caller, never
re-run). Without one, ``max_drop`` rules pass and say there was nothing to
compare with, so the very first run of a pipeline can pass its gate.

A rule with ``bootstrap`` also compares per-example outputs: the candidate's
and the baseline's predictions files, paired by example id, through a paired
bootstrap confidence interval of the difference in the metric. It fails only
a *significant* regression beyond the declared margin, and reports the
interval. The caller reads both files (``read_predictions`` does it given two
file readers) and passes them to ``evaluate_gate``; nothing here touches disk.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from trainops.pipelines.spec import BootstrapRule, GateRule

MIN_PAIRED = 30
"""Fewer paired examples than this: the bootstrap rule passes, saying it cannot judge."""

_HIGHER_IS_BETTER = {"accuracy": True, "error_rate": False}
"""The per-example metrics a bootstrap rule supports (``spec.BOOTSTRAP_METRICS``)."""


@dataclass(frozen=True)
class BootstrapResult:
    """What a bootstrap rule measured: Δ = candidate − baseline of the metric over the
    paired examples, and its percentile-bootstrap interval."""

    delta: float
    low: float
    high: float
    confidence: float
    paired: int


@dataclass(frozen=True)
class RuleResult:
    metric: str
    rule: str  # required | min | max | max_drop | bootstrap
    passed: bool
    message: str
    bootstrap: BootstrapResult | None = None
    """Set on a bootstrap rule that compared the two runs."""


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    results: tuple[RuleResult, ...]

    @property
    def failures(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if not r.passed)


@dataclass(frozen=True)
class Predictions:
    """The per-example outputs one bootstrap rule compares, each as ``parse_predictions``
    returns it (example id → 1.0 when the prediction equals the label, else 0.0).

    None: that run has no such file; ``*_error``: the file exists but could not be read.
    """

    candidate: Mapping[str, float] | None
    baseline: Mapping[str, float] | None
    candidate_error: str | None = None
    baseline_error: str | None = None


def evaluate_gate(
    rules: Sequence[GateRule],
    metrics: Mapping[str, float],
    baseline: Mapping[str, float] | None,
    *,
    predictions: Mapping[str, Predictions] | None = None,
) -> GateVerdict:
    """The verdict of ``rules`` on a run's ``metrics`` against the ``baseline``'s.

    ``predictions`` maps a gate metric with a ``bootstrap`` rule to the candidate's and
    the baseline's per-example outputs (see ``read_predictions``). A bootstrap rule
    without the candidate's predictions fails (passes when the rule is not required);
    without the baseline's it passes and says so. A rule with only ``bootstrap`` (no
    min, max or max_drop) does not look for the metric in ``metrics``.
    """
    results: list[RuleResult] = []
    for rule in rules:
        thresholds = (rule.min, rule.max, rule.max_drop)
        if rule.bootstrap is None or any(t is not None for t in thresholds):
            # A rule that only bootstraps reads predictions, not the metrics file.
            results.extend(_check(rule, metrics, baseline))
        if rule.bootstrap is not None:
            given = predictions.get(rule.metric) if predictions is not None else None
            results.append(_bootstrap(rule, rule.bootstrap, given))
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


# -- the statistical rule ------------------------------------------------------------


def parse_predictions(
    text: str, *, id: str = "id", label: str = "label", predicted: str = "predicted"
) -> dict[str, float]:
    """Per-example correctness from a predictions CSV: example id → 1.0 when the
    ``predicted`` column equals the ``label`` column, else 0.0.

    The CSV has a header row naming the columns (others are ignored). Values are
    compared as text after trimming spaces, and as numbers when both are numbers
    (``1`` equals ``1.0``). Blank lines are skipped. ValueError, saying what is wrong
    and where, on a missing column, a short row, an empty or repeated id.
    """
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    try:
        header = next(reader, None)
        wanted = (id, label, predicted)
        if header is None:
            raise ValueError(
                "the predictions file is empty; it needs a header row naming the columns "
                + ", ".join(wanted)
            )
        names = [h.strip() for h in header]
        missing = [c for c in wanted if c not in names]
        if missing:
            raise ValueError(
                f"the predictions file has no column {', '.join(repr(c) for c in missing)} "
                f"(its columns: {', '.join(repr(c) for c in names)})"
            )
        at_id, at_label, at_predicted = (names.index(c) for c in wanted)
        width = max(at_id, at_label, at_predicted) + 1
        correct: dict[str, float] = {}
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            line = reader.line_num
            if len(row) < width:
                raise ValueError(
                    f"line {line} of the predictions file has {len(row)} field(s); "
                    f"the header names {len(names)}"
                )
            key = row[at_id].strip()
            if not key:
                raise ValueError(f"line {line} of the predictions file has an empty {id!r}")
            if key in correct:
                raise ValueError(f"line {line} of the predictions file repeats {id} {key!r}")
            correct[key] = 1.0 if _same(row[at_label], row[at_predicted]) else 0.0
    except csv.Error as exc:
        raise ValueError(f"the predictions file is not valid CSV: {exc}") from exc
    return correct


def _same(label: str, predicted: str) -> bool:
    a, b = label.strip(), predicted.strip()
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def read_predictions(
    rules: Sequence[GateRule],
    candidate: Callable[[str], str | None],
    baseline: Callable[[str], str | None] | None,
) -> dict[str, Predictions]:
    """The ``predictions`` argument of ``evaluate_gate``: for every bootstrap rule, its
    file read through ``candidate`` and ``baseline`` (a repo-relative path → the file's
    text, or None when that run has no such file; ``baseline`` None: no baseline run)
    and parsed with the rule's column names. A file that cannot be read or parsed
    (OSError, ValueError) is recorded as an error, never raised.
    """
    found: dict[str, Predictions] = {}
    for rule in rules:
        boot = rule.bootstrap
        if boot is None:
            continue
        ours, our_error = _read(boot, candidate)
        theirs, their_error = _read(boot, baseline) if baseline else (None, None)
        found[rule.metric] = Predictions(ours, theirs, our_error, their_error)
    return found


def _read(
    boot: BootstrapRule, read: Callable[[str], str | None]
) -> tuple[dict[str, float] | None, str | None]:
    try:
        text = read(boot.predictions)
        if text is None:
            return None, None
        parsed = parse_predictions(text, id=boot.id, label=boot.label, predicted=boot.predicted)
    except (OSError, ValueError) as exc:
        return None, str(exc)
    return parsed, None


def paired_bootstrap(
    candidate: Sequence[float],
    baseline: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(delta, low, high)``: the mean of the paired differences ``candidate[i] −
    baseline[i]`` and its percentile-bootstrap ``confidence`` interval from
    ``resamples`` resamples of the examples (with replacement), seeded.

    Per-example scores that take a few distinct values (0/1 correctness) are resampled
    through multinomial counts of each distinct difference, which is the same
    distribution as resampling indices and costs nothing per example.
    """
    import numpy as np

    if len(candidate) != len(baseline):
        raise ValueError(f"paired scores differ in length: {len(candidate)} and {len(baseline)}")
    if not candidate:
        raise ValueError("no paired examples to resample")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie between 0 and 1, not {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, not {resamples}")
    diffs = np.asarray(candidate, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    n = int(diffs.size)
    rng = np.random.default_rng(seed)
    values, counts = np.unique(diffs, return_counts=True)
    if values.size <= _FEW_VALUES:
        draws = rng.multinomial(n, counts / n, size=resamples)
        means = draws @ values / n
    else:
        means = np.empty(resamples, dtype=np.float64)
        step = max(1, _CHUNK // n)
        for start in range(0, resamples, step):
            stop = min(start + step, resamples)
            picks = rng.integers(0, n, size=(stop - start, n))
            means[start:stop] = diffs[picks].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(diffs.mean()), float(low), float(high)


_FEW_VALUES = 64
_CHUNK = 4_000_000
"""Resampled indices held at once (per chunk of resamples) for continuous scores."""


def _bootstrap(rule: GateRule, boot: BootstrapRule, given: Predictions | None) -> RuleResult:
    name = rule.metric

    def result(passed: bool, message: str, found: BootstrapResult | None = None) -> RuleResult:
        return RuleResult(name, "bootstrap", passed, message, found)

    higher_is_better = _HIGHER_IS_BETTER.get(name)
    if higher_is_better is None:
        supported = ", ".join(_HIGHER_IS_BETTER)
        return result(
            False, f"{name}: not a per-example metric the bootstrap supports ({supported})"
        )
    if given is not None and given.candidate_error is not None:
        return result(
            False, f"{name}: cannot read predictions {boot.predictions}: {given.candidate_error}"
        )
    if given is None or given.candidate is None:
        if rule.required:
            return result(False, f"{name}: this run wrote no predictions ({boot.predictions})")
        return result(True, f"{name}: no predictions ({boot.predictions}), not required")
    if given.baseline is None:
        why = f" ({given.baseline_error})" if given.baseline_error else ""
        return result(True, f"{name}: no baseline predictions to compare with{why}")
    ours, theirs = given.candidate, given.baseline
    ids = sorted(ours.keys() & theirs.keys())
    if not ids:
        return result(
            True,
            f"{name}: no paired examples (this run's {len(ours)} ids and the baseline's "
            f"{len(theirs)} have none in common)",
        )
    if len(ids) < MIN_PAIRED:
        return result(
            True,
            f"{name}: too few paired examples to judge ({len(ids)} < {MIN_PAIRED})",
        )

    def score(correct: float) -> float:
        return correct if higher_is_better else 1.0 - correct

    delta, low, high = paired_bootstrap(
        [score(ours[i]) for i in ids],
        [score(theirs[i]) for i in ids],
        confidence=boot.confidence,
        resamples=boot.resamples,
        seed=boot.seed,
    )
    margin = boot.margin
    worse = "drop" if higher_is_better else "rise"
    # A regression is Δ < 0 for accuracy, Δ > 0 for error_rate: look at the interval's
    # end nearest to "no regression".
    nearest = high if higher_is_better else -low
    farthest = low if higher_is_better else -high
    if nearest < -margin:
        passed, verdict = False, f"a significant {worse} beyond margin {margin:.4g}"
    elif farthest > 0:
        passed, verdict = True, "a significant improvement"
    elif nearest < 0:
        passed, verdict = (
            True,
            f"a significant {worse}, not significantly beyond margin {margin:.4g}",
        )
    else:
        passed, verdict = True, f"no significant {worse}"
    unpaired = len(ours) + len(theirs) - 2 * len(ids)
    counted = f"{len(ids)} paired examples" + (f", {unpaired} unpaired ignored" if unpaired else "")
    shown = f"{boot.confidence * 100:.4g}%"
    return result(
        passed,
        f"{name} Δ {delta:+.3f} ({shown} CI {low:+.3f} … {high:+.3f}) vs baseline: "
        f"{verdict} ({counted})",
        BootstrapResult(delta, low, high, boot.confidence, len(ids)),
    )
