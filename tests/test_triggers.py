"""The trigger policy: which events become runs, in which queue order, keyed how."""

from __future__ import annotations

from dataclasses import replace

import pytest

from trainops.models import Event, MergeRequestRef, RepoRef
from trainops.pipelines.spec import TriggerSpec
from trainops.triggers import (
    PRIORITY_BRANCH,
    PRIORITY_DEFAULT_BRANCH,
    PRIORITY_MERGE_REQUEST,
    CloseGroup,
    Ignore,
    RunRequest,
    decide,
    run_key,
    screen,
)

REPO = RepoRef("github", "acme/digits", "https://example.invalid/acme/digits.git", "main")
SHA = "a" * 40
PUSH = Event(
    forge="github",
    delivery_id="d1",
    kind="push",
    repo=REPO,
    ref="refs/heads/main",
    before="b" * 40,
    after=SHA,
    changed_paths=("src/train.py", "README.md"),
    head_message="train: bigger model",
)
MR = Event(
    forge="github",
    delivery_id="d2",
    kind="merge_request",
    repo=REPO,
    action="opened",
    after=SHA,
    merge_request=MergeRequestRef(7, "opened", "Bigger model", "u", "feat", "main", SHA, False),
)


def test_push_to_the_default_branch_runs_first() -> None:
    assert screen(PUSH) is None
    decision = decide(PUSH, TriggerSpec())
    assert isinstance(decision, RunRequest)
    assert (decision.trigger, decision.branch, decision.priority) == (
        "push",
        "main",
        PRIORITY_DEFAULT_BRANCH,
    )


def test_other_branches_only_when_listed() -> None:
    feature = replace(PUSH, ref="refs/heads/release/1.2")
    assert isinstance(decide(feature, TriggerSpec()), Ignore)
    decision = decide(feature, TriggerSpec(branches=("main", "release/*")))
    assert isinstance(decision, RunRequest) and decision.priority == PRIORITY_BRANCH


def test_merge_requests_run_after_branches() -> None:
    assert screen(MR) is None
    decision = decide(MR, TriggerSpec())
    assert isinstance(decision, RunRequest)
    assert (decision.trigger, decision.mr_number, decision.priority) == (
        "merge_request",
        7,
        PRIORITY_MERGE_REQUEST,
    )
    assert isinstance(decide(MR, TriggerSpec(merge_requests=False)), Ignore)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (replace(PUSH, kind="ping"), "ping"),
        (replace(PUSH, deleted=True, after="0" * 40), "deleted"),
        (replace(PUSH, head_message="docs [skip ci]"), "skip CI"),
        (replace(PUSH, head_message="docs [CI SKIP]"), "skip CI"),
        (replace(PUSH, repo=None), "no repository"),
        (replace(MR, merge_request=replace(MR.merge_request, is_fork=True)), "fork"),
        (replace(MR, merge_request=replace(MR.merge_request, action="edited")), "no new code"),
        (replace(MR, kind="comment"), "comment"),
    ],
)
def test_screened_out(event: Event, reason: str) -> None:
    decision = screen(event)
    assert isinstance(decision, Ignore) and reason in decision.reason


def test_closing_a_merge_request_closes_its_group() -> None:
    closed = replace(MR, merge_request=replace(MR.merge_request, action="merged"))
    decision = screen(closed)
    assert isinstance(decision, CloseGroup)
    opened = decide(MR, TriggerSpec())
    assert isinstance(opened, RunRequest) and decision.group_key == opened.group_key


def test_paths_filter() -> None:
    only_data = TriggerSpec(paths=("data/**", "params.yaml"))
    assert isinstance(decide(PUSH, only_data), Ignore)
    assert isinstance(decide(PUSH, TriggerSpec(paths=("src",))), RunRequest)
    unknown = replace(PUSH, changed_paths=None)  # too many commits to know: run
    assert isinstance(decide(unknown, only_data), RunRequest)


def test_tags_only_when_asked() -> None:
    tag = replace(PUSH, kind="tag", ref="refs/tags/v1")
    assert isinstance(decide(tag, TriggerSpec()), Ignore)
    assert isinstance(decide(tag, TriggerSpec(tags=True)), RunRequest)


def test_run_key_is_the_same_for_the_same_work() -> None:
    a = decide(PUSH, TriggerSpec())
    b = decide(replace(PUSH, delivery_id="other"), TriggerSpec())
    assert isinstance(a, RunRequest) and isinstance(b, RunRequest)
    assert run_key(PUSH, a, "spec1") == run_key(PUSH, b, "spec1")
    assert run_key(PUSH, a, "spec1") != run_key(PUSH, a, "spec2")
    m = decide(MR, TriggerSpec())
    assert isinstance(m, RunRequest)
    assert run_key(MR, m, "spec1") != run_key(PUSH, a, "spec1")
