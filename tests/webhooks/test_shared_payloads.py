"""Every published example payload in ../shared/webhooks, signed, parsed and checked.

These are real bodies (octokit/webhooks, GitLab's documentation, captures
from other webhook libraries), unedited, so they catch what hand-written
fixtures would not: absent keys, nulls, older field names.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.webhooks.signing import GITLAB_EVENTS, github_headers, gitlab_headers
from trainops.models import Event, MergeRequestRef, RepoRef
from trainops.webhooks import parse

SHARED = Path(__file__).resolve().parents[3] / "shared" / "webhooks"
SECRET = "It's a Secret to Everybody"
ZERO = "0" * 40


def gh_repo(full_name: str, host: str = "https://github.com") -> RepoRef:
    return RepoRef("github", full_name, f"{host}/{full_name}.git", "master", f"{host}/{full_name}")


def gl_repo(full_name: str, host: str, branch: str = "master") -> RepoRef:
    return RepoRef("gitlab", full_name, f"{host}/{full_name}.git", branch, f"{host}/{full_name}")


HELLO = gh_repo("Codertocat/Hello-World")
PR2_HEAD = "ec26c3e57ca3a959ca5aad62de7213c562f8c821"


def pr2(action: str) -> Event:
    """The octokit pull request #2 examples differ only in their action."""
    change = MergeRequestRef(
        number=2,
        action=action,
        title="Update the README with new information.",
        url="https://github.com/Codertocat/Hello-World/pull/2",
        source_branch="changes",
        target_branch="master",
        head_sha=PR2_HEAD,
        is_fork=False,
        source_clone_url="https://github.com/Codertocat/Hello-World.git",
    )
    return Event(
        "github",
        "d",
        "merge_request",
        HELLO,
        action=action,
        ref="refs/pull/2/head",
        before="f95f852bd8fca8fcc58a9a2d6c842781e32a215e" if action == "synchronize" else None,
        after=PR2_HEAD,
        merge_request=change,
        author="Codertocat",
        author_association="OWNER",
    )


GITHUB: dict[str, Event | None] = {
    "push.branch.json": Event(
        "github",
        "d",
        "push",
        gh_repo("binkkatal/sample_app"),
        ref="refs/heads/master",
        before="737d38c599c1b2991664dfc6155d6bf516fcce36",
        after="fd489864e7642b48eaad6e3f155c10e46810ec72",
        author="binkkatal",
        changed_paths=(".razorops.yaml", "app/controllers/application_controller.rb"),
        head_message="test a push event",
    ),
    # A new branch's commit list is relative to a base GitHub chose: paths unknown.
    "push.branch-created.json": Event(
        "github",
        "d",
        "push",
        HELLO,
        ref="refs/heads/master",
        before=ZERO,
        after="6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        author="Codertocat",
        head_message="Initial commit",
    ),
    "push.branch-deleted.json": Event(
        "github",
        "d",
        "push",
        gh_repo("bradrydzewski/drone-test-go"),
        ref="refs/heads/feature-branch",
        before="d2b75aa7797ec26b088fa2dd527e9d2c052fcedd",
        after=ZERO,
        deleted=True,
        author="bradrydzewski",
    ),
    "push.tag-created.json": Event(
        "github",
        "d",
        "tag",
        gh_repo("Codertocat/Hello-World", host="https://octocoders.github.io"),  # GHES
        ref="refs/tags/simple-tag",
        before=ZERO,
        after="6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        author="Codertocat",
        head_message="Adding a .gitignore file",
    ),
    "push.tag-deleted.json": Event(
        "github",
        "d",
        "tag",
        HELLO,
        ref="refs/tags/simple-tag",
        before="6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        after=ZERO,
        deleted=True,
        author="Codertocat",
    ),
    "pull_request.opened.json": pr2("opened"),
    "pull_request.synchronize.json": pr2("synchronize"),
    "pull_request.reopened.json": pr2("reopened"),
    "pull_request.closed.json": pr2("closed"),  # merged: false
    "issue_comment.created.json": None,  # on a plain issue
    "issue_comment.created-on-pull-request.json": Event(
        "github",
        "d",
        "comment",
        gh_repo("chhsia0/knative-route-demo"),
        action="created",
        ref="refs/pull/3/head",
        merge_request=MergeRequestRef(
            number=3,
            action="created",
            title="Updated to v2.",
            url="https://github.com/chhsia0/knative-route-demo/pull/3",
            source_branch="",
            target_branch="",
            head_sha="",
            is_fork=True,  # not in the payload: untrusted until looked up
        ),
        comment="/build",
        author="chhsia0",
        author_association="OWNER",
    ),
    "ping.repository.json": Event(
        "github", "d", "ping", gh_repo("Octocoders/Hello-World"), author="Codertocat"
    ),
    "ping.organization.json": Event("github", "d", "ping", None, author="Codertocat"),
}

