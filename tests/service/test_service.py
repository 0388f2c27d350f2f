"""The service end to end: signed deliveries over real HTTP → stored events → runs → the API.

Everything is real: uvicorn on a free port, the SQLite store in ``tmp_path``,
the worker and the local runner, git repositories on disk. Deliveries are our
recorded payloads (``tests/data/webhooks``) pointed at the ``forge`` fixture's
bare repository and its commits, signed as each forge signs them. Assertions
are on what the service reports and stores, never on calls.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.service.conftest import (
    GITHUB_SECRET,
    SLOW,
    Forge,
    Service,
    StartService,
    githook_push,
    github_pull_request,
    github_push,
    gitlab_merge_request,
    gitlab_push,
    pipeline,
    wait_for,
)
from tests.webhooks.signing import githook_headers, github_headers, gitlab_headers

Send = Callable[[Service, Forge], tuple[httpx.Response, str]]


def _github_push(service: Service, forge: Forge) -> tuple[httpx.Response, str]:
    sha = forge.head()
    return service.github(github_push(forge, sha)), sha


def _github_pull_request(service: Service, forge: Forge) -> tuple[httpx.Response, str]:
    sha = forge.commit({"value.json": '{"score": 0.8}\n'}, "Widen the net", branch="wider-net")
    return service.github(github_pull_request(forge, sha), "pull_request"), sha


def _gitlab_push(service: Service, forge: Forge) -> tuple[httpx.Response, str]:
    sha = forge.head()
    return service.gitlab(gitlab_push(forge, sha)), sha


def _gitlab_merge_request(service: Service, forge: Forge) -> tuple[httpx.Response, str]:
    sha = forge.commit({"value.json": '{"score": 0.8}\n'}, "Use batch size 256", "bigger-batch")
    return service.gitlab(gitlab_merge_request(forge, sha), "Merge Request Hook"), sha


def _githook_push(service: Service, forge: Forge) -> tuple[httpx.Response, str]:
    sha = forge.head()
    return service.githook(githook_push(forge, sha)), sha


# (how to send it, trigger, merge request number, metrics of that commit)
TRIGGERS: dict[str, tuple[Send, str, int | None, dict[str, float]]] = {
    "github-push": (_github_push, "push", None, {"score": 0.75}),
    "github-pull-request": (_github_pull_request, "merge_request", 7, {"score": 0.8}),
    "gitlab-push": (_gitlab_push, "push", None, {"score": 0.75}),
    "gitlab-merge-request": (_gitlab_merge_request, "merge_request", 3, {"score": 0.8}),
    "githook-push": (_githook_push, "push", None, {"score": 0.75}),
}


@pytest.mark.parametrize("case", list(TRIGGERS))
def test_a_signed_delivery_runs_the_pipeline_at_its_commit(
    service: Service, forge: Forge, case: str
) -> None:
    send, trigger, number, metrics = TRIGGERS[case]
    response, sha = send(service, forge)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "accepted"
    [event_id] = response.json()["events"]

    run = service.wait_final(service.run_for(sha)["id"])

    assert run["status"] == "succeeded", run
    assert (run["commit"], run["trigger"], run["merge_request"]) == (sha, trigger, number)
    assert run["event_id"] == event_id
    assert run["message"] is None  # no stale progress line once finished
    assert run["metrics"] == metrics
    stages = {s["name"]: s for s in run["stages"]}
    assert {name: s["status"] for name, s in stages.items()} == {
        "prepare": "succeeded",
        "evaluate": "succeeded",
    }
    assert stages["evaluate"]["metrics"] == metrics
    assert "preparing the data" in stages["prepare"]["log_tail"]
    assert [r["id"] for r in service.runs()] == [run["id"]]
    [event] = service.events()
    assert (event["id"], event["status"]) == (event_id, "processed")
    assert run["id"] in event["note"]


# -- refused deliveries ------------------------------------------------------------------


def _forged(body: bytes) -> dict[str, str]:
    return github_headers(body, "not-the-secret", "push", str(uuid.uuid4()))


def _unsigned(body: bytes) -> dict[str, str]:
    headers = github_headers(body, GITHUB_SECRET, "push", str(uuid.uuid4()))
    del headers["X-Hub-Signature-256"]
    return headers


def _sha1_only(body: bytes) -> dict[str, str]:
    headers = _unsigned(body)
    headers["X-Hub-Signature"] = "sha1=" + "0" * 40
    return headers


def _wrong_gitlab_token(body: bytes) -> dict[str, str]:
    return gitlab_headers("not-the-token", "Push Hook", str(uuid.uuid4()))


def _no_gitlab_token(body: bytes) -> dict[str, str]:
    headers = gitlab_headers("x", "Push Hook", str(uuid.uuid4()))
    del headers["X-Gitlab-Token"]
    return headers


def _wrong_bearer(body: bytes) -> dict[str, str]:
    return githook_headers("not-the-token")


def _no_bearer(body: bytes) -> dict[str, str]:
    headers = githook_headers("x")
    del headers["Authorization"]
    return headers


# case → (route, the headers it sends with the route's body)
REFUSED: dict[str, tuple[str, Callable[[bytes], dict[str, str]]]] = {
    "github-forged": ("github", _forged),
    "github-unsigned": ("github", _unsigned),
    "github-sha1-only": ("github", _sha1_only),
    "gitlab-wrong-token": ("gitlab", _wrong_gitlab_token),
    "gitlab-no-token": ("gitlab", _no_gitlab_token),
    "githook-wrong-bearer": ("git", _wrong_bearer),
    "githook-no-bearer": ("git", _no_bearer),
}


def test_unauthenticated_deliveries_get_401_and_leave_no_row(
    service: Service, forge: Forge
) -> None:
    sha = forge.head()
    bodies = {
        "github": github_push(forge, sha),
        "gitlab": gitlab_push(forge, sha),
        "git": githook_push(forge, sha),
    }
    for case, (route, make_headers) in REFUSED.items():
        body = bodies[route]
        response = service.http.post(f"/webhooks/{route}", content=body, headers=make_headers(body))
        assert response.status_code == 401, (case, response.text)

    # A body changed after GitHub signed it is a forgery too.
    body = bodies["github"]
    headers = github_headers(body, GITHUB_SECRET, "push", str(uuid.uuid4()))
    tampered = body.replace(b'"main"', b'"evil"', 1)
    response = service.http.post("/webhooks/github", content=tampered, headers=headers)
    assert response.status_code == 401, response.text

    time.sleep(0.2)  # a worker poll or two: nothing to find
    assert service.events() == []
    assert service.runs() == []


def test_malformed_oversized_and_unknown_deliveries(start_service: StartService) -> None:
    service = start_service(max_body_bytes=2048)

    bad = b'{"ref": "refs/heads/main", '
    assert service.github(bad).status_code == 400
    bad_gitlab = service.gitlab(b"[1, 2, 3]")  # JSON, but not an object
    assert bad_gitlab.status_code == 400, bad_gitlab.text

    big = json.dumps({"ref": "refs/heads/main", "padding": "x" * 4096}).encode()
    assert service.github(big).status_code == 413
    assert service.gitlab(big).status_code == 413
    chunked = service.http.post(  # no Content-Length: refused while reading
        "/webhooks/github",
        content=iter([big[:1024], big[1024:]]),
        headers=github_headers(big, GITHUB_SECRET, "push", str(uuid.uuid4())),
    )
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413
    assert service.events() == []

    star = json.dumps({"action": "created", "starred_at": "2025-01-01T00:00:00Z"}).encode()
    delivery = str(uuid.uuid4())
    response = service.github(star, "star", delivery=delivery)
    assert (response.status_code, response.json()["status"]) == (202, "ignored")
    [event] = service.events()
    assert (event["forge"], event["delivery_id"], event["kind"]) == ("github", delivery, "star")
    assert event["status"] == "ignored"
    assert "star" in event["note"]

    # Redelivered: still one row.
    assert service.github(star, "star", delivery=delivery).status_code == 202
    assert len(service.events()) == 1

    system = service.gitlab(b'{"event_name": "project_create"}', "System Hook")
    assert (system.status_code, system.json()["status"]) == (202, "ignored")
    latest = service.events()[0]
    assert (latest["forge"], latest["kind"], latest["status"]) == (
        "gitlab",
        "System Hook",
        "ignored",
    )
    assert service.runs() == []


def test_a_forge_without_a_secret_is_not_served(start_service: StartService) -> None:
    service = start_service(forges=("github",))
    for source, headers in {
        "gitlab": gitlab_headers("anything", "Push Hook", str(uuid.uuid4())),
        "git": githook_headers("anything"),
        "bitbucket": {"Content-Type": "application/json"},
    }.items():
        response = service.http.post(f"/webhooks/{source}", content=b"{}", headers=headers)
        assert response.status_code == 404, (source, response.text)
    assert service.get("/readyz")["forges"] == ["github"]
    assert service.events() == []


# -- idempotency and policy ----------------------------------------------------------------


def test_fifty_concurrent_copies_of_a_delivery_make_one_event_and_one_run(
    service: Service, forge: Forge
) -> None:
    sha = forge.head()
    body = github_push(forge, sha)
    headers = github_headers(body, GITHUB_SECRET, "push", str(uuid.uuid4()))
    limits = httpx.Limits(max_connections=60, max_keepalive_connections=60)
    with httpx.Client(base_url=service.server.url, timeout=20, limits=limits) as http:

        def send(_: int) -> httpx.Response:
            return http.post("/webhooks/github", content=body, headers=headers)

        with ThreadPoolExecutor(max_workers=50) as pool:
            responses = list(pool.map(send, range(50)))

    assert [r.status_code for r in responses if not r.is_success] == []
    answers = [r.json()["status"] for r in responses]
    assert sorted(set(answers)) == ["accepted", "duplicate"]
    assert answers.count("accepted") == 1, answers
    assert len({tuple(r.json()["events"]) for r in responses}) == 1

    run = service.wait_final(service.run_for(sha)["id"])
    assert run["status"] == "succeeded"
    assert len(service.events()) == 1
    assert len(service.runs()) == 1

    # Another delivery of the same push (a new delivery id) is a new event, not a new run.
    again = service.github(body)
    assert again.json()["status"] == "accepted"
    event = service.event_done(again.json()["events"][0])
    assert (event["status"], event["note"]) == ("processed", f"same run as {run['id']}")
    assert len(service.runs()) == 1


def test_a_pull_request_from_a_fork_is_recorded_and_not_run(service: Service, forge: Forge) -> None:
    sha = forge.commit({"value.json": '{"score": 0.1}\n'}, "Widen the net", branch="wider-net")
    response = service.github(github_pull_request(forge, sha, fork=True), "pull_request")
    assert (response.status_code, response.json()["status"]) == (202, "accepted")
    [event_id] = response.json()["events"]

    event = service.event_done(event_id)
    assert event["status"] == "ignored"
    assert "fork" in event["note"]
    assert service.runs() == []


def test_skip_ci_in_the_head_commit_message_is_ignored(service: Service, forge: Forge) -> None:
    message = "Fix a typo in the README [skip ci]"
    sha = forge.commit({"README.md": "digits\n"}, message)
    response = service.github(github_push(forge, sha, message=message))
    assert response.status_code == 202
    [event_id] = response.json()["events"]

    event = service.event_done(event_id)
    assert event["status"] == "ignored"
    assert "skip" in event["note"]
    assert service.runs() == []


# -- supersede, cancel, queue ----------------------------------------------------------------


def test_a_newer_push_supersedes_the_running_run(service: Service, forge: Forge) -> None:
    slow = forge.commit({"trainops.yaml": pipeline(SLOW)}, "Train for longer")
    assert service.github(github_push(forge, slow)).status_code == 202
    first = service.run_for(slow)
    service.wait_status(first["id"], {"running"})
    wait_for(
        lambda: service.run(first["id"])["stages"][0]["status"] == "running",
        10,
        "the slow stage to start",
    )

    quick = forge.commit({"trainops.yaml": pipeline()}, "Train quickly again")
    assert service.github(github_push(forge, quick)).status_code == 202
    second = service.run_for(quick)
    began = time.monotonic()
    stopped = service.wait_final(first["id"], timeout=10)
    took = time.monotonic() - began

    assert stopped["status"] == "superseded", stopped
    assert stopped["superseded_by"] == second["id"]
    assert took < 5, f"the superseded run took {took:.1f} s to stop"
    assert {st["name"]: st["status"] for st in stopped["stages"]} == {
        "prepare": "cancelled",
        "evaluate": "skipped",
    }
    done = service.wait_final(second["id"])
    assert done["status"] == "succeeded", done
    assert done["metrics"] == {"score": 0.75}


def test_cancel_stops_a_running_run_and_needs_the_api_token(
    start_service: StartService, forge: Forge
) -> None:
    service = start_service(api_token="api-token-for-tests")
    slow = forge.commit({"trainops.yaml": pipeline(SLOW)}, "Train for longer")
    assert service.github(github_push(forge, slow)).status_code == 202
    run_id = service.run_for(slow)["id"]
    service.wait_status(run_id, {"running"})

    cancel = f"/api/runs/{run_id}/cancel"
    assert service.http.post(cancel).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert service.http.post(cancel, headers=wrong).status_code == 401
    assert service.run(run_id)["status"] == "running"
    assert not service.run(run_id)["cancel_requested"]

    ok = {"Authorization": "Bearer api-token-for-tests"}
    began = time.monotonic()
    response = service.http.post(cancel, headers=ok)
    assert response.status_code == 200, response.text
    run = service.wait_final(run_id, timeout=10)
    took = time.monotonic() - began

    assert run["status"] == "cancelled", run
    assert took < 5, f"the cancelled run took {took:.1f} s to stop"
    assert service.http.post("/api/runs/no-such-run/cancel", headers=ok).status_code == 404


def test_queued_runs_show_their_place_default_branch_first(
    start_service: StartService, forge: Forge
) -> None:
    service = start_service(max_concurrent_runs=1)
    slow = forge.commit({"trainops.yaml": pipeline(SLOW)}, "Train for longer")
    assert service.githook(githook_push(forge, slow)).status_code == 202
    busy = service.run_for(slow)
    service.wait_status(busy["id"], {"running"})

    branch = forge.commit({"value.json": '{"score": 0.8}\n'}, "Use batch size 256", "bigger-batch")
    response = service.gitlab(gitlab_merge_request(forge, branch), "Merge Request Hook")
    assert response.status_code == 202
    mr = service.run_for(branch)
    assert service.github(github_push(forge, slow)).status_code == 202
    main = service.run_for(slow, trigger="push", repo="acme/digits")

    mr, main = service.run(mr["id"]), service.run(main["id"])
    assert (main["status"], main["queue_position"]) == ("queued", 1)
    assert (mr["status"], mr["queue_position"]) == ("queued", 2)
    assert service.run(busy["id"])["queue_position"] is None
    listed = {r["id"]: r["queue_position"] for r in service.runs()}
    assert listed == {busy["id"]: None, main["id"]: 1, mr["id"]: 2}

    ok = {"Authorization": "Bearer unused"}  # no api_token configured: open
    for run in (mr, main, busy):
        assert service.http.post(f"/api/runs/{run['id']}/cancel", headers=ok).status_code == 200
    assert service.run(mr["id"])["status"] == "cancelled"
    assert service.run(main["id"])["status"] == "cancelled"
    assert service.wait_final(busy["id"], timeout=10)["status"] == "cancelled"


# -- health, OpenAPI, invalid pipelines --------------------------------------------------------


def test_health_readiness_and_openapi(service: Service) -> None:
    assert service.get("/healthz") == {"status": "ok"}
    assert service.get("/readyz") == {"status": "ready", "forges": ["githook", "github", "gitlab"]}
    paths = service.get("/openapi.json")["paths"]
    for path in (
        "/webhooks/{source}",
        "/healthz",
        "/readyz",
        "/api/events",
        "/api/runs",
        "/api/runs/{run_id}",
        "/api/runs/{run_id}/cancel",
    ):
        assert path in paths, path


BROKEN = """\
version: 1
stages:
  prepare:
    cmd: echo prepared > prepared.txt
    retries: many
"""


def test_an_invalid_pipeline_file_fails_its_run_saying_where(
    service: Service, forge: Forge
) -> None:
    sha = forge.commit({"trainops.yaml": BROKEN}, "Retry a lot")
    assert service.github(github_push(forge, sha)).status_code == 202

    run = service.wait_final(service.run_for(sha)["id"])
    assert run["status"] == "failed", run
    assert re.search(r"trainops\.yaml:5:", run["error"]), run["error"]
    assert "retries" in run["error"]
    wait_for(lambda: service.events()[0]["status"] == "processed", 5, "the event to be processed")
