"""GitHubForge through the real PyGithub against the fake GitHub server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.github import FakeGitHub
from trainops.config import ForgeSettings, Secret
from trainops.errors import ForgeError, ForgeNotConfigured
from trainops.forges.github import GitHubForge, Pacing
from trainops.models import CommitState, CommitStatus

TOKEN = "ghp_test-token"
REPO = "acme/digits"
SHA = "0123456789abcdef0123456789abcdef01234567"
SPEC = b"version: 1\nstages: {}\n"


class Sleeps(list[float]):
    """A recording ``sleep`` for Pacing: the waits asked for, none taken."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN, user="trainops-bot") as server:
        server.add_repo(REPO, files={"trainops.yaml": SPEC, "dvc.yaml": b"stages: {}\n"})
        yield server


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def forge(fake: FakeGitHub, sleeps: Sleeps) -> GitHubForge:
    return make_forge(fake, sleeps)


def make_forge(fake: FakeGitHub, sleeps: Sleeps, *, retries: int = 3, **kw: str) -> GitHubForge:
    pacing = Pacing(
        retries=retries, backoff_s=0.01, write_interval_s=0, request_interval_s=0, sleep=sleeps
    )
    kw.setdefault("token", TOKEN)
    return GitHubForge(fake.url, timeout_s=5, pacing=pacing, **kw)


# -- statuses -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "github_state"),
    [
        (CommitState.PENDING, "pending"),
        (CommitState.RUNNING, "pending"),
        (CommitState.SUCCESS, "success"),
        (CommitState.FAILURE, "failure"),
        (CommitState.ERROR, "error"),
    ],
)
def test_status_states_map_to_github(
    forge: GitHubForge, fake: FakeGitHub, state: CommitState, github_state: str
) -> None:
    status = CommitStatus("trainops/train", state, "train: 12 s", url="http://ci.example/runs/1")
    forge.set_status(REPO, SHA, status)

    [sent] = fake.statuses(REPO, SHA)
    assert sent["state"] == github_state
    assert sent["context"] == "trainops/train"
    assert sent["target_url"] == "http://ci.example/runs/1"
    assert sent["creator"] == "trainops-bot"
    if state is CommitState.RUNNING:
        assert sent["description"] == "running: train: 12 s"
    else:
        assert sent["description"] == "train: 12 s"


def test_status_description_is_cut_to_githubs_limit(forge: GitHubForge, fake: FakeGitHub) -> None:
    forge.set_status(REPO, SHA, CommitStatus("trainops", CommitState.FAILURE, "x" * 500))
    forge.set_status(REPO, SHA, CommitStatus("trainops", CommitState.RUNNING, ""))

    first, second = fake.statuses(REPO, SHA)
    assert len(first["description"]) == 140 and first["description"].endswith("…")
    assert first["target_url"] is None
    assert second["description"] == "running"


def test_statuses_move_forward_on_one_context(forge: GitHubForge, fake: FakeGitHub) -> None:
    for state in (CommitState.PENDING, CommitState.RUNNING, CommitState.SUCCESS):
        forge.set_status(REPO, SHA, CommitStatus("trainops/train", state, state.value))

    states = [s["state"] for s in fake.statuses(REPO, SHA, "trainops/train")]
    assert states == ["pending", "pending", "success"]
    assert fake.latest_statuses(REPO, SHA)["trainops/train"]["state"] == "success"


# -- the living comment ---------------------------------------------------------


def test_comment_is_created_once_then_edited_in_place(forge: GitHubForge, fake: FakeGitHub) -> None:
    pr = fake.open_pull_request(REPO, number=7, head="feat")

    first = forge.upsert_comment(REPO, 7, "report", "training…")
    second = forge.upsert_comment(REPO, 7, "report", "evaluating…")
    third = forge.upsert_comment(REPO, 7, "report", "accuracy 0.97 (+0.02)")

    assert first == second == third == str(pr.comments[0].id)
    assert len(pr.comments) == 1
    [comment] = pr.comments
    assert comment.body == "<!-- trainops:report -->\naccuracy 0.97 (+0.02)"
    assert comment.user == "trainops-bot"
    assert comment.edits == 2
    assert fake.count("POST /repos/acme/digits/issues/7/comments") == 1


