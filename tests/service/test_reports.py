"""Reporting back end to end: signed deliveries → runs → statuses and ONE living comment,
on fake GitHub and GitLab servers driven through the real PyGithub and python-gitlab."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import git
from tests.fakes.github import FakeGitHub
from tests.fakes.gitlab import FakeGitLab
from tests.service.conftest import (
    SLOW,
    Forge,
    Service,
    githook_push,
    github_pull_request,
    github_push,
    gitlab_merge_request,
    gitlab_push,
    make_settings,
    pipeline,
    wait_for,
)
from trainops.forges.github import GitHubForge, Pacing
from trainops.forges.gitlab import GitLabForge
from trainops.forges.registry import ForgeRegistry
from trainops.service.serve import BackgroundServer

STEADY = "sleep 1 && echo prepared > prepared.txt"  # long enough to be seen running
FAST_PACING = Pacing(retries=4, backoff_s=0.01, write_interval_s=0, request_interval_s=0)


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        fake.add_repo("acme/digits")
        yield fake


@pytest.fixture
def fake_gitlab() -> Iterator[FakeGitLab]:
    with FakeGitLab() as fake:
        fake.add_project("acme/digits")
        yield fake


@pytest.fixture
def reporting(
    tmp_path: Path, fake_github: FakeGitHub, fake_gitlab: FakeGitLab
) -> Iterator[Service]:
    settings = make_settings(tmp_path / "home")
    registry = ForgeRegistry(
        settings,
        forges={
            "github": GitHubForge(fake_github.url, token=fake_github.token, pacing=FAST_PACING),
            "gitlab": GitLabForge(
                fake_gitlab.url, fake_gitlab.token, backoff_s=0.01, sleep=lambda _s: None
            ),
        },
    )
    service = Service(BackgroundServer(settings, registry=registry).start())
    yield service
    service.close()


def contexts(statuses: list[dict[str, Any]], context: str) -> list[tuple[str, str]]:
    return [(s["state"], s["description"]) for s in statuses if s["context"] == context]


def test_github_pull_request_gets_statuses_and_one_living_comment(
    reporting: Service, forge: Forge, fake_github: FakeGitHub
) -> None:
    # main's run is the baseline the merge request is compared with
    base = forge.commit({"value.json": '{"score": 0.70}\n'}, "baseline")
    reporting.github(github_push(forge, base))
    reporting.wait_final(reporting.run_for(base)["id"])
    sha = forge.commit(
        {"value.json": '{"score": 0.75}\n', "trainops.yaml": pipeline(STEADY)},
        "better model",
        branch="wider-net",
    )
    pr = fake_github.open_pull_request(
        "acme/digits", number=7, head="wider-net", head_sha=sha, base="main"
    )
    assert (
        reporting.github(github_pull_request(forge, sha), event="pull_request").status_code == 202
    )
    run = reporting.wait_final(reporting.run_for(sha)["id"])
    assert run["status"] == "succeeded"

    def settled() -> bool | None:
        latest = fake_github.latest_statuses("acme/digits", sha)
        done = latest.get("trainops", {}).get("state") == "success"
        # statuses and the comment are separate deliveries: wait for both
        return done and "· succeeded" in "".join(pr.comment_bodies()) or None

    wait_for(settled, 30, "the final report on GitHub")
    overall = contexts(fake_github.statuses("acme/digits", sha), "trainops")
    assert overall[0][0] == "pending"  # queued or running: bursts are coalesced
    assert any(d.startswith("running") for state, d in overall if state == "pending")
    assert overall[-1][0] == "success"
    stages = fake_github.latest_statuses("acme/digits", sha)
    assert {c: s["state"] for c, s in stages.items()} == {
        "trainops": "success",
        "trainops/prepare": "success",
        "trainops/evaluate": "success",
    }
    assert all(s["target_url"].endswith(f"/api/runs/{run['id']}") for s in stages.values())
    assert len(pr.comments) == 1
    comment = pr.comments[0]
    assert comment.body.startswith("<!-- trainops:run -->")
    assert comment.edits >= 2
    assert "succeeded" in comment.body
    assert "| score | 0.75 | 0.7 | +0.05 ▲ |" in comment.body
    assert f"against `main` @ `{base[:12]}`" in comment.body


def test_a_second_push_updates_the_same_comment_and_marks_the_old_run(
    reporting: Service, forge: Forge, fake_github: FakeGitHub
) -> None:
    first = forge.commit({"trainops.yaml": pipeline(SLOW)}, "slow", branch="wider-net")
    pr = fake_github.open_pull_request(
        "acme/digits", number=7, head="wider-net", head_sha=first, base="main"
    )
    reporting.github(github_pull_request(forge, first), event="pull_request")
    old = reporting.wait_status(reporting.run_for(first)["id"], {"running"})
    second = forge.commit({"trainops.yaml": pipeline()}, "quick again", branch="wider-net")
    body = github_pull_request(forge, second).replace(b'"opened"', b'"synchronize"', 1)
    reporting.github(body, event="pull_request")
    assert reporting.wait_final(old["id"])["status"] == "superseded"
    new = reporting.wait_final(reporting.run_for(second)["id"])
    assert new["status"] == "succeeded"

    def settled() -> bool | None:
        done = fake_github.latest_statuses("acme/digits", second).get("trainops", {})
        old_state = fake_github.latest_statuses("acme/digits", first).get("trainops", {})
        ok = done.get("state") == "success" and old_state.get("state") == "error"
        body = pr.comments[0].body if pr.comments else ""
        final = f"run [{new['id']}]" in body and "· succeeded" in body and old["id"] in body
        return ok and final or None

    wait_for(settled, 30, "both runs reported")
    assert len(pr.comments) == 1
    assert old["id"] in pr.comments[0].body  # listed as superseded
    old_overall = fake_github.latest_statuses("acme/digits", first)["trainops"]
    assert old_overall["description"] == f"superseded by run {new['id']}"


def test_gitlab_merge_request_gets_statuses_and_one_note(
    reporting: Service, forge: Forge, fake_gitlab: FakeGitLab
) -> None:
    base = forge.commit({"value.json": '{"score": 0.80}\n'}, "baseline")
    reporting.gitlab(gitlab_push(forge, base))
    reporting.wait_final(reporting.run_for(base)["id"])
    sha = forge.commit(
        {"value.json": '{"score": 0.78}\n', "trainops.yaml": pipeline(STEADY)},
        "worse model",
        branch="bigger-batch",
    )
    mr = fake_gitlab.open_merge_request(
        "acme/digits", iid=3, source="bigger-batch", target="main", sha=sha
    )
    reporting.gitlab(gitlab_merge_request(forge, sha), event="Merge Request Hook")
    run = reporting.wait_final(reporting.run_for(sha)["id"])
    assert run["status"] == "succeeded"

    def settled() -> bool | None:
        states = [
            s["status"] for s in fake_gitlab.statuses("acme/digits", sha) if s["name"] == "trainops"
        ]
        noted = any("· succeeded" in n.body for n in mr.notes)
        return (states and states[-1] == "success" and noted) or None

    wait_for(settled, 30, "the final report on GitLab")
    states = [
        s["status"] for s in fake_gitlab.statuses("acme/digits", sha) if s["name"] == "trainops"
    ]
    # GitLab moves one status per name through its states: count the transitions
    assert states[-1] == "success"
    # three contexts, each at least queued/running then final (bursts may coalesce)
    assert fake_gitlab.count("POST /projects/:id/statuses/:sha") >= 3 + 1
    assert len(mr.notes) == 1
    assert "| score | 0.78 | 0.8 | -0.02 ▼ |" in mr.notes[0].body


def test_a_forge_that_fails_twice_still_gets_the_final_report(
    reporting: Service, forge: Forge, fake_github: FakeGitHub
) -> None:
    sha = forge.commit({"value.json": '{"score": 0.9}\n'}, "flaky forge", branch="wider-net")
    pr = fake_github.open_pull_request(
        "acme/digits", number=7, head="wider-net", head_sha=sha, base="main"
    )
    fake_github.fail_next("POST /repos/*/statuses/*", status=503, times=2)
    fake_github.fail_next("POST /repos/*/issues/*/comments", status=503, times=2)
    reporting.github(github_pull_request(forge, sha), event="pull_request")
    reporting.wait_final(reporting.run_for(sha)["id"])

    def settled() -> bool | None:
        latest = fake_github.latest_statuses("acme/digits", sha).get("trainops", {})
        return (
            latest.get("state") == "success"
            and "· succeeded" in "".join(pr.comment_bodies())
            or None
        )

    wait_for(settled, 30, "the report after two 503s")
    assert len(pr.comments) == 1


def test_a_long_outage_is_retried_from_the_outbox(
    reporting: Service, forge: Forge, fake_github: FakeGitHub
) -> None:
    sha = forge.commit({"value.json": '{"score": 0.9}\n'}, "forge down", branch="wider-net")
    pr = fake_github.open_pull_request(
        "acme/digits", number=7, head="wider-net", head_sha=sha, base="main"
    )
    # more failures than one call retries: the outbox keeps the report and tries later
    fake_github.fail_next("POST /repos/*/issues/*/comments", status=502, times=7)
    reporting.github(github_pull_request(forge, sha), event="pull_request")
    run = reporting.wait_final(reporting.run_for(sha)["id"])
    assert run["status"] == "succeeded"  # the forge's trouble never touches the run
    wait_for(lambda: ("succeeded" in "".join(pr.comment_bodies())) or None, 30, "the comment")
    assert len(pr.comments) == 1


def test_an_invalid_pipeline_is_reported_with_file_and_line(
    reporting: Service, forge: Forge, fake_github: FakeGitHub
) -> None:
    broken = "version: 1\nstages:\n  train:\n    cmd: echo\n    retrys: 2\n"
    sha = forge.commit({"trainops.yaml": broken}, "typo", branch="wider-net")
    pr = fake_github.open_pull_request(
        "acme/digits", number=7, head="wider-net", head_sha=sha, base="main"
    )
    reporting.github(github_pull_request(forge, sha), event="pull_request")

    def reported() -> dict[str, Any] | None:
        return fake_github.latest_statuses("acme/digits", sha).get("trainops")

    status = wait_for(reported, 15, "the failure status")
    assert status["state"] == "failure"
    assert status["description"].startswith("trainops.yaml:5: stages.train.retrys")
    wait_for(lambda: pr.comments or None, 15, "the comment")
    assert "did you mean 'retries'?" in pr.comments[0].body


def test_plain_git_reports_go_into_git_notes(
    service: Service, forge: Forge, tmp_path: Path
) -> None:
    sha = forge.commit({"value.json": '{"score": 0.6}\n'}, "plain git")
    service.githook(githook_push(forge, sha))
    run = service.wait_final(service.run_for(sha)["id"])
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(forge.bare), str(clone))

    def noted() -> str | None:
        git(clone, "fetch", "-q", "origin", "+refs/notes/trainops:refs/notes/trainops")
        log = git(clone, "log", "--notes=trainops", "-1", sha)
        return log if "✅ trainops · digits · succeeded" in log else None

    log = wait_for(noted, 15, "the report in git notes")
    assert "trainops/prepare" in log and "success" in log
    assert run["id"] in log and "| score | 0.6 |" in log