GITLAB: dict[str, Event | None] = {
    # total_commits_count is 4 but two commits are listed: paths unknown.
    "push_hook.branch.json": Event(
        "gitlab",
        "d",
        "push",
        gl_repo("mike/diaspora", "http://example.com"),
        ref="refs/heads/master",
        before="95790bf891e76fee5e1747ab589903a6a1f80f22",
        after="da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        author="jsmith",
        head_message="fixed readme",
    ),
    # The published tag example has user_name but no user_username.
    "tag_push_hook.created.json": Event(
        "gitlab",
        "d",
        "tag",
        gl_repo("jsmith/example", "http://example.com"),
        ref="refs/tags/v1.0.0",
        before=ZERO,
        after="82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
    ),
    "merge_request_hook.open.json": Event(
        "gitlab",
        "d",
        "merge_request",
        gl_repo("gitlabhq/gitlab-test", "http://example.com"),
        action="opened",
        ref="refs/merge-requests/1/head",
        after="da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        merge_request=MergeRequestRef(
            number=1,
            action="opened",
            title="MS-Viewport",
            url="http://example.com/diaspora/merge_requests/1",
            source_branch="ms-viewport",
            target_branch="master",
            head_sha="da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            is_fork=False,
            source_clone_url="http://example.com/awesome_space/awesome_project.git",
        ),
        author="root",
    ),
    # A draft toggle: an update without oldrev keeps GitLab's word.
    "merge_request_hook.update.json": Event(
        "gitlab",
        "d",
        "merge_request",
        gl_repo("rathod.meetsatish/meet", "https://gitlab.com", branch="main"),
        action="update",
        ref="refs/merge-requests/3/head",
        after="ffd71529ecdfb41a530ee13f91b8fdd3e743c754",
        merge_request=MergeRequestRef(
            number=3,
            action="update",
            title="Draft: Update README.md",
            url="https://gitlab.com/rathod.meetsatish/meet/-/merge_requests/3",
            source_branch="main1234",
            target_branch="main",
            head_sha="ffd71529ecdfb41a530ee13f91b8fdd3e743c754",
            is_fork=False,
            source_clone_url="https://gitlab.com/rathod.meetsatish/meet.git",
            draft=True,
        ),
        author="rathod.meetsatish",
    ),
    "merge_request_hook.merge.json": Event(
        "gitlab",
        "d",
        "merge_request",
        gl_repo("gitlab-org/hello-world", "https://gitlab.com"),
        action="merged",
        ref="refs/merge-requests/1/head",
        after="c4c79227ed610f1151f05bbc5be33b4f340d39c8",
        merge_request=MergeRequestRef(
            number=1,
            action="merged",
            title="update readme",
            url="https://gitlab.com/gitlab-org/hello-world/merge_requests/1",
            source_branch="feature",
            target_branch="master",
            head_sha="c4c79227ed610f1151f05bbc5be33b4f340d39c8",
            is_fork=False,
            source_clone_url="https://gitlab.com/gitlab-org/hello-world.git",
        ),
        author="sytses",
    ),
    # The MR object here has no url: it comes from the note's, minus #note_1244.
    "note_hook.merge_request.json": Event(
        "gitlab",
        "d",
        "comment",
        gl_repo("gitlab-org/gitlab-test", "http://example.com"),
        action="created",
        ref="refs/merge-requests/1/head",
        after="562e173be03b8ff2efb05345d12df18815438a4b",
        merge_request=MergeRequestRef(
            number=1,
            action="created",
            title="Tempora et eos debitis quae laborum et.",
            url="http://example.com/gitlab-org/gitlab-test/merge_requests/1",
            source_branch="master",
            target_branch="markdown",
            head_sha="562e173be03b8ff2efb05345d12df18815438a4b",
            is_fork=False,
            source_clone_url="http://example.com/gitlab-org/gitlab-test.git",
        ),
        comment="This MR needs work.",
        author="root",
    ),
}


def shared_files(forge: str) -> list[object]:
    folder = SHARED / forge
    if not folder.is_dir():
        reason = f"../shared is absent: no published payloads at {folder}"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="absent")]
    return [pytest.param(path, id=path.name) for path in sorted(folder.glob("*.json"))]


def assert_fields(got: Event | None, want: Event | None) -> None:
    """Field by field, so a failure names the field rather than dumping two Events."""
    if want is None or got is None:
        assert got == want
        return
    for name in Event.__dataclass_fields__:
        if name == "merge_request" and got.merge_request and want.merge_request:
            for sub in MergeRequestRef.__dataclass_fields__:
                assert getattr(got.merge_request, sub) == getattr(want.merge_request, sub), sub
        else:
            assert getattr(got, name) == getattr(want, name), name


@pytest.mark.parametrize("path", shared_files("github"))
def test_github_example(path: Path) -> None:
    assert path.name in GITHUB, f"no expectation written for {path.name}"
    body = path.read_bytes()
    headers = github_headers(body, SECRET, event=path.name.split(".")[0], delivery="d")
    events = parse("github", headers, body, SECRET)
    want = GITHUB[path.name]
    assert_fields(events[0] if events else None, want)
    assert len(events) == (0 if want is None else 1)


@pytest.mark.parametrize("path", shared_files("gitlab"))
def test_gitlab_example(path: Path) -> None:
    assert path.name in GITLAB, f"no expectation written for {path.name}"
    body = path.read_bytes()
    headers = gitlab_headers(SECRET, event=GITLAB_EVENTS[path.name.split(".")[0]], delivery="d")
    events = parse("gitlab", headers, body, SECRET)
    want = GITLAB[path.name]
    assert_fields(events[0] if events else None, want)
    assert len(events) == (0 if want is None else 1)


@pytest.mark.parametrize("path", shared_files("github") + shared_files("gitlab"))
def test_events_survive_a_json_round_trip(path: Path) -> None:
    """The service stores Events as JSON; what comes back must be equal."""
    forge = path.parent.name
    body = path.read_bytes()
    if forge == "github":
        headers = github_headers(body, SECRET, event=path.name.split(".")[0], delivery="d")
    else:
        headers = gitlab_headers(SECRET, GITLAB_EVENTS[path.name.split(".")[0]], delivery="d")
    for event in parse(forge, headers, body, SECRET):
        assert Event.from_json(json.loads(json.dumps(event.to_json()))) == event


def test_every_expectation_has_its_file() -> None:
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    assert {p.name for p in (SHARED / "github").glob("*.json")} == set(GITHUB)
    assert {p.name for p in (SHARED / "gitlab").glob("*.json")} == set(GITLAB)