def test_an_identical_comment_is_not_sent_again(forge: GitHubForge, fake: FakeGitHub) -> None:
    pr = fake.open_pull_request(REPO, number=7)
    forge.upsert_comment(REPO, 7, "report", "same")
    forge.upsert_comment(REPO, 7, "report", "same")

    assert len(pr.comments) == 1 and pr.comments[0].edits == 0
    assert fake.count("PATCH *") == 0


def test_a_comment_quoting_the_marker_is_not_ours(forge: GitHubForge, fake: FakeGitHub) -> None:
    pr = fake.open_pull_request(REPO, number=7)
    quoted = "> <!-- trainops:report -->\n> old report\n\nwhy did this fail?"
    fake.add_comment(REPO, 7, quoted, user="alice")
    fake.add_comment(REPO, 7, "see <!-- trainops:report --> above", user="bob")

    forge.upsert_comment(REPO, 7, "report", "ours")
    forge.upsert_comment(REPO, 7, "report", "ours, updated")

    assert [c.user for c in pr.comments] == ["alice", "bob", "trainops-bot"]
    assert pr.comments[0].body == quoted and pr.comments[0].edits == 0
    assert pr.comments[2].body.endswith("ours, updated")


def test_comments_with_other_keys_stay_apart(forge: GitHubForge, fake: FakeGitHub) -> None:
    pr = fake.open_pull_request(REPO, number=7)
    forge.upsert_comment(REPO, 7, "report", "a")
    forge.upsert_comment(REPO, 7, "report-2", "b")
    forge.upsert_comment(REPO, 7, "report", "c")

    assert [c.body.splitlines() for c in pr.comments] == [
        ["<!-- trainops:report -->", "c"],
        ["<!-- trainops:report-2 -->", "b"],
    ]


def test_our_comment_is_found_on_a_later_page(forge: GitHubForge, fake: FakeGitHub) -> None:
    pr = fake.open_pull_request(REPO, number=7)
    for i in range(120):
        fake.add_comment(REPO, 7, f"chatter {i}", user="alice")
    forge.upsert_comment(REPO, 7, "report", "first")
    forge.upsert_comment(REPO, 7, "report", "second")

    assert len(pr.comments) == 121 and pr.comments[-1].body.endswith("second")
    assert fake.count("GET /repos/acme/digits/issues/7/comments") == 4  # two pages, twice


def test_an_oversized_comment_is_cut_not_refused(forge: GitHubForge, fake: FakeGitHub) -> None:
    pr = fake.open_pull_request(REPO, number=7)
    forge.upsert_comment(REPO, 7, "report", "x" * 70_000)

    assert len(pr.comments[0].body) == 65_536
    assert pr.comments[0].body.endswith("(truncated: the comment exceeded GitHub's size limit)")


def test_a_comment_key_cannot_break_out_of_the_marker(forge: GitHubForge) -> None:
    with pytest.raises(ValueError, match="comment key"):
        forge.upsert_comment(REPO, 7, "x -->", "body")


def test_a_missing_pull_request_is_a_forge_error(forge: GitHubForge) -> None:
    with pytest.raises(ForgeError) as info:
        forge.upsert_comment(REPO, 99, "report", "body")
    assert info.value.status == 404 and not info.value.transient
    assert str(info.value).startswith("updating the report comment on acme/digits#99: HTTP 404")


# -- files ----------------------------------------------------------------------


def test_read_file_at_a_ref(forge: GitHubForge, fake: FakeGitHub) -> None:
    fake.set_files(REPO, SHA, {"trainops.yaml": b"version: 1\n# on the branch\n"})

    assert forge.read_file(REPO, "main", "trainops.yaml") == SPEC
    assert forge.read_file(REPO, SHA, "trainops.yaml") == b"version: 1\n# on the branch\n"
    assert forge.read_file(REPO, "main", "/dvc.yaml") == b"stages: {}\n"


