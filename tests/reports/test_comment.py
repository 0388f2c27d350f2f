"""The living comment and the statuses of a run, as a forge would show them (golden files)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from trainops.models import CommitState
from trainops.reports.baseline import Baseline
from trainops.reports.render import CommentRenderer, cap
from trainops.reports.view import comment_context, statuses
from trainops.store import RunRecord

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "comments"
SERVICE = "https://trainops.example"

STAGES = [
    {
        "name": "prepare",
        "status": "succeeded",
        "cached": True,
        "cached_from": "r-0",
        "reason": "cached from run r-0",
        "duration_s": 0.0,
        "attempts": 0,
    },
    {
        "name": "train",
        "status": "succeeded",
        "cached": False,
        "duration_s": 312.4,
        "attempts": 1,
        "gpu_seconds": 624.8,
        "energy_j": 151234.0,
        "gpus": ["GPU-a", "GPU-b"],
    },
    {
        "name": "evaluate",
        "status": "succeeded",
        "cached": False,
        "duration_s": 12.1,
        "attempts": 1,
        "gpu_seconds": 0.0,
    },
]
RESULT = {
    "pipeline": "digits",
    "stages": STAGES,
    "metrics": {"accuracy": 0.9712, "f1_macro": 0.9702},
    "mlflow_run_id": "abc123",
    "duration_s": 330.0,
}
RUN = RunRecord(
    run_id="r-2",
    run_key="k",
    event_id=None,
    forge="github",
    repo="acme/digits",
    clone_url="https://example.invalid/acme/digits.git",
    commit="72225e2f0c3b4a8e9d1f6a7b8c9d0e1f2a3b4c5d",
    ref="refs/pull/7/head",
    branch="bigger-model",
    mr_number=7,
    trigger="merge_request",
    group_key="g",
    priority=3,
    status="succeeded",
    queued_at=1.0,
    started_at=2.0,
    finished_at=3.0,
    attempts=1,
    lease_owner=None,
    lease_expires=None,
    cancel_requested=False,
    superseded_by=None,
    result=RESULT,
    error=None,
    progress=None,
)
BASELINE = Baseline(
    "r-1",
    "9c41d0b7e2a8aaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "main",
    {"accuracy": 0.9650, "f1_macro": 0.9702},
)
GATE = {
    "passed": False,
    "baseline_run": "r-1",
    "results": [
        {
            "metric": "accuracy",
            "rule": "min",
            "passed": True,
            "message": "accuracy 0.9712 ≥ min 0.9",
        },
        {
            "metric": "f1_macro",
            "rule": "max_drop",
            "passed": False,
            "message": "f1_macro dropped 0.02 from baseline 0.99, beyond max_drop 0.01",
        },
    ],
}
FAILED_STAGES = [
    STAGES[0],
    {
        "name": "train",
        "status": "failed",
        "exit_code": 1,
        "attempts": 1,
        "duration_s": 3.2,
        "reason": "exit code 1 | @here",
        "log_tail": (
            "epoch 1\n```\nTraceback (most recent call last):\nValueError: bad shape @alice"
        ),
    },
    {"name": "evaluate", "status": "skipped", "reason": "upstream stage 'train' failed"},
]

CASES: dict[str, tuple[RunRecord, Baseline | None]] = {
    "succeeded": (RUN, BASELINE),
    "gate-failed": (replace(RUN, result={**RESULT, "gate": GATE}), BASELINE),
    "stage-failed": (
        replace(RUN, status="failed", result={**RESULT, "stages": FAILED_STAGES, "metrics": {}}),
        None,
    ),
    "errored": (replace(RUN, status="errored", result=None, error="CacheError: disk full"), None),
    "superseded": (replace(RUN, status="superseded", superseded_by="r-3", result=None), None),
    "invalid-pipeline": (
        replace(
            RUN,
            status="failed",
            result=None,
            error="trainops.yaml:5: stages.train.retrys: unknown key; did you mean 'retries'?",
        ),
        None,
    ),
    "running": (
        replace(
            RUN,
            status="running",
            result=None,
            progress={
                "pipeline": "digits",
                "stages": {
                    "prepare": {
                        "status": "succeeded",
                        "cached": True,
                        "reason": "cached from run r-0",
                    },
                    "train": {"status": "waiting", "reason": "waiting for 2 GPU(s): all busy"},
                    "evaluate": {"status": "pending"},
                },
            },
        ),
        BASELINE,
    ),
}


def render(run: RunRecord, baseline: Baseline | None, **kw: Any) -> str:
    context = comment_context(
        run, pipeline="digits", baseline=baseline, service_url=SERVICE, superseded=[]
    )
    return CommentRenderer(**kw).render(context, forge="github", full_url=f"{SERVICE}/r")


@pytest.mark.parametrize("case", sorted(CASES))
def test_comment_matches_golden(case: str, golden: Callable[[Path, str], None]) -> None:
    run, baseline = CASES[case]
    golden(GOLDEN / f"{case}.md", render(run, baseline))


def test_user_text_cannot_break_out() -> None:
    run, baseline = CASES["stage-failed"]
    body = render(run, baseline)
    assert "````text\nepoch 1\n```\nTraceback" in body  # a longer fence than the log's
    assert "exit code 1 \\| @\u200bhere" in body  # no extra table column, no mention


def test_statuses_per_stage_gate_and_overall() -> None:
    run, _ = CASES["gate-failed"]
    got = {s.context: (s.state, s.description) for s in statuses(run, SERVICE)}
    assert got["trainops/train"] == (CommitState.SUCCESS, "succeeded in 312.4s")
    assert got["trainops/prepare"] == (CommitState.SUCCESS, "cached from run r-0")
    assert got["trainops/gate"][0] is CommitState.FAILURE
    assert "f1_macro dropped" in got["trainops/gate"][1]
    assert got["trainops"] == (CommitState.FAILURE, "the gate failed")
    assert all(s.url == f"{SERVICE}/api/runs/r-2" for s in statuses(run, SERVICE))
    assert all(len(s.description) <= 140 for s in statuses(run, SERVICE))
    superseded = {s.context: s.state for s in statuses(CASES["running"][0], SERVICE)}
    assert superseded["trainops/train"] is CommitState.PENDING
    stopped = replace(CASES["running"][0], status="superseded", superseded_by="r-9")
    assert {s.state for s in statuses(stopped, SERVICE)} >= {CommitState.ERROR}


def test_a_team_template_overrides_ours(tmp_path: Path) -> None:
    (tmp_path / "comment.md.j2").write_text("{{ pipeline }}: {{ run.status }} {{ nope }}")
    from trainops.reports.render import ReportError

    with pytest.raises(ReportError, match="nope"):  # StrictUndefined: typos are errors
        render(RUN, None, templates_dir=tmp_path)
    (tmp_path / "comment.md.j2").write_text("{{ pipeline }}: {{ run.status }}")
    assert render(RUN, None, templates_dir=tmp_path) == "digits: succeeded\n"


def test_the_sandbox_refuses_unsafe_templates(tmp_path: Path) -> None:
    from trainops.reports.render import ReportError

    (tmp_path / "comment.md.j2").write_text("{{ run.__class__.__mro__ }}")
    with pytest.raises(ReportError):
        render(RUN, None, templates_dir=tmp_path)


def test_cap_keeps_code_blocks_closed_and_links_the_rest() -> None:
    body = "head\n```text\n" + "line\n" * 20000 + "```\n"
    out = cap(body, 65_536, "https://x/r")
    assert len(out) <= 65_536 and out.count("```") % 2 == 0 and out.endswith("https://x/r\n")
