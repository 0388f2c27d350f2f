"""GitLabForge through the real python-gitlab client, against the fake GitLab server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.gitlab import FakeGitLab
from trainops.config import ForgeSettings, Secret
from trainops.errors import ForgeError, ForgeNotConfigured
from trainops.forges.gitlab import MAX_DESCRIPTION, GitLabForge, marker
from trainops.models import CommitState, CommitStatus

REPO = "acme/digits"
SHA = "3f786850e387550fdab836ed7e6dc881de23001b"
SPEC = "version: 1\nstages: {}\n"
STATUSES = "POST /projects/:id/statuses/:sha"
NOTES = "/projects/:id/merge_requests/:iid/notes"


@pytest.fixture
def fake() -> Iterator[FakeGitLab]:
    with FakeGitLab() as fake:
        fake.add_project(REPO, files={"trainops.yaml": SPEC, "src/train.py": "print(1)\n"})
        fake.open_merge_request(REPO, iid=3, source="feat", sha=SHA, files={"trainops.yaml": "v2"})
        yield fake


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def forge(fake: FakeGitLab, sleeps: list[float]) -> GitLabForge:
    return GitLabForge(fake.url, fake.token, retries=3, backoff_s=0.01, sleep=sleeps.append)


def status(state: CommitState, context: str = "trainops", description: str = "ok") -> CommitStatus:
    return CommitStatus(context, state, description, "http://trainops.example/runs/r1")


# -- settings ---------------------------------------------------------------------


def test_from_settings_uses_url_token_and_retries(fake: FakeGitLab) -> None:
    settings = ForgeSettings(token=Secret(fake.token), api_url=f"{fake.url}/api/v4", retries=0)
    forge = GitLabForge.from_settings(settings)
    assert forge.read_file(REPO, "main", "trainops.yaml") == SPEC.encode()
    assert fake.token not in repr(forge)


def test_from_settings_without_token_is_not_configured() -> None:
    with pytest.raises(ForgeNotConfigured):
        GitLabForge.from_settings(ForgeSettings())


# -- read_file --------------------------------------------------------------------


def test_read_file_at_a_branch_and_a_sha(forge: GitLabForge) -> None:
    assert forge.read_file(REPO, "main", "src/train.py") == b"print(1)\n"
    assert forge.read_file(REPO, SHA, "trainops.yaml") == b"v2"


def test_read_file_missing_file_or_ref_is_none(forge: GitLabForge) -> None:
    assert forge.read_file(REPO, "main", "dvc.yaml") is None
    assert forge.read_file(REPO, "no-such-branch", "trainops.yaml") is None


def test_read_file_in_an_unknown_project_is_an_error(forge: GitLabForge) -> None:
    # GitLab answers 404 for a project the token cannot see: not "no trainops.yaml"
    with pytest.raises(ForgeError) as caught:
        forge.read_file("acme/secret", "main", "trainops.yaml")
    assert caught.value.status == 404 and not caught.value.transient


def test_numeric_project_id_works_too(fake: FakeGitLab, forge: GitLabForge) -> None:
    project_id = str(fake.project(REPO).id)
    assert forge.read_file(project_id, "main", "trainops.yaml") == SPEC.encode()


# -- set_status -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (CommitState.PENDING, "pending"),
        (CommitState.RUNNING, "running"),
        (CommitState.SUCCESS, "success"),
        (CommitState.FAILURE, "failed"),
        (CommitState.ERROR, "failed"),
    ],
)
def test_status_states_map_to_gitlab(
    fake: FakeGitLab, forge: GitLabForge, state: CommitState, expected: str
) -> None:
    forge.set_status(REPO, SHA, status(state, "trainops/train", "training"))
    (only,) = fake.statuses(REPO, SHA)
    assert only["status"] == expected
    assert only["name"] == "trainops/train"
    assert only["description"] == "training"
    assert only["target_url"] == "http://trainops.example/runs/r1"


def test_status_lifecycle_tolerates_setting_the_same_state_again(
    fake: FakeGitLab, forge: GitLabForge
) -> None:
    for state in ("pending", "pending", "running", "running", "success"):
        forge.set_status(REPO, SHA, status(CommitState(state)))
    assert [s["status"] for s in fake.statuses(REPO, SHA)] == ["success"]
    assert fake.calls[STATUSES] == 5  # two of them answered 400 "Cannot transition"


def test_other_refused_transitions_are_errors(fake: FakeGitLab, forge: GitLabForge) -> None:
    forge.set_status(REPO, SHA, status(CommitState.RUNNING))
    with pytest.raises(ForgeError, match="Cannot transition status via :enqueue") as caught:
        forge.set_status(REPO, SHA, status(CommitState.PENDING))
    assert caught.value.status == 400 and not caught.value.transient


def test_status_description_is_truncated(fake: FakeGitLab, forge: GitLabForge) -> None:
    forge.set_status(REPO, SHA, status(CommitState.SUCCESS, description="x" * 1000))
    (only,) = fake.statuses(REPO, SHA)
    assert len(only["description"]) == MAX_DESCRIPTION
    assert only["description"].endswith("…")


def test_status_without_url_sends_none(fake: FakeGitLab, forge: GitLabForge) -> None:
    forge.set_status(REPO, SHA, CommitStatus("trainops", CommitState.PENDING, "queued"))
    assert fake.statuses(REPO, SHA)[0]["target_url"] is None


# -- upsert_comment ---------------------------------------------------------------


def test_one_living_comment_created_then_edited(fake: FakeGitLab, forge: GitLabForge) -> None:
    mr = fake.merge_request(REPO, 3)
    first = forge.upsert_comment(REPO, 3, "run", "queued")
    second = forge.upsert_comment(REPO, 3, "run", "training")
    third = forge.upsert_comment(REPO, 3, "run", "accuracy 0.97")
    assert first == second == third
    assert len(mr.notes) == 1
    assert mr.notes[0].body == f"{marker('run')}\naccuracy 0.97"
    assert str(mr.notes[0].id) == first
    assert fake.calls[f"POST {NOTES}"] == 1
    assert fake.calls[f"PUT {NOTES}/:note_id"] == 2


def test_identical_comment_is_not_sent_again(fake: FakeGitLab, forge: GitLabForge) -> None:
    forge.upsert_comment(REPO, 3, "run", "same")
    forge.upsert_comment(REPO, 3, "run", "same")
    assert fake.count(f"P* {NOTES}*") == 1  # the create; no PUT


def test_keys_are_separate_comments(fake: FakeGitLab, forge: GitLabForge) -> None:
    forge.upsert_comment(REPO, 3, "run", "a")
    forge.upsert_comment(REPO, 3, "promotion", "b")
    assert len(fake.merge_request(REPO, 3).notes) == 2


def test_other_peoples_notes_quoting_the_marker_stay_untouched(
    fake: FakeGitLab, forge: GitLabForge
) -> None:
    quoted = f"> {marker('run')}\n> the old report\n\nwhy did accuracy drop?"
    pasted = f"{marker('run')}\nI copied the whole comment"
    fake.add_note(REPO, 3, quoted, author="alice")
    fake.add_note(REPO, 3, pasted, author="bob")
    fake.add_note(REPO, 3, f"{marker('run')}\nmentioned in commit 3f78", system=True)
    forge.upsert_comment(REPO, 3, "run", "report")
    forge.upsert_comment(REPO, 3, "run", "report, later")
    bodies = [n.body for n in fake.merge_request(REPO, 3).notes]
    assert bodies[:3] == [quoted, pasted, f"{marker('run')}\nmentioned in commit 3f78"]
    assert bodies[3:] == [f"{marker('run')}\nreport, later"]


def test_our_comment_is_found_beyond_the_first_page(fake: FakeGitLab, forge: GitLabForge) -> None:
    fake.max_per_page = 5
    for i in range(12):
        fake.add_note(REPO, 3, f"review comment {i}", author="alice")
    ours = forge.upsert_comment(REPO, 3, "run", "v1")  # the 13th note: page 3
    assert forge.upsert_comment(REPO, 3, "run", "v2") == ours
    notes = fake.merge_request(REPO, 3).notes
    assert len(notes) == 13 and notes[-1].body.endswith("\nv2")
    assert fake.calls[f"GET {NOTES}"] == 6  # three pages, twice


def test_a_create_that_failed_late_is_not_repeated(
    fake: FakeGitLab, forge: GitLabForge, sleeps: list[float]
) -> None:
    # the note is stored, then a proxy answers 502: the retry finds it
    fake.fail_next(f"POST {NOTES}", 502, applied=True)
    forge.upsert_comment(REPO, 3, "run", "report")
    assert len(fake.merge_request(REPO, 3).notes) == 1
    assert len(sleeps) == 1


def test_comment_on_an_unknown_merge_request_is_an_error(forge: GitLabForge) -> None:
    with pytest.raises(ForgeError, match=r"acme/digits!99: HTTP 404") as caught:
        forge.upsert_comment(REPO, 99, "run", "report")
    assert not caught.value.transient


# -- open_pull_request ------------------------------------------------------------


def test_open_merge_request_then_reuse_it(fake: FakeGitLab, forge: GitLabForge) -> None:
    kwargs = {"head": "trainops/promote", "base": "main", "title": "Promote digits v4"}
    opened = forge.open_pull_request(REPO, body="first", **kwargs)
    reused = forge.open_pull_request(REPO, body="second", **kwargs)
    assert opened.created and not reused.created
    assert opened.number == reused.number
    mr = fake.merge_request(REPO, opened.number)
    assert opened.url == reused.url == f"{fake.url}/{REPO}/-/merge_requests/{mr.iid}"
    assert (mr.source_branch, mr.target_branch, mr.description) == (
        "trainops/promote",
        "main",
        "second",
    )
    assert len([m for m in fake.project(REPO).merge_requests.values() if m.state == "opened"]) == 2


def test_unchanged_merge_request_is_not_updated(fake: FakeGitLab, forge: GitLabForge) -> None:
    for _ in range(2):
        forge.open_pull_request(REPO, head="promote", base="main", title="t", body="b")
    assert fake.calls["PUT /projects/:id/merge_requests/:iid"] == 0


def test_a_closed_merge_request_is_not_reused(fake: FakeGitLab, forge: GitLabForge) -> None:
    old = fake.open_merge_request(REPO, source="promote")
    old.state = "closed"
    ref = forge.open_pull_request(REPO, head="promote", base="main", title="t", body="b")
    assert ref.created and ref.number != old.iid


# -- permission -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "expected"),
    [(50, "admin"), (40, "admin"), (30, "write"), (20, "read"), (15, "read"), (10, "read")],
)
def test_permission_from_access_level(
    fake: FakeGitLab, forge: GitLabForge, level: int, expected: str
) -> None:
    fake.add_member(REPO, "bob", level)
    assert forge.permission(REPO, "bob") == expected


def test_permission_of_strangers_is_none(fake: FakeGitLab, forge: GitLabForge) -> None:
    fake.add_user("carol")  # exists, not a member
    fake.add_member(REPO, "dave", 5)  # minimal access
    assert forge.permission(REPO, "carol") == "none"
    assert forge.permission(REPO, "dave") == "none"
    assert forge.permission(REPO, "nobody") == "none"


# -- errors and retries -----------------------------------------------------------


def test_wrong_token_is_a_permanent_error(fake: FakeGitLab, sleeps: list[float]) -> None:
    forge = GitLabForge(fake.url, "glpat-wrong", retries=3, sleep=sleeps.append)
    with pytest.raises(ForgeError) as caught:
        forge.set_status(REPO, SHA, status(CommitState.PENDING))
    error = caught.value
    assert error.status == 401 and not error.transient
    assert str(error).startswith("setting status 'trainops' to pending on acme/digits@3f78")
    assert "glpat" not in str(error)
    assert error.__cause__ is not None
    assert sleeps == [] and fake.statuses(REPO, SHA) == []


def test_503_twice_then_success(fake: FakeGitLab, forge: GitLabForge, sleeps: list[float]) -> None:
    fake.fail_next(STATUSES, 503, times=2)
    forge.set_status(REPO, SHA, status(CommitState.SUCCESS))
    assert fake.calls[STATUSES] == 3
    assert [s["status"] for s in fake.statuses(REPO, SHA)] == ["success"]
    # exponential backoff with jitter: within [base/2, base] * 2**attempt
    assert len(sleeps) == 2
    assert 0.005 <= sleeps[0] <= 0.01 and 0.01 <= sleeps[1] <= 0.02


def test_429_honours_retry_after(fake: FakeGitLab, forge: GitLabForge, sleeps: list[float]) -> None:
    fake.fail_next("GET *notes", 429, headers={"Retry-After": "0"})
    fake.fail_next("POST *notes", 429, headers={"Retry-After": "7"})
    forge.upsert_comment(REPO, 3, "run", "report")
    assert sleeps == [0.0, 7.0]
    assert len(fake.merge_request(REPO, 3).notes) == 1


def test_retry_after_is_capped(fake: FakeGitLab, forge: GitLabForge, sleeps: list[float]) -> None:
    fake.fail_next(STATUSES, 429, headers={"Retry-After": "86400"})
    forge.set_status(REPO, SHA, status(CommitState.PENDING))
    assert sleeps == [GitLabForge.max_backoff_s]


def test_ratelimit_reset_is_honoured(
    fake: FakeGitLab, forge: GitLabForge, sleeps: list[float]
) -> None:
    fake.fail_next(STATUSES, 429, headers={"RateLimit-Reset": "0"})  # long past: go now
    forge.set_status(REPO, SHA, status(CommitState.PENDING))
    assert sleeps == [0.0]


def test_exhausted_retries_are_a_transient_error(
    fake: FakeGitLab, forge: GitLabForge, sleeps: list[float]
) -> None:
    fake.fail_next(STATUSES, 503, times=10)
    with pytest.raises(ForgeError) as caught:
        forge.set_status(REPO, SHA, status(CommitState.PENDING))
    assert caught.value.transient and caught.value.status == 503
    assert fake.calls[STATUSES] == 4 and len(sleeps) == 3


def test_client_errors_are_not_retried(fake: FakeGitLab, forge: GitLabForge) -> None:
    fake.fail_next(STATUSES, 403)
    with pytest.raises(ForgeError) as caught:
        forge.set_status(REPO, SHA, status(CommitState.PENDING))
    assert caught.value.status == 403 and not caught.value.transient
    assert fake.calls[STATUSES] == 1


def test_unreachable_gitlab_is_transient(sleeps: list[float]) -> None:
    with FakeGitLab() as gone:
        url = gone.url
    forge = GitLabForge(url, "glpat-x", retries=1, timeout_s=2, sleep=sleeps.append)
    with pytest.raises(ForgeError, match="reaching http://127.0.0.1") as caught:
        forge.read_file(REPO, "main", "trainops.yaml")
    assert caught.value.transient and caught.value.status is None
    assert len(sleeps) == 1