def test_read_file_missing_is_none(forge: GitHubForge, fake: FakeGitHub) -> None:
    fake.set_files(REPO, "main", {"models/a.txt": b"a"})

    assert forge.read_file(REPO, "main", "nope.yaml") is None
    assert forge.read_file(REPO, "no-such-ref", "models/a.txt") is None
    assert forge.read_file(REPO, "main", "models") is None  # a directory


def test_read_file_over_a_megabyte_comes_from_the_blob(
    forge: GitHubForge, fake: FakeGitHub
) -> None:
    big = bytes(range(256)) * 5000  # 1.28 MB: the contents API leaves the content out
    fake.set_files(REPO, "main", {"data/params.bin": big})

    assert forge.read_file(REPO, "main", "data/params.bin") == big
    assert fake.count("GET /repos/acme/digits/git/blobs/*") == 1


# -- pull requests --------------------------------------------------------------


def test_open_pull_request_creates_then_reuses(forge: GitHubForge, fake: FakeGitHub) -> None:
    first = forge.open_pull_request(
        REPO, head="promote/v3", base="main", title="Promote v3", body="accuracy 0.97"
    )
    second = forge.open_pull_request(
        REPO, head="promote/v3", base="main", title="Promote v3", body="accuracy 0.98"
    )

    assert first.created and not second.created
    assert first.number == second.number
    assert first.url == f"{fake.html_root}/acme/digits/pull/{first.number}"
    [pr] = fake.repos[REPO].pulls.values()
    assert (pr.head, pr.base, pr.title, pr.body) == (
        "promote/v3",
        "main",
        "Promote v3",
        "accuracy 0.98",
    )
    assert pr.user == "trainops-bot"
    assert fake.count("POST /repos/acme/digits/pulls") == 1


def test_an_unchanged_pull_request_is_not_edited(forge: GitHubForge, fake: FakeGitHub) -> None:
    for _ in range(2):
        forge.open_pull_request(REPO, head="promote/v3", base="main", title="T", body="B")
    assert fake.count("PATCH *") == 0


def test_a_closed_pull_request_is_not_reused(forge: GitHubForge, fake: FakeGitHub) -> None:
    old = fake.open_pull_request(REPO, number=3, head="promote/v3")
    old.state = "closed"

    ref = forge.open_pull_request(REPO, head="promote/v3", base="main", title="T", body="B")
    assert ref.created and ref.number == 4


def test_a_pull_request_opened_meanwhile_is_reused(forge: GitHubForge, fake: FakeGitHub) -> None:
    # Between our look and our create someone opens it: GitHub answers 422.
    fake.before_next(
        "POST /repos/acme/digits/pulls",
        lambda: fake.open_pull_request(REPO, number=5, head="promote/v3", title="T", body="B"),
    )
    ref = forge.open_pull_request(REPO, head="promote/v3", base="main", title="T", body="B")

    assert not ref.created and ref.number == 5
    assert len(fake.repos[REPO].pulls) == 1


def test_a_validation_error_says_what_github_said(forge: GitHubForge) -> None:
    with pytest.raises(ForgeError) as info:
        forge.open_pull_request(REPO, head="promote/v3", base="main", title="", body="B")
    assert info.value.status == 422 and not info.value.transient
    assert str(info.value) == (
        "opening a pull request promote/v3 → main in acme/digits: "
        "HTTP 422 Validation Failed (title missing_field)"
    )


# -- permissions ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("admin", "admin"),
        ("maintain", "write"),
        ("write", "write"),
        ("triage", "read"),
        ("read", "read"),
        ("none", "none"),
    ],
)
def test_permission_maps_roles(
    forge: GitHubForge, fake: FakeGitHub, role: str, expected: str
) -> None:
    fake.set_permission(REPO, "alice", role)
    assert forge.permission(REPO, "alice") == expected


def test_permission_of_a_stranger_is_none(forge: GitHubForge) -> None:
    assert forge.permission(REPO, "mallory") == "none"


# -- errors and retries ---------------------------------------------------------


def test_a_create_whose_answer_was_lost_is_not_repeated(
    forge: GitHubForge, fake: FakeGitHub
) -> None:
    # GitHub stores the comment, then the answer is a 502: the retry must find it.
    pr = fake.open_pull_request(REPO, number=7)
    route = "POST /repos/acme/digits/issues/7/comments"
    body = "<!-- trainops:report -->\nhello"
    fake.before_next(route, lambda: fake.add_comment(REPO, 7, body, user="trainops-bot"))
    fake.fail_next(route, 502)

    forge.upsert_comment(REPO, 7, "report", "hello")

    assert [c.body for c in pr.comments] == [body]
    assert fake.count(route) == 1


def test_an_unknown_repository_is_a_404(forge: GitHubForge) -> None:
    with pytest.raises(ForgeError) as info:
        forge.set_status("acme/nope", SHA, CommitStatus("trainops", CommitState.PENDING, "q"))
    assert info.value.status == 404 and not info.value.transient


def test_a_wrong_token_is_a_permanent_error(fake: FakeGitHub, sleeps: Sleeps) -> None:
    forge = make_forge(fake, sleeps, token="wrong")
    with pytest.raises(ForgeError) as info:
        forge.set_status(REPO, SHA, CommitStatus("trainops", CommitState.PENDING, "queued"))

    assert info.value.status == 401 and not info.value.transient
    assert str(info.value) == (
        f"setting status trainops on acme/digits@{SHA[:7]}: HTTP 401 Bad credentials"
    )
    assert info.value.__cause__ is not None
    assert "wrong" not in str(info.value) and sleeps == []


def test_503_twice_then_ok_succeeds(forge: GitHubForge, fake: FakeGitHub, sleeps: Sleeps) -> None:
    fake.fail_next("POST /repos/acme/digits/statuses/*", 503, times=2)

    forge.set_status(REPO, SHA, CommitStatus("trainops", CommitState.SUCCESS, "done"))

    assert fake.count("POST /repos/acme/digits/statuses/*") == 3
    assert [s["state"] for s in fake.statuses(REPO, SHA)] == ["success"]
    assert len(sleeps) == 2 and 0.005 <= sleeps[0] <= 0.01 and 0.01 <= sleeps[1] <= 0.02


def test_429_honours_retry_after(forge: GitHubForge, fake: FakeGitHub, sleeps: Sleeps) -> None:
    pr = fake.open_pull_request(REPO, number=7)
    fake.fail_next("POST *", 429, headers={"Retry-After": "0"}, message="Too Many Requests")

    forge.upsert_comment(REPO, 7, "report", "hello")

    assert sleeps == [0.0] and len(pr.comments) == 1
    assert fake.count("GET /repos/acme/digits/issues/7/comments") == 2  # looked again first


def test_secondary_rate_limit_403_is_retried(
    forge: GitHubForge, fake: FakeGitHub, sleeps: Sleeps
) -> None:
    fake.fail_next("GET /repos/acme/digits/contents/*", 403, headers={"Retry-After": "2"})

    assert forge.read_file(REPO, "main", "trainops.yaml") == SPEC
    assert sleeps == [2.0]


def test_primary_rate_limit_waits_until_the_reset(
    forge: GitHubForge, fake: FakeGitHub, sleeps: Sleeps
) -> None:
    reset = str(int(time.time()) + 5)
    headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}
    fake.fail_next("GET *", 403, headers=headers, message="API rate limit exceeded for user.")

    assert forge.permission(REPO, "mallory") == "none"
    assert len(sleeps) == 1 and 3 <= sleeps[0] <= 5


def test_a_wait_longer_than_the_cap_is_not_waited(
    forge: GitHubForge, fake: FakeGitHub, sleeps: Sleeps
) -> None:
    fake.fail_next("GET *", 429, headers={"Retry-After": "3600"})

    with pytest.raises(ForgeError) as info:
        forge.permission(REPO, "alice")
    assert info.value.transient and info.value.status == 429 and sleeps == []


def test_a_plain_403_is_not_retried(forge: GitHubForge, fake: FakeGitHub, sleeps: Sleeps) -> None:
    fake.fail_next("POST *", 403, message="Resource not accessible by integration")

    with pytest.raises(ForgeError) as info:
        forge.set_status(REPO, SHA, CommitStatus("trainops", CommitState.PENDING, "queued"))
    assert info.value.status == 403 and not info.value.transient and sleeps == []
    assert "Resource not accessible by integration" in str(info.value)


def test_exhausted_retries_are_a_transient_error(
    forge: GitHubForge, fake: FakeGitHub, sleeps: Sleeps
) -> None:
    fake.fail_next("POST /repos/acme/digits/statuses/*", 502, times=10)

    with pytest.raises(ForgeError) as info:
        forge.set_status(REPO, SHA, CommitStatus("trainops", CommitState.PENDING, "queued"))

    assert info.value.transient and info.value.status == 502
    assert fake.count("POST /repos/acme/digits/statuses/*") == 4  # 1 + 3 retries
    assert len(sleeps) == 3 and fake.statuses(REPO, SHA) == []


def test_a_server_that_is_gone_is_a_transient_error(sleeps: Sleeps) -> None:
    with FakeGitHub(token=TOKEN) as gone:
        url = gone.url
    forge = GitHubForge(url, token=TOKEN, timeout_s=1, pacing=Pacing(retries=1, sleep=sleeps))

    with pytest.raises(ForgeError) as info:
        forge.read_file(REPO, "main", "trainops.yaml")
    assert info.value.transient and info.value.status is None and len(sleeps) == 1


# -- construction ---------------------------------------------------------------


def test_from_settings_uses_token_url_and_retries(fake: FakeGitHub) -> None:
    settings = ForgeSettings(token=Secret(TOKEN), api_url=fake.url, timeout_s=2.5, retries=0)
    forge = GitHubForge.from_settings(settings, pacing=Pacing(retries=0, write_interval_s=0))
    fake.fail_next("GET *", 503)

    with pytest.raises(ForgeError) as info:
        forge.read_file(REPO, "main", "trainops.yaml")
    assert info.value.transient
    assert forge.read_file(REPO, "main", "trainops.yaml") == SPEC
    assert TOKEN not in repr(forge)


def test_without_credentials_the_forge_is_not_configured() -> None:
    with pytest.raises(ForgeNotConfigured):
        GitHubForge.from_settings(ForgeSettings())
    with pytest.raises(ForgeNotConfigured, match="both app_id and private_key"):
        GitHubForge.from_settings(ForgeSettings(app_id="12"))


# -- GitHub App -----------------------------------------------------------------


@pytest.fixture(scope="module")
def app_key() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def test_app_installation_tokens(
    fake: FakeGitHub, sleeps: Sleeps, app_key: tuple[str, str]
) -> None:
    private, public = app_key
    fake.add_app("4242", public, slug="trainops")
    fake.install("4242", "acme", 77)
    fake.add_repo("acme/vision")
    pr = fake.open_pull_request(REPO, number=7)
    settings = ForgeSettings(
        api_url=fake.url, app_id="4242", private_key=Secret(private.replace("\n", "\\n"))
    )
    forge = GitHubForge.from_settings(
        settings, pacing=Pacing(retries=0, write_interval_s=0, sleep=sleeps)
    )

    forge.upsert_comment(REPO, 7, "report", "from the app")
    forge.set_status(REPO, SHA, CommitStatus("trainops", CommitState.SUCCESS, "ok"))
    forge.set_status("acme/vision", SHA, CommitStatus("trainops", CommitState.SUCCESS, "ok"))

    assert pr.comments[0].user == "trainops[bot]"
    assert fake.statuses(REPO, SHA)[0]["creator"] == "trainops[bot]"
    # One installation lookup and one token for the owner, whatever the repository.
    assert fake.count("GET /repos/*/installation") == 1
    assert fake.count("POST /app/installations/77/access_tokens") == 1


def test_an_app_not_installed_is_a_clear_error(
    fake: FakeGitHub, sleeps: Sleeps, app_key: tuple[str, str]
) -> None:
    private, public = app_key
    fake.add_app("4242", public)
    forge = GitHubForge(
        fake.url, app_id="4242", private_key=private, pacing=Pacing(retries=0, sleep=sleeps)
    )

    with pytest.raises(ForgeError) as info:
        forge.read_file(REPO, "main", "trainops.yaml")
    assert str(info.value).startswith(
        "finding the GitHub App installation for acme/digits: HTTP 404"
    )
